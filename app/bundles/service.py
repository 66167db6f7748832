"""Bundle jobs: submission, cancellation, download, and the state machine the workers drive (what a job's
status says is built in status.py).

A job moves queued -> fetching -> harmonising -> packaging -> done (or failed / cancelled). Each stage is many
small Celery tasks (one per source, one per item, one for packaging, see workers/tasks.py) that record their
outcome here. After every unit, `advance` looks at the recorded state under a row lock and, when a stage is
complete, moves the job on and names the tasks to send: the transition happens exactly once however many
workers finish at the same moment. `resume_messages` re-sends every unfinished unit, which is how a job
continues after its worker was killed (units are idempotent; a duplicate only costs time).
"""

from __future__ import annotations

import functools
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import exists, func, select, text, update
from sqlalchemy.orm import Session, defer

from app.bundles import nnunet_ids
from app.bundles.models import BundleItem, BundleJob, BundleSource
from app.bundles.schemas import (
    MAX_DATASETS,
    BundleRequest,
)
from app.catalog.service import access_next_step, catalog_version
from app.common import tasks
from app.common.archive import BundleArchive
from app.common.errors import Conflict, Gone, InvalidInput, NotAllowed, NotFound, NotOffered
from app.common.jobs import FINISHED, BuildOptions, ItemState, JobState, SourceState
from app.common.labels import unify_labels
from app.common.tasks import TaskMessage
from app.core.config import Settings, get_settings
from app.selections.service import checked_slugs, datasets_by_slug, plan_slugs

ID_LENGTH = 32
RUNNING = (JobState.fetching, JobState.harmonising, JobState.packaging)
# One transaction at a time decides which queued jobs may start, so two finishing jobs cannot both hand
# their slot to different queued jobs beyond the limit.
START_LOCK = 0x1A6E_B0D1


# -- where a job's files live ------------------------------------------------------------------------------------
def store_root(settings: Settings) -> Path:
    """The bundle store as a local folder. Remote fsspec stores are not supported yet: say so clearly."""
    url = settings.store_url
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        raise NotOffered(
            f"IMAGINGX_STORAGE_URL {url!r}: only local folders (or file://) can hold bundles so far"
        )
    return Path(parts.path if parts.scheme == "file" else url)


def work_dir(settings: Settings, job_id: str) -> Path:
    """Downloads, unpacked sources and harmonised cases of one job; removed once the job ends."""
    return settings.home / "jobs" / job_id


def bundle_folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "bundle"


def bundle_dir(settings: Settings, job: BundleJob) -> Path:
    return store_root(settings) / job.id / bundle_folder_name(job.name)


# -- submission ---------------------------------------------------------------------------------------------------
def _default_name(request: BundleRequest, slugs: Sequence[str]) -> str:
    if request.name:
        return request.name.strip()
    if request.plan_id:
        return f"Plan {request.plan_id[:8]}"
    if len(slugs) <= 3:
        return " + ".join(slugs)[:80]
    return f"{slugs[0]} and {len(slugs) - 1} more"


def _resolved(request: BundleRequest, settings: Settings) -> BundleRequest:
    """The request with the server's default test share filled in, validated again: the default plus the
    request's validation share must still leave room for training, or the stored job could not be read."""
    if request.options.test_fraction is not None:
        return request
    try:
        options = BuildOptions.model_validate(
            {**request.options.model_dump(), "test_fraction": settings.bundle_test_fraction}
        )
    except ValidationError as error:
        raise InvalidInput(
            ["body", "options", "val_fraction"],
            f"with this server's default test share of {settings.bundle_test_fraction}: "
            + "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors()),
        ) from None
    return request.model_copy(update={"options": options})


