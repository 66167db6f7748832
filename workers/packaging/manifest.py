"""The manifest: one row per packaged item (3D case, 2D image or 2D slice), as Parquet and CSV.

Parquet keeps list columns typed (spacing, shape, annotated labels); CSV flattens them (JSON lists, `;`-joined
labels) for spreadsheets and Croissant's CSV extraction. Rows are sorted by item id and written without any
timestamp, so the same items give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    split: str
    image_path: str  # bundle-relative
    label_path: str  # bundle-relative, "" when the item has no label map
    source_dataset: str
    source_file: str
    source_checksum: str
    subject_id: str
    modality: str
    dims: int
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    annotated_labels: tuple[str, ...]
    licence: str
    content_hash: str
    class_label: str  # 2D classification target, "" otherwise
    image_sha256: str
    label_sha256: str
    parent_case: str  # for a 2D slice, the 3D case it was cut from
    intensity_offset: int  # PNG only: true value = stored value + offset
    # multi-channel 3D cases only: every channel's name and the image paths of channels 1.. (";"-separated;
    # `image_path` is channel 0). Empty for single-channel items.
    channels: str = ""
    extra_channel_paths: str = ""
    # multi-label 2D items only: every class the image is positive for (`class_label` is then ""); empty
    # for every other item
    class_labels: tuple[str, ...] = ()


_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("split", pa.string()),
        ("image_path", pa.string()),
        ("label_path", pa.string()),
        ("source_dataset", pa.string()),
        ("source_file", pa.string()),
        ("source_checksum", pa.string()),
        ("subject_id", pa.string()),
        ("modality", pa.string()),
        ("dims", pa.int8()),
        ("spacing", pa.list_(pa.float64())),
        ("shape", pa.list_(pa.int64())),
        ("annotated_labels", pa.list_(pa.string())),
        ("licence", pa.string()),
        ("content_hash", pa.string()),
        ("class_label", pa.string()),
        ("image_sha256", pa.string()),
        ("label_sha256", pa.string()),
        ("parent_case", pa.string()),
        ("intensity_offset", pa.int32()),
        ("channels", pa.string()),
        ("extra_channel_paths", pa.string()),
        ("class_labels", pa.list_(pa.string())),
    ]
)
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ItemRecord))
if tuple(_SCHEMA.names) != COLUMNS:
    raise RuntimeError("ItemRecord and the Parquet schema must list the same columns")

# What each column holds, axis orders included: written into the datacard, croissant.json's field
# descriptions and docs/bundles.md (tests/test_bundle_account.py checks them against this table and the files).
# The two orders differ on purpose, as the files do: `spacing` follows the image's index axes fastest first
# (NIfTI/ITK i, j, k = x, y, z), `shape` follows the array as numpy, SimpleITK's GetArrayFromImage and
# nibabel's `get_fdata().T` give it, slowest first (z, y, x).
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "item_id": "The item's id in the bundle (unique; nnU-Net case id and PNG file stem)",
    "split": "train, val or test (by subject; a source's official test set stays test)",
    "image_path": "The image file, relative to the bundle root (channel 0 of a multi-channel case)",
    "label_path": "The label map, relative to the bundle root; empty when the item has none",
    "source_dataset": "The catalog slug of the dataset it came from",
    "source_file": "The file it was read from, relative to its source (`file.npz#train_images[12]` for an array "
    "set's element)",
    "source_checksum": "sha256 of the source file (empty for a DICOM series: a folder of files)",
    "subject_id": "`<source>/<subject>`: the patient or subject; splits never separate one subject's items",
    "modality": "The channel name (CT, MR, ...): nnU-Net normalises CT by name and everything else by z-score",
    "dims": "3 for a volume, 2 for a picture or a slice",
    "spacing": "Voxel size in mm in index order x, y[, z] (i fastest, as NIfTI's pixdim and ITK's GetSpacing); "
    "after the reorientation to RAS, x runs towards the patient's Right, y Anterior, z Superior",
    "shape": "Array shape slowest axis first: (z, y, x) for 3D, (y, x) or (y, x, 3) for 2D, as numpy and "
    "SimpleITK's GetArrayFromImage give it; nibabel's `img.shape` is the reverse, (x, y, z)",
    "annotated_labels": "The label names annotated in this item; any other label of labels.json is unknown "
    "here, not background",
    "licence": "The source's licence (catalog; see LICENSES.md for what the source itself states)",
    "content_hash": "BLAKE3 of the canonical voxels: how duplicates were found",
    "class_label": "2D classification target; empty otherwise",
    "image_sha256": "sha256 of the image file as stored in the bundle",
    "label_sha256": "sha256 of the label file as stored in the bundle; empty without one",
    "parent_case": "For a 2D slice, the 3D item it was cut from",
    "intensity_offset": "PNG only: true value = stored value + offset",
    "channels": "Multi-channel 3D cases: every channel's name, `;`-separated; empty otherwise",
    "extra_channel_paths": "Multi-channel 3D cases: channels 1.. image paths, `;`-separated",
    "class_labels": "Multi-label 2D items: every class the image is positive for; empty otherwise",
}
if tuple(COLUMN_DESCRIPTIONS) != COLUMNS:
    raise RuntimeError("every manifest column needs a description, in order")


def records_table(records: list[ItemRecord]) -> pa.Table:
    rows = [asdict(r) for r in sorted(records, key=lambda r: r.item_id)]
    return pa.Table.from_pylist(rows, schema=_SCHEMA)


def write_parquet(table: pa.Table, path: Path) -> None:
    # Statistics and the library's version string are deterministic; no write time is stored in Parquet.
    pq.write_table(table, path, compression="zstd", use_dictionary=True)


def csv_value(value: object) -> str:
    if isinstance(value, tuple | list):
        if all(isinstance(v, str) for v in value):
            return ";".join(value)
        return json.dumps(list(value))
    return str(value)


def write_csv(rows: list[dict[str, object]], columns: list[str], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_value(row[c]) for c in columns])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def write_manifest(records: list[ItemRecord], root: Path) -> None:
    write_parquet(records_table(records), root / MANIFEST_PARQUET)
    rows = [asdict(r) for r in sorted(records, key=lambda r: r.item_id)]
    write_csv(rows, list(COLUMNS), root / MANIFEST_CSV)
