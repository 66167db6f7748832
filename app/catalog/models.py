"""Catalog tables: controlled vocabularies, datasets (normalised facts plus their raw source rows), catalog state."""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base

TextArray = ARRAY(Text)


class Vocabulary(Base):
    """One term of a controlled vocabulary (`kind` = modality, anatomy, task, dim, access, host, ...)."""

    __tablename__ = "vocabulary"
    __table_args__ = (ForeignKeyConstraint(["kind", "parent_id"], ["vocabulary.kind", "vocabulary.id"]),)

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(Text)
    synonyms: Mapped[list[str]] = mapped_column(TextArray, default=list)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(64))
    code_system: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Dataset(Base):
    """A surveyed dataset, normalised onto the vocabularies. `raw_records` keeps every source row verbatim."""

    __tablename__ = "dataset"
    # A class with __tablename__ is mapped to a Table (the declarative base types it as any FromClause): its
    # update(), delete() and columns are used directly where the ORM's bookkeeping is not wanted
    __table__: ClassVar[Table]

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(160), unique=True)
    name: Mapped[str] = mapped_column(Text)
    aliases: Mapped[list[str]] = mapped_column(TextArray, default=list)
    url: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(64))
    section: Mapped[str | None] = mapped_column(Text)
    year: Mapped[int | None] = mapped_column(Integer)
    dims: Mapped[list[str]] = mapped_column(TextArray, default=list)
    modalities: Mapped[list[str]] = mapped_column(TextArray, default=list)
    anatomies: Mapped[list[str]] = mapped_column(TextArray, default=list)
    # anatomies plus all their ancestors, so that asking for "thorax" finds lung and heart datasets
    anatomy_closure: Mapped[list[str]] = mapped_column(TextArray, default=list)
    tasks: Mapped[list[str]] = mapped_column(TextArray, default=list)
    diseases: Mapped[list[str]] = mapped_column(TextArray, default=list)
    labeled: Mapped[bool | None] = mapped_column(Boolean)
    access: Mapped[str] = mapped_column(String(32))
    licence: Mapped[str | None] = mapped_column(String(64))
    organisation: Mapped[str | None] = mapped_column(Text)
    images: Mapped[int | None] = mapped_column(BigInteger)
    size_bucket: Mapped[str] = mapped_column(String(16))
    formats: Mapped[list[str]] = mapped_column(TextArray, default=list)
    # none_as_null: a missing descriptor or fact sheet is SQL NULL (so `source IS NULL` means none), not JSON null
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # how a bundle job gets the files (app/sources): automatic | credentials | manual, with the note that says
    # what will be fetched, which settings a credentialed host needs, or why it is manual and what to do
    fetch_method: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    fetch_note: Mapped[str | None] = mapped_column(Text)
    source_provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # facts the source itself states (IDC: licences per series, DOI, subjects, series, bytes, modalities)
    source_facts: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    licence_source: Mapped[str | None] = mapped_column(Text)
    download_bytes: Mapped[int | None] = mapped_column(BigInteger)
    quality_flags: Mapped[list[str]] = mapped_column(TextArray, default=list)
    completeness: Mapped[float] = mapped_column(Float, default=0.0)
    variant_group: Mapped[str | None] = mapped_column(String(160))
    # the survey's records merged into this one (sub-tasks, editions, mirrors): name, slug it had, facts
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    # facts the merged rows disagree on: {field, values: [{value, parts}]}
    contradictions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    # why an ambiguous value was read as it was: {field, raw, value, reason}
    notes: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    # the rules (or curated decisions) that joined the parts: {rule, detail}
    merge_reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    raw_records: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    # words a full-text search should find this dataset by (names, aliases, vocabulary labels and synonyms)
    search_document: Mapped[str] = mapped_column(Text, default="")
    search_vector: Mapped[Any] = mapped_column(
        TSVECTOR,
        Computed(
            "setweight(to_tsvector('simple', name), 'A') || to_tsvector('simple', search_document)",
            persisted=True,
        ),
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_dataset_modalities", "modalities", postgresql_using="gin"),
        Index("ix_dataset_anatomy_closure", "anatomy_closure", postgresql_using="gin"),
        Index("ix_dataset_tasks", "tasks", postgresql_using="gin"),
        Index("ix_dataset_dims", "dims", postgresql_using="gin"),
        Index("ix_dataset_search_vector", "search_vector", postgresql_using="gin"),
        Index(
            "ix_dataset_search_document_trgm",
            "search_document",
            postgresql_using="gin",
            postgresql_ops={"search_document": "gin_trgm_ops"},
        ),
        Index("ix_dataset_variant_group", "variant_group"),
    )


class DatasetRedirect(Base):
    """A slug that no longer names a record (it was merged into another) and the slug that does now."""

    __tablename__ = "dataset_redirect"
    __table__: ClassVar[Table]

    old_slug: Mapped[str] = mapped_column(String(160), primary_key=True)
    slug: Mapped[str] = mapped_column(String(160), index=True)
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")


class CatalogState(Base):
    """A single row: the catalog version, bumped by every write so caches and plans can refer to it."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[int] = mapped_column(Integer, default=0)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    sources_key: Mapped[str | None] = mapped_column(String(128))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
