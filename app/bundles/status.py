"""What a bundle job's status says, as the API, the job page and the CLI show it: progress, every source with
its counts, the skipped items with stage and file, the result with the bundle's own counts (report.json's
`counts`, so every place states the same numbers); the owner's list of jobs; a job's items page by page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bundles.models import BundleItem, BundleJob, BundleSource
from app.bundles.schemas import (
    SKIPPED_SHOWN,
    BundleItemOut,
    BundleItemsPage,
    BundleJobList,
    BundleJobOut,
    BundleJobSummary,
    BundleRequest,
    BundleResult,
    Progress,
    SkippedItemOut,
    SourceProgress,
)
from app.bundles.service import item_counts, job_sources
from app.common.jobs import FINISHED, ItemStage, ItemState, JobState, SourceState
from app.core.urls import urls


def _progress(
    job: BundleJob, sources: Sequence[BundleSource], counts: dict[tuple[str, str, str], int]
) -> Progress:
    open_states = {SourceState.pending, SourceState.fetching}
    sources_finished = sum(1 for s in sources if s.state not in open_states)
    items_total = sum(n for (j, _, _), n in counts.items() if j == job.id)
    items_finished = sum(
        n for (j, _, state), n in counts.items() if j == job.id and state != ItemState.pending
    )
    if job.state in FINISHED:
        fraction = 1.0
    else:
        # fetching weighs a quarter, harmonising two thirds, packaging the rest: roughly where time goes
        fetched = sources_finished / len(sources) if sources else 1.0
        harmonised = items_finished / items_total if items_total else 0.0
        fraction = 0.25 * fetched + 0.65 * harmonised + (0.05 if job.state == JobState.packaging else 0.0)
    return Progress(
        sources_total=len(sources),
        sources_finished=sources_finished,
        items_total=items_total,
        items_finished=items_finished,
        fraction=round(min(fraction, 1.0), 4),
    )


def job_status(session: Session, job: BundleJob) -> BundleJobOut:
    sources = job_sources(session, job.id, for_status=True)
    counts = item_counts(session, [job.id])
    skipped_rows = session.execute(
        select(BundleItem.item_id, BundleItem.slug, BundleItem.stage, BundleItem.reason, BundleItem.case)
        .where(BundleItem.job_id == job.id, BundleItem.state == ItemState.skipped)
        .order_by(BundleItem.item_id)
        .limit(SKIPPED_SHOWN)
    )
    skipped = [
        SkippedItemOut(item_id=i, source=s, stage=stage, file=case_source_file(s, case), reason=r or "")
        for i, s, stage, r, case in skipped_rows
    ]
    packaging_skips = (job.result or {}).get("packaging_skipped", [])
    skipped += [SkippedItemOut(**row) for row in packaging_skips][: max(0, SKIPPED_SHOWN - len(skipped))]
    # once packaged, a source's skipped items include those packaging left out: the bundle's own count
    packaging_per_source = Counter(row["source"] for row in packaging_skips)
    result = None
    if job.state == JobState.done and job.result:
        recorded = {k: job.result[k] for k in BundleResult.model_fields if k in job.result}
        # JSONB keeps no key order: the stages are put back in pipeline order
        by_stage = recorded.get("skipped_by_stage") or {}
        recorded["skipped_by_stage"] = {s.value: by_stage[s.value] for s in ItemStage if s.value in by_stage}
        result = BundleResult(**recorded)
    return BundleJobOut(
        id=job.id,
        name=job.name,
        state=JobState(job.state),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        plan_id=job.plan_id,
        request=BundleRequest.model_validate(job.request),
        progress=_progress(job, sources, counts),
        sources=[
            SourceProgress(
                slug=s.slug,
                name=s.name,
                state=SourceState(s.state),
                detail=s.detail,
                files=s.files,
                bytes=s.bytes,
                layout=s.layout,
                items_total=s.items_total,
                items_done=counts.get((job.id, s.slug, ItemState.done), 0),
                items_skipped=counts.get((job.id, s.slug, ItemState.skipped), 0)
                + packaging_per_source[s.slug],
            )
            for s in sources
        ],
        skipped=skipped,
        warnings=list(job.warnings or []),
        error=job.error,
        result=result,
    )


def case_source_file(slug: str, case: dict[str, Any] | None) -> str:
    """A recorded case's first file relative to its source (the case holds paths relative to the job)."""
    images = (case or {}).get("images") or []
    if not images:
        return ""
    relative = str(images[0]).removeprefix(f"sources/{slug}/")
    return f"{relative}#{case['member']}" if case and case.get("member") else relative


def job_list(session: Session, owner: str | None) -> BundleJobList:
    """`list_jobs` as the API answers it."""
    jobs = list_jobs(session, owner)
    return BundleJobList(count=len(jobs), results=jobs)


def list_jobs(session: Session, owner: str | None, limit: int = 100) -> list[BundleJobSummary]:
    """The jobs one browser (or cookie-holding client) submitted, newest first. Without an owner: none, since a
    job is private to whoever holds its id until accounts exist."""
    if not owner:
        return []
    jobs = list(
        session.scalars(
            select(BundleJob)
            .where(BundleJob.owner == owner)
            .order_by(BundleJob.created_at.desc())
            .limit(limit)
        )
    )
    ids = [j.id for j in jobs]
    counts = item_counts(session, ids)
    sources_by_job: dict[str, list[BundleSource]] = {}
    for source in session.scalars(select(BundleSource).where(BundleSource.job_id.in_(ids))):
        sources_by_job.setdefault(source.job_id, []).append(source)
    return [
        BundleJobSummary(
            id=job.id,
            name=job.name,
            state=JobState(job.state),
            created_at=job.created_at,
            finished_at=job.finished_at,
            progress=_progress(job, sources_by_job.get(job.id, []), counts),
        )
        for job in jobs
    ]


def list_items(
    session: Session, job: BundleJob, state: ItemState | None, offset: int, limit: int
) -> BundleItemsPage:
    query = select(BundleItem).where(BundleItem.job_id == job.id)
    if state is not None:
        query = query.where(BundleItem.state == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(BundleItem.item_id).offset(offset).limit(limit))
    items = [
        BundleItemOut(
            item_id=r.item_id,
            source=r.slug,
            state=ItemState(r.state),
            stage=ItemStage(r.stage) if r.stage else None,
            reason=r.reason,
        )
        for r in rows
    ]
    next_url = None
    if offset + limit < total:
        state_part = f"state={state.value}&" if state is not None else ""
        next_url = urls.bundle_items(job.id, f"?{state_part}offset={offset + limit}&limit={limit}")
    return BundleItemsPage(items=items, total=total, next_url=next_url)
