"""search words: the catalog's distinct words, for typo-tolerant query expansion

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Trigram similarity against whole documents costs ~0.1 ms per row; against the few thousand distinct words
    # of the catalog it is one index probe. A misspelt query word is replaced by the catalog words close to it.
    op.execute("CREATE EXTENSION IF NOT EXISTS fuzzystrmatch")
    # A table refilled by the importer, not a materialized view: PostgreSQL 17+ refreshes views with a
    # restricted search_path, under which ts_stat's inner query cannot see `dataset`.
    op.execute("CREATE TABLE search_word (word text PRIMARY KEY, ndoc integer NOT NULL)")
    op.execute("INSERT INTO search_word SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM dataset')")
    op.execute("CREATE INDEX ix_search_word_prefix ON search_word (word text_pattern_ops)")
    op.execute("CREATE INDEX ix_search_word_trgm ON search_word USING gin (word gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS search_word")
