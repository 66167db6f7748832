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
    op.execute(
        "CREATE MATERIALIZED VIEW search_word AS "
        "SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM dataset') WITH DATA"
    )
    op.execute("CREATE UNIQUE INDEX ix_search_word_word ON search_word (word)")
    op.execute("CREATE INDEX ix_search_word_prefix ON search_word (word text_pattern_ops)")
    op.execute("CREATE INDEX ix_search_word_trgm ON search_word USING gin (word gin_trgm_ops)")


def downgrade() -> None:
    op.execute("DROP MATERIALIZED VIEW IF EXISTS search_word")
