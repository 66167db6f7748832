"""bundle_job: the base URL it was requested at and its nnU-Net dataset ids; bundle_source: what the source
states about itself (licences, citation) and the stage a failed source stopped at

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the bundle's croissant.json and datacard name the portal's own page of the bundle: the address the
    # request came to is the only one the workers can know
    op.add_column("bundle_job", sa.Column("base_url", sa.Text(), nullable=True))
    # the nnU-Net dataset ids packaging gave the bundle (one per set of channels), fixed once chosen so a
    # rerun writes the same folders and other bundles of the same owner can avoid them
    op.add_column("bundle_job", sa.Column("nnunet_ids", postgresql.JSONB(), nullable=True))
    # {"licences": [{"licence", "from"}], "citation": {...}, "stage": "fetch" | "unpack"}
    op.add_column("bundle_source", sa.Column("stated", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("bundle_source", "stated")
    op.drop_column("bundle_job", "nnunet_ids")
    op.drop_column("bundle_job", "base_url")
