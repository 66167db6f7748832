"""The fetch unit: download one source through the shared cache, unpack it safely, detect its layout, and record
its items (one row each) for the harmonise units."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from app.bundles import service
from app.bundles.models import BundleItem, BundleJob, BundleSource
from app.catalog.models import Dataset
from app.common.descriptors import ExplicitLayout as DescriptorLayout
from app.common.descriptors import PairByRegex, PairBySuffix, parse_source
from app.common.jobs import FINISHED, BuildOptions, ItemStage, ItemState, JobState, SourceState
from app.core.config import Settings
from app.core.db import new_session
from workers.imaging.cases import Case
from workers.imaging.errors import LayoutNotRecognisedError
from workers.imaging.layout import DEFAULT_PAIRING, ExplicitLayout, detect_layout
from workers.imaging.layout_files import IMAGE_SUFFIXES, is_dicom_file, is_image_file
from workers.packaging.source_terms import stated_citation, stated_licences
from workers.pipeline.common import (
    Messages,
    case_to_json,
    claimed,
    log,
    reason_for,
    source_dir,
)
from workers.safety import UnpackLimits, UnsafeArchiveError, UnsafeSourceError, is_archive, unpack_archive
from workers.sources import resolve_source, tcia
from workers.sources.base import FetchOptions, SourceError
from workers.sources.download import Downloader, DownloadStopped
from workers.sources.net import new_client

_PORTABLE = re.compile(r"[^A-Za-z0-9_.-]+")
_VOLUME_EXTENSIONS = "(?:" + "|".join(re.escape(s) for s in (*IMAGE_SUFFIXES, ".dcm")) + ")$"


class JobCapExceededError(Exception):
    """The job needs more than IMAGINGX_BUNDLE_MAX_BYTES: fails the whole job, not one source."""


def item_id_for(slug: str, case_id: str) -> str:
    """The item's id inside the bundle: unique across sources, and a portable file name."""
    return _PORTABLE.sub("-", f"{slug}_{case_id}").strip("-.")[:200]


# -- source -> cases ---------------------------------------------------------------------------------------------
def explicit_layout(layout: DescriptorLayout, root: Path, labels: dict[int, str]) -> ExplicitLayout:
    """A descriptor's explicit layout in the terms layout detection uses (pairing as one regex)."""
    if isinstance(layout.pairing, PairByRegex):
        pairing = layout.pairing.pattern
    elif isinstance(layout.pairing, PairBySuffix):
        pairing = rf"(?P<case>[^/]+?)(?:{re.escape(layout.pairing.suffix)})?{_VOLUME_EXTENSIONS}"
    else:
        pairing = DEFAULT_PAIRING
    test_cases: set[str] = set()
    compiled = re.compile(pairing)
    for pattern in (layout.split or {}).get("test", []):
        for path in root.glob(pattern):
            if match := compiled.search(path.relative_to(root).as_posix()):
                test_cases.add(match["case"])
    return ExplicitLayout(
        image_glob=layout.images,
        label_glob=layout.labels,
        pairing=pairing,
        subject=layout.subject,
        label_table=dict(labels),
        test_cases=frozenset(test_cases),
    )


def prepare_source_root(
    downloaded: list[Path], downloads: Path, target: Path, job_dir: Path, limits: UnpackLimits
) -> Path:
    """The source's files as one folder: archives unpacked (safely), other files linked. Built aside and
    renamed, so an existing `target` is a finished earlier run."""
    if target.exists():
        return target
    archives = [p for p in downloaded if is_archive(p) and not p.name.lower().endswith(".nii.gz")]
    if len(downloaded) == 1 and archives:
        return unpack_archive(archives[0], target, job_dir, limits)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for path in downloaded:
            relative = path.relative_to(downloads)
            if path in archives:
                stem = re.sub(r"(\.tar)?\.(zip|tar|tgz|gz|bz2|xz)$", "", relative.name, flags=re.IGNORECASE)
                unpack_archive(path, staging / relative.parent / (stem or "archive"), job_dir, limits)
                continue
            place = staging / relative
            place.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, place)
            except OSError:
                shutil.copyfile(path, place)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