def create_job(
    session: Session,
    request: BundleRequest,
    owner: str | None = None,
    settings: Settings | None = None,
    base_url: str | None = None,
) -> tuple[BundleJob, list[TaskMessage]]:
    """Record a job (its sources fixed now: later catalog edits do not change a running job) and say which
    task starts it. 422 for unknown datasets, 404 for an unknown plan. `base_url`: the portal's address the
    request came to (the bundle names its own page with it). Without a chosen nnU-Net id the job gets the
    first one its owner's other bundles do not use."""
    settings = settings or get_settings()
    store_root(settings)  # a misconfigured store fails the request, not the job an hour later
    if request.plan_id is not None:
        slugs = plan_slugs(session, request.plan_id)
        if not slugs:
            raise InvalidInput(
                ["body", "plan_id"], f"plan {request.plan_id} has no datasets in its final list"
            )
        if len(slugs) > MAX_DATASETS:
            raise InvalidInput(
                ["body", "plan_id"],
                f"a bundle fuses at most {MAX_DATASETS:,} datasets; this plan's final list has {len(slugs):,}",
            )
        # a plan saved before a catalog re-import may name datasets the catalog no longer has
        slugs = checked_slugs(session, slugs, ["body", "plan_id"])
    else:
        slugs = checked_slugs(session, request.datasets or [], ["body", "datasets"])
    datasets = {d.slug: d for d in datasets_by_slug(session, slugs)}
    resolved = _resolved(request, settings)
    if resolved.options.nnunet_dataset_id is None:
        # chosen now and recorded in the request, so the job says which id it got (app/bundles/nnunet_ids.py)
        first_id = nnunet_ids.default_first_id(session, owner)
        resolved = resolved.model_copy(
            update={"options": resolved.options.model_copy(update={"nnunet_dataset_id": first_id})}
        )
    job = BundleJob(
        id=secrets.token_urlsafe(24),
        state=JobState.queued,
        name=_default_name(request, slugs),
        # defaults resolved now, so the job says what it used even if the server's settings change later
        request=resolved.model_dump(mode="json"),
        plan_id=request.plan_id,
        owner=owner,
        base_url=base_url,
        catalog_version=catalog_version(session),
        warnings=[],
    )
    session.add(job)
    session.flush()
    for position, slug in enumerate(slugs):
        dataset = datasets[slug]
        automated = dataset.source is not None
        session.add(
            BundleSource(
                job_id=job.id,
                slug=slug,
                position=position,
                name=dataset.name,
                state=SourceState.pending if automated else SourceState.manual,
                detail=None
                if automated
                else f"No automated source: {dataset.fetch_note or 'none is recorded for this dataset.'} "
                + access_next_step(dataset),
                descriptor=dataset.source,
            )
        )
    session.commit()
    return job, [tasks.advance_bundle(job.id)]


# -- reading ------------------------------------------------------------------------------------------------------
def get_job(session: Session, job_id: str, *, for_update: bool = False) -> BundleJob:
    job = None
    if 0 < len(job_id) <= ID_LENGTH:
        job = session.get(BundleJob, job_id, with_for_update=for_update)
    if job is None:
        raise NotFound(f"bundle {job_id!r}")
    return job


def job_sources(session: Session, job_id: str, *, for_status: bool = False) -> list[BundleSource]:
    """A job's sources in order. `for_status`: without the descriptor and label table (JSON the status never
    shows; the job page polls it every second)."""
    query = select(BundleSource).where(BundleSource.job_id == job_id).order_by(BundleSource.position)
    if for_status:
        query = query.options(defer(BundleSource.descriptor), defer(BundleSource.label_table))
    return list(session.scalars(query))


