"""3D volumes as 2D slices, for plans that train 2D models on volumetric sources.

Slices are cut from the RAS-reoriented volume, so "axial" means the same anatomical plane in every source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

Plane = Literal["sagittal", "coronal", "axial"]
# SimpleITK arrays are indexed [z, y, x]; in a RAS image x runs R, y A, z S.
_ARRAY_AXIS: dict[str, int] = {"sagittal": 2, "coronal": 1, "axial": 0}


@dataclass(frozen=True)
class Slice:
    index: int  # position along the cut axis, in voxels of the RAS volume
    image: np.ndarray
    label: np.ndarray | None


def slice_volume(
    image: sitk.Image, label: sitk.Image | None = None, *, plane: Plane = "axial", skip_empty: bool = False
) -> Iterator[Slice]:
    """Every slice along `plane`; with `skip_empty`, only slices whose label has a foreground voxel (many 2D
    segmentation recipes drop them: most slices of an abdominal CT contain no tumour)."""
    if plane not in _ARRAY_AXIS:
        raise ValueError(f"plane must be one of {sorted(_ARRAY_AXIS)}")
    if skip_empty and label is None:
        raise ValueError("skip_empty needs a label")
    axis = _ARRAY_AXIS[plane]
    voxels = sitk.GetArrayViewFromImage(image)
    labels = sitk.GetArrayViewFromImage(label) if label is not None else None
    if labels is not None and labels.shape != voxels.shape[:3]:
        raise ValueError(f"label shape {labels.shape} differs from image shape {voxels.shape[:3]}")
    for index in range(voxels.shape[axis]):
        label_slice = np.take(labels, index, axis=axis) if labels is not None else None
        if skip_empty and label_slice is not None and not label_slice.any():
            continue
        yield Slice(
            index,
            np.take(voxels, index, axis=axis).copy(),
            label_slice.copy() if label_slice is not None else None,
        )