@dataclass(frozen=True)
class FetchedSource:
    files: int
    bytes: int
    layout: str
    cases: list[Case]
    label_table: dict[int, str]
    warnings: list[str]
    unused: list[Path] = field(default_factory=list)  # image files no case of the layout uses
    licences: list[dict[str, str]] = field(default_factory=list)  # what the host and the source's files state
    doi: str = ""  # the DOI the host (or the source's dataset_description.json) states for the source
    authors: str = ""  # the authors the source's dataset_description.json names


# files that are never images, so never sniffed for DICOM when looking for files no case uses
_NOT_IMAGES = {
    ".json",
    ".csv",
    ".tsv",
    ".txt",
    ".md",
    ".rst",
    ".html",
    ".pdf",
    ".xml",
    ".py",
    ".yaml",
    ".yml",
}


def unused_files(root: Path, cases: list[Case]) -> list[Path]:
    """Image files under `root` (by suffix, or DICOM by content) that no case uses as an image, a label or a
    label object: what layout detection left aside (a label without an image, a picture outside the class
    folders, a series no rule matched). A file inside a folder a case uses (a DICOM series) is used."""
    used_files: set[Path] = set()
    used_folders: set[Path] = set()
    for case in cases:
        for path in (*case.images, *((case.label,) if case.label else ()), *case.extra_labels):
            (used_folders if path.is_dir() else used_files).add(path.resolve())
    unused = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts):
            continue
        if not path.is_file() or path.suffix.lower() in _NOT_IMAGES:
            continue
        resolved = path.resolve()
        if resolved in used_files or any(parent in used_folders for parent in resolved.parents):
            continue
        # sniffed last: a DICOM tree holds many files, nearly all inside the series folders cases use
        if is_image_file(path) or is_dicom_file(path):
            unused.append(path)
    return unused


def account_id(slug: str, why: str, relative: str) -> str:
    """The id of a skipped row for a file that is no case: it holds a `/`, which no item id does, so it never
    collides with one; long paths keep their end and a hash."""
    text = f"{slug}/{why}/{relative}"
    if len(text) <= 200:
        return text
    digest = hashlib.sha256(relative.encode()).hexdigest()[:16]
    return f"{slug}/{why}/{digest}/{relative[-(200 - len(slug) - len(why) - 20) :]}"


def fetch_options(request: dict[str, Any]) -> FetchOptions:
    """What a job's request asks of every source (subject cap, labelled series only, the seed of samples)."""
    options = BuildOptions.model_validate(request.get("options", {}))
    return FetchOptions(
        max_subjects=options.max_subjects_per_dataset,
        labelled_only=options.labelled_series_only,
        seed=options.seed,
    )


def _fetch(
    job_id: str, slug: str, descriptor: dict[str, Any], options: FetchOptions, settings: Settings
) -> FetchedSource:
    job_dir = service.work_dir(settings, job_id)
    source = parse_source(descriptor)
    downloads = job_dir / "downloads" / slug
    with new_client() as client:
        remotes = resolve_source(source, settings, client, options)
        # a file whose exact size is unknown until it arrives (a TCIA series ZIP) counts by its listed estimate
        expected = sum(
            r.size if r.size is not None else getattr(r, "listed_bytes", None) or 0 for r in remotes
        )
        reserve_bytes(job_id, slug, expected, settings)
        downloader = Downloader(settings, client=client, should_stop=lambda: _job_stopped(job_id))
        downloaded = downloader.fetch_into(remotes, downloads)
    size = sum(p.stat().st_size for p in downloaded)
    reserve_bytes(job_id, slug, size, settings)  # files that stated no size count from now on
    limits = UnpackLimits.from_settings(settings)
    target = source_dir(settings, job_id, slug)
    if source.kind == "tcia":
        # TCIA's checksums travel inside each series ZIP: unpacking is where its files are verified
        root = tcia.prepare_series_root(
            remotes, downloads, target, job_dir, limits, cache_dir=downloader.cache_dir
        )
    else:
        root = prepare_source_root(downloaded, downloads, target, job_dir, limits)
    explicit = None if source.layout == "auto" else explicit_layout(source.layout, root, source.labels)
    layout = detect_layout(root, explicit, source.labels or None, source.subject)
    citing = stated_citation(target)  # a BIDS dataset_description.json's authors and DOI
    table: dict[int, str] = {}
    warnings = [f"{slug}: {warning}" for warning in layout.warnings]  # e.g. files whose pairing was ambiguous
    for case in layout.cases:
        for local, name in case.label_table.items():
            if table.setdefault(local, name) != name:
                warnings.append(
                    f"{slug}: label {local} is {table[local]!r} in some cases, {name!r} in others"
                )
    return FetchedSource(
        len(downloaded),
        size,
        layout.kind.value,
        layout.cases,
        table,
        sorted(set(warnings)),
        unused=unused_files(target, layout.cases),
        licences=host_licences(remotes) + stated_licences(target),
        doi=next((r.stated_doi for r in remotes if r.stated_doi), "") or citing.get("doi", ""),
        authors=citing.get("authors", ""),
    )


