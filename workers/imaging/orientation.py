"""Reorientation to RAS, recording where the image came from.

Convention trap: ITK (and so SimpleITK and DICOM) works in LPS physical space, NIfTI/nibabel in RAS. An image
whose voxel axes run toward Right, Anterior, Superior (nibabel's `aff2axcodes` == ('R', 'A', 'S'), i.e. a
"canonical" NIfTI) has, in ITK, the direction matrix diag(-1, -1, 1). `sitk.DICOMOrient(image, "RAS")` names
the directions the axes *point to* and produces exactly that, so written as NIfTI it is RAS+ canonical.

DICOMOrient only permutes and flips axes (the closest canonical orientation): voxels are never interpolated,
native spacing and raw intensities (int16 HU stays int16) are kept, and an oblique scan stays oblique in its
direction matrix. Resampling is left to optional exports (docs/bundles.md, Harmonising).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# LPS (ITK) <-> RAS (NIfTI): negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
RAS_DIRECTION_ITK = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class OriginalGeometry:
    """The image as read, before reorientation: enough to put a prediction back into the source's space."""

    orientation: str  # nibabel-style axis codes, e.g. "LAS"
    direction: tuple[float, ...]  # ITK/LPS direction cosines, row-major 3x3
    origin: tuple[float, ...]  # LPS, mm
    spacing: tuple[float, ...]
    size: tuple[int, ...]
    affine_ras: tuple[tuple[float, ...], ...]  # 4x4 voxel -> RAS mm, as NIfTI's sform would hold it


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The NIfTI-style 4x4 voxel-index -> RAS-mm affine of a 3D SimpleITK image."""
    return itk_geometry_to_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def itk_geometry_to_affine(
    spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]
) -> np.ndarray:
    """The NIfTI (RAS) affine of an ITK (LPS) geometry: spacing/origin per axis, direction row-major 3x3."""
    direction_matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction_matrix @ np.diag(np.asarray(spacing, dtype=np.float64))
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=np.float64)
    return affine


def axis_codes(image: sitk.Image) -> str:
    """Where each voxel axis points, in RAS letters (nibabel's convention, not ITK's)."""
    return direction_codes(image.GetDirection())


def direction_codes(itk_direction: tuple[float, ...]) -> str:
    """`axis_codes` of a 3D ITK direction (row-major 3x3)."""
    direction = LPS_TO_RAS @ np.array(itk_direction).reshape(3, 3)
    codes = []
    for column in direction.T:
        axis = int(np.argmax(np.abs(column)))
        codes.append(("LR", "PA", "IS")[axis][int(column[axis] > 0)])
    return "".join(codes)


def reorient_to_ras(image: sitk.Image) -> tuple[sitk.Image, OriginalGeometry | None]:
    """A 3D image with voxel axes toward R, A, S (closest canonical), and its original geometry.

    2D images (and anything not 3D) come back untouched with no geometry: a photograph has no patient axes.
    """
    if image.GetDimension() != 3:
        return image, None
    original = OriginalGeometry(
        orientation=axis_codes(image),
        direction=tuple(image.GetDirection()),
        origin=tuple(image.GetOrigin()),
        spacing=tuple(image.GetSpacing()),
        size=tuple(image.GetSize()),
        affine_ras=tuple(tuple(float(v) for v in row) for row in ras_affine(image)),
    )
    if original.orientation == "RAS":
        return image, original
    return sitk.DICOMOrient(image, "RAS"), original


Grid = tuple[
    tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]
]  # size, spacing, origin, direction


def grid_of(image: sitk.Image) -> Grid:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def grids_match(one: Grid, other: Grid) -> bool:
    """The same grid but for header rounding (spacing to 1 um, origin to 10 um, direction cosines to 1e-4):
    within this a label takes its image's geometry as it is; beyond it, it is resampled."""
    return (
        tuple(one[0]) == tuple(other[0])
        and np.allclose(one[1], other[1], atol=1e-3)
        and np.allclose(one[2], other[2], atol=1e-2)
        and np.allclose(one[3], other[3], atol=1e-4)
    )


def resample_label(label: sitk.Image, image: sitk.Image) -> sitk.Image:
    """`label` on `image`'s grid by nearest neighbour only: any other interpolator invents label values
    between classes. Voxels of the image outside the label's extent become background."""
    return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def grid_difference(label: Grid, image: Grid) -> str | None:
    """How a label's grid differs from its image's, for people ("size 64x64x19, the image's 64x64x20"); None
    when they match within header rounding (`grids_match`)."""
    if grids_match(label, image):
        return None

    def numbers(values: tuple[float, ...] | tuple[int, ...]) -> str:
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    parts = []
    for name, index, close in (
        ("size", 0, None),
        ("spacing", 1, 1e-3),
        ("origin", 2, 1e-2),
        ("direction", 3, 1e-4),
    ):
        one, other = label[index], image[index]
        same = tuple(one) == tuple(other) if close is None else np.allclose(one, other, atol=close)
        if not same:
            if name == "direction":
                parts.append("direction differs")
            else:
                parts.append(f"{name} {numbers(tuple(one))}, the image's {numbers(tuple(other))}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Reorientation:
    """What `reorient_to_ras` does to a 3D image, as axis swaps and flips of its (z, y, x) array plus the new
    geometry, so a volume that is already an array need not become an ITK image to be reoriented."""

    permutation: tuple[int, ...]  # output ITK axis w takes input ITK axis permutation[w]
    flips: tuple[bool, ...]  # per output ITK axis: run backwards
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The C-contiguous RAS array of an ITK-ordered (z, y, x) array (the array itself when nothing moves)."""
        # numpy axis a is ITK axis 2 - a
        moved = np.transpose(array, [2 - self.permutation[2 - a] for a in range(3)])
        flipped = tuple(2 - w for w in range(3) if self.flips[w])
        if flipped:
            moved = np.flip(moved, axis=flipped)
        return np.ascontiguousarray(moved)


def ras_reorientation(
    size: tuple[int, ...], spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]
) -> Reorientation | None:
    """The `Reorientation` that `sitk.DICOMOrient(image, "RAS")` performs on an image of this geometry: each
    voxel axis goes to the patient axis it is closest to, pointing toward R, A or S. None when two voxel axes
    are closest to one patient axis (strongly oblique), which only DICOMOrient itself may decide."""
    matrix = np.array(direction, dtype=np.float64).reshape(3, 3)
    ras = LPS_TO_RAS @ matrix
    closest = [int(np.argmax(np.abs(ras[:, axis]))) for axis in range(3)]
    if sorted(closest) != [0, 1, 2]:
        return None
    permutation = tuple(closest.index(w) for w in range(3))
    flips = tuple(bool(ras[w, permutation[w]] < 0) for w in range(3))
    new_origin = np.array(origin, dtype=np.float64)
    for w in range(3):
        if flips[w]:
            axis = permutation[w]
            new_origin += matrix[:, axis] * spacing[axis] * (size[axis] - 1)
    new_direction = np.stack(
        [matrix[:, permutation[w]] * (-1.0 if flips[w] else 1.0) for w in range(3)], axis=1
    )
    return Reorientation(
        permutation=permutation,
        flips=flips,
        spacing=tuple(float(spacing[permutation[w]]) for w in range(3)),
        origin=tuple(float(v) for v in new_origin),
        direction=tuple(float(v) for v in new_direction.reshape(-1)),
    )