def item_counts(session: Session, job_ids: Sequence[str]) -> dict[tuple[str, str, str], int]:
    """(job, source, state) -> number of items, in one query."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(BundleItem.job_id, BundleItem.slug, BundleItem.state, func.count())
        .where(BundleItem.job_id.in_(list(job_ids)))
        .group_by(BundleItem.job_id, BundleItem.slug, BundleItem.state)
    )
    return {(job, slug, state): count for job, slug, state, count in rows}


@functools.lru_cache(maxsize=8)
def _bundle_archive(folder: str, published: tuple[int, int]) -> BundleArchive:
    """The archive plan of a published bundle (immutable: keyed by its SHA256SUMS, a rebuilt bundle gets a
    new plan). Planning a 20,000-file bundle takes ~0.6 s, and a resumed download asks again for every range."""
    return BundleArchive(Path(folder))


@dataclass(frozen=True)
class Download:
    archive: BundleArchive
    filename: str
    sha256: str  # recorded when the bundle was published: the archive's ETag


def download(session: Session, job_id: str, settings: Settings | None = None) -> Download:
    """The archive of a finished bundle; 409 while the job is not done, 410 once its bundle is gone."""
    settings = settings or get_settings()
    job = get_job(session, job_id)
    if job.state != JobState.done or not job.result:
        raise Conflict(f"bundle {job_id} is {job.state}: it can be downloaded once it is done")
    folder = bundle_dir(settings, job)
    try:
        sums = (folder / "SHA256SUMS").stat()
    except FileNotFoundError:
        raise Gone(f"bundle {job_id} is no longer in the store") from None
    archive = _bundle_archive(str(folder), (sums.st_ino, sums.st_mtime_ns))
    if archive.size != job.result["archive_bytes"]:
        raise Gone(f"bundle {job_id} has changed in the store since it was published")
    return Download(archive, f"{folder.name}.tar", job.result["archive_sha256"])


# -- cancelling ---------------------------------------------------------------------------------------------------
def is_owner(job: BundleJob, owner: str | None) -> bool:
    """Whether `owner` is the job's owner key (compared in constant time; a job without one has no owner)."""
    if not owner or not job.owner:
        return False
    return secrets.compare_digest(owner.encode(), job.owner.encode())


def cancel_job(session: Session, job_id: str, *, owner: str | None) -> tuple[BundleJob, list[TaskMessage]]:
    """Stop a job: no new unit starts (each checks the state first); a download in flight asks about once a
    second and stops (workers/sources/download.py); a case being harmonised finishes. 409 for a finished
    job; 403 unless `owner` is the key the job was requested with (its id only lets one read and download)."""
    job = get_job(session, job_id, for_update=True)
    if job.state in FINISHED:
        raise Conflict(f"bundle {job_id} is already {job.state}")
    if not is_owner(job, owner):
        session.rollback()  # release the row lock
        raise NotAllowed(
            f"only whoever requested bundle {job_id} can cancel it (its owner key: cookie or X-Owner-Key)"
        )
    messages = finish_job(session, job, JobState.cancelled)
    session.execute(
        update(BundleSource)
        .where(
            BundleSource.job_id == job.id, BundleSource.state.in_([SourceState.pending, SourceState.fetching])
        )
        .values(state=SourceState.cancelled)
    )
    session.commit()
    return job, messages


# -- the state machine the workers drive ------------------------------------------------------------------------
def now() -> datetime:
    return datetime.now(UTC)


def finish_job(
    session: Session, job: BundleJob, state: JobState, error: str | None = None
) -> list[TaskMessage]:
    """End a job (done, failed or cancelled; the caller commits) and say what follows: its work folder is
    cleaned, and if it held a running slot, the queued jobs are offered that slot."""
    frees_slot = job.state in RUNNING
    job.state = state
    job.error = error
    job.finished_at = now()
    messages = [tasks.clean_bundle_work(job.id)]
    return messages + queued_job_messages(session) if frees_slot else messages


def fail_job(session: Session, job_id: str, error: str) -> list[TaskMessage]:
    """Mark a job failed (if it is still running) and free its slot; the caller commits."""
    job = get_job(session, job_id, for_update=True)
    if job.state in FINISHED:
        return []
    return finish_job(session, job, JobState.failed, error)


def queued_job_messages(session: Session) -> list[TaskMessage]:
    """An `advance` for each queued job, oldest first: each checks the running limit itself."""
    ids = session.scalars(
        select(BundleJob.id)
        .where(BundleJob.state == JobState.queued)
        .order_by(BundleJob.created_at)
        .limit(20)
    )
    return [tasks.advance_bundle(job_id) for job_id in ids]


def _start(session: Session, job: BundleJob, settings: Settings) -> bool:
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": START_LOCK})
    running = session.scalar(select(func.count()).where(BundleJob.state.in_(list(RUNNING)))) or 0
    if running >= settings.bundle_max_running:
        return False
    job.state = JobState.fetching
    job.started_at = now()
    return True


def _has_items(session: Session, job_id: str, state: ItemState) -> bool:
    return bool(
        session.scalar(select(exists().where(BundleItem.job_id == job_id, BundleItem.state == state)))
    )


