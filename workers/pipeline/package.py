"""The packaging unit: every harmonised item into one bundle (workers/packaging), published atomically, its
checksums and its download archive's recorded; and the clean-up of a finished job's work folder."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from app.bundles import nnunet_ids, service
from app.bundles.models import BundleItem, BundleJob, BundleSource
from app.catalog.models import Dataset
from app.catalog.service import catalog_version
from app.common.checksums import sha256_file
from app.common.errors import Conflict
from app.common.jobs import FINISHED, SLICE_AXES, BuildOptions, ItemStage, ItemState, JobState, SourceState
from app.core.config import Settings
from app.core.db import new_session
from app.core.urls import urls
from app.mdfp.models import Plan
from app.sources.citations import bibtex_entry, citation_fields
from workers.imaging.cases import Split
from workers.packaging.account import WHOLE_SOURCE
from workers.packaging.manifest import MANIFEST_CSV
from workers.packaging.report import REPORT_JSON
from workers.pipeline.common import (
    Messages,
    case_path,
    case_source_file,
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
    from workers.packaging import LabelConcept, LabelTable, SkippedItem

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
    source_datasets = [source_dataset(source, datasets.get(source.slug)) for source in fetched]
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
        # what earlier stages left out, for the account: sources not fetched, then skipped items
        "skipped": [
            SkippedItem(
                source=s.slug,
                item=WHOLE_SOURCE,
                reason=f"{s.state}: {s.detail or ''}".strip(),
                stage=(s.stated or {}).get("stage") or ItemStage.fetch,
            )
            for s in sources
            if s.state != SourceState.fetched
        ]
        + skipped_items(session, job.id),
    }


def skipped_items(session: Any, job_id: str) -> list[Any]:
    """Every item an earlier stage skipped (fetch, unpack, read, harmonise), with its stage and its file
    relative to its source, for the bundle's account."""
    from workers.packaging import SkippedItem

    rows = session.execute(
        select(
            BundleItem.item_id, BundleItem.slug, BundleItem.stage, BundleItem.reason, BundleItem.case
        ).where(BundleItem.job_id == job_id, BundleItem.state == ItemState.skipped)
    )
    return [
        SkippedItem(
            source=slug,
            item=case_source_file(slug, case) or item_id,
            reason=reason or "",
            # rows from before migration 0008 have no stage: reading was then the only stage that skipped
            stage=stage or ItemStage.read,
            item_id=item_id,
        )
        for item_id, slug, stage, reason, case in rows
    ]


