"""The harmonise unit's ways for 3D cases stored as plain NIfTI (workers/imaging/nifti.py), most of them:
copied as they are when already in the bundle's form, else decoded into arrays and reoriented with numpy,
without the ITK images (and their allocations and copies) that the general way needs for DICOM, 4D or scaled
files. Each returns what `harmonise_to_file` returns, or None to hand the case to the next way; tests compare
every way's result with the general one's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from app.common.labels import UnknownLabelValueError, annotated_concepts, remap_labels
from workers.imaging.cases import Case
from workers.imaging.dedup import array_content_hash
from workers.imaging.errors import UnreadableItemError
from workers.imaging.nifti import PlainNifti, plain_nifti
from workers.imaging.orientation import Grid, Reorientation, direction_codes, grids_match, ras_reorientation
from workers.imaging.passthrough import copy_checked, identity_labels, same_grid, stored_volume
from workers.imaging.readers import read_plain_voxels
from workers.packaging.cases import PrewrittenVolumes, VolumeFile
from workers.packaging.volumes import label_dtype_for, prewrite_volumes, prewritten_path
from workers.pipeline.common import item_result


def copy_stored_case(
    case: Case, slug: str, unification: Any, modality: str, out: Path, source_root: Path
) -> dict[str, Any] | None:
    """`harmonise_to_file`'s result for a 3D case whose files need no change (workers/imaging/passthrough.py:
    RAS NIfTI, unscaled, labels already in the bundle's ids), made by copying its compressed bytes after one
    checked pass; None when any file needs decoding, with nothing left behind."""
    if not case.images:
        return None
    images = [stored_volume(path) for path in case.images]
    label = stored_volume(case.label) if case.label is not None else None
    first = images[0]
    if (
        first is None
        or any(image is None or not same_grid(image, first) for image in images)
        or (case.label is not None and (label is None or not same_grid(label, first)))
    ):
        return None
    folder, name = out.parent, out.stem
    written: list[Path] = []

    def copy(volume: Any, suffix: str, is_label: bool = False) -> Any:
        copied = copy_checked(volume, prewritten_path(folder, name, suffix), is_label)
        if copied is not None:
            written.append(copied.path)
        return copied

    try:
        label_file = None
        if label is not None:
            # the label first: it is small, and it decides whether the big image can be copied at all
            if label.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
                return None
            label_file = copy(label, "label", is_label=True)
            if label_file is None:
                return None
            low, high = label_file.value_range or (0, 0)
            if label.dtype != label_dtype_for(int(high)) or not identity_labels(
                unification.local_to_global[slug], int(high)
            ):
                return None
        image_files = [
            copy(image, "image" if index == 0 else f"image{index}") for index, image in enumerate(images)
        ]
        if any(image_file is None for image_file in image_files):
            return None
    finally:
        if len(written) != len(images) + (label is not None):
            for path in written:
                path.unlink(missing_ok=True)
    image_file = image_files[0]
    annotated = annotated_concepts(case.label_table) if case.label is not None else frozenset()
    volumes = PrewrittenVolumes(
        image=_volume_file(image_file),
        label=_volume_file(label_file) if label_file else None,
        shape=first.shape,
        label_range=(int(low), int(high)) if label_file and label_file.value_range else None,
        extra_images=tuple(_volume_file(f) for f in image_files[1:]),
    )
    return item_result(
        case,
        source_root,
        volumes=volumes,
        channels=len(images),
        geometry=(first.spacing, first.origin, first.direction),
        dims=3,
        content_hash=image_file.content_hash,
        annotations=unification.annotation_status(annotated),
        modality=modality,
        source_checksum=image_file.sha256,  # the copy is the source file, byte for byte
        original_orientation="RAS",
    )


def _volume_file(copied: Any) -> VolumeFile:
    return VolumeFile(path=copied.path, size=copied.size, sha256=copied.sha256)


def decode_plain_case(
    case: Case, slug: str, unification: Any, modality: str, out: Path, source_root: Path
) -> dict[str, Any] | None:
    """`harmonise_to_file`'s result for a 3D case of plain NIfTI files: voxels inflated into arrays, labels
    remapped, reoriented to RAS as `sitk.DICOMOrient` would (workers/imaging/orientation.py), compressed into
    the job folder. None when the general way must decide (a strongly oblique scan, a label on another grid,
    channels reoriented differently)."""
    if not case.images:
        return None
    images = [plain_nifti(path) for path in case.images]
    label = plain_nifti(case.label) if case.label is not None else None
    first = images[0]
    if first is None or any(image is None for image in images) or (case.label is not None and label is None):
        return None
    reorientation = _reorientation(first)
    if reorientation is None:
        return None
    for image in images[1:]:
        assert image is not None
        other = _reorientation(image)
        if other is None or (other.permutation, other.flips) != (
            reorientation.permutation,
            reorientation.flips,
        ):
            return None  # the general way reorients each channel on its own
        if image.size != first.size:
            # nnU-Net stacks channels voxel by voxel: a T2 on another grid than the T1 cannot go in as is
            raise UnreadableItemError(
                case.images[0], "channel_mismatch", f"channels of case {case.case_id} differ in size"
            )
    label_array = None
    if label is not None:
        label_reorientation = _reorientation(label)
        if label_reorientation is None or not grids_match(
            _ras_grid(label, label_reorientation), _ras_grid(first, reorientation)
        ):
            return None  # the general way resamples it onto the image's grid
        try:
            remapped = remap_labels(read_plain_voxels(label), unification.local_to_global[slug])
        except UnknownLabelValueError as error:
            raise UnreadableItemError(label.path, "unknown_label_value", str(error)) from error
        label_array = label_reorientation.apply(remapped)
    source_digest = hashlib.sha256()  # the source file's sha256, for provenance, in the same read
    arrays = [
        reorientation.apply(read_plain_voxels(image, source_digest if index == 0 else None))
        for index, image in enumerate(images)
        if image is not None
    ]
    # compressed here, on whichever worker runs this item, so packaging only links files
    written = prewrite_volumes(
        out.parent,
        out.stem,
        arrays[0],
        label_array,
        reorientation.spacing,
        reorientation.origin,
        reorientation.direction,
        extra_images=arrays[1:],
    )
    annotated = annotated_concepts(case.label_table) if case.label is not None else frozenset()
    return item_result(
        case,
        source_root,
        volumes=written,
        channels=len(images),
        geometry=(reorientation.spacing, reorientation.origin, reorientation.direction),
        dims=3,
        content_hash=array_content_hash(arrays[0], reorientation.spacing),
        annotations=unification.annotation_status(annotated),
        modality=modality,
        source_checksum=source_digest.hexdigest(),
        original_orientation=direction_codes(first.direction),
    )


def _reorientation(volume: PlainNifti) -> Reorientation | None:
    return ras_reorientation(volume.size, volume.spacing, volume.origin, volume.direction)


def _ras_grid(volume: PlainNifti, ras: Reorientation) -> Grid:
    return tuple(volume.size[axis] for axis in ras.permutation), ras.spacing, ras.origin, ras.direction
