"""how each dataset is fetched: fetch method, source provenance, facts from the source, licence source

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dataset", sa.Column("fetch_method", sa.String(16), nullable=False, server_default="manual")
    )
    op.add_column("dataset", sa.Column("fetch_note", sa.Text(), nullable=True))
    op.add_column("dataset", sa.Column("source_provenance", JSONB(), nullable=True))
    op.add_column("dataset", sa.Column("source_facts", JSONB(), nullable=True))
    op.add_column("dataset", sa.Column("licence_source", sa.Text(), nullable=True))
    op.add_column("dataset", sa.Column("download_bytes", sa.BigInteger(), nullable=True))
    # what the sources were last resolved with (resolver version + index versions): a start after an upgrade
    # of either re-resolves
    op.add_column("catalog_state", sa.Column("sources_key", sa.String(128), nullable=True))
    # a removed descriptor used to be stored as JSON null; it is SQL NULL from now on
    op.execute("UPDATE dataset SET source = NULL WHERE source = 'null'::jsonb")


def downgrade() -> None:
    op.drop_column("catalog_state", "sources_key")
    for column in (
        "download_bytes", "licence_source", "source_facts", "source_provenance", "fetch_note", "fetch_method"
    ):  # fmt: skip
        op.drop_column("dataset", column)