def advance(session: Session, job_id: str, settings: Settings | None = None) -> list[TaskMessage]:
    """Move a job to its next stage if the current one is complete. Commits; returns the tasks to send."""
    settings = settings or get_settings()
    job = session.get(BundleJob, job_id, with_for_update=True)
    if job is None or job.state in FINISHED:
        session.rollback()
        return []
    messages: list[TaskMessage] = []
    if job.state == JobState.queued:
        if not _start(session, job, settings):
            session.commit()
            return []
        messages += [
            tasks.fetch_bundle_source(job.id, s.slug)
            for s in job_sources(session, job.id)
            if s.state == SourceState.pending
        ]
    if job.state == JobState.fetching:
        sources = job_sources(session, job.id)
        if any(s.state in (SourceState.pending, SourceState.fetching) for s in sources):
            session.commit()
            return messages
        fetched = [s for s in sources if s.state == SourceState.fetched]
        if not fetched:
            reasons = "; ".join(f"{s.slug}: {s.state} ({s.detail})" for s in sources)
            messages = fail_job(session, job.id, f"no source could be fetched: {reasons}")
            session.commit()
            return messages
        pending = list(
            session.scalars(
                select(BundleItem.item_id).where(
                    BundleItem.job_id == job.id, BundleItem.state == ItemState.pending
                )
            )
        )
        # no item is harmonised before this stage, so pending items are all the job's items
        if not pending:
            messages = fail_job(session, job.id, "the fetched sources hold no item a layout could recognise")
            session.commit()
            return messages
        job.labels = unified_labels({s.slug: s.label_table or {} for s in fetched})
        job.state = JobState.harmonising
        messages += [tasks.harmonise_bundle_item(job.id, item) for item in sorted(pending)]
    if job.state == JobState.harmonising:
        # called after every item: an EXISTS on (job_id, state) stops at the first row, where counting all
        # items each time would make a job of n items cost n^2 row reads
        if _has_items(session, job.id, ItemState.pending):
            session.commit()
            return messages
        if not _has_items(session, job.id, ItemState.done):
            messages = fail_job(
                session, job.id, "every item was skipped: see the skipped list for the reasons"
            )
            session.commit()
            return messages
        job.state = JobState.packaging
        messages.append(tasks.package_bundle(job.id))
    session.commit()
    return messages


def unified_labels(tables: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The global label table (by concept name, never by id) as stored on the job."""
    unification = unify_labels(
        {slug: {int(k): v for k, v in table.items()} for slug, table in tables.items()}
    )
    return {
        "table": unification.table,
        "local_to_concept": {
            s: {str(k): v for k, v in m.items()} for s, m in unification.local_to_concept.items()
        },
        "local_to_global": {
            s: {str(k): v for k, v in m.items()} for s, m in unification.local_to_global.items()
        },
    }


def resume_messages(session: Session) -> list[TaskMessage]:
    """Every unfinished unit of every unfinished job: what a worker sends when it starts (after a crash)."""
    messages: list[TaskMessage] = []
    jobs = session.scalars(
        select(BundleJob).where(BundleJob.state.notin_(list(FINISHED))).order_by(BundleJob.created_at)
    )
    for job in jobs:
        if job.state == JobState.queued:
            messages.append(tasks.advance_bundle(job.id))
        elif job.state == JobState.fetching:
            open_sources = [
                s.slug
                for s in job_sources(session, job.id)
                if s.state in (SourceState.pending, SourceState.fetching)
            ]
            messages += [tasks.fetch_bundle_source(job.id, slug) for slug in open_sources]
            if not open_sources:
                messages.append(tasks.advance_bundle(job.id))
        elif job.state == JobState.harmonising:
            pending = session.scalars(
                select(BundleItem.item_id)
                .where(BundleItem.job_id == job.id, BundleItem.state == ItemState.pending)
                .order_by(BundleItem.item_id)
            )
            items = [tasks.harmonise_bundle_item(job.id, item) for item in pending]
            messages += items or [tasks.advance_bundle(job.id)]
        elif job.state == JobState.packaging:
            messages.append(tasks.package_bundle(job.id))
    session.rollback()
    return messages


def remove_work(settings: Settings, job_id: str) -> None:
    shutil.rmtree(work_dir(settings, job_id), ignore_errors=True)
