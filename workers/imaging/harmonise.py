"""One case from source files to canonical arrays: read, reorient to RAS, hash, unify labels.

This is the per-case step the fusion job runs for every case of every source; it raises
`UnreadableItemError` for anything it cannot use, and the job skips the case and reports the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

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
from workers.imaging.errors import UnreadableItemError
from workers.imaging.orientation import OriginalGeometry, reorient_like, reorient_to_ras
from workers.imaging.readers import read_item, split_channels


@dataclass(frozen=True)
class HarmonisedCase:
    case: Case
    source: str
    channels: list[sitk.Image]  # RAS, native spacing, raw intensities
    label: sitk.Image | None  # RAS, on the first channel's grid, global ids
    original: OriginalGeometry | None
    content_hash: str  # of the first channel: the scan itself, whatever labels or extra channels came with it
    annotations: dict[str, Annotation]


def harmonise_case(case: Case, source: str, labels: LabelUnification) -> HarmonisedCase:
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
    label_image: sitk.Image | None = None
    if case.label is not None:
        # a DICOM SEG/RTSTRUCT is drawn onto the series' grid as read; reorient_like then treats it as any label
        raw = read_dicom_label(case, original) if is_dicom_label(case.label) else read_item(case.label)
        if raw.GetDimension() == 3 and reference.GetDimension() == 3:
            raw = reorient_like(raw, reference)
        elif raw.GetSize() != reference.GetSize():
            raise UnreadableItemError(case.label, "label_mismatch", "label and image sizes differ")
        try:
            remapped = remap_labels(sitk.GetArrayViewFromImage(raw), labels.local_to_global[source])
        except UnknownLabelValueError as error:
            raise UnreadableItemError(case.label, "unknown_label_value", str(error)) from error
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
    )
