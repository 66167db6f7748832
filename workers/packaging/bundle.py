"""`build_bundle`: harmonised cases in, one published bundle folder out.

Order matters for two promises. Atomicity: everything is written into a staging folder that is renamed to the
bundle's name only after SHA256SUMS, so a crash leaves no visible half bundle. Determinism: cases may arrive in
any order and be written by any number of workers, but every table is sorted by item id, every JSON document
is produced from sorted data, gzip and PNG carry no time, so the same inputs give byte-identical files and the
same SHA256SUMS (which is how a resumed job knows it produced the same bundle).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.common.checksums import bundle_files, sha256_file, write_sha256sums
from app.common.jobs import ItemStage
from workers.packaging import images2d, nnunet
from workers.packaging.account import (
    EMPTY_SLICES,
    account_rows,
    empty_slices_note,
    per_source_skipped,
    write_account,
)
from workers.packaging.cases import AlteredItem, HarmonisedCase, LabelTable, SkippedItem, SourceDataset
from workers.packaging.croissant import croissant_document, write_croissant
from workers.packaging.datacard import datacard_markdown, write_datacard
from workers.packaging.labels import write_labels
from workers.packaging.licences import combined_terms, write_licences
from workers.packaging.manifest import ItemRecord, records_table, write_manifest, write_parquet
from workers.packaging.nifti_gz import DEFAULT_LEVEL
from workers.packaging.publish import staged_folder
from workers.packaging.report import report_document, write_report
from workers.packaging.volumes import Parallelism, VolumeJob, VolumeResult, map_bounded, write_volume_job

IMAGEFOLDER_COLUMNS = [
    "file_name",
    "item_id",
    "split",
    "class_label",
    "source_dataset",
    "subject_id",
    "modality",
    "parent_case",
    "mask_path",
    "intensity_offset",
    "licence",
]
# a bundle with multi-label items writes its imagefolder metadata as Parquet (a CSV cell cannot hold a list)
# with this column too: `datasets` loads it as a list of class names per image
MULTI_LABEL_COLUMN = "class_labels"


@dataclass(frozen=True)
class BundleSpec:
    name: str
    description: str
    # 3D modalities in the order their nnU-Net datasets are numbered (dataset_id, dataset_id + 1, ...). Known
    # up front (the plan asked for them) so a case's path is fixed the moment it arrives.
    modalities: tuple[str, ...] = ("CT",)
    dataset_id: int = 500
    # the nnU-Net id of each modality's dataset, in `modalities` order; empty: dataset_id, dataset_id + 1, ...
    dataset_ids: tuple[int, ...] = ()
    url: str = ""
    version: str = "1.0.0"
    date_published: str = ""  # the only time in the bundle, and only if the caller gives one
    slice_axis: int | None = None  # also export 3D cases as 2D slices along this (z, y, x) axis
    skip_empty_slices: bool = True
    parallelism: Parallelism = "threads"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    gzip_level: int = DEFAULT_LEVEL
    compress_threads: int = 1  # per volume, on top of `workers` cases at once; output identical for any value
    report_extra: dict[str, Any] = field(default_factory=dict)  # e.g. the plan's MDFP summary rows
    # how the bundle was made, for the datacard: catalog_version, plan_id, options, software {name: version}
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleResult:
    path: Path
    items: int
    skipped: tuple[SkippedItem, ...]
    sha256sums: dict[str, str]
    counts: dict[str, Any] = field(default_factory=dict)  # report.json's counts
    nnunet_ids: tuple[int, ...] = ()  # the nnU-Net datasets written


def nnunet_ids(spec: BundleSpec) -> dict[str, int]:
    """Channel key (`CT`, or `T1+T2` for a multi-channel set) -> its nnU-Net dataset id."""
    channels = [nnunet.channel_key(tuple(m.split("+"))) for m in spec.modalities]
    if len(set(channels)) != len(channels):
        raise ValueError(f"modalities repeat: {spec.modalities}")
    ids = list(spec.dataset_ids) or [spec.dataset_id + i for i in range(len(channels))]
    if len(ids) != len(channels) or len(set(ids)) != len(ids):
        raise ValueError(f"{len(channels)} modalities need as many distinct dataset ids, got {ids}")
    return dict(zip(channels, ids, strict=True))


def nnunet_folders(spec: BundleSpec) -> dict[str, str]:
    """Channel key -> bundle-relative nnU-Net dataset folder (`nnunet/Dataset501_Name`; with several
    modalities each folder's name ends in its channels)."""
    ids = nnunet_ids(spec)
    if len(ids) == 1:
        ((channel, dataset_id),) = ids.items()
        return {channel: f"{nnunet.NNUNET_DIR}/{nnunet.dataset_folder_name(dataset_id, spec.name)}"}
    return {
        channel: f"{nnunet.NNUNET_DIR}/{nnunet.dataset_folder_name(dataset_id, spec.name + ' ' + channel)}"
        for channel, dataset_id in ids.items()
    }


class _Packager:
    """State of one build: what was written, what was skipped, hashes known without re-reading."""

    def __init__(
        self, root: Path, spec: BundleSpec, sources: Sequence[SourceDataset], labels: LabelTable
    ) -> None:
        self.root = root
        self.spec = spec
        self.sources = {s.slug: s for s in sources}
        self.labels = labels
        self.max_label = max(c.value for c in labels.concepts)
        self.folders = nnunet_folders(spec)
        self.records: list[ItemRecord] = []
        self.skipped: list[SkippedItem] = []
        self.altered: list[AlteredItem] = []
        # per source: where modalities and subjects came from (counts), label names no vocabulary knew
        self.notes: dict[str, dict[str, Any]] = {}
        self.known_hashes: dict[str, str] = {}
        self.seen_ids: set[str] = set()
        self.seen_content: dict[str, str] = {}
        self.nnunet_cases: dict[str, dict[str, tuple[str, str]]] = {f: {} for f in self.folders.values()}
        # any 2D item of a multi-label set: the imagefolder metadata gets a list column
        self.multi_label = False

    def skip(self, case: HarmonisedCase, reason: str, stage: str = ItemStage.package) -> None:
        self.skipped.append(
            SkippedItem(
                source=case.source,
                item=case.source_file or case.case_id,
                reason=reason,
                stage=stage,
                item_id=case.case_id,
            )
        )

    def account_for(self, case: HarmonisedCase) -> None:
        """What harmonising said about an admitted case: its alterations and notes into the account, how its
        modality and subject were found into its source's notes."""
        file = case.source_file or case.case_id
        for kind, detail in case.alterations:
            self.altered.append(AlteredItem(case.source, file, case.case_id, kind, detail))
        if case.modality_disagreement:
            self.altered.append(
                AlteredItem(case.source, file, case.case_id, "modality", case.modality_disagreement)
            )
        note = self.notes.setdefault(
            case.source, {"modality_from": {}, "subject_from": {}, "unknown_labels": []}
        )
        for key, value in (("modality_from", case.modality_from), ("subject_from", case.subject_from)):
            if value:
                note[key][value] = note[key].get(value, 0) + 1
        note["unknown_labels"] = sorted(set(note["unknown_labels"]) | set(case.unknown_labels))

    def admit(self, case: HarmonisedCase) -> bool:
        """Check a case before any byte is written for it; a refusal becomes a report line, not a crash."""
        problem = case.problem()
        stage: str = ItemStage.package
        if problem is None and case.source not in self.sources:
            problem = f"source {case.source!r} is not among the bundle's sources"
        if problem is None and case.case_id in self.seen_ids:
            problem = f"case id {case.case_id} appears twice"
        if problem is None and case.content_hash in self.seen_content:
            problem = f"same voxels as {self.seen_content[case.content_hash]} (duplicate content)"
            stage = ItemStage.deduplicate
        label_range = case.label_range() if problem is None else None
        if label_range is not None:
            low, high = label_range
            if low < 0 or high > self.max_label:
                problem = f"label values {low}..{high} outside the global table 0..{self.max_label}"
        if problem is None and case.dims == 3 and (case.class_label or case.class_labels is not None):
            problem = "a 3D classification case: 3D cases are packaged for segmentation (nnU-Net) only"
        if problem is None and case.dims == 3:
            if nnunet.channel_key(case.channels) not in self.folders:
                problem = (
                    f"channels {nnunet.channel_key(case.channels)} are not one of the bundle's "
                    f"{list(self.spec.modalities)}"
                )
            elif not case.has_label and case.split != "test":
                problem = "no label map: nnU-Net training cases need one"
        if problem is not None:
            self.skip(case, problem, stage)
            return False
        self.seen_ids.add(case.case_id)
        self.seen_content[case.content_hash] = case.case_id
        self.account_for(case)
        return True

    def record(self, case: HarmonisedCase, **paths: Any) -> ItemRecord:
        fields: dict[str, Any] = {
            "item_id": case.case_id,
            "split": case.split,
            "label_path": "",
            "source_dataset": case.source,
            "source_file": case.source_file,
            "source_checksum": case.source_checksum,
            "subject_id": case.subject_id,
            "modality": case.modality,
            "dims": case.dims,
            "spacing": tuple(float(s) for s in case.spacing),
            "shape": case.shape,
            "annotated_labels": tuple(sorted(case.annotated_labels)),
            "licence": self.sources[case.source].licence,
            "content_hash": case.content_hash,
            "class_label": case.class_label or "",
            "class_labels": tuple(case.class_labels or ()),
            "label_sha256": "",
            "parent_case": "",
            "intensity_offset": 0,
        }
        fields.update(paths)
        return ItemRecord(**fields)

    # 3D -------------------------------------------------------------------------------------------------

    def volume_jobs(self, cases: Iterable[HarmonisedCase]) -> Iterator[tuple[HarmonisedCase, VolumeJob]]:
        """3D cases become volume jobs; 2D cases are written on the way (PNG is cheap next to gzip)."""
        for case in cases:
            if not self.admit(case):
                continue
            if case.dims == 2:
                self.write_2d(case)
                continue
            folder = self.folders[nnunet.channel_key(case.channels)]
            image_path, label_path = nnunet.case_paths(folder, case.case_id, case.split)
            extra_paths = nnunet.channel_paths(folder, case.case_id, case.split, 1 + case.extra_count)[1:]
            for relative in (image_path, label_path):
                (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
            yield (
                case,
                VolumeJob(
                    image_path=self.root / image_path,
                    image=case.image,
                    label_path=self.root / label_path if case.has_label else None,
                    label=case.label,
                    prewritten=case.prewritten,
                    extra_paths=tuple(self.root / relative for relative in extra_paths),
                    extra_images=case.extra_channels,
                    spacing=tuple(case.spacing),
                    origin=tuple(case.origin),
                    direction=tuple(case.direction),
                    level=self.spec.gzip_level,
                    compress_threads=self.spec.compress_threads,
                ),
            )

    def finish_volume(self, case: HarmonisedCase, result: VolumeResult) -> None:
        folder = self.folders[nnunet.channel_key(case.channels)]
        image_path, label_path = nnunet.case_paths(folder, case.case_id, case.split)
        self.known_hashes[image_path] = result.image.sha256
        paths: dict[str, Any] = {"image_path": image_path, "image_sha256": result.image.sha256}
        extra_paths = nnunet.channel_paths(folder, case.case_id, case.split, 1 + len(result.extra))[1:]
        for relative, written in zip(extra_paths, result.extra, strict=True):
            self.known_hashes[relative] = written.sha256
        if extra_paths:
            paths["channels"] = ";".join(case.channels)
            paths["extra_channel_paths"] = ";".join(extra_paths)
        if result.label is not None:
            self.known_hashes[label_path] = result.label.sha256
            paths.update(label_path=label_path, label_sha256=result.label.sha256)
        self.records.append(self.record(case, **paths))
        self.nnunet_cases[folder][case.case_id] = (case.split, case.subject_id)
        if self.spec.slice_axis is not None:
            self.write_slices(case, self.spec.slice_axis)

    # 2D -------------------------------------------------------------------------------------------------

    def write_png_item(
        self, case: HarmonisedCase, item_id: str, image: np.ndarray, label: np.ndarray | None, **extra: Any
    ) -> None:
        try:
            png = images2d.write_png(self.root, images2d.image_relative_path(case.split, item_id), image)
        except images2d.NotStorableAsPng as error:
            self.skip(case, f"{item_id}: {error}")
            return
        self.known_hashes[png.relative_path] = png.sha256
        paths: dict[str, Any] = {
            "item_id": item_id,
            "image_path": png.relative_path,
            "image_sha256": png.sha256,
            "intensity_offset": png.intensity_offset,
            **extra,
        }
        if label is not None:
            mask = images2d.write_png(self.root, images2d.mask_relative_path(case.split, item_id), label)
            self.known_hashes[mask.relative_path] = mask.sha256
            paths.update(label_path=mask.relative_path, label_sha256=mask.sha256)
        self.records.append(self.record(case, **paths))

    def write_2d(self, case: HarmonisedCase) -> None:
        image, label = case.arrays()
        self.multi_label = self.multi_label or case.class_labels is not None
        self.write_png_item(case, case.case_id, image, label)

    def write_slices(self, case: HarmonisedCase, axis: int) -> None:
        volume, labels = case.arrays()
        empty = 0
        for index in range(volume.shape[axis]):
            label = None if labels is None else np.take(labels, index, axis=axis)
            if self.spec.skip_empty_slices and label is not None and not label.any():
                empty += 1
                continue
            image = np.take(volume, index, axis=axis)
            spacing = tuple(s for i, s in enumerate(reversed(case.spacing)) if i != axis)[::-1]
            self.write_png_item(
                case,
                f"{case.case_id}_a{axis}s{index:04d}",
                image,
                label,
                dims=2,
                shape=tuple(int(n) for n in image.shape),
                spacing=tuple(float(s) for s in spacing),
                parent_case=case.case_id,
                class_label="",
            )
        if empty:
            # one note per case, not a row per slice: a volume can leave out hundreds
            self.altered.append(
                AlteredItem(
                    case.source,
                    case.source_file or case.case_id,
                    case.case_id,
                    EMPTY_SLICES,
                    empty_slices_note(empty, int(volume.shape[axis]), axis),
                    stage=ItemStage.package,
                )
            )

    def write_imagefolder_metadata(self) -> None:
        rows_2d = sorted((r for r in self.records if r.dims == 2), key=lambda r: r.item_id)
        if not rows_2d:
            return
        by_split: dict[str, list[dict[str, object]]] = {}
        for record in rows_2d:
            split_folder = images2d.SPLIT_FOLDERS[record.split]
            prefix = f"{images2d.IMAGES_DIR}/{split_folder}/"
            by_split.setdefault(split_folder, []).append(
                {
                    "file_name": record.image_path.removeprefix(prefix),
                    "item_id": record.item_id,
                    "split": record.split,
                    "class_label": record.class_label,
                    "source_dataset": record.source_dataset,
                    "subject_id": record.subject_id,
                    "modality": record.modality,
                    "parent_case": record.parent_case,
                    "mask_path": record.label_path,
                    "intensity_offset": record.intensity_offset,
                    "licence": record.licence,
                    MULTI_LABEL_COLUMN: list(record.class_labels),
                }
            )
        # one class list for every split: `datasets` joins splits only when their features are equal
        class_names = images2d.class_names_of(row for rows in by_split.values() for row in rows)
        for split_folder, rows in sorted(by_split.items()):
            folder = self.root / images2d.IMAGES_DIR / split_folder
            images2d.write_metadata_parquet(
                rows,
                [*IMAGEFOLDER_COLUMNS, MULTI_LABEL_COLUMN],
                folder / images2d.METADATA_PARQUET,
                class_names,
            )
        write_parquet(records_table(rows_2d), self.root / images2d.PARQUET_NAME)

    # Bundle-level files ----------------------------------------------------------------------------------

    def write_nnunet_datasets(self) -> None:
        concepts = self.labels.as_nnunet_labels()
        for channel, folder in self.folders.items():
            cases = self.nnunet_cases[folder]
            if not cases:
                continue
            slugs = sorted({r.source_dataset for r in self.records if r.image_path.startswith(folder + "/")})
            parts = [self.sources[s] for s in slugs]
            terms = " ".join(combined_terms(parts).statements())
            document = nnunet.dataset_json(
                name=f"{self.spec.name} ({channel})",
                description=self.spec.description,
                licence="; ".join(f"{p.slug}: {p.licence}" for p in parts) + f". {terms} See LICENSES.md.",
                reference="; ".join(p.url for p in parts),
                channels=tuple(channel.split("+")),
                labels=concepts,
                num_training=sum(1 for split, _ in cases.values() if split != "test"),
                num_test=sum(1 for split, _ in cases.values() if split == "test"),
            )
            nnunet.write_dataset_files(self.root, folder, document, cases)

    def file_sets(self) -> list[tuple[str, str, str]]:
        sets = []
        for folder in self.folders.values():
            for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
                if (self.root / folder / sub).is_dir():
                    sets.append((f"{folder}/{sub}", f"{folder}/{sub}/*.nii.gz", "application/gzip"))
        for top in (images2d.IMAGES_DIR, images2d.MASKS_DIR):
            if (self.root / top).is_dir():
                sets.append((f"{top}-png", f"{top}/*/*.png", "image/png"))
                if any(
                    (self.root / top).glob("*/*.tiff")
                ):  # float slices with fractions (images2d.write_png)
                    sets.append((f"{top}-tiff", f"{top}/*/*.tiff", "image/tiff"))
        return sets


def build_bundle(
    cases: Iterable[HarmonisedCase],
    *,
    sources: Sequence[SourceDataset],
    labels: LabelTable,
    dest: Path,
    spec: BundleSpec,
    skipped: Sequence[SkippedItem] = (),
) -> BundleResult:
    """Package `cases` (any iterable; consumed once, a few cases in memory at a time) into the folder `dest`.

    `skipped` carries what earlier stages left out (sources not fetched, files no case used, unreadable
    files), each with its stage, into the account. Raises before anything is visible if the label table is
    malformed or `dest` already exists.
    """
    labels.validate()
    dest = Path(dest)
    ids = nnunet_ids(spec)
    with staged_folder(dest) as root:
        packager = _Packager(root, spec, sources, labels)
        packager.skipped.extend(skipped)
        for case, result in map_bounded(
            write_volume_job, packager.volume_jobs(cases), spec.parallelism, spec.workers
        ):
            packager.finish_volume(case, result)
        if not packager.records:
            raise ValueError(
                "no case could be packaged: " + "; ".join(s.reason for s in packager.skipped[:5])
            )
        packager.write_nnunet_datasets()
        packager.write_imagefolder_metadata()
        write_manifest(packager.records, root)
        account = account_rows(packager.skipped, packager.altered)
        write_account(account, root)
        write_labels(labels, root)
        write_licences(spec.name, list(sources), root)
        report = report_document(
            bundle_name=spec.name,
            records=packager.records,
            account=account,
            sources=sources,
            notes=packager.notes,
            extra=dict(sorted(spec.report_extra.items())),
        )
        write_report(report, root)
        # From the spec, never from `dest`: the folder name may differ between runs, the bytes must not.
        url = spec.url or "urn:imagingx:bundle:" + re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")
        written = {c: f for c, f in packager.folders.items() if packager.nnunet_cases[f]}
        write_datacard(
            datacard_markdown(
                name=spec.name,
                description=spec.description,
                version=spec.version,
                url=spec.url,
                provenance=spec.provenance,
                records=packager.records,
                sources=sources,
                labels=labels,
                account=account,
                counts=report["counts"],
                skipped_per_source=per_source_skipped(account),
                nnunet_folders=written,
                nnunet_ids={c: ids[c] for c in written},
                source_rows=report["sources"],
            ),
            root,
        )
        # Croissant describes every file written so far; SHA256SUMS then covers croissant.json too.
        small_files = {
            relative: sha256_file(root / relative)
            for relative in bundle_files(root)
            if relative not in packager.known_hashes
        }
        write_croissant(
            croissant_document(
                name=spec.name,
                description=spec.description,
                url=url,
                version=spec.version,
                date_published=spec.date_published,
                sources=sources,
                files=small_files,
                file_sets=packager.file_sets(),
            ),
            root,
        )
        sums = write_sha256sums(root, packager.known_hashes)
    return BundleResult(
        path=dest,
        items=len(packager.records),
        skipped=tuple(packager.skipped),
        sha256sums=sums,
        counts=report["counts"],
        nnunet_ids=tuple(sorted(ids[c] for c in written)),
    )
