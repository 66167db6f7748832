"""search words go: text search reads its own in-memory index (app/search/text_index.py) built per catalog
version, so the table of distinct catalog words that PostgreSQL typo expansion read is no longer used

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP TABLE IF EXISTS search_word")
    # levenshtein() was read only by the typo expansion over search_word
    op.execute("DROP EXTENSION IF EXISTS fuzzystrmatch")


def downgrade() -> None:
    # as revision 0002 made them, refilled from the current catalog
    op.execute("CREATE EXTENSION IF NOT EXISTS fuzzystrmatch")
    op.execute("CREATE TABLE search_word (word text PRIMARY KEY, ndoc integer NOT NULL)")
    op.execute("INSERT INTO search_word SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM dataset')")
    op.execute("CREATE INDEX ix_search_word_prefix ON search_word (word text_pattern_ops)")
    op.execute("CREATE INDEX ix_search_word_trgm ON search_word USING gin (word gin_trgm_ops)")
