"""The units of a bundle job, each run by one Celery task: fetch one source, harmonise one item, package.

Every unit is idempotent and publishes by rename: it first checks in PostgreSQL whether its work is still to
do, writes its files under temporary names, renames them into place, and only then records itself done. A unit
killed at any point therefore leaves either nothing or a finished file that the rerun finds (or rewrites with
the same bytes), and the job's outcome does not depend on which worker ran what, or how often.

Layout of a job's work folder (`<home>/jobs/<job id>/`, removed when the job ends):
    downloads/<slug>/...   the source's files, hard links into the shared download cache
    sources/<slug>/        the source ready for layout detection (archives unpacked safely)
    cases/<item>.npz       one harmonised item: canonical arrays, uncompressed (packaging compresses)
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select

from app.bundles import service
from app.bundles.models import BundleItem, BundleJob, BundleSource
from app.bundles.schemas import SLICE_AXES, BuildOptions, ItemState, JobState, SourceState
from app.catalog.models import Dataset
from app.core.config import Settings
from app.core.db import new_session
from workers.imaging.cases import Case, Split
from workers.imaging.errors import LayoutNotRecognisedError, UnreadableItemError
from workers.imaging.layout import ExplicitLayout, detect_layout, split_suffix
from workers.packaging.manifest import MANIFEST_CSV
from workers.safety import UnpackLimits, UnsafeArchiveError, UnsafeSourceError, is_archive, unpack_archive
from workers.sources import resolve_source
from workers.sources.base import SourceError
from workers.sources.descriptors import ExplicitLayout as DescriptorLayout
from workers.sources.descriptors import PairByRegex, PairBySuffix, parse_source
from workers.sources.download import Downloader
from workers.sources.net import new_client

log = logging.getLogger("imagingx.jobs")
Messages = list[service.Message]

_PORTABLE = re.compile(r"[^A-Za-z0-9_.-]+")
_VOLUME_EXTENSIONS = r"\.(?:nii\.gz|nii|nrrd|mha|mhd|png|jpe?g|dcm)$"


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
        pairing = ExplicitLayout.__dataclass_fields__["pairing"].default
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
        label_table=dict(labels),
        test_cases=frozenset(test_cases),
    )


def case_to_json(case: Case, job_dir: Path) -> dict[str, Any]:
    def rel(path: Path) -> str:
        return path.resolve().relative_to(job_dir.resolve()).as_posix()

    return {
        "case_id": case.case_id,
        "subject_id": case.subject_id,
        "images": [rel(p) for p in case.images],
        "label": rel(case.label) if case.label is not None else None,
        "label_table": {str(k): v for k, v in case.label_table.items()},
        "split": case.split.value if case.split is not None else None,
        "class_name": case.class_name,
        "channel_names": list(case.channel_names),
    }


def case_from_json(data: dict[str, Any], job_dir: Path) -> Case:
    return Case(
        case_id=data["case_id"],
        subject_id=data["subject_id"],
        images=tuple(job_dir / p for p in data["images"]),
        label=job_dir / data["label"] if data["label"] else None,
        label_table={int(k): v for k, v in data["label_table"].items()},
        split=Split(data["split"]) if data["split"] else None,
        class_name=data["class_name"],
        channel_names=tuple(data.get("channel_names") or ()),
    )


def _prepare_source_root(
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


def _fetch(job_id: str, slug: str, descriptor: dict[str, Any], settings: Settings) -> FetchedSource:
    job_dir = service.work_dir(settings, job_id)
    source = parse_source(descriptor)
    downloads = job_dir / "downloads" / slug
    with new_client() as client:
        remotes = resolve_source(source, settings, client)
        need = sum(r.size or 0 for r in remotes)
        with new_session() as session:
            others = session.scalar(
                select(func.coalesce(func.sum(BundleSource.bytes), 0)).where(
                    BundleSource.job_id == job_id, BundleSource.slug != slug
                )
            )
        if others + need > settings.bundle_max_bytes:
            raise JobCapExceededError(
                f"the sources need {others + need:,} bytes, more than this server's cap of "
                f"{settings.bundle_max_bytes:,} per bundle (IMAGINGX_BUNDLE_MAX_BYTES)"
            )
        downloaded = Downloader(settings, client=client).fetch_into(remotes, downloads)
    size = sum(p.stat().st_size for p in downloaded)
    root = _prepare_source_root(
        downloaded, downloads, job_dir / "sources" / slug, job_dir, UnpackLimits.from_settings(settings)
    )
    explicit = None if source.layout == "auto" else explicit_layout(source.layout, root, source.labels)
    layout = detect_layout(root, explicit, source.labels or None)
    table: dict[int, str] = {}
    warnings = []
    for case in layout.cases:
        for local, name in case.label_table.items():
            if table.setdefault(local, name) != name:
                warnings.append(
                    f"{slug}: label {local} is {table[local]!r} in some cases, {name!r} in others"
                )
    return FetchedSource(len(downloaded), size, layout.kind.value, layout.cases, table, sorted(set(warnings)))


def fetch_source(job_id: str, slug: str, settings: Settings) -> Messages:
    """Download one source, unpack it, detect its layout and record its items. Failure of one source is
    recorded on it (the job goes on with the others); only the job's size cap fails the whole job."""
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        source = session.get(BundleSource, (job_id, slug))
        if job is None or job.state != JobState.fetching or source is None:
            return []
        if source.state not in (SourceState.pending, SourceState.fetching):
            return service.advance(session, job_id, settings)
        source.state = SourceState.fetching
        descriptor = source.descriptor or {}
        session.commit()
    try:
        fetched = _fetch(job_id, slug, descriptor, settings)
    except JobCapExceededError as error:
        with new_session() as session:
            messages = service.fail_job(session, job_id, str(error))
            _set_source(session, job_id, slug, SourceState.failed, str(error))
            session.commit()
        return messages
    except Exception as error:  # one source's failure, expected (bad archive, HTTP error) or not, is reported
        if isinstance(
            error, SourceError | UnsafeSourceError | UnsafeArchiveError | LayoutNotRecognisedError | OSError
        ):
            log.warning("bundle %s: source %s failed: %s", job_id, slug, error)
        else:
            log.exception("bundle %s: source %s failed unexpectedly", job_id, slug)
            error = RuntimeError(f"internal error ({type(error).__name__}): {error}")
        with new_session() as session:
            _set_source(
                session, job_id, slug, SourceState.failed, _reason(error, _source_dir(settings, job_id, slug))
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
        for case in fetched.cases:
            item_id = item_id_for(slug, case.case_id)
            if item_id in seen:
                job.warnings = [
                    *job.warnings,
                    f"{slug}: case id {case.case_id} appears twice; kept the first",
                ]
                continue
            seen.add(item_id)
            session.add(
                BundleItem(
                    job_id=job_id,
                    item_id=item_id,
                    slug=slug,
                    state=ItemState.pending,
                    case=case_to_json(case, job_dir),
                )
            )
        modalities = session.scalar(select(Dataset.modalities).where(Dataset.slug == slug)) or []
        if len(modalities) > 1:
            # a case's channel name decides nnU-Net's normalisation: say which one was assumed
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
        source.items_total = len(seen)
        session.commit()
        return service.advance(session, job_id, settings)


def _set_source(session: Any, job_id: str, slug: str, state: SourceState, detail: str) -> None:
    source = session.get(BundleSource, (job_id, slug))
    if source is not None and source.state in (SourceState.pending, SourceState.fetching):
        source.state, source.detail = state, detail


def _source_dir(settings: Settings, job_id: str, slug: str) -> Path:
    return service.work_dir(settings, job_id) / "sources" / slug


def _reason(error: BaseException, folder: Path | None = None) -> str:
    """The error for people: paths inside the job's work folder are given relative to the source."""
    text = str(error).strip() or type(error).__name__
    if folder is not None:
        text = text.replace(f"{folder}/", "").replace(str(folder), ".")
    return text[:2000]


# -- one item ----------------------------------------------------------------------------------------------------
def _labels_unification(labels: dict[str, Any]) -> Any:
    from workers.imaging.labels import LabelUnification

    return LabelUnification(
        table=dict(labels["table"]),
        local_to_concept={
            s: {int(k): v for k, v in m.items()} for s, m in labels["local_to_concept"].items()
        },
        local_to_global={s: {int(k): v for k, v in m.items()} for s, m in labels["local_to_global"].items()},
    )


def case_path(settings: Settings, job_id: str, item_id: str) -> Path:
    return service.work_dir(settings, job_id) / "cases" / f"{item_id}.npz"


def _save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """np.savez without compression (packaging compresses once), published by rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            np.savez(sink, **arrays)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def harmonise_to_file(
    case: Case, slug: str, unification: Any, modality: str, out: Path, source_root: Path
) -> dict[str, Any]:
    """The work of one item, free of the database (bench/fusion runs it too): read, RAS, relabel and hash
    `case`, save its arrays to `out` (uncompressed .npz, by rename), and return what packaging needs."""
    import SimpleITK as sitk

    from workers.imaging.harmonise import harmonise_case
    from workers.imaging.labels import Annotation
    from workers.packaging.volumes import prewrite_volumes

    harmonised = harmonise_case(case, slug, unification)
    names = channel_names(case, len(harmonised.channels))
    if len(names) > 1 and harmonised.channels[0].GetDimension() != 3:
        raise UnreadableItemError(
            case.images[0], "multi_channel", "several channels are packaged for 3D only"
        )
    image = harmonised.channels[0]
    # views, not copies: the images live until the arrays are on disk
    image_array = sitk.GetArrayViewFromImage(image)
    label_array = sitk.GetArrayViewFromImage(harmonised.label) if harmonised.label is not None else None
    volumes = None
    if image.GetDimension() == 3:
        # compressed here, on whichever worker runs this item, so packaging only links files
        written = prewrite_volumes(
            out.parent,
            out.stem,
            image_array,
            label_array,
            image.GetSpacing(),
            image.GetOrigin(),
            image.GetDirection(),
            extra_images=[sitk.GetArrayViewFromImage(channel) for channel in harmonised.channels[1:]],
        )
        volumes = {
            "image": [written.image.path.name, written.image.size, written.image.sha256],
            "extra": [[f.path.name, f.size, f.sha256] for f in written.extra_images],
            "label": [written.label.path.name, written.label.size, written.label.sha256]
            if written.label
            else None,
            "shape": list(written.shape),
            "label_range": list(written.label_range) if written.label_range else None,
        }
    else:
        arrays = {"image": image_array}
        if label_array is not None:
            arrays["label"] = label_array
        _save_arrays(out, **arrays)
    return {
        "volumes": volumes,
        "channels": list(names) if len(names) > 1 else [],
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
        "dims": image.GetDimension(),
        "content_hash": harmonised.content_hash,
        "annotated": sorted(c for c, a in harmonised.annotations.items() if a == Annotation.ANNOTATED),
        "modality": modality,
        "source_file": case.images[0].relative_to(source_root).as_posix() if case.images else "",
        "source_checksum": _source_checksum(case.images[0]) if case.images else "",
        "original_orientation": harmonised.original.orientation if harmonised.original is not None else None,
    }


def channel_names(case: Case, count: int) -> tuple[str, ...]:
    """A name for each channel: the source's own (MSD's dataset.json), else the part of each file's name after
    the case id (`BraTS_001_t1.nii.gz` -> `t1`), else `channel1`, `channel2`..."""
    if len(case.channel_names) == count:
        return case.channel_names
    if count == 1:
        return ("",)
    if len(case.images) == count:
        names = []
        for path in case.images:
            stem = split_suffix(path)[0]
            rest = stem[len(case.case_id) :] if stem.startswith(case.case_id) else stem
            names.append(rest.strip("_-.") or stem)
        if len(set(names)) == count:
            return tuple(names)
    return tuple(f"channel{index}" for index in range(1, count + 1))


def _harmonise(
    job_id: str, item: BundleItem, labels: dict[str, Any], modality: str, settings: Settings
) -> dict[str, Any]:
    job_dir = service.work_dir(settings, job_id)
    return harmonise_to_file(
        case_from_json(item.case, job_dir),
        item.slug,
        _labels_unification(labels),
        modality,
        case_path(settings, job_id, item.item_id),
        job_dir / "sources" / item.slug,
    )


def _source_checksum(path: Path) -> str:
    if path.is_dir():  # a DICOM series: its files, in name order
        return ""
    return service.file_sha256(path)


def harmonise_item(job_id: str, item_id: str, settings: Settings) -> Messages:
    """Read, reorient and relabel one item into `cases/<item>.npz`; an unreadable item is skipped with its
    reason and the job goes on."""
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        item = session.get(BundleItem, (job_id, item_id))
        if job is None or job.state != JobState.harmonising or item is None:
            return []
        if item.state != ItemState.pending:
            return service.advance(session, job_id, settings)
        dataset_modalities = session.scalar(select(Dataset.modalities).where(Dataset.slug == item.slug)) or []
        labels = job.labels or {}
        session.expunge(item)
    modality = dataset_modalities[0] if dataset_modalities else "image"
    try:
        outcome: dict[str, Any] = {
            "state": ItemState.done,
            "harmonised": _harmonise(job_id, item, labels, modality, settings),
        }
    except UnreadableItemError as error:
        outcome = {
            "state": ItemState.skipped,
            "reason": _reason(error, _source_dir(settings, job_id, item.slug)),
        }
    except Exception as error:
        # SimpleITK raises RuntimeError for files it cannot parse, numpy ValueError for odd shapes; whatever
        # one item does, the job goes on without it and says why
        if not isinstance(error, OSError | RuntimeError | ValueError | MemoryError):
            log.exception("bundle %s: item %s failed unexpectedly", job_id, item_id)
        reason = _reason(error, _source_dir(settings, job_id, item.slug))
        outcome = {"state": ItemState.skipped, "reason": f"could not be read: {reason}"}
    with new_session() as session:
        row = session.get(BundleItem, (job_id, item_id), with_for_update=True)
        if row is not None and row.state == ItemState.pending:
            row.state = outcome["state"]
            row.reason = outcome.get("reason")
            row.harmonised = outcome.get("harmonised")
            session.commit()
        return service.advance(session, job_id, settings)


# -- packaging ---------------------------------------------------------------------------------------------------
def _bundle_inputs(session: Any, job: BundleJob, settings: Settings) -> dict[str, Any]:
    from workers.imaging.labels import snomed_code
    from workers.imaging.splits import assign_splits
    from workers.packaging import LabelConcept, LabelTable, SourceDataset

    sources = service._sources(session, job.id)
    datasets = {
        d.slug: d for d in session.scalars(select(Dataset).where(Dataset.slug.in_([s.slug for s in sources])))
    }
    items = list(
        session.scalars(
            select(BundleItem).where(BundleItem.job_id == job.id, BundleItem.state == ItemState.done)
        )
    )
    # the order of the request decides which copy of a duplicate is kept: the first source listed wins
    position = {s.slug: s.position for s in sources}
    items.sort(key=lambda i: (position.get(i.slug, len(position)), i.item_id))
    counts = service._item_counts(session, [job.id])
    options = BuildOptions.model_validate(job.request.get("options", {}))
    test_fraction = (
        options.test_fraction if options.test_fraction is not None else settings.bundle_test_fraction
    )
    official = {}
    for item in items:
        split = item.case.get("split")
        subject = f"{item.slug}/{item.case['subject_id']}"
        if split and official.get(subject) != Split.TEST:
            official[subject] = Split(split)
    splits = assign_splits(
        {f"{i.slug}/{i.case['subject_id']}" for i in items},
        seed=options.seed,
        test_fraction=test_fraction,
        val_fraction=options.val_fraction,
        official=official,
    )
    fetched = [s for s in sources if s.state == SourceState.fetched]
    source_datasets = []
    for source in fetched:
        dataset = datasets.get(source.slug)
        skipped = counts.get((job.id, source.slug, ItemState.skipped), 0)
        source_datasets.append(
            SourceDataset(
                slug=source.slug,
                title=source.name,
                licence=(dataset.licence if dataset and dataset.licence else "unknown"),
                url=(dataset.url if dataset and dataset.url else ""),
                citation_bibtex="",
                status="partial" if skipped else "ok",
                status_detail=f"{skipped} item(s) skipped" if skipped else "",
            )
        )
    table = (job.labels or {}).get("table", {"background": 0})
    concepts = []
    for name, value in sorted(table.items(), key=lambda kv: kv[1]):
        code = snomed_code(name) if name != "background" else None
        concepts.append(
            LabelConcept(
                name=name,
                value=int(value),
                code_scheme="SCT" if code else "",
                code_value=code[0] if code else "",
                code_meaning=code[1] if code else "",
            )
        )
    label_table = LabelTable(
        concepts=tuple(concepts),
        source_maps={
            s: {int(k): v for k, v in m.items()}
            for s, m in (job.labels or {}).get("local_to_concept", {}).items()
            if s in {f.slug for f in fetched}
        },
    )
    # one nnU-Net dataset per set of channels: a single modality ("CT"), or a multi-channel set ("T1+T2")
    modalities = sorted(
        {
            "+".join(i.harmonised.get("channels") or [i.harmonised["modality"]])
            for i in items
            if i.harmonised["dims"] == 3
        }
    )
    return {
        "items": [
            (i.item_id, i.slug, dict(i.case), dict(i.harmonised), splits[f"{i.slug}/{i.case['subject_id']}"])
            for i in items
        ],
        "sources": source_datasets,
        "labels": label_table,
        "modalities": tuple(modalities) or ("CT",),
        "options": options,
        "unfetched": [
            (s.slug, f"{s.state}: {s.detail or ''}".strip())
            for s in sources
            if s.state != SourceState.fetched
        ],
    }


def _volume_file(folder: Path, entry: list[Any]) -> Any:
    from workers.packaging.cases import VolumeFile

    name, size, sha256 = entry
    return VolumeFile(path=folder / name, size=int(size), sha256=sha256)


HarmonisedItem = tuple[str, str, dict[str, Any], dict[str, Any], Split]  # item id, slug, case, result, split


def load_harmonised(items: list[HarmonisedItem], path_of: Callable[[str], Path]) -> Iterator[Any]:
    """Packaging's input, one case at a time: each item's arrays (from `path_of(item_id)`) and metadata."""
    from workers.packaging import HarmonisedCase
    from workers.packaging.cases import PrewrittenVolumes

    for item_id, slug, case, meta, split in items:
        image, label, prewritten = None, None, None
        if meta.get("volumes"):
            folder, volumes = path_of(item_id).parent, meta["volumes"]
            prewritten = PrewrittenVolumes(
                image=_volume_file(folder, volumes["image"]),
                label=_volume_file(folder, volumes["label"]) if volumes["label"] else None,
                shape=tuple(volumes["shape"]),
                label_range=tuple(volumes["label_range"]) if volumes["label_range"] else None,
                extra_images=tuple(_volume_file(folder, entry) for entry in volumes.get("extra", [])),
            )
        else:
            with np.load(path_of(item_id)) as arrays:
                image = arrays["image"]
                label = arrays["label"] if "label" in arrays.files else None
        dims = int(meta["dims"])
        yield HarmonisedCase(
            case_id=item_id,
            image=image,
            spacing=tuple(meta["spacing"]),
            origin=tuple(meta["origin"]),
            direction=tuple(meta["direction"]),
            source=slug,
            source_file=meta["source_file"],
            source_checksum=meta["source_checksum"],
            subject_id=f"{slug}/{case['subject_id']}",
            modality=meta["modality"],
            annotated_labels=tuple(meta["annotated"]),
            content_hash=meta["content_hash"],
            split=split.value,
            label=label,
            class_label=case.get("class_name") if dims == 2 else None,
            prewritten=prewritten,
            channel_names=tuple(meta.get("channels") or ()),
        )


def package(job_id: str, settings: Settings) -> Messages:
    """Build and publish the bundle and its archive; record checksums. A rerun after a crash either finds the
    published bundle (and only records it) or rebuilds it from the same inputs, byte for byte."""
    from workers.packaging import BundleSpec, SkippedItem, build_bundle
    from workers.packaging.archive import write_bundle_tar
    from workers.packaging.publish import remove_stale_partials

    with new_session() as session:
        job = session.get(BundleJob, job_id)
        if job is None or job.state != JobState.packaging:
            return []
        dest = service.bundle_dir(settings, job)
        archive = service.archive_path(settings, job)
        inputs = _bundle_inputs(session, job, settings)
        name = job.name
        plan_id = job.plan_id
    options: BuildOptions = inputs["options"]
    packaging_skipped: list[dict[str, str]] = []
    if not (dest / "SHA256SUMS").is_file():
        remove_stale_partials(dest)
        spec = BundleSpec(
            name=name,
            description=f"Fused by the Imaging-X Portal from {len(inputs['sources'])} source dataset(s)"
            + (f" of MDFP plan {plan_id}" if plan_id else "")
            + ".",
            modalities=inputs["modalities"],
            slice_axis=SLICE_AXES[options.slices_2d] if options.slices_2d else None,
            skip_empty_slices=options.skip_empty_slices,
            workers=max(1, min(os.cpu_count() or 1, 4)),
            report_extra={
                "plan_id": plan_id or "",
                "unfetched_sources": [list(u) for u in inputs["unfetched"]],
            },
        )
        try:
            result = build_bundle(
                load_harmonised(inputs["items"], lambda item_id: case_path(settings, job_id, item_id)),
                sources=inputs["sources"],
                labels=inputs["labels"],
                dest=dest,
                spec=spec,
                skipped=[
                    SkippedItem(source=s, item="(whole source)", reason=r) for s, r in inputs["unfetched"]
                ],
            )
        except Exception as error:  # e.g. no case left, a full disk: the job fails with the reason
            log.exception("bundle %s: packaging failed", job_id)
            with new_session() as session:
                messages = service.fail_job(session, job_id, f"packaging failed: {_reason(error)}")
                session.commit()
            return messages
        by_file = {(slug, meta["source_file"]): item_id for item_id, slug, _, meta, _ in inputs["items"]}
        packaging_skipped = [
            {"item_id": by_file.get((s.source, s.item), s.item), "source": s.source, "reason": s.reason}
            for s in result.skipped
            if s.item != "(whole source)"
        ]
    if not archive.is_file():
        write_bundle_tar(dest, archive)
    sums_path = dest / "SHA256SUMS"
    files = sum(1 for line in sums_path.read_text().splitlines() if line.strip())
    with new_session() as session:
        job = session.get(BundleJob, job_id, with_for_update=True)
        if job is None or job.state != JobState.packaging:
            return []
        manifest_rows = _manifest_rows(dest)
        job.result = {
            "items": manifest_rows,
            "skipped": session.scalar(
                select(func.count()).where(BundleItem.job_id == job_id, BundleItem.state == ItemState.skipped)
            )
            + len(packaging_skipped),
            "files": files,
            "archive_bytes": archive.stat().st_size,
            "archive_sha256": service.file_sha256(archive),
            "sha256sums_sha256": service.file_sha256(sums_path),
            "packaging_skipped": packaging_skipped,
        }
        job.state = JobState.done
        job.finished_at = service._now()
        messages = [
            service.Message("workers.tasks.clean_bundle_work", (job_id,)),
            *service.queued_job_messages(session),
        ]
        session.commit()
    return messages


def _manifest_rows(dest: Path) -> int:
    with (dest / MANIFEST_CSV).open(newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def clean_work(job_id: str, settings: Settings) -> None:
    """Remove a finished job's work folder (the download cache and the published bundle stay)."""
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        if job is not None and job.state not in (JobState.done, JobState.failed, JobState.cancelled):
            return
    service.remove_work(settings, job_id)
