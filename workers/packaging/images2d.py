"""The 2D part: lossless pictures laid out as a Hugging Face `imagefolder` (one folder per split with its own
`metadata.parquet`, whose `file_name` column names the image), so `datasets.load_dataset("imagefolder",
data_dir=...)` loads it with splits, metadata and a real ClassLabel feature, and no code.

Pictures are PNG (8 or 16 bit; signed values shifted, float voxels with whole values stored as integers) or,
for float voxels with fractions, which no PNG keeps, a 32-bit float TIFF of the same name: nothing is dropped
and nothing is rounded. Masks live outside that folder: `imagefolder` takes every image under its root as a
sample. The same rows, with bundle-relative paths, also go to a Parquet table beside it.

The metadata is Parquet, not CSV, because only Parquet carries types: `class_label` is stored as integers with
the class names in the file's `huggingface` schema metadata (which `datasets` reads as a ClassLabel; -1 for
an image without a class, such as a slice of a volume), `class_labels` as a list of them for multi-label items
(MedMNIST's ChestMNIST: several findings per image; empty otherwise).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

IMAGES_DIR = "images2d"
MASKS_DIR = "images2d_masks"
PARQUET_NAME = "images2d_metadata.parquet"
# `datasets` recognises these folder names as its train / validation / test splits.
SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}
# Signed images (CT in HU) are stored shifted into uint16, losslessly; value = stored + intensity_offset.
SIGNED_OFFSET = -32768
_PNG_LEVEL = 3  # PNG is lossless at any level; 3 is most of level 9's size at a fraction of its time
METADATA_PARQUET = "metadata.parquet"


class NotStorableAsPng(ValueError):
    """The image cannot go into PNG without losing information (float intensities)."""


@dataclass(frozen=True)
class PngFile:
    relative_path: (
        str  # from the bundle root; `.tiff` instead of `.png` for float intensities (see write_png)
    )
    sha256: str
    intensity_offset: int


# float voxels with whole values in this range go into a 16-bit PNG (with SIGNED_OFFSET below zero)
_WHOLE_RANGE = (-32768, 65535)


def whole_valued(array: np.ndarray) -> bool:
    """Whether float voxels all hold whole numbers (as MSD ships CT in float32) that 16 bits keep exactly."""
    if array.size == 0:
        return True
    if not np.isfinite(array).all():
        return False
    low, high = float(array.min()), float(array.max())
    return _WHOLE_RANGE[0] <= low and high <= _WHOLE_RANGE[1] and bool(np.array_equal(array, np.round(array)))


def float_slice_storage(volume: np.ndarray) -> str | None:
    """How 2D slices of a float volume are stored, when that is a cast: whole values go into 16-bit PNGs
    (lossless); None for other floats, which go into 32-bit float TIFFs as they are."""
    if not np.issubdtype(volume.dtype, np.floating) or not whole_valued(volume):
        return None
    low, high = (float(volume.min()), float(volume.max())) if volume.size else (0.0, 0.0)
    return (
        f"2D slices: {volume.dtype} voxels all hold whole values ({low:g} to {high:g}), stored as 16-bit "
        "integers in PNG (lossless)"
    )


def png_bytes(array: np.ndarray) -> tuple[bytes, int]:
    """Lossless PNG bytes for a 2D array (or RGB uint8) and the offset to add to stored values. Float voxels
    with whole values are stored as integers (`whole_valued`); other floats raise NotStorableAsPng."""
    offset = 0
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 2:
        if not whole_valued(array):
            raise NotStorableAsPng(
                f"{array.dtype} intensities with fractions cannot be stored losslessly as PNG"
            )
        array = np.round(array).astype(np.int32)
    if array.ndim == 3:
        if array.dtype != np.uint8 or array.shape[2] != 3:
            raise NotStorableAsPng(f"colour images must be uint8 RGB, got {array.dtype} {array.shape}")
        picture = Image.fromarray(array, mode="RGB")
    elif array.dtype == np.uint8 or array.dtype == np.bool_:
        picture = Image.fromarray(array.astype(np.uint8, copy=False))
    elif np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low >= 0 and high <= 0xFFFF:
            stored = array.astype(np.uint16)
        elif low >= -32768 and high <= 32767:
            offset = SIGNED_OFFSET
            stored = (array.astype(np.int32) - offset).astype(np.uint16)
        else:
            raise NotStorableAsPng(f"integer range {low}..{high} does not fit 16 bits")
        picture = Image.fromarray(stored)
    else:
        raise NotStorableAsPng(f"{array.dtype} intensities cannot be stored losslessly as PNG")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue(), offset


def float_tiff_bytes(array: np.ndarray) -> bytes:
    """A 2D float image as a 32-bit float TIFF (PIL's mode "F", which Hugging Face `datasets` and every TIFF
    reader open): float64 voxels are kept only where float32 holds them exactly, else NotStorableAsPng."""
    as32 = array.astype(np.float32)
    if array.dtype != np.float32 and not np.array_equal(as32.astype(array.dtype), array, equal_nan=True):
        raise NotStorableAsPng(f"{array.dtype} intensities do not fit 32-bit float TIFF exactly")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(as32), mode="F").save(
        buffer, format="TIFF", compression="tiff_adobe_deflate"
    )
    return buffer.getvalue()


def write_png(root: Path, relative_path: str, array: np.ndarray) -> PngFile:
    """The 2D image at `relative_path` (a `.png`), losslessly: PNG for integers and whole-valued floats, a
    32-bit float TIFF beside it (the same name, `.tiff`) for float voxels with fractions, which no PNG keeps."""
    try:
        data, offset = png_bytes(array)
    except NotStorableAsPng:
        if not (np.issubdtype(array.dtype, np.floating) and array.ndim == 2):
            raise
        data, offset = float_tiff_bytes(array), 0
        relative_path = str(Path(relative_path).with_suffix(".tiff").as_posix())
    target = root / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return PngFile(relative_path, hashlib.sha256(data).hexdigest(), offset)


def image_relative_path(split: str, item_id: str) -> str:
    return f"{IMAGES_DIR}/{SPLIT_FOLDERS[split]}/{item_id}.png"


def mask_relative_path(split: str, item_id: str) -> str:
    return f"{MASKS_DIR}/{SPLIT_FOLDERS[split]}/{item_id}.png"


def class_names_of(rows: Iterable[dict[str, object]]) -> list[str]:
    """Every class a 2D row names (`class_label`, `class_labels`), sorted: the names of the ClassLabel."""
    names: set[str] = set()
    for row in rows:
        if row.get("class_label"):
            names.add(str(row["class_label"]))
        names.update(str(name) for name in _listed(row.get("class_labels")))
    return sorted(names)


def _listed(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def hugging_face_features(columns: list[str], class_names: list[str]) -> dict[str, object]:
    """The `datasets` features of the metadata columns, as `datasets.Features.to_dict()` writes them:
    `class_label` a ClassLabel over `class_names` (-1: no class), `class_labels` a list of that ClassLabel,
    `intensity_offset` an int32, every other column text. ("Sequence": the name `datasets` 3 and later read.)"""
    class_label = {"names": list(class_names), "_type": "ClassLabel"}
    features: dict[str, object] = {}
    for column in columns:
        if column == "class_label":
            features[column] = class_label
        elif column == "class_labels":
            features[column] = {"feature": class_label, "_type": "Sequence"}
        elif column == "intensity_offset":
            features[column] = {"dtype": "int32", "_type": "Value"}
        else:
            features[column] = {"dtype": "string", "_type": "Value"}
    return features


def write_metadata_parquet(
    rows: list[dict[str, object]], columns: list[str], path: Path, class_names: list[str] | None = None
) -> None:
    """A split's imagefolder metadata, typed for Hugging Face `datasets`: `class_label` is a real ClassLabel
    (integers with the class names in the file's `huggingface` schema metadata, which `datasets` reads; -1
    for an image without a class, e.g. a slice), `class_labels` a list of it (empty for single-label rows),
    `intensity_offset` an integer and every other column text. `class_names` must be the bundle's, the same
    for every split (default: the classes these rows name)."""
    names = class_names if class_names is not None else class_names_of(rows)
    index = {name: position for position, name in enumerate(names)}
    types = {
        "intensity_offset": pa.int32(),
        "class_label": pa.int64(),
        "class_labels": pa.list_(pa.int64()),
    }
    metadata = {"huggingface": json.dumps({"info": {"features": hugging_face_features(columns, names)}})}
    schema = pa.schema([(column, types.get(column, pa.string())) for column in columns], metadata=metadata)

    def cell(column: str, value: object) -> object:
        if column == "class_label":
            return index[str(value)] if value else -1
        if column == "class_labels":
            return [index[str(name)] for name in _listed(value)]
        return value

    table = pa.Table.from_pylist([{c: cell(c, row.get(c)) for c in columns} for row in rows], schema=schema)
    # zstd and no write time, as the manifest (workers/packaging/manifest.py): the same rows, the same bytes
    pq.write_table(table, path, compression="zstd", use_dictionary=True)
