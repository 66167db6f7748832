"""Which DICOM series an `idc` source means, read from IDC's series index (the idc-index-data wheel's Parquet).

The index (`idc_index.parquet`) has one row per series: ids, Modality, SOP class, instance count, size, bucket.
Only the columns below are read, streamed in batches with the source's filter applied to each; the file is one
row group, so a selection costs about the same for any collection: ~0.3 s and ~150 MB while reading for lidc_idri
(15,116 series); nlst (592,600 series) takes ~0.6 s and its rows take ~400 MB more.

What a descriptor selects:

- `collection_id` alone: every series IDC lists under the collection, the analysis results published on it
  included (as idc-index and the catalog's figures count a collection);
- `collection_id` and `analysis_result_id`: the collection's own series plus that result's, no other result's;
- `analysis_result_id` alone: the result's series, and the image series its segmentations refer to (found
  wherever they are in IDC), since label objects alone make no training case;
- `modalities`: only series with one of these DICOM Modality values (referenced image series too).

Subjects are (collection_id, PatientID) pairs: 89 PatientIDs recur in several collections. `max_subjects` keeps
the subjects whose sha256(seed, collection_id, PatientID) is smallest, so the same request gets the same subjects
and a larger cap a superset. Under `labelled_only` the sample is drawn among the subjects that have a label
object, and only label objects and the image series they refer to are kept.

Label objects are found by SOP class (Segmentation, Label Map Segmentation, RT Structure Set), not by Modality: a
dozen series carry Modality SEG on CT image instances.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from workers.sources.base import FetchOptions, SourceError

# Segmentation Storage (binary, fractional) and Label Map Segmentation Storage
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
LABEL_SOP_CLASSES = (*SEG_SOP_CLASSES, RTSTRUCT_SOP_CLASS)
# what selection, subject sampling, listing and naming need of the 31 columns
SERIES_COLUMNS = (
    "collection_id",
    "analysis_result_id",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SOPClassUID",
    "instanceCount",
    "series_size_MB",
    "aws_bucket",
    "crdc_series_uuid",
)
# the types the installed index has; a given table is cast to them, so filters compare like with like
_NUMERIC = {"instanceCount": pa.int64(), "series_size_MB": pa.float64()}
SERIES_SCHEMA = pa.schema([(name, _NUMERIC.get(name, pa.large_string())) for name in SERIES_COLUMNS])
# the referenced-series column of each optional index idc-index downloads (see their *_schema.json in the wheel)
REFERENCE_INDICES = {
    "seg_index.parquet": "segmented_SeriesInstanceUID",
    "rtstruct_index.parquet": "referenced_SeriesInstanceUID",
}
DEFAULT_SEED = FetchOptions.seed
BATCH_ROWS = 65_536
READ_BUFFER_BYTES = 2**20


def installed_index_path() -> Path:
    """idc_index.parquet of the installed idc-index-data (found without importing the package, whose import
    reads every index's schema file)."""
    spec = find_spec("idc_index_data")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the idc-index-data package is not installed: `idc` sources need its index")
    return Path(next(iter(spec.submodule_search_locations))) / "idc_index.parquet"


class SeriesIndex:
    """IDC's series index: the installed Parquet file, or a table in its schema (tests point one at a
    loopback bucket). Reads return SERIES_COLUMNS only, filtered by a pyarrow expression on them."""

    def __init__(self, source: Path | pa.Table, version: str) -> None:
        self._table = source if isinstance(source, pa.Table) else None
        self._path = None if isinstance(source, pa.Table) else Path(source)
        self.version = version

    @classmethod
    def of(cls, index: SeriesIndex | pa.Table | None) -> SeriesIndex:
        """`index` as a SeriesIndex: None is the installed one."""
        if isinstance(index, SeriesIndex):
            return index
        if index is not None:
            return cls(index, "a given table")
        return _installed_index()

    def rows(self, where: ds.Expression) -> pa.Table:
        if self._table is not None:
            return self._table.select(list(SERIES_COLUMNS)).filter(where).cast(SERIES_SCHEMA)
        # Streamed in batches, each filtered as it comes: the file is one row group, and reading it whole (as
        # pq.read_table and datasets do, filter or not) holds ~500 MB of decoded columns at its peak, this ~150 MB.
        parquet = pq.ParquetFile(self._path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
        parts = [
            pa.Table.from_batches([batch]).filter(where)
            for batch in parquet.iter_batches(
                batch_size=BATCH_ROWS, columns=list(SERIES_COLUMNS), use_threads=False
            )
        ]
        return pa.concat_tables(parts).cast(SERIES_SCHEMA) if parts else SERIES_SCHEMA.empty_table()

    def series(self, uids: Iterable[str]) -> pa.Table:
        """The rows of these SeriesInstanceUIDs (unknown ones are simply absent)."""
        return self.rows(ds.field("SeriesInstanceUID").isin(sorted(set(uids))))

    def knows(self, column: str, value: str) -> bool:
        rows: int = self.rows(ds.field(column) == value).num_rows
        return rows > 0


@cache
def _installed_index() -> SeriesIndex:
    return SeriesIndex(installed_index_path(), f"idc-index-data {metadata.version('idc-index-data')}")


def configured_index(index_dir: Path | None) -> SeriesIndex:
    """The series index a worker selects from: `idc_index.parquet` in IMAGINGX_IDC_INDEX_DIR when the operator
    put one there (e.g. a newer IDC release as idc-index downloads it, same schema), else the installed one."""
    if index_dir is not None and (Path(index_dir) / "idc_index.parquet").is_file():
        return SeriesIndex(Path(index_dir) / "idc_index.parquet", f"idc_index.parquet in {index_dir}")
    return _installed_index()


def describe(collection_id: str | None, analysis_result_id: str | None) -> str:
    """How errors name a source: `IDC collection lidc_idri`, `IDC analysis result x`, or both."""
    parts = [f"collection {collection_id}"] if collection_id else []
    parts += [f"analysis result {analysis_result_id}"] if analysis_result_id else []
    return "IDC " + " + ".join(parts)


def selection_filter(collection_id: str | None, analysis_result_id: str | None) -> ds.Expression:
    """The rows a descriptor's ids select (before `modalities` and referenced image series)."""
    if collection_id and analysis_result_id:
        return (ds.field("collection_id") == collection_id) & (
            ds.field("analysis_result_id").is_null() | (ds.field("analysis_result_id") == analysis_result_id)
        )
    if collection_id:
        return ds.field("collection_id") == collection_id
    if analysis_result_id:
        return ds.field("analysis_result_id") == analysis_result_id
    raise SourceError("an idc source names a collection_id, an analysis_result_id or both")


def _modality_filter(table: pa.Table, modalities: Iterable[str]) -> pa.Table:
    wanted = sorted(set(modalities))
    return table.filter(pc.is_in(table["Modality"], pa.array(wanted, pa.large_string()))) if wanted else table


def label_mask(table: pa.Table) -> pa.ChunkedArray:
    """True for the rows that are label objects (SEG or RTSTRUCT, by SOP class)."""
    return pc.fill_null(pc.is_in(table["SOPClassUID"], pa.array(LABEL_SOP_CLASSES, pa.large_string())), False)


def subject_rank(seed: str, collection_id: str, patient_id: str) -> bytes:
    """The sample order of a subject: the smallest ranks are taken first."""
    return hashlib.sha256(f"{seed}\0{collection_id}\0{patient_id}".encode()).digest()


def subjects_of(table: pa.Table) -> set[tuple[str, str]]:
    pairs = (
        table.select(["collection_id", "PatientID"]).group_by(["collection_id", "PatientID"]).aggregate([])
    )
    return set(zip(pairs["collection_id"].to_pylist(), pairs["PatientID"].to_pylist(), strict=True))


def sample_subjects(
    subjects: Iterable[tuple[str, str]], max_subjects: int | None, seed: str
) -> set[tuple[str, str]]:
    """At most `max_subjects` of the (collection_id, PatientID) subjects, the smallest ranks; all when no cap."""
    subjects = set(subjects)
    if max_subjects is None or max_subjects >= len(subjects):
        return subjects
    ranked = sorted(subjects, key=lambda subject: subject_rank(seed, *subject))
    return set(ranked[: max(0, max_subjects)])


def _of_subjects(table: pa.Table, subjects: set[tuple[str, str]]) -> pa.Table:
    keys = pc.binary_join_element_wise(
        table["collection_id"], table["PatientID"], pa.scalar("\0", pa.large_string())
    )
    wanted = pa.array(sorted(f"{c}\0{p}" for c, p in subjects), pa.large_string())
    return table.filter(pc.is_in(keys, wanted))


@dataclass(frozen=True)
class Selection:
    """What a source asks for before label references are resolved. `series`: the series taken as they are
    (label objects included); `labels`: those label series whose referenced image series are to be added (none
    when neither `labelled_only` nor an analysis result alone asks for them)."""

    what: str
    series: pa.Table
    labels: pa.Table
    subjects: int
    labelled_only: bool
    modalities: tuple[str, ...]


def select(
    index: SeriesIndex,
    collection_id: str | None,
    analysis_result_id: str | None,
    modalities: Iterable[str] = (),
    options: FetchOptions | None = None,
) -> Selection:
    """The series a source selects, its subjects sampled; SourceError when nothing is left, saying why."""
    options = options or FetchOptions()
    what = describe(collection_id, analysis_result_id)
    modalities = tuple(sorted(set(modalities)))
    everything = index.rows(selection_filter(collection_id, analysis_result_id))
    if everything.num_rows == 0:
        for column, value in (("collection_id", collection_id), ("analysis_result_id", analysis_result_id)):
            if value and not index.knows(column, value):
                raise SourceError(f"{what}: {index.version} has no {column.removesuffix('_id')} {value!r}")
        raise SourceError(f"{what}: {index.version} lists no series for it")
    table = _modality_filter(everything, modalities)
    if table.num_rows == 0:
        raise SourceError(f"{what}: none of its series has modality {', '.join(modalities)}")
    if options.labelled_only:
        table = table.filter(label_mask(table))
        if table.num_rows == 0:
            raise SourceError(
                f"{what}: no DICOM SEG or RTSTRUCT series"
                + (f" among modalities {', '.join(modalities)}" if modalities else "")
                + ", so `labelled series only` leaves nothing to fetch"
            )
    chosen = sample_subjects(subjects_of(table), options.max_subjects, options.seed)
    table = _of_subjects(table, chosen)
    if table.num_rows == 0:
        raise SourceError(f"{what}: no subject is left (max_subjects={options.max_subjects})")
    add_images = options.labelled_only or (analysis_result_id is not None and collection_id is None)
    labels = table.filter(label_mask(table)) if add_images else table.slice(0, 0)
    return Selection(what, table, labels, len(chosen), options.labelled_only, modalities)


def indexed_references(index_dir: Path | None, label_uids: Iterable[str]) -> dict[str, set[str]]:
    """Label SeriesInstanceUID -> the image series it refers to, from idc-index's seg_index / rtstruct_index in
    `index_dir` (those it has, for the labels they list with a reference). Empty without the folder."""
    wanted = sorted(set(label_uids))
    references: dict[str, set[str]] = {}
    if index_dir is None or not wanted:
        return references
    for file_name, column in REFERENCE_INDICES.items():
        path = Path(index_dir) / file_name
        if not path.is_file():
            continue
        try:
            table = pq.read_table(
                path, columns=["SeriesInstanceUID", column], filters=[("SeriesInstanceUID", "in", wanted)]
            )
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{path} cannot be read as idc-index's {file_name} ({exc})") from exc
        for label, referenced in zip(
            table["SeriesInstanceUID"].to_pylist(), table[column].to_pylist(), strict=True
        ):
            if label and referenced:
                references.setdefault(label, set()).add(referenced)
    return references


def with_referenced_images(
    index: SeriesIndex, selection: Selection, references: Mapping[str, set[str]]
) -> pa.Table:
    """The selection's series plus the image series its labels refer to (subject to `modalities`). A label
    none of whose referenced series IDC holds (or `modalities` admits) is dropped: it would pair with nothing.
    SourceError when nothing is left."""
    if selection.labels.num_rows == 0:
        return selection.series
    wanted = {uid for uids in references.values() for uid in uids}
    images = index.series(wanted)
    images = _modality_filter(images.filter(pc.invert(label_mask(images))), selection.modalities)
    available = set(images["SeriesInstanceUID"].to_pylist())
    orphans = [
        uid
        for uid in selection.labels["SeriesInstanceUID"].to_pylist()
        if not (references.get(uid, set()) & available)
    ]
    series = selection.series
    if orphans:
        series = series.filter(
            pc.invert(pc.is_in(series["SeriesInstanceUID"], pa.array(orphans, pa.large_string())))
        )
    if series.num_rows == 0:
        raise SourceError(
            f"{selection.what}: none of its {len(orphans)} label series refers to an image series IDC holds"
            + (f" with modality {', '.join(selection.modalities)}" if selection.modalities else "")
        )
    taken = set(series["SeriesInstanceUID"].to_pylist())
    images = images.filter(
        pc.invert(pc.is_in(images["SeriesInstanceUID"], pa.array(sorted(taken), pa.large_string())))
    )
    return pa.concat_tables([series, images.select(series.column_names).cast(series.schema)])


def size_bytes(table: pa.Table) -> int:
    """The series' size as the index states it (`series_size_MB` is in 10^6 bytes)."""
    return round((pc.sum(table["series_size_MB"]).as_py() or 0.0) * 1_000_000)


class Estimate(NamedTuple):
    series: int
    instances: int
    bytes: int
    subjects: int


def estimate(
    collection_id: str | None = None,
    analysis_result_id: str | None = None,
    max_subjects: int | None = None,
    *,
    modalities: Iterable[str] = (),
    labelled_only: bool = False,
    seed: str = DEFAULT_SEED,
    index: SeriesIndex | pa.Table | None = None,
    index_dir: Path | None = None,
) -> Estimate:
    """(series, instances, bytes, subjects) a job would fetch for this source and these options, from the index
    alone (no network; ~0.3 s, ~0.6 s when label references are looked up).

    Exact, except for the image series that label objects refer to (under `labelled_only`, and for an analysis
    result alone): those are read from seg_index / rtstruct_index in `index_dir` where they list the label, and
    otherwise estimated as the image series of the label's own study (passing `modalities`). That over-counts
    when a study holds image series no label refers to (e.g. several reconstructions of one CT), and misses a
    reference into another study (rare: a SEG or RTSTRUCT normally refers to a series of its own study)."""
    series_index = SeriesIndex.of(index)
    options = FetchOptions(max_subjects=max_subjects, labelled_only=labelled_only, seed=seed)
    selection = select(series_index, collection_id, analysis_result_id, modalities, options)
    label_uids = selection.labels["SeriesInstanceUID"].to_pylist()
    references = dict(indexed_references(index_dir, label_uids))
    unknown = selection.labels.filter(
        pc.invert(
            pc.is_in(selection.labels["SeriesInstanceUID"], pa.array(sorted(references), pa.large_string()))
        )
    )
    if unknown.num_rows:
        studies = sorted(set(unknown["StudyInstanceUID"].to_pylist()))
        neighbours = series_index.rows(ds.field("StudyInstanceUID").isin(studies))
        neighbours = neighbours.filter(pc.invert(label_mask(neighbours)))
        by_study: dict[str, set[str]] = {}
        for study, uid in zip(
            neighbours["StudyInstanceUID"].to_pylist(),
            neighbours["SeriesInstanceUID"].to_pylist(),
            strict=True,
        ):
            by_study.setdefault(study, set()).add(uid)
        for label, study in zip(
            unknown["SeriesInstanceUID"].to_pylist(), unknown["StudyInstanceUID"].to_pylist(), strict=True
        ):
            references[label] = by_study.get(study, set())
    table = with_referenced_images(series_index, selection, references)
    return Estimate(
        series=table.num_rows,
        instances=int(pc.sum(table["instanceCount"]).as_py() or 0),
        bytes=size_bytes(table),
        subjects=len(subjects_of(table)),
    )
