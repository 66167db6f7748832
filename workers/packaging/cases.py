"""What the packager is given: harmonised cases, their sources, the global label table, and what was skipped.

Cases arrive already harmonised (workers/imaging/ reads, reorients and unifies labels); the packager only
lays them out, so nothing here depends on how a source was read. Arrays follow SimpleITK's convention, the one
the readers produce: index order (z, y, x) as from `sitk.GetArrayFromImage`, spacing/origin in (x, y, z) order,
direction row-major 3x3, physical space LPS. Label maps hold *global* label values (see `LabelTable`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# Case ids become file names inside nnU-Net folders and PNG names: keep them to a portable alphabet.
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SourceDataset:
    """One catalog dataset that contributed to the bundle, with the terms and citation it comes with."""

    slug: str
    title: str
    licence: str  # SPDX id where one exists (e.g. "CC-BY-4.0"), else the licence's own name
    url: str
    citation_bibtex: str = ""
    licence_url: str = ""
    version: str = ""
    # Per-source outcome for the report: "ok", "partial" (some items skipped) or "failed" (nothing usable).
    status: str = "ok"
    status_detail: str = ""
    # licences the data or its host states itself, each with where it was read ("dataset.json", "LICENSE",
    # "IDC: 12 series"...): carried beside the catalog's `licence`, never merged into it
    stated_licences: tuple[tuple[str, str], ...] = ()
    # what a citation needs where any source states it: the DOI (without a resolver), the year, the authors
    # (BibTeX's `and`-separated list)
    doi: str = ""
    year: str = ""
    authors: str = ""


@dataclass(frozen=True)
class LabelConcept:
    """One row of the global label table: a concept, its integer in every label map, and a code if known."""

    name: str
    value: int
    code_scheme: str = ""  # e.g. "SCT" (SNOMED CT)
    code_value: str = ""
    code_meaning: str = ""


@dataclass(frozen=True)
class LabelTable:
    """The global table (concept -> int, 0 background, consecutive) and each source's local id -> concept map."""

    concepts: tuple[LabelConcept, ...]
    source_maps: dict[str, dict[int, str]] = field(default_factory=dict)

    def validate(self) -> None:
        values = sorted(c.value for c in self.concepts)
        if values != list(range(len(values))):
            raise ValueError(f"label values must be 0..n-1 with no gaps, got {values}")
        by_value = {c.value: c.name for c in self.concepts}
        if by_value.get(0) != "background":
            raise ValueError("label 0 must be 'background'")
        names = [c.name for c in self.concepts]
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        for slug, mapping in self.source_maps.items():
            unknown = sorted(set(mapping.values()) - set(names))
            if unknown:
                raise ValueError(f"source {slug} maps to concepts missing from the table: {unknown}")

    def as_nnunet_labels(self) -> dict[str, int]:
        return {c.name: c.value for c in sorted(self.concepts, key=lambda c: c.value)}


