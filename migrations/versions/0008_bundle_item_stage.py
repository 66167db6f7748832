"""bundle_item: the stage at which an item was skipped

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A skipped item's account names the stage (fetch, unpack, read, harmonise, deduplicate, package) beside the
    # reason; rows written before this revision have none and are reported as "read", the only stage that
    # skipped items then.
    op.add_column("bundle_item", sa.Column("stage", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("bundle_item", "stage")
