"""bundle_job: the catalog version a job was submitted with

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The datacard states the catalog a bundle was asked of beside the one it was packaged with (they differ when
    # the catalog changes while the job runs). Jobs submitted before this revision have none: the datacard says so.
    op.add_column("bundle_job", sa.Column("catalog_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("bundle_job", "catalog_version")