@dataclass(frozen=True)
class VolumeFile:
    """A `.nii.gz` ready before packaging, and its sha256: written by write_nifti_gz with the bundle's settings,
    or a source's own file copied as it is (workers/imaging/passthrough.py, at the source's gzip level)."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class PrewrittenVolumes:
    """A 3D case whose image and label files the harmonising stage already wrote (compressed, or copied when
    already in the bundle's form, on whichever worker harmonised it): the packager links them into place."""

    image: VolumeFile
    label: VolumeFile | None
    shape: tuple[int, ...]  # (z, y, x)
    label_range: tuple[int, int] | None  # smallest and largest label value, for the global-table check
    extra_images: tuple[VolumeFile, ...] = ()  # channels 1.. of a multi-channel case, in order


@dataclass
class HarmonisedCase:
    """One item ready to package: a 3D volume (segmentation) or a 2D image (classification or segmentation).

    A 3D case comes either as arrays (`image`, `label`) or as `prewritten` files with `image` None."""

    case_id: str
    image: np.ndarray | None  # (z, y, x) for 3D, (y, x) or (y, x, 3) for 2D; None when `prewritten`
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    source: str  # SourceDataset.slug
    source_file: str
    source_checksum: str
    subject_id: str
    modality: str  # the channel name nnU-Net sees: "CT" selects its CT normalisation, anything else z-score
    annotated_labels: tuple[
        str, ...
    ]  # concepts annotated in this case; the others are unknown, not background
    content_hash: str  # BLAKE3 of the canonical voxel array (computed upstream, used for deduplication)
    split: Split
    label: np.ndarray | None = None  # global label values, same shape as image (spatial part)
    class_label: str | None = None  # 2D classification target
    # 2D multi-label classification: every class the image is positive for (possibly none); None otherwise
    class_labels: tuple[str, ...] | None = None
    prewritten: PrewrittenVolumes | None = None
    # A multi-channel 3D case (e.g. MR T1, T1c, T2, FLAIR): the name of every channel, `image` being the first
    # and `extra_channels` (or prewritten.extra_images) the others. Empty: one channel named by `modality`.
    channel_names: tuple[str, ...] = ()
    extra_channels: tuple[np.ndarray, ...] = ()
    # What harmonising says about the case, for the bundle's account (all optional): each change beyond the
    # lossless reorientation to RAS as (kind, detail) with kind an app.common.jobs.AlterationKind; where the
    # modality came from ("dicom", "dataset.json", "bids", "catalog") and a disagreement between those; label
    # names no vocabulary knew (kept as written); how a 2D item's subject id was found.
    alterations: tuple[tuple[str, str], ...] = ()
    modality_from: str = ""
    modality_disagreement: str = ""
    unknown_labels: tuple[str, ...] = ()
    subject_from: str = ""

    @property
    def channels(self) -> tuple[str, ...]:
        return self.channel_names or (self.modality,)

    @property
    def extra_count(self) -> int:
        if self.prewritten is not None and self.image is None:
            return len(self.prewritten.extra_images)
        return len(self.extra_channels)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.image is not None:
            return tuple(int(n) for n in self.image.shape)
        assert self.prewritten is not None
        return self.prewritten.shape

    @property
    def has_label(self) -> bool:
        return self.label is not None or (self.prewritten is not None and self.prewritten.label is not None)

    def label_range(self) -> tuple[int, int] | None:
        if self.label is not None:
            return (int(self.label.min()), int(self.label.max())) if self.label.size else None
        return self.prewritten.label_range if self.prewritten is not None else None

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Image and label arrays, read back from the prewritten files if that is how the case came."""
        if self.image is not None:
            return self.image, self.label
        assert self.prewritten is not None
        import SimpleITK as sitk

        image = sitk.GetArrayFromImage(sitk.ReadImage(str(self.prewritten.image.path)))
        label = None
        if self.prewritten.label is not None:
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(self.prewritten.label.path)))
        return image, label

    @property
    def dims(self) -> int:
        # Spacing says it: a (y, x, 3) RGB picture and a 3-slice volume have the same array rank.
        return len(self.spacing)

    def problem(self) -> str | None:
        """Why this case cannot be packaged, or None. A reason goes to the report instead of an exception."""
        if not _CASE_ID.match(self.case_id):
            return f"case id {self.case_id!r} is not a portable file name"
        if len(self.channels) != 1 + self.extra_count:
            return f"{len(self.channels)} channel names for {1 + self.extra_count} channels"
        if self.extra_count and self.dims != 3:
            return "only 3D cases can have several channels"
        if any(extra.shape != self.shape for extra in self.extra_channels):
            return "the channels differ in shape: nnU-Net stacks them voxel by voxel"
        if self.split not in SPLITS:
            return f"unknown split {self.split!r}"
        if self.dims not in (2, 3):
            return f"spacing has {self.dims} entries; expected 2 (2D) or 3 (3D)"
        if self.image is None:
            if self.prewritten is None:
                return "no image: neither arrays nor prewritten files"
            if self.dims != 3 or len(self.prewritten.shape) != 3:
                return "only 3D cases can come as prewritten files"
            return None
        if self.dims == 3 and self.image.ndim != 3:
            return f"3D case with a {self.image.ndim}-dimensional image"
        if self.dims == 2 and not (
            self.image.ndim == 2 or (self.image.ndim == 3 and self.image.shape[2] == 3)
        ):
            return f"2D case with image shape {self.image.shape}; expected (y, x) or (y, x, 3)"
        if self.label is not None:
            spatial = self.image.shape if self.dims == 3 else self.image.shape[:2]
            if self.label.shape != spatial:
                return f"label shape {self.label.shape} differs from image shape {spatial}"
        return None


@dataclass(frozen=True)
class SkippedItem:
    """An item left out of the bundle, with the reason a user can act on.

    `item` is the file relative to its source (or `(whole source)` for a source that could not be fetched);
    `stage` an app.common.jobs.ItemStage value; `item_id` the id the item would have had in the bundle ("" when
    it never got one, e.g. a file no case used)."""

    source: str
    item: str
    reason: str
    stage: str = "package"
    item_id: str = ""


@dataclass(frozen=True)
class AlteredItem:
    """An item packaged after a change beyond the lossless reorientation to RAS (resampled, cast, rescaled,
    relabelled, reoriented: app.common.jobs.AlterationKind), or with a note the account keeps (`kind`
    "modality" for a modality the sources disagree on)."""

    source: str
    item: str  # the file relative to its source
    item_id: str
    kind: str
    detail: str
    stage: str = "harmonise"
