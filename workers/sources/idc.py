"""`idc` sources: DICOM series of NCI Imaging Data Commons, chosen from its index and fetched from its buckets.

IDC keeps each series under its own prefix of a public bucket (`s3://<aws_bucket>/<crdc_series_uuid>/`), one
object per instance. Resolving a source:

1. picks the series from the idc-index-data Parquet (`idc_index.select`: collection / analysis result,
   `modalities`, the subject sample, label objects only);
2. when the image series that label objects refer to are wanted (`labelled_only`, or an analysis result alone),
   reads those references from idc-index's seg_index / rtstruct_index in IMAGINGX_IDC_INDEX_DIR if it has them,
   else downloads the SEG / RTSTRUCT objects first (through the Downloader and its cache, so the job's download
   finds them there) and reads them with pydicom: SEG `ReferencedSeriesSequence` (and
   `StudiesContainingOtherReferencedInstancesSequence`), RTSTRUCT `ReferencedFrameOfReferenceSequence >
   RTReferencedStudySequence > RTReferencedSeriesSequence`;
3. lists every series' prefix anonymously (ListObjectsV2 at IMAGINGX_IDC_S3_URL, `s3.py`) and checks the count
   of objects against the index's instanceCount.

Each object becomes `<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<object name>` (parts made file-system
safe), with the size the listing states and the MD5 its ETag is. An object with a multipart ETag has no MD5 to
verify it by, so the source is refused, naming such objects.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import httpx
import pyarrow as pa
import pydicom

from app.common.descriptors import IdcSource
from app.core.config import Settings
from workers.sources.base import NO_OPTIONS, FetchOptions, RemoteFile, SourceError
from workers.sources.download import Downloader
from workers.sources.idc_index import (
    Estimate,
    SeriesIndex,
    configured_index,
    estimate,
    indexed_references,
    select,
    size_bytes,
    with_referenced_images,
)
from workers.sources.s3 import AnonymousS3

__all__ = ["Estimate", "estimate", "referenced_series", "resolve", "safe_part"]

LIST_CONCURRENCY = 16  # listings are small and latency-bound: more at once than file downloads
MAX_FAILURES_SHOWN = 5
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_T = TypeVar("_T")
_R = TypeVar("_R")


def safe_part(value: str) -> str:
    """One path component from a DICOM id: kept when it is already portable (UIDs, most PatientIDs), else its
    unsafe runs become `_` and a short hash of the original keeps two ids from meeting (`ZZ RIDER MR8 1` ->
    `ZZ_RIDER_MR8_1-<8 hex>`)."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    if cleaned == value and value:
        return value
    return f"{cleaned or '_'}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def referenced_series(path: Any) -> set[str]:
    """The SeriesInstanceUIDs a SEG or RTSTRUCT file refers to (its header only; pixel data is not read)."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    found: set[str] = set()
    for item in dataset.get("ReferencedSeriesSequence", []):  # SEG: series of the same study
        found.add(str(item.get("SeriesInstanceUID", "")))
    for study in dataset.get("StudiesContainingOtherReferencedInstancesSequence", []):
        for item in study.get("ReferencedSeriesSequence", []):
            found.add(str(item.get("SeriesInstanceUID", "")))
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                found.add(str(item.get("SeriesInstanceUID", "")))
    found.discard("")
    return found


def _all_or_error(work: Callable[[_T], _R], items: list[_T], workers: int, what: str) -> list[_R]:
    """`work` over `items` on a thread pool, in order; SourceError naming the failures when any failed. The
    first item runs alone, so what it learns (a bucket's region) the others reuse instead of each finding out."""
    if not items:
        return []
    results: list[_R] = []
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        head = pool.submit(work, items[0])
        wait([head])
        for future in [head, *(pool.submit(work, item) for item in items[1:])]:
            try:
                results.append(future.result())
            except SourceError as exc:
                failures.append(str(exc))
    if failures:
        shown = "; ".join(failures[:MAX_FAILURES_SHOWN])
        more = (
            f" (and {len(failures) - MAX_FAILURES_SHOWN} more)" if len(failures) > MAX_FAILURES_SHOWN else ""
        )
        raise SourceError(f"{what}: {len(failures)} of {len(items)} series failed: {shown}{more}")
    return results


class _SeriesLister:
    def __init__(self, s3: AnonymousS3) -> None:
        self.s3 = s3

    def files(self, row: dict[str, Any]) -> list[RemoteFile]:
        """The instances of one series (a row of the index) as RemoteFiles, checked against the index."""
        uid, bucket, uuid = row["SeriesInstanceUID"], row["aws_bucket"], row["crdc_series_uuid"]
        if not bucket or not uuid:
            raise SourceError(f"series {uid}: the index names no bucket or prefix for it")
        prefix = f"{uuid}/"
        objects = self.s3.list_objects(bucket, prefix)
        where = f"series {uid} (s3://{bucket}/{prefix})"
        if len(objects) != row["instanceCount"]:
            raise SourceError(
                f"{where}: {len(objects)} objects listed, the index says {row['instanceCount']} instances"
            )
        folder = "/".join(safe_part(row[c]) for c in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"))
        files: list[RemoteFile] = []
        multipart: list[str] = []
        unverifiable: list[str] = []
        names: set[str] = set()
        for item in objects:
            last = item.key.rsplit("/", 1)[-1]
            if not last:
                raise SourceError(f"{where}: object {item.key!r} has no file name")
            name = f"{folder}/{safe_part(last)}"
            if name in names:
                raise SourceError(f"{where}: two objects are named {last!r}")
            names.add(name)
            if item.md5 is None:
                (multipart if item.multipart else unverifiable).append(
                    f"{item.key} (ETag {item.etag or 'none'})"
                )
                continue
            files.append(
                RemoteFile(name=name, url=self.s3.object_url(bucket, item.key), size=item.size, md5=item.md5)
            )
        if multipart:
            raise SourceError(
                f"{where}: {len(multipart)} objects were uploaded in parts, so their ETag is not an MD5 of their "
                f"content and they cannot be verified: {', '.join(multipart[:3])}"
            )
        if unverifiable:
            raise SourceError(
                f"{where}: {len(unverifiable)} objects have an ETag that is not an MD5, so they cannot be "
                f"verified: {', '.join(unverifiable[:3])}"
            )
        return files


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.select(
        [
            "SeriesInstanceUID",
            "aws_bucket",
            "crdc_series_uuid",
            "instanceCount",
            "PatientID",
            "StudyInstanceUID",
        ]
    ).to_pylist()
    return rows


def _downloaded_references(
    labels: list[dict[str, Any]],
    listed: dict[str, list[RemoteFile]],
    settings: Settings,
    client: httpx.Client,
    what: str,
) -> dict[str, set[str]]:
    """Label series -> referenced series, read from the label objects themselves (downloaded into the cache)."""
    downloader = Downloader(settings, client=client)

    def read(row: dict[str, Any]) -> tuple[str, set[str]]:
        found: set[str] = set()
        for remote in listed[row["SeriesInstanceUID"]]:
            path = downloader.fetch(remote)
            # pydicom raises many kinds of error on a damaged file (InvalidDicomError, EOFError, KeyError...)
            try:
                found |= referenced_series(path)
            except Exception as exc:
                raise SourceError(f"{remote.name}: not a readable DICOM file ({exc})") from exc
        return row["SeriesInstanceUID"], found

    return dict(_all_or_error(read, labels, settings.download_concurrency, f"{what}: reading label objects"))


def _within_cap(table: pa.Table, settings: Settings, what: str) -> None:
    """Refuse a selection larger than a whole bundle may be before listing it (nlst alone is ~26 TB: listing its
    592,600 series would take an hour only for the job to fail at the cap)."""
    expected = size_bytes(table)
    if expected > settings.bundle_max_bytes:
        raise SourceError(
            f"{what}: its {table.num_rows:,} series hold {expected:,} bytes (IDC's index), more than this server's "
            f"cap of {settings.bundle_max_bytes:,} per bundle (IMAGINGX_BUNDLE_MAX_BYTES); ask for fewer subjects "
            "or labelled series only"
        )


def resolve(
    source: IdcSource,
    settings: Settings,
    client: httpx.Client,
    options: FetchOptions = NO_OPTIONS,
    index: SeriesIndex | pa.Table | None = None,
) -> list[RemoteFile]:
    """The instances of the series `source` selects. `index`: the series index to select from (default the
    installed idc-index-data; a table in its schema points tests at a loopback bucket)."""
    series_index = SeriesIndex.of(index) if index is not None else configured_index(settings.idc_index_dir)
    selection = select(
        series_index, source.collection_id, source.analysis_result_id, source.modalities, options
    )
    what = selection.what
    lister = _SeriesLister(AnonymousS3(client, settings, settings.idc_s3_url))
    listed: dict[str, list[RemoteFile]] = {}

    def list_all(rows: Iterable[dict[str, Any]]) -> None:
        todo = [row for row in rows if row["SeriesInstanceUID"] not in listed]
        for row, files in zip(todo, _all_or_error(lister.files, todo, LIST_CONCURRENCY, what), strict=True):
            listed[row["SeriesInstanceUID"]] = files

    table = selection.series
    _within_cap(table, settings, what)  # before label objects are downloaded, which a huge selection would be
    if selection.labels.num_rows:
        label_rows = _rows(selection.labels)
        references = indexed_references(
            settings.idc_index_dir, [row["SeriesInstanceUID"] for row in label_rows]
        )
        unknown = [row for row in label_rows if row["SeriesInstanceUID"] not in references]
        if unknown:
            list_all(unknown)
            references |= _downloaded_references(unknown, listed, settings, client, what)
        table = with_referenced_images(series_index, selection, references)
    _within_cap(table, settings, what)
    rows = _rows(table)
    list_all(rows)
    files = [remote for row in rows for remote in listed[row["SeriesInstanceUID"]]]
    if not files:
        raise SourceError(f"{what}: the selected series hold no files")
    return sorted(files, key=lambda remote: remote.name)
