"""The packaging unit: every harmonised item into one bundle (workers/packaging), published atomically, its
checksums and its download archive's recorded; and the clean-up of a finished job's work folder."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from app.bundles import service
from app.bundles.models import BundleItem, BundleJob
from app.catalog.models import Dataset
from app.common.checksums import sha256_file
from app.common.jobs import FINISHED, SLICE_AXES, BuildOptions, ItemState, JobState, SourceState
from app.core.config import Settings
from app.core.db import new_session
from app.sources.citations import bibtex_entry, citation_fields
from workers.imaging.cases import Split
from workers.packaging.manifest import MANIFEST_CSV
from workers.packaging.report import REPORT_JSON
from workers.pipeline.common import (
    Messages,
    case_path,
    claimed,
    log,
    reason_for,
)

# -- packaging ---------------------------------------------------------------------------------------------------


def source_citation(slug: str, dataset: Dataset | None) -> str:
    """The BibTeX entry a source states for itself (an IDC data citation with authors, year, title and DOI);
    empty when it states none, and CITATION.bib then cites the dataset by title and URL."""
    if dataset is None or "author" not in (fields := citation_fields(dataset.source_facts)):
        return ""
    return bibtex_entry(re.sub(r"[^A-Za-z0-9]", "_", slug), fields | {"url": dataset.url or ""})


def _bundle_inputs(session: Any, job: BundleJob, settings: Settings) -> dict[str, Any]:
    from app.common.labels import snomed_code
    from workers.imaging.splits import assign_splits
    from workers.packaging import LabelConcept, LabelTable, SourceDataset

    sources = service.job_sources(session, job.id)
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
    counts = service.item_counts(session, [job.id])
    options = BuildOptions.model_validate(job.request.get("options", {}))
    test_fraction = (
        options.test_fraction if options.test_fraction is not None else settings.bundle_test_fraction
    )
    official: dict[str, Split] = {}
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
                citation_bibtex=source_citation(source.slug, dataset),
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


WHOLE_SOURCE = "(whole source)"  # the item named in the report for a source that could not be fetched
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
            class_label=case.get("class_name"),
            class_labels=tuple(case["class_names"]) if case.get("class_names") is not None else None,
            prewritten=prewritten,
            channel_names=tuple(meta.get("channels") or ()),
        )


def package(job_id: str, settings: Settings) -> Messages:
    """Build and publish the bundle; record its checksums and its archive's. A rerun after a crash either finds the
    published bundle (and only records it) or rebuilds it from the same inputs, byte for byte. A copy of this
    unit already running elsewhere is left to finish (common.claimed): it would find its staging folder
    removed as stale."""
    with claimed(f"package:{job_id}") as mine:
        return _package(job_id, settings) if mine else []


def _package(job_id: str, settings: Settings) -> Messages:
    from app.common.archive import BundleArchive
    from workers.packaging import BundleSpec, SkippedItem, build_bundle
    from workers.packaging.publish import remove_stale_partials

    with new_session() as session:
        job = session.get(BundleJob, job_id)
        if job is None or job.state != JobState.packaging:
            return []
        dest = service.bundle_dir(settings, job)
        inputs = _bundle_inputs(session, job, settings)
        name = job.name
        plan_id = job.plan_id
    options: BuildOptions = inputs["options"]
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
            build_bundle(
                load_harmonised(inputs["items"], lambda item_id: case_path(settings, job_id, item_id)),
                sources=inputs["sources"],
                labels=inputs["labels"],
                dest=dest,
                spec=spec,
                skipped=[SkippedItem(source=s, item=WHOLE_SOURCE, reason=r) for s, r in inputs["unfetched"]],
            )
        except Exception as error:  # e.g. no case left, a full disk: the job fails with the reason
            log.exception("bundle %s: packaging failed", job_id)
            with new_session() as session:
                messages = service.fail_job(session, job_id, f"packaging failed: {reason_for(error)}")
                session.commit()
            return messages
    packaging_skipped = _packaging_skipped(dest, inputs["items"])
    archive = BundleArchive(dest)  # served from the bundle folder; only its size and checksum are recorded
    archive_sha256 = archive.sha256()
    sums_path = dest / "SHA256SUMS"
    files = sum(1 for line in sums_path.read_text().splitlines() if line.strip())
    with new_session() as session:
        job = session.get(BundleJob, job_id, with_for_update=True)
        if job is None or job.state != JobState.packaging:
            return []
        manifest_rows = _manifest_rows(dest)
        job.result = {
            "items": manifest_rows,
            "skipped": session.execute(
                select(func.count()).where(BundleItem.job_id == job_id, BundleItem.state == ItemState.skipped)
            ).scalar_one()
            + len(packaging_skipped),
            "files": files,
            "archive_bytes": archive.size,
            "archive_sha256": archive_sha256,
            "sha256sums_sha256": sha256_file(sums_path),
            "packaging_skipped": packaging_skipped,
        }
        messages = service.finish_job(session, job, JobState.done)
        session.commit()
    return messages


def _packaging_skipped(dest: Path, items: list[HarmonisedItem]) -> list[dict[str, str]]:
    """The items packaging itself left out, with reasons, read from the published report.json: the same list
    whether this run built the bundle or found it built by a run that crashed before recording it."""
    by_file = {(slug, meta["source_file"]): item_id for item_id, slug, _, meta, _ in items}
    report = json.loads((dest / REPORT_JSON).read_text())
    return [
        {
            "item_id": by_file.get((s["source"], s["item"]), s["item"]),
            "source": s["source"],
            "reason": s["reason"],
        }
        for s in report["skipped"]
        if s["item"] != WHOLE_SOURCE
    ]


def _manifest_rows(dest: Path) -> int:
    with (dest / MANIFEST_CSV).open(newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def clean_work(job_id: str, settings: Settings) -> None:
    """Remove a finished job's work folder (the download cache and the published bundle stay)."""
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        if job is not None and job.state not in FINISHED:
            return
    service.remove_work(settings, job_id)
