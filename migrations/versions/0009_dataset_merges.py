"""dataset: parts, contradictions and normalisation notes of merged records; dataset_redirect for old slugs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A dataset now stands for every survey row of one real dataset (variants, sub-tasks, mirrors): it lists
    # those parts, the facts its rows disagree on, and why an ambiguous value was read the way it was.
    for column in ("parts", "contradictions", "notes"):
        op.add_column(
            "dataset", sa.Column(column, JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb"))
        )
    op.add_column(
        "dataset", sa.Column("merge_reasons", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb"))
    )
    # Slugs of records that were merged into another keep answering: the page and the API redirect.
    op.create_table(
        "dataset_redirect",
        sa.Column("old_slug", sa.String(160), primary_key=True),
        sa.Column("slug", sa.String(160), nullable=False, index=True),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("dataset_redirect")
    for column in ("merge_reasons", "notes", "contradictions", "parts"):
        op.drop_column("dataset", column)