def source_dataset(source: BundleSource, dataset: Dataset | None) -> Any:
    """A fetched source as packaging describes it: the catalog's licence, and what the source and its host
    state themselves (licences with where each was read, DOI, year, authors). The DOI: the descriptor's, else
    the one the host stated while fetching, else the catalog's host facts."""
    from workers.packaging import SourceDataset

    facts = (dataset.source_facts if dataset else None) or {}
    stated: list[tuple[str, str]] = []
    if dataset is not None and dataset.licence and dataset.licence_source:
        stated.append((dataset.licence, dataset.licence_source))
    for licence, series in sorted((facts.get("licences") or {}).items()):
        stated.append((str(licence), f"IDC: {series} series"))
    stated += [
        (str(entry["licence"]), str(entry["from"])) for entry in (source.stated or {}).get("licences", [])
    ]
    descriptor_doi = (source.descriptor or {}).get("doi") or (source.stated or {}).get("doi")
    return SourceDataset(
        slug=source.slug,
        title=source.name,
        licence=(dataset.licence if dataset and dataset.licence else "unknown"),
        url=(dataset.url if dataset and dataset.url else ""),
        citation_bibtex=source_citation(source.slug, dataset),
        stated_licences=tuple(dict.fromkeys(stated)),
        doi=str(descriptor_doi or facts.get("doi") or ""),
        year=str(dataset.year) if dataset is not None and dataset.year else "",
        authors=citation_fields(facts).get("author", "") or str((source.stated or {}).get("authors") or ""),
    )


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
            # what harmonising says about the item (workers/imaging fills these; all optional)
            alterations=tuple(
                (str(entry["kind"]), str(entry.get("detail") or ""))
                for entry in meta.get("alterations") or ()
            ),
            modality_from=str(meta.get("modality_from") or ""),
            modality_disagreement=str(meta.get("modality_disagreement") or ""),
            unknown_labels=tuple(str(name) for name in meta.get("unknown_labels") or ()),
            subject_from=str(meta.get("subject_from") or case.get("subject_from") or ""),
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
    from workers.packaging import BundleSpec, build_bundle
    from workers.packaging.publish import remove_stale_partials

    with new_session() as session:
        job = session.get(BundleJob, job_id, with_for_update=True)
        if job is None or job.state != JobState.packaging:
            return []
        dest = service.bundle_dir(settings, job)
        inputs = _bundle_inputs(session, job, settings)
        name = job.name
        plan_id = job.plan_id
        try:
            dataset_ids = nnunet_ids.packaging_ids(session, job, len(inputs["modalities"]))
        except Conflict as error:
            messages = service.fail_job(session, job_id, f"packaging failed: {error.error}")
            session.commit()
            return messages
        url = job.base_url.rstrip("/") + urls.page_bundle(job.id) if job.base_url else ""
        created = job.created_at.astimezone(UTC).date().isoformat()
        provenance = {
            "catalog_version": catalog_version(session),
            "catalog_version_submitted": job.catalog_version,
            "plan_id": plan_id or "",
            # the catalog the plan's dataset list was made from
            "plan_catalog_version": session.scalar(select(Plan.catalog_version).where(Plan.id == plan_id))
            if plan_id
            else None,
            "options": job.request.get("options", {}),
            "software": software_versions(),
        }
        session.commit()
    options: BuildOptions = inputs["options"]
    if not (dest / "SHA256SUMS").is_file():
        remove_stale_partials(dest)
        spec = BundleSpec(
            name=name,
            description=f"Fused by the Imaging-X Portal from {len(inputs['sources'])} source dataset(s)"
            + (f" of MDFP plan {plan_id}" if plan_id else "")
            + ".",
            modalities=inputs["modalities"],
            dataset_ids=tuple(dataset_ids),
            url=url,
            date_published=created,
            provenance=provenance,
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
                skipped=inputs["skipped"],
            )
        except Exception as error:  # e.g. no case left, a full disk: the job fails with the reason
            log.exception("bundle %s: packaging failed", job_id)
            with new_session() as session:
                messages = service.fail_job(session, job_id, f"packaging failed: {reason_for(error)}")
                session.commit()
            return messages
    earlier = {s.item_id for s in inputs["skipped"] if s.item_id}
    packaging_skipped = _packaging_skipped(dest, earlier)
    counts = json.loads((dest / REPORT_JSON).read_text())["counts"]
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
            # the account's numbers, as report.json and the datacard state them
            "skipped": counts["skipped"],
            "skipped_by_stage": counts["skipped_by_stage"],
            "sources_not_fetched": counts["sources_not_fetched"],
            "altered": counts["altered"],
            "nnunet_ids": list(job.nnunet_ids or []),
            "files": files,
            "archive_bytes": archive.size,
            "archive_sha256": archive_sha256,
            "sha256sums_sha256": sha256_file(sums_path),
            "packaging_skipped": packaging_skipped,
        }
        messages = service.finish_job(session, job, JobState.done)
        session.commit()
    return messages


def _packaging_skipped(dest: Path, earlier: set[str]) -> list[dict[str, str]]:
    """The items packaging itself left out (refused or duplicates), read from the published report.json: the
    same list whether this run built the bundle or found it built by a run that crashed before recording it.
    `earlier`: the ids of items earlier stages skipped (their rows already say so)."""
    report = json.loads((dest / REPORT_JSON).read_text())
    return [
        {
            "item_id": s.get("item_id") or s["item"],
            "source": s["source"],
            "stage": s.get("stage") or ItemStage.package,
            "file": s["item"],
            "reason": s["reason"],
        }
        for s in report["skipped"]
        if s["item"] != WHOLE_SOURCE and s.get("item_id") not in earlier
    ]


def software_versions() -> dict[str, str]:
    """The versions of what wrote the bundle's bytes, for the datacard."""
    from importlib import metadata

    versions = {}
    for name in ("imagingx", "numpy", "SimpleITK", "nibabel", "pydicom", "Pillow", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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
