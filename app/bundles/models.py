"""Bundle jobs: one row per job, one per source it fetches, one per item it harmonises.

PostgreSQL holds all progress (Redis only carries task messages), so a worker killed mid-job loses nothing
that was recorded: a resumed job re-dispatches exactly the rows that are not finished.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class BundleJob(Base):
    __tablename__ = "bundle_job"

    # unguessable, URL-safe: until accounts exist, holding the id is what lets you see and download a bundle
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the validated BundleRequest, as submitted
    plan_id: Mapped[str | None] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    # the global label table, fixed once every source is fetched:
    # {"table": {concept: id}, "local_to_concept": {slug: {local: concept}}, "local_to_global": {slug: {local: id}}}
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    warnings: Mapped[list[str]] = mapped_column(JSONB, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # items, sizes, checksums of the bundle
    # the portal's address the request came to: the bundle names its own page with it (migration 0010)
    base_url: Mapped[str | None] = mapped_column(Text)
    # the catalog version the job was submitted with (NULL for jobs older than migration 0012)
    catalog_version: Mapped[int | None] = mapped_column(Integer)
    # the nnU-Net dataset ids packaging gave the bundle, one per set of channels, fixed once chosen
    nnunet_ids: Mapped[list[int] | None] = mapped_column(JSONB)
    # the moment of the insert, not of its transaction's start (now()): jobs are listed and started in the
    # order they were made, which holds even for two made in one transaction
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=func.clock_timestamp(), server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class BundleSource(Base):
    __tablename__ = "bundle_source"

    job_id: Mapped[str] = mapped_column(ForeignKey("bundle_job.id", ondelete="CASCADE"), primary_key=True)
    slug: Mapped[str] = mapped_column(String(160), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    # pending -> fetching -> fetched | failed | manual (no automated source: `detail` holds the access step)
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    descriptor: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # copied at submission: a job is fixed
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    layout: Mapped[str | None] = mapped_column(String(32))
    label_table: Mapped[dict[str, str] | None] = mapped_column(
        JSONB
    )  # local id -> name, as the source has it
    items_total: Mapped[int] = mapped_column(Integer, default=0)
    # what the source states about itself, read while fetching (migration 0010): licences with where each was
    # found, and for a failed source the stage it stopped at
    stated: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class BundleItem(Base):
    __tablename__ = "bundle_item"
    # after each item, `advance` asks whether any item of the job is still pending (migration 0005)
    __table_args__ = (Index("ix_bundle_item_job_state", "job_id", "state"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("bundle_job.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the case id inside the bundle
    slug: Mapped[str] = mapped_column(String(160), index=True)
    # pending -> done | skipped (with `reason`)
    state: Mapped[str] = mapped_column(String(16))
    case: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the layout's Case: paths relative to the job folder
    reason: Mapped[str | None] = mapped_column(Text)
    # where a skipped item was left out (app.common.jobs.ItemStage); NULL on rows older than migration 0008
    stage: Mapped[str | None] = mapped_column(String(16))
    harmonised: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # geometry, hash, labels of the result
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