def host_licences(remotes: list[Any]) -> list[dict[str, str]]:
    """The licences the host states for the source's records (a Zenodo record's), once each, with who says it."""
    stated = {(r.stated_licence, r.stated_by or "the host") for r in remotes if r.stated_licence}
    return [{"licence": licence, "from": by} for licence, by in sorted(stated)]


def reserve_bytes(job_id: str, slug: str, size: int, settings: Settings) -> None:
    """Record that `slug` takes `size` bytes of the job's cap (IMAGINGX_BUNDLE_MAX_BYTES), or raise
    JobCapExceededError. The job row is locked, so sources fetched in parallel reserve one after another:
    each sees what the others reserved before it, not only what they finished."""
    with new_session() as session:
        session.get(BundleJob, job_id, with_for_update=True)
        # PostgreSQL's sum of a bigint is a numeric, which arrives as a Decimal: a whole number of bytes
        others = int(
            session.execute(
                select(func.coalesce(func.sum(BundleSource.bytes), 0)).where(
                    BundleSource.job_id == job_id, BundleSource.slug != slug
                )
            ).scalar_one()
        )
        if others + size > settings.bundle_max_bytes:
            raise JobCapExceededError(
                f"the sources need {others + size:,} bytes, more than this server's cap of "
                f"{settings.bundle_max_bytes:,} per bundle (IMAGINGX_BUNDLE_MAX_BYTES)"
            )
        session.execute(
            update(BundleSource)
            .where(BundleSource.job_id == job_id, BundleSource.slug == slug)
            .values(bytes=size)
        )
        session.commit()


def _job_stopped(job_id: str) -> bool:
    with new_session() as session:
        state = session.scalar(select(BundleJob.state).where(BundleJob.id == job_id))
    return state is None or state in FINISHED


def fetch_source(job_id: str, slug: str, settings: Settings) -> Messages:
    """Download one source, unpack it, detect its layout and record its items. Failure of one source is
    recorded on it (the job goes on with the others); only the job's size cap fails the whole job. A copy of
    this unit already running elsewhere is left to finish (common.claimed)."""
    with claimed(f"fetch:{job_id}:{slug}") as mine:
        return _fetch_source(job_id, slug, settings) if mine else []


