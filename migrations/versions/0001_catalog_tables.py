"""catalog tables

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # trigram matching gives full-text search its typo tolerance
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("summary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "dataset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=160), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("aliases", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("section", sa.Text(), nullable=True),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("dims", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("modalities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("anatomies", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("anatomy_closure", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("tasks", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("diseases", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("labeled", sa.Boolean(), nullable=True),
        sa.Column("access", sa.String(length=32), nullable=False),
        sa.Column("licence", sa.String(length=64), nullable=True),
        sa.Column("organisation", sa.Text(), nullable=True),
        sa.Column("images", sa.BigInteger(), nullable=True),
        sa.Column("size_bucket", sa.String(length=16), nullable=False),
        sa.Column("formats", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("source", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("quality_flags", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("completeness", sa.Float(), nullable=False),
        sa.Column("variant_group", sa.String(length=160), nullable=True),
        sa.Column("raw_records", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("search_document", sa.Text(), nullable=False),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "setweight(to_tsvector('simple', name), 'A') || to_tsvector('simple', search_document)",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_index(
        "ix_dataset_anatomy_closure", "dataset", ["anatomy_closure"], unique=False, postgresql_using="gin"
    )
    op.create_index("ix_dataset_dims", "dataset", ["dims"], unique=False, postgresql_using="gin")
    op.create_index("ix_dataset_modalities", "dataset", ["modalities"], unique=False, postgresql_using="gin")
    op.create_index(
        "ix_dataset_search_document_trgm",
        "dataset",
        ["search_document"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"search_document": "gin_trgm_ops"},
    )
    op.create_index(
        "ix_dataset_search_vector", "dataset", ["search_vector"], unique=False, postgresql_using="gin"
    )
    op.create_index("ix_dataset_tasks", "dataset", ["tasks"], unique=False, postgresql_using="gin")
    op.create_index("ix_dataset_variant_group", "dataset", ["variant_group"], unique=False)
    op.create_table(
        "vocabulary",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("synonyms", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("code_system", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["kind", "parent_id"],
            ["vocabulary.kind", "vocabulary.id"],
        ),
        sa.PrimaryKeyConstraint("kind", "id"),
    )


def downgrade() -> None:
    op.drop_table("vocabulary")
    op.drop_index("ix_dataset_variant_group", table_name="dataset")
    op.drop_index("ix_dataset_tasks", table_name="dataset", postgresql_using="gin")
    op.drop_index("ix_dataset_search_vector", table_name="dataset", postgresql_using="gin")
    op.drop_index(
        "ix_dataset_search_document_trgm",
        table_name="dataset",
        postgresql_using="gin",
        postgresql_ops={"search_document": "gin_trgm_ops"},
    )
    op.drop_index("ix_dataset_modalities", table_name="dataset", postgresql_using="gin")
    op.drop_index("ix_dataset_dims", table_name="dataset", postgresql_using="gin")
    op.drop_index("ix_dataset_anatomy_closure", table_name="dataset", postgresql_using="gin")
    op.drop_table("dataset")
    op.drop_table("catalog_state")
