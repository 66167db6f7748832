"""What a harmonised item says about itself beyond its files: its alterations, where its modality came from,
the label names no vocabulary knew and how its subject was found. The keys are the ones packaging reads into
the bundle's report and datacard (`alterations`, `modality_from`, `modality_disagreement`, `unknown_labels`,
`subject_from`), the same whichever way (copied, decoded, general) harmonised the item."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.common.jobs import AlterationKind
from app.common.labels import unknown_names
from workers.imaging.cases import Case
from workers.imaging.harmonise import oblique_degrees, relabelling
from workers.imaging.modality import ModalityFinding
from workers.imaging.nifti import plain_nifti
from workers.packaging.images2d import float_slice_storage

NO_SUBJECT_RULE = "none: one subject per case"


def with_account(
    result: dict[str, Any], case: Case, found: ModalityFinding, alterations: list[dict[str, str]]
) -> dict[str, Any]:
    """`result` (item_result's dict) with the item's account added."""
    names = list(case.label_table.values()) if case.label is not None else []
    names += [case.class_name] if case.class_name else []
    names += list(case.class_names or ())
    channels = list(result.get("channels") or [])
    if channels and all(re.fullmatch(r"channel\d+", name) for name in channels):
        # channels no source named are grouped into nnU-Net datasets by these names: with the modality in them,
        # a CT case and an MR case with two unnamed channels each never share one
        result["channels"] = [f"{found.modality}_{name}" for name in channels]
    result.update(
        alterations=alterations,
        modality_from=found.found_from,
        modality_disagreement=found.disagreement,
        unknown_labels=unknown_names(names),
        subject_from=case.subject_from or NO_SUBJECT_RULE,
    )
    return result


def plain_alterations(
    case: Case, slug: str, unification: Any, direction: tuple[float, ...] | list[float]
) -> list[dict[str, str]]:
    """The alterations of a case harmonised the plain way (workers/pipeline/plain.py), in the general way's
    order: that way neither resamples (it hands mismatched grids to the general way) nor rescales."""
    found: list[dict[str, str]] = []
    if len(direction) == 9 and (oblique := oblique_degrees(tuple(direction))) is not None:
        found.append(
            {
                "kind": AlterationKind.reoriented.value,
                "detail": f"oblique scan ({oblique:.1f} degrees off the patient axes): voxel axes permuted and "
                "flipped to the closest of RAS, its direction kept oblique",
            }
        )
    if case.label is not None:
        label = plain_nifti(case.label)
        if label is not None and label.dtype.kind == "f":
            found.append(
                {
                    "kind": AlterationKind.cast.value,
                    "detail": f"label stored as {label.dtype} with whole values: cast to integers",
                }
            )
        if (relabelled := relabelling(case.label_table, unification.local_to_global[slug])) is not None:
            found.append({"kind": AlterationKind.relabelled.value, "detail": relabelled})
    return found


def slice_alterations(dtype: np.dtype, voxels: Callable[[], np.ndarray]) -> list[dict[str, str]]:
    """How a 3D image's 2D slices will store its voxels, when that is a cast (float voxels with whole
    values go into 16-bit PNGs); nothing for integer voxels, nor for other floats (32-bit float TIFF keeps
    them as they are). `voxels` is called only for a float image."""
    if dtype.kind != "f":
        return []
    detail = float_slice_storage(voxels())
    return [{"kind": AlterationKind.cast.value, "detail": detail}] if detail else []


def prewritten_slice_alterations(case: Case, out: Path, result: dict[str, Any]) -> list[dict[str, str]]:
    """`slice_alterations` of a case the plain way wrote: its dtype from the source's header, its voxels (for
    a float image only) read back from the file written beside `out`."""
    image = plain_nifti(case.images[0]) if case.images else None
    if image is None or not result.get("volumes"):
        return []

    def voxels() -> np.ndarray:
        import SimpleITK as sitk

        written = out.parent / result["volumes"]["image"][0]
        return sitk.GetArrayFromImage(sitk.ReadImage(str(written)))

    return slice_alterations(image.dtype, voxels)
