"""Two catalog datasets as their real hosts would serve them, on 127.0.0.1: an NCI Imaging Data Commons collection
(a CT series and a DICOM SEG in an S3 bucket, with an idc_index.parquet listing them) and a Zenodo record (a zip
of a CT series and an RTSTRUCT). Both scans come from pydicom's CT5N, the Zenodo one shifted so that the two are
different images; the SEG is made with highdicom and the RTSTRUCT with rt-utils.

Used by the end-to-end browser test and by bench/nnunet_check, which builds the same bundle and runs nnU-Net's
own dataset check on it.

    with served_real_sources(tmp) as served:
        served.env  # IMAGINGX_* settings that point a worker at them
        served.slugs  # ("pancreas-ct", "semi-teethseg"): the catalog's datasets they stand for
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from dicom_fixtures import copy_series, hounsfield, make_rtstruct, make_seg, read_series, tissue_masks
from fixtures_http import LocalHTTPServer
from fixtures_s3 import LocalS3Server
from imaging_fixtures import CT5N

from workers.sources.idc_index import installed_index_path

IDC_SLUG, IDC_COLLECTION = "pancreas-ct", "pancreas_ct"  # the catalog resolves pancreas-ct to this collection
ZENODO_SLUG, ZENODO_RECORD = "semi-teethseg", "7840021"  # ...and semi-teethseg to this Zenodo record
BUCKET = "idc-open-data"
LABEL_NAMES = {1: "Dense tissue", 2: "Soft tissue"}


@dataclass
class ServedRealSources:
    env: dict[str, str]
    slugs: tuple[str, str]
    # per dataset: label value -> voxel count its label object was made from (checks the packaged label maps)
    label_voxels: dict[str, dict[str, int]] = field(default_factory=dict)


def _index_rows(folder: Path, collection_id: str) -> tuple[list[dict[str, object]], dict[str, bytes]]:
    """idc_index rows for every series under `folder` and the objects to serve: {key: bytes}."""
    by_series: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        by_series.setdefault(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID, []).append(
            path
        )
    rows, objects = [], {}
    for series_uid, paths in by_series.items():
        first = pydicom.dcmread(paths[0], stop_before_pixels=True)
        prefix = str(uuid.uuid5(uuid.NAMESPACE_OID, series_uid))
        for path in paths:
            objects[f"{prefix}/{path.name}.dcm"] = path.read_bytes()
        rows.append(
            {
                "collection_id": collection_id,
                "PatientID": first.PatientID,
                "StudyInstanceUID": first.StudyInstanceUID,
                "SeriesInstanceUID": series_uid,
                "Modality": first.Modality,
                "SOPClassUID": first.SOPClassUID,
                "instanceCount": len(paths),
                "series_size_MB": sum(p.stat().st_size for p in paths) / 1e6,
                "license_short_name": "CC BY 4.0",
                "aws_bucket": BUCKET,
                "crdc_series_uuid": prefix,
                "series_aws_url": f"s3://{BUCKET}/{prefix}/*",
            }
        )
    return rows, objects


def _write_index(rows: list[dict[str, object]], folder: Path) -> Path:
    """An idc_index.parquet in the installed index's own schema (columns a row does not give are null)."""
    schema = pq.read_schema(installed_index_path()).remove_metadata()
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "idc_index.parquet")
    return folder


def _shifted(folder: Path) -> None:
    """Roll every slice's pixels by 3 columns: the same anatomy, a different image (content hashes differ)."""
    for path in sorted(folder.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.PixelData = np.ascontiguousarray(np.roll(dataset.pixel_array, 3, axis=1)).tobytes()
        dataset.save_as(path)


def _counts(masks: np.ndarray) -> dict[str, int]:
    return {LABEL_NAMES[value]: int((masks == value).sum()) for value in LABEL_NAMES}


@contextmanager
def served_real_sources(root: Path) -> Iterator[ServedRealSources]:
    # the IDC collection: a CT series and a SEG drawn on it, one patient
    idc = root / "idc"
    copy_series(CT5N, idc / "ct", "idc-ct", patient_id="PANCREAS_0001")
    ct = read_series(idc / "ct")
    idc_masks = tissue_masks(hounsfield(ct))
    make_seg(ct, idc_masks, idc / "seg" / "seg", LABEL_NAMES, name="idc-seg")
    rows, objects = _index_rows(idc, IDC_COLLECTION)
    index_dir = _write_index(rows, root / "idc-index")

    # the Zenodo record: one zip of a (shifted) CT series and an RTSTRUCT drawn on it
    zenodo = root / "zenodo" / "SemiTeeth"
    copy_series(CT5N, zenodo / "scan", "zenodo-ct", patient_id="teeth-01")
    _shifted(zenodo / "scan")
    scan = read_series(zenodo / "scan")
    zenodo_masks = tissue_masks(hounsfield(scan))
    make_rtstruct(
        zenodo / "scan",
        {name: zenodo_masks == value for value, name in LABEL_NAMES.items()},
        zenodo / "rtstruct.dcm",
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(p for p in zenodo.rglob("*") if p.is_file()):
            bundle.write(path, path.relative_to(zenodo.parent).as_posix())
    body = archive.getvalue()
    shutil.rmtree(root / "zenodo")

    with ExitStack() as stack:
        s3 = stack.enter_context(LocalS3Server())
        for key, content in objects.items():
            s3.put(BUCKET, key, content)
        http = stack.enter_context(LocalHTTPServer())
        http.add_file("/files/SemiTeeth.zip", body)
        http.add_json(
            f"/api/records/{ZENODO_RECORD}",
            {
                "id": int(ZENODO_RECORD),
                "files": [
                    {
                        "key": "SemiTeeth.zip",
                        "size": len(body),
                        "checksum": f"md5:{hashlib.md5(body).hexdigest()}",
                        "links": {"self": http.url("/files/SemiTeeth.zip")},
                    }
                ],
            },
        )
        yield ServedRealSources(
            env={
                "IMAGINGX_ALLOW_PRIVATE_SOURCES": "true",
                "IMAGINGX_IDC_S3_URL": s3.base_url,
                "IMAGINGX_IDC_INDEX_DIR": str(index_dir),
                "IMAGINGX_ZENODO_API_URL": http.url("/api"),
            },
            slugs=(IDC_SLUG, ZENODO_SLUG),
            label_voxels={IDC_SLUG: _counts(idc_masks), ZENODO_SLUG: _counts(zenodo_masks)},
        )