def _fetch_source(job_id: str, slug: str, settings: Settings) -> Messages:
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        source = session.get(BundleSource, (job_id, slug))
        if job is None or job.state != JobState.fetching or source is None:
            return []
        if source.state not in (SourceState.pending, SourceState.fetching):
            return service.advance(session, job_id, settings)
        source.state = SourceState.fetching
        descriptor = source.descriptor or {}
        options = fetch_options(job.request)
        session.commit()
    try:
        fetched = _fetch(job_id, slug, descriptor, options, settings)
    except DownloadStopped:
        log.info("bundle %s: source %s stopped downloading, the job has ended", job_id, slug)
        return []
    except JobCapExceededError as error:
        with new_session() as session:
            messages = service.fail_job(session, job_id, str(error))
            _set_source(session, job_id, slug, SourceState.failed, str(error))
            session.commit()
        return messages
    except Exception as error:  # one source's failure, expected (bad archive, HTTP error) or not, is reported
        # the stage for the account: an archive or folder that could not be opened safely, or in which no
        # layout was recognised, is "unpack"; the download or the host failing is "fetch"
        unpacking = isinstance(error, UnsafeSourceError | UnsafeArchiveError | LayoutNotRecognisedError)
        if isinstance(
            error, SourceError | UnsafeSourceError | UnsafeArchiveError | LayoutNotRecognisedError | OSError
        ):
            log.warning("bundle %s: source %s failed: %s", job_id, slug, error)
        else:
            log.exception("bundle %s: source %s failed unexpectedly", job_id, slug)
            error = RuntimeError(f"internal error ({type(error).__name__}): {error}")
        with new_session() as session:
            _set_source(
                session,
                job_id,
                slug,
                SourceState.failed,
                reason_for(error, source_dir(settings, job_id, slug)),
                stage=ItemStage.unpack if unpacking else ItemStage.fetch,
            )
            session.commit()
            return service.advance(session, job_id, settings)
    job_dir = service.work_dir(settings, job_id)
    with new_session() as session:
        job = session.get(BundleJob, job_id, with_for_update=True)
        if job is None or job.state != JobState.fetching:
            return []
        # replace, not add: a rerun after a crash between the insert and this commit finds no half list
        session.execute(delete(BundleItem).where(BundleItem.job_id == job_id, BundleItem.slug == slug))
        seen: set[str] = set()
        root = source_dir(settings, job_id, slug)

        def add_item(item_id: str, state: str, reason: str | None, case: Case) -> None:
            """One item row per id (a repeated id adds nothing); skipped rows are left out at unpacking."""
            if item_id in seen:
                return
            seen.add(item_id)
            session.add(
                BundleItem(
                    job_id=job_id,
                    item_id=item_id,
                    slug=slug,
                    state=state,
                    reason=reason,
                    stage=ItemStage.unpack if reason else None,
                    case=case_to_json(case, job_dir),
                )
            )

        for case in fetched.cases:
            item_id = item_id_for(slug, case.case_id)
            state, reason = ItemState.pending, None
            if item_id in seen:
                # in the account as well as the warnings: the second case of one id is left out
                relative = case.images[0].relative_to(root).as_posix() if case.images else case.case_id
                state, reason = (
                    ItemState.skipped,
                    f"case id {case.case_id} appears twice in the layout; kept the first",
                )
                item_id = account_id(slug, "repeated-id", relative)
                job.warnings = [
                    *job.warnings,
                    f"{slug}: case id {case.case_id} appears twice; kept the first",
                ]
            add_item(item_id, state, reason, case)
        for path in fetched.unused:
            relative = path.relative_to(root).as_posix()
            add_item(
                account_id(slug, "unused", relative),
                ItemState.skipped,
                f"no case of the {fetched.layout} layout uses this file (no image or label to pair it with, or "
                "outside the folders the layout reads)",
                Case(case_id=relative, subject_id="", images=(path,)),
            )
        modalities = session.scalar(select(Dataset.modalities).where(Dataset.slug == slug)) or []
        if len(modalities) > 1 and any(case.modality is None for case in fetched.cases):
            # a case's channel name decides nnU-Net's normalisation: say which one was assumed where the data
            # did not say (a DICOM header does)
            fetched.warnings.append(
                f"{slug}: the catalog lists {', '.join(modalities)}; its cases are packaged as {modalities[0]}"
            )
        if fetched.warnings:
            job.warnings = [*job.warnings, *fetched.warnings]
        source = session.get(BundleSource, (job_id, slug))
        assert source is not None
        source.state = SourceState.fetched
        source.detail = None
        source.files, source.bytes, source.layout = fetched.files, fetched.bytes, fetched.layout
        source.label_table = {str(k): v for k, v in sorted(fetched.label_table.items())}
        source.items_total = len(seen)  # every row added, one per id
        stated: dict[str, Any] = {"licences": fetched.licences} if fetched.licences else {}
        if fetched.doi:
            stated["doi"] = fetched.doi
        if fetched.authors:
            stated["authors"] = fetched.authors
        source.stated = stated or None
        session.commit()
        return service.advance(session, job_id, settings)


def _set_source(
    session: Any, job_id: str, slug: str, state: SourceState, detail: str, stage: str = ItemStage.fetch
) -> None:
    source = session.get(BundleSource, (job_id, slug))
    if source is not None and source.state in (SourceState.pending, SourceState.fetching):
        source.state, source.detail = state, detail
        source.stated = {**(source.stated or {}), "stage": stage}
