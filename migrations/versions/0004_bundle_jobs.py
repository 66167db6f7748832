"""bundle jobs, their sources and items

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "bundle_job",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("request", JSONB, nullable=False),
        sa.Column("plan_id", sa.String(length=32), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("labels", JSONB, nullable=True),
        sa.Column("warnings", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", JSONB, nullable=True),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bundle_job_state", "bundle_job", ["state"])
    op.create_index("ix_bundle_job_owner", "bundle_job", ["owner"])
    op.create_table(
        "bundle_source",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("slug", sa.String(length=160), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("descriptor", JSONB, nullable=True),
        sa.Column("files", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("layout", sa.String(length=32), nullable=True),
        sa.Column("label_table", JSONB, nullable=True),
        sa.Column("items_total", sa.Integer(), nullable=False, server_default="0"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["job_id"], ["bundle_job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "slug"),
    )
    op.create_table(
        "bundle_item",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=160), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("case", JSONB, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("harmonised", JSONB, nullable=True),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["job_id"], ["bundle_job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "item_id"),
    )
    op.create_index("ix_bundle_item_slug", "bundle_item", ["slug"])


def downgrade() -> None:
    op.drop_table("bundle_item")
    op.drop_table("bundle_source")
    op.drop_table("bundle_job")
