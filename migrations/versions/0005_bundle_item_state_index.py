"""bundle items by job and state

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `advance` runs after every harmonised item and asks whether any item of the job is still pending
    op.create_index("ix_bundle_item_job_state", "bundle_item", ["job_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_bundle_item_job_state", table_name="bundle_item")
