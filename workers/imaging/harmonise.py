"""One case from source files to canonical arrays: read, reorient to RAS, hash, unify labels.

This is the per-case step the fusion job runs for every case of every source; it raises
`UnreadableItemError` for anything it cannot use, and the job skips the case and reports the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from app.common.jobs import AlterationKind
from app.common.labels import (
    Annotation,
    LabelUnification,
    UnknownLabelValueError,
    annotated_concepts,
    remap_labels,
)
from workers.imaging.cases import Case
from workers.imaging.dedup import content_hash
from workers.imaging.dicom_labels import is_dicom_label, read_dicom_label
from workers.imaging.errors import LabelGridMismatchError, UnreadableItemError
from workers.imaging.orientation import (
    OriginalGeometry,
    grid_difference,
    grid_of,
    reorient_to_ras,
    resample_label,
)
from workers.imaging.readers import read_item, split_channels


@dataclass(frozen=True)
class Alteration:
    """How harmonising changed an item beyond the lossless reorientation to RAS (app/common/jobs.py's kinds)."""

    kind: AlterationKind
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "detail": self.detail}


@dataclass(frozen=True)
class HarmonisedCase:
    case: Case
    source: str
    channels: list[sitk.Image]  # RAS, native spacing, raw intensities
    label: sitk.Image | None  # RAS, on the first channel's grid, global ids
    original: OriginalGeometry | None
    content_hash: str  # of the first channel: the scan itself, whatever labels or extra channels came with it
    annotations: dict[str, Annotation]
    alterations: tuple[Alteration, ...] = ()


def harmonise_case(
    case: Case, source: str, labels: LabelUnification, *, resample_mismatched_labels: bool = False
) -> HarmonisedCase:
    """Read, reorient to RAS and relabel one case. A label on another grid than its image is refused
    (`LabelGridMismatchError`) unless `resample_mismatched_labels`; then it is resampled by nearest neighbour
    and the case records it, as it records every other change (`alterations`)."""
    channels: list[sitk.Image] = []
    for path in case.images:
        channels.extend(split_channels(read_item(path, case.series_uid, member=case.member)))
    oriented = [reorient_to_ras(channel) for channel in channels]
    channels = [image for image, _ in oriented]
    original = oriented[0][1]
    reference = channels[0]
    for channel in channels[1:]:
        if channel.GetSize() != reference.GetSize():
            # nnU-Net stacks channels voxel by voxel: a T2 on another grid than the T1 cannot go in as is.
            raise UnreadableItemError(
                case.images[0], "channel_mismatch", f"channels of case {case.case_id} differ in size"
            )
    alterations: list[Alteration] = []
    if original is not None and (oblique := oblique_degrees(original.direction)) is not None:
        alterations.append(
            Alteration(
                AlterationKind.reoriented,
                f"oblique scan ({oblique:.1f} degrees off the patient axes): voxel axes permuted and flipped to "
                "the closest of RAS, its direction kept oblique",
            )
        )
    label_image: sitk.Image | None = None
    if case.label is not None:
        # a DICOM SEG/RTSTRUCT is drawn onto the series' grid as read; then it is treated as any label
        raw = read_dicom_label(case, original) if is_dicom_label(case.label) else read_item(case.label)
        raw, resampled = _on_image_grid(case, raw, reference, resample_mismatched_labels)
        if resampled is not None:
            alterations.append(Alteration(AlterationKind.resampled, resampled))
        voxels = sitk.GetArrayViewFromImage(raw)
        if np.issubdtype(voxels.dtype, np.floating):
            alterations.append(
                Alteration(
                    AlterationKind.cast, f"label stored as {voxels.dtype} with whole values: cast to integers"
                )
            )
        try:
            remapped = remap_labels(voxels, labels.local_to_global[source])
        except UnknownLabelValueError as error:
            raise UnreadableItemError(case.label, "unknown_label_value", str(error)) from error
        if (relabelled := relabelling(case.label_table, labels.local_to_global[source])) is not None:
            alterations.append(Alteration(AlterationKind.relabelled, relabelled))
        label_image = sitk.GetImageFromArray(np.ascontiguousarray(remapped))
        label_image.CopyInformation(raw)
    annotated = annotated_concepts(case.label_table) if case.label is not None else frozenset()
    return HarmonisedCase(
        case=case,
        source=source,
        channels=channels,
        label=label_image,
        original=original,
        content_hash=content_hash(reference),
        annotations=labels.annotation_status(annotated),
        alterations=tuple(alterations),
    )


def _on_image_grid(
    case: Case, label: sitk.Image, image: sitk.Image, resample: bool
) -> tuple[sitk.Image, str | None]:
    """The label on its image's grid, and what resampling it took (None when none did)."""
    assert case.label is not None
    if label.GetDimension() == 3 and image.GetDimension() == 3:
        label, _ = reorient_to_ras(label)
    elif label.GetDimension() != image.GetDimension():
        raise LabelGridMismatchError(
            case.label, f"the label is {label.GetDimension()}D, its image {image.GetDimension()}D"
        )
    else:
        # 2D pictures have no patient geometry: a mask of another size than its picture covers the same view
        if label.GetSize() == image.GetSize():
            label.CopyInformation(image)
            return label, None
        label = _stretched_over(label, image)
    difference = grid_difference(grid_of(label), grid_of(image))
    if difference is None:
        label.CopyInformation(image)
        return label, None
    if not resample:
        raise LabelGridMismatchError(
            case.label,
            f"label grid differs from its image's ({difference}); refused (a request with "
            "resample_mismatched_labels resamples it by nearest neighbour)",
        )
    return resample_label(
        label, image
    ), f"label resampled onto its image's grid by nearest neighbour ({difference})"


def _stretched_over(label: sitk.Image, image: sitk.Image) -> sitk.Image:
    """A 2D mask given the spacing that spreads it over its picture's extent, so resampling scales it."""
    stretched = sitk.Image(label)
    stretched.SetOrigin(image.GetOrigin())
    stretched.SetDirection(image.GetDirection())
    stretched.SetSpacing(
        [
            size * spacing / own
            for size, spacing, own in zip(image.GetSize(), image.GetSpacing(), label.GetSize(), strict=True)
        ]
    )
    return stretched


def oblique_degrees(direction: tuple[float, ...]) -> float | None:
    """How far (degrees) the most oblique voxel axis lies from the patient axis it is closest to, or None when
    every axis lies on one (within header rounding)."""
    matrix = np.array(direction, dtype=np.float64).reshape(3, 3)
    largest = np.abs(matrix).max(axis=0)
    if np.all(largest > 1 - 1e-4):
        return None
    return float(np.degrees(np.arccos(np.clip(largest.min(), -1.0, 1.0))))


def relabelling(table: dict[int, str], local_to_global: dict[int, int]) -> str | None:
    """The label values a case's source uses that the bundle's table numbers differently, or that several of
    its names share ("1 -> 3, 2 -> 3"); None when every value keeps its number."""
    moved = [
        f"{local} ({table.get(local, '?')}) -> {global_id}"
        for local, global_id in sorted(local_to_global.items())
        if local != global_id
    ]
    if not moved:
        return None
    return "label values renumbered to the bundle's label table: " + ", ".join(moved)
