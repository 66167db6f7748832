"""`idc` sources: series selection against the real idc-index-data Parquet, and listing + download through a
loopback S3 bucket serving real DICOM (pydicom's CT5N, CT2, CT2N and MR2 series, a highdicom SEG on CT5N and an
RTSTRUCT on CT2), with an index table in idc_index's schema pointing at that bucket."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydicom
import pytest
from fixtures_s3 import LocalS3Server
from imaging_fixtures import CT5N, CT_GAP, CT_LOCALIZER, MR_MIXED
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.core.config import Settings
from workers.sources import ADAPTERS, parse_source, resolve_source
from workers.sources import s3 as s3_module
from workers.sources.base import FetchOptions, SourceError
from workers.sources.download import ChecksumMismatchError, Downloader
from workers.sources.idc import referenced_series, resolve, safe_part
from workers.sources.idc_index import (
    RTSTRUCT_SOP_CLASS,
    SeriesIndex,
    estimate,
    installed_index_path,
    sample_subjects,
    select,
    subject_rank,
)
from workers.sources.s3 import AnonymousS3

BUCKET = "idc-open-data"
COLLECTION = "ct_fixture"
RESULT = "fixture_segs"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
MR_SOP = "1.2.840.10008.5.1.4.1.1.4"
SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"
MR_SERIES = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.136"
UNSAFE_PATIENT = "ZZ RIDER MR8 1"


# --- fixture data: real DICOM series, a SEG and an RTSTRUCT referring to two of them -----------------------


@dataclass
class Series:
    """One series as IDC would hold it: the index row's facts and the instance files under its prefix."""

    collection_id: str
    analysis_result_id: str | None
    patient: str
    study: str
    uid: str
    modality: str
    sop_class: str
    files: dict[str, bytes]  # object name -> content

    @property
    def prefix(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, self.uid))

    def row(self, **overrides: Any) -> dict[str, Any]:
        row = {
            "collection_id": self.collection_id,
            "analysis_result_id": self.analysis_result_id,
            "PatientID": self.patient,
            "StudyInstanceUID": self.study,
            "SeriesInstanceUID": self.uid,
            "Modality": self.modality,
            "SOPClassUID": self.sop_class,
            "instanceCount": len(self.files),
            "series_size_MB": sum(len(body) for body in self.files.values()) / 1e6,
            "aws_bucket": BUCKET,
            "crdc_series_uuid": self.prefix,
            "series_aws_url": f"s3://{BUCKET}/{self.prefix}/*",
        }
        return row | overrides


def _instance_name(content: bytes) -> str:
    return f"{uuid.uuid5(uuid.NAMESPACE_OID, hashlib.sha256(content).hexdigest())}.dcm"


def _series_from_folder(
    folder: Path, collection: str, patient: str | None = None, only: str | None = None
) -> Series:
    datasets = [
        (path.read_bytes(), pydicom.dcmread(path, stop_before_pixels=True))
        for path in sorted(folder.iterdir())
    ]
    datasets = [(body, ds) for body, ds in datasets if only is None or ds.SeriesInstanceUID == only]
    first = datasets[0][1]
    return Series(
        collection,
        None,
        patient or first.PatientID,
        first.StudyInstanceUID,
        first.SeriesInstanceUID,
        first.Modality,
        first.SOPClassUID,
        {_instance_name(body): body for body, _ in datasets},
    )


def _seg_on(series_folder: Path) -> bytes:
    """A binary highdicom SEG of a square on every slice of the series (refers to it by ReferencedSeriesSequence)."""
    sources = sorted(
        (pydicom.dcmread(path) for path in series_folder.iterdir()),
        key=lambda ds: float(ds.ImagePositionPatient[2]),
    )
    mask = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=bool)
    mask[:, 4:10, 4:10] = True
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="square",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(entropy_srcs=["idc-test-seg-series"]),
        series_number=100,
        sop_instance_uid=generate_uid(entropy_srcs=["idc-test-seg-instance"]),
        instance_number=1,
        manufacturer="imagingx tests",
        manufacturer_model_name="fixture",
        software_versions="1",
        device_serial_number="1",
    )
    buffer = BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _rtstruct_on(series_folder: Path) -> bytes:
    """A minimal RT Structure Set whose ReferencedFrameOfReferenceSequence names the series (no contours)."""
    image = pydicom.dcmread(next(iter(sorted(series_folder.iterdir()))), stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["idc-test-rtstruct-instance"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientID = image.PatientID
    ds.StudyInstanceUID = image.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["idc-test-rtstruct-series"])
    ds.StructureSetLabel = "fixture"
    series_item = Dataset()
    series_item.SeriesInstanceUID = image.SeriesInstanceUID
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_item.ReferencedSOPInstanceUID = image.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = image.get("FrameOfReferenceUID", generate_uid(entropy_srcs=["frame"]))
    frame_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_item])
    ds.StructureSetROISequence = Sequence()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Fixture:
    ct5n: Series  # subject 98890234: referenced by the SEG
    localizer: Series  # subject 98890234, same study: referenced by nothing
    gap: Series  # subject 77654033: referenced by the RTSTRUCT
    mr: Series  # subject "ZZ RIDER MR8 1": no label at all
    seg: Series  # analysis result RESULT, on ct5n
    rtstruct: Series  # the collection's own, on gap

    @property
    def all(self) -> list[Series]:
        return [self.ct5n, self.localizer, self.gap, self.mr, self.seg, self.rtstruct]


def _label_series(body: bytes, image: Series, result: str | None, modality: str, sop_class: str) -> Series:
    ds = pydicom.dcmread(BytesIO(body), stop_before_pixels=True)
    files = {_instance_name(body): body}
    return Series(
        COLLECTION, result, image.patient, image.study, ds.SeriesInstanceUID, modality, sop_class, files
    )


@pytest.fixture(scope="module")
def data() -> Fixture:
    ct5n = _series_from_folder(CT5N, COLLECTION)
    gap = _series_from_folder(CT_GAP, COLLECTION)
    return Fixture(
        ct5n=ct5n,
        localizer=_series_from_folder(CT_LOCALIZER, COLLECTION),
        gap=gap,
        mr=_series_from_folder(MR_MIXED, COLLECTION, patient=UNSAFE_PATIENT, only=MR_SERIES),
        seg=_label_series(_seg_on(CT5N), ct5n, RESULT, "SEG", SEG_SOP),
        rtstruct=_label_series(_rtstruct_on(CT_GAP), gap, None, "RTSTRUCT", RTSTRUCT_SOP_CLASS),
    )


def index_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows in idc_index.parquet's own schema (its 31 columns; those a row does not give are null)."""
    schema = pq.read_schema(installed_index_path()).remove_metadata()
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


@pytest.fixture
def s3(data: Fixture) -> Iterator[LocalS3Server]:
    with LocalS3Server() as server:
        for series in data.all:
            for name, body in series.files.items():
                server.put(BUCKET, f"{series.prefix}/{name}", body)
        yield server


def make_settings(tmp_path: Path, s3: LocalS3Server, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "allow_private_sources": True,
        "idc_s3_url": s3.base_url,
        "download_concurrency": 2,
    }
    return Settings(**(values | overrides))


def names_of(series: Series, files: dict[str, bytes] | None = None) -> set[str]:
    folder = f"{safe_part(series.patient)}/{series.study}/{series.uid}"
    return {f"{folder}/{name}" for name in (files or series.files)}


def run(
    source: dict[str, Any], settings: Settings, table: pa.Table, options: FetchOptions | None = None
) -> list:
    with httpx.Client() as client:
        return resolve(parse_source(source), settings, client, options or FetchOptions(), index=table)


# --- descriptors ---------------------------------------------------------------------------------------------


def test_idc_descriptor_parses_and_is_registered() -> None:
    source = parse_source({"kind": "idc", "collection_id": "lidc_idri", "modalities": ["CT", "SEG"]})
    assert (source.kind, source.collection_id, source.analysis_result_id, source.modalities) == (
        "idc",
        "lidc_idri",
        None,
        ["CT", "SEG"],
    )
    assert ADAPTERS["idc"] is resolve
    with pytest.raises(SourceError, match="give `collection_id`, `analysis_result_id` or both"):
        parse_source({"kind": "idc"})
    with pytest.raises(SourceError, match="collection_id"):
        parse_source({"kind": "idc", "collection_id": "LIDC-IDRI"})
    with pytest.raises(SourceError, match="modalities"):
        parse_source({"kind": "idc", "collection_id": "lidc_idri", "modalities": ["ct"]})


# --- selection against the real index ------------------------------------------------------------------------


def _independent_counts(**equal: str) -> tuple[int, int, int, int]:
    """(series, instances, bytes, subjects) computed with plain Python over the whole index."""
    table = pq.read_table(
        installed_index_path(),
        columns=["collection_id", "analysis_result_id", "PatientID", "instanceCount", "series_size_MB"],
        filters=[(column, "=", value) for column, value in equal.items()],
    ).to_pylist()
    rows = [r for r in table if all(r[k] == v for k, v in equal.items())]
    return (
        len(rows),
        sum(r["instanceCount"] for r in rows),
        round(sum(r["series_size_MB"] for r in rows) * 1e6),
        len({(r["collection_id"], r["PatientID"]) for r in rows}),
    )


def test_a_small_collection_selects_its_series_and_subjects() -> None:
    index = SeriesIndex.of(None)
    found = estimate("pancreas_ct")
    assert tuple(found) == _independent_counts(collection_id="pancreas_ct")
    if index.version == "idc-index-data 25.0.5":
        # Pancreas-CT: 80 CT series and, as analysis result pancreas_ct_seg, one SEG per patient
        assert (found.series, found.subjects) == (160, 80)
        assert found.instances == 19022
    ct_only = select(index, "pancreas_ct", None, ["CT"])
    assert set(ct_only.series["Modality"].to_pylist()) == {"CT"}
    assert ct_only.series.num_rows == found.series // 2
    assert ct_only.labels.num_rows == 0  # a collection without labelled_only adds no referenced series
    # the analysis result alone: its SEGs and, estimated from their studies, the CT each one is drawn on
    assert estimate(analysis_result_id="pancreas_ct_seg") == found
    result = select(index, None, "pancreas_ct_seg")
    assert set(result.series["Modality"].to_pylist()) == {"SEG"}
    assert result.labels.num_rows == result.series.num_rows == found.series // 2


def test_collection_with_result_takes_its_own_series_and_that_result_only() -> None:
    index = SeriesIndex.of(None)
    everything = select(index, "lidc_idri", None)
    own_and_nodules = select(index, "lidc_idri", "dicom_lidc_idri_nodules")
    results = set(own_and_nodules.series["analysis_result_id"].to_pylist())
    assert results == {None, "dicom_lidc_idri_nodules"}
    assert "qin_lungct_seg" in set(everything.series["analysis_result_id"].to_pylist())
    other = everything.series.filter(
        pc.equal(everything.series["analysis_result_id"], "qin_lungct_seg")
    ).num_rows
    assert own_and_nodules.series.num_rows == everything.series.num_rows - other


def test_subject_sample_is_deterministic_and_a_larger_cap_takes_a_superset() -> None:
    index = SeriesIndex.of(None)
    started = time.perf_counter()
    small = select(index, "lidc_idri", None, options=FetchOptions(max_subjects=5))
    elapsed = time.perf_counter() - started
    print(f"lidc_idri selection with a 5-subject sample: {elapsed:.2f} s")
    assert elapsed < 10
    again = select(index, "lidc_idri", None, options=FetchOptions(max_subjects=5))
    large = select(index, "lidc_idri", None, options=FetchOptions(max_subjects=40))
    other_seed = select(index, "lidc_idri", None, options=FetchOptions(max_subjects=5, seed="other"))

    def patients(selection: Any) -> set[str]:
        return set(selection.series["PatientID"].to_pylist())

    assert len(patients(small)) == small.subjects == 5
    assert patients(small) == patients(again)
    assert small.series["SeriesInstanceUID"].to_pylist() == again.series["SeriesInstanceUID"].to_pylist()
    assert len(patients(large)) == 40 and patients(small) < patients(large)
    assert patients(other_seed) != patients(small)
    # the sample is the smallest ranks among all of the collection's subjects
    every = {("lidc_idri", p) for p in select(index, "lidc_idri", None).series["PatientID"].to_pylist()}
    expected = sorted(every, key=lambda s: subject_rank("imagingx", *s))[:5]
    assert patients(small) == {p for _, p in expected}
    # every series of a chosen subject comes along
    assert small.series.num_rows == len(
        [1 for p in select(index, "lidc_idri", None).series["PatientID"].to_pylist() if p in patients(small)]
    )


def test_labelled_only_on_a_collection_without_labels_fails_clearly(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with httpx.Client() as client, pytest.raises(SourceError) as error:
        resolve(
            parse_source({"kind": "idc", "collection_id": "prostate_3t"}),
            settings,
            client,
            FetchOptions(labelled_only=True),
        )
    assert "IDC collection prostate_3t: no DICOM SEG or RTSTRUCT series" in str(error.value)
    with pytest.raises(SourceError, match="has no collection 'no_such_collection'"):
        select(SeriesIndex.of(None), "no_such_collection", None)
    with pytest.raises(SourceError, match="none of its series has modality XA"):
        select(SeriesIndex.of(None), "pancreas_ct", None, ["XA"])


def test_labelled_only_estimate_counts_label_series_and_their_studies_images() -> None:
    found = estimate("pancreas_ct", labelled_only=True, max_subjects=7)
    # one SEG per patient and one CT in its study: 7 of each
    assert (found.series, found.subjects) == (14, 7)


# --- listing and downloading through the loopback bucket ---------------------------------------------------


def test_series_are_listed_named_and_downloaded_verified(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    settings = make_settings(tmp_path, s3)
    table = index_table([s.row() for s in data.all])
    remotes = run({"kind": "idc", "collection_id": COLLECTION, "modalities": ["CT"]}, settings, table)
    assert {r.name for r in remotes} == names_of(data.ct5n) | names_of(data.localizer) | names_of(data.gap)
    by_name = {r.name: r for r in remotes}
    for series in (data.ct5n, data.localizer, data.gap):
        for name, body in series.files.items():
            remote = by_name[f"{series.patient}/{series.study}/{series.uid}/{name}"]
            assert remote.md5 == hashlib.md5(body).hexdigest() and remote.size == len(body)
            assert remote.url == f"{s3.base_url}/{BUCKET}/{series.prefix}/{name}"
    placed = Downloader(settings).fetch_into(remotes, tmp_path / "job")
    assert len(placed) == 11
    for series in (data.ct5n, data.gap):
        folder = tmp_path / "job" / series.patient / series.study / series.uid
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == series.files
        slices = [pydicom.dcmread(p) for p in folder.iterdir()]
        assert {ds.SeriesInstanceUID for ds in slices} == {series.uid}
    # one listing per series, one GET per object
    assert len(s3.requests_for("GET", f"/{BUCKET}?")) == 3
    assert len(s3.requests_for("GET", f"/{BUCKET}/")) == 11


def test_resolve_source_reaches_the_adapter_through_the_registry(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    # an idc_index.parquet in IMAGINGX_IDC_INDEX_DIR replaces the installed index, as a worker reads it
    index_dir = tmp_path / "idc-index"
    index_dir.mkdir()
    pq.write_table(index_table([s.row() for s in data.all]), index_dir / "idc_index.parquet")
    remotes = resolve_source(
        {"kind": "idc", "collection_id": COLLECTION, "modalities": ["MR"]},
        make_settings(tmp_path, s3, idc_index_dir=index_dir),
    )
    assert {r.name for r in remotes} == names_of(data.mr)
    # the PatientID with spaces became a safe folder name, distinct from a plain cleanup of it
    assert all(r.name.startswith("ZZ_RIDER_MR8_1-") for r in remotes)


def test_listing_pages_follow_continuation_tokens(tmp_path: Path, data: Fixture, s3: LocalS3Server) -> None:
    s3.page_size = 2
    settings = make_settings(tmp_path, s3)
    remotes = run({"kind": "idc", "collection_id": COLLECTION}, settings, index_table([data.ct5n.row()]))
    assert {r.name for r in remotes} == names_of(data.ct5n)
    listings = s3.requests_for("GET", f"/{BUCKET}?")
    assert len(listings) == 3  # 5 objects, 2 a page
    assert ["continuation-token=" in path for path in listings] == [False, True, True]


def test_an_instance_count_other_than_the_index_says_fails_naming_the_series(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    table = index_table([data.ct5n.row(instanceCount=6), data.gap.row()])
    with pytest.raises(SourceError) as error:
        run({"kind": "idc", "collection_id": COLLECTION}, make_settings(tmp_path, s3), table)
    message = str(error.value)
    assert f"series {data.ct5n.uid} (s3://{BUCKET}/{data.ct5n.prefix}/): 5 objects listed" in message
    assert "the index says 6 instances" in message and "1 of 2 series failed" in message


def test_content_that_does_not_match_its_etag_is_refused_by_the_downloader(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    name, body = next(iter(data.ct5n.files.items()))
    s3.put(BUCKET, f"{data.ct5n.prefix}/{name}", body, etag=hashlib.md5(b"other bytes").hexdigest())
    settings = make_settings(tmp_path, s3)
    remotes = run({"kind": "idc", "collection_id": COLLECTION}, settings, index_table([data.ct5n.row()]))
    (wrong,) = [r for r in remotes if r.name.endswith(name)]
    assert wrong.md5 == hashlib.md5(b"other bytes").hexdigest()
    with pytest.raises(
        ChecksumMismatchError, match=f"expected {wrong.md5}, got {hashlib.md5(body).hexdigest()}"
    ):
        Downloader(settings, attempts=1).fetch(wrong)
    with pytest.raises(SourceError, match=r"1 of 5 files failed: .* md5 mismatch"):
        Downloader(settings, attempts=1).fetch_into(remotes, tmp_path / "job")
    folder = tmp_path / "job" / data.ct5n.patient / data.ct5n.study / data.ct5n.uid
    assert sorted(p.name for p in folder.iterdir()) == sorted(n for n in data.ct5n.files if n != name)


def test_a_multipart_etag_is_refused_as_unverifiable(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    name, body = next(iter(data.ct5n.files.items()))
    s3.put(BUCKET, f"{data.ct5n.prefix}/{name}", body, etag="9b2cf535f27731c974343645a3985328-3")
    with pytest.raises(SourceError) as error:
        run(
            {"kind": "idc", "collection_id": COLLECTION},
            make_settings(tmp_path, s3),
            index_table([data.ct5n.row()]),
        )
    assert "uploaded in parts" in str(error.value) and f"{data.ct5n.prefix}/{name}" in str(error.value)


def test_a_selection_over_the_bundle_cap_is_refused_before_listing(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    settings = make_settings(tmp_path, s3, bundle_max_bytes=10_000)
    with pytest.raises(SourceError, match="IMAGINGX_BUNDLE_MAX_BYTES"):
        run({"kind": "idc", "collection_id": COLLECTION}, settings, index_table([s.row() for s in data.all]))
    assert s3.requests == []


# --- region redirects ------------------------------------------------------------------------------------------


def test_a_region_redirect_is_followed_from_aws_default_endpoint(
    tmp_path: Path, data: Fixture, s3: LocalS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalS3Server() as home_region:
        home_region.buckets[BUCKET] = {}
        home_region.redirect_bucket(BUCKET, "eu-west-3")
        # stand-ins for s3.amazonaws.com and s3.<region>.amazonaws.com
        monkeypatch.setattr(s3_module, "AWS_GLOBAL_ENDPOINT", home_region.base_url)
        regions: list[str] = []
        monkeypatch.setattr(
            s3_module, "aws_regional_endpoint", lambda region: regions.append(region) or s3.base_url
        )
        settings = make_settings(tmp_path, home_region)
        remotes = run(
            {"kind": "idc", "collection_id": COLLECTION},
            settings,
            index_table([data.ct5n.row(), data.gap.row()]),
        )
        assert regions == ["eu-west-3"]
        assert {r.name for r in remotes} == names_of(data.ct5n) | names_of(data.gap)
        assert all(r.url and r.url.startswith(f"{s3.base_url}/{BUCKET}/") for r in remotes)
        placed = Downloader(settings).fetch_into(remotes, tmp_path / "job")
        assert sorted(p.read_bytes() for p in placed) == sorted(
            [*data.ct5n.files.values(), *data.gap.files.values()]
        )
        # the region was learnt once: later listings went straight to the regional endpoint
        assert len(home_region.requests) == 1


def test_a_region_redirect_from_the_body_endpoint_alone_is_followed(
    data: Fixture, s3: LocalS3Server, tmp_path: Path
) -> None:
    with LocalS3Server() as home_region, httpx.Client() as client:
        home_region.redirect_bucket(BUCKET, "ap-southeast-2", header=False)
        seen: list[str] = []
        lister = AnonymousS3(
            client,
            make_settings(tmp_path, home_region),
            home_region.base_url,
            regional_endpoint=lambda region: seen.append(region) or s3.base_url,
        )
        objects = lister.list_objects(BUCKET, f"{data.gap.prefix}/")
        assert seen == ["ap-southeast-2"]
        assert sorted(o.key.split("/")[-1] for o in objects) == sorted(data.gap.files)
        assert lister.object_url(BUCKET, "a/b.dcm") == f"{s3.base_url}/{BUCKET}/a/b.dcm"


def test_a_region_redirect_from_another_endpoint_is_not_followed(tmp_path: Path, data: Fixture) -> None:
    with LocalS3Server() as mirror:
        mirror.redirect_bucket(BUCKET, "us-west-2")
        with pytest.raises(SourceError) as error:
            run(
                {"kind": "idc", "collection_id": COLLECTION},
                make_settings(tmp_path, mirror),
                index_table([data.ct5n.row()]),
            )
        message = str(error.value)
        assert "the bucket is in region us-west-2" in message and "not followed" in message
        assert "https://s3.us-west-2.amazonaws.com" in message
        assert len(mirror.requests) == 1


# --- label objects and the series they refer to --------------------------------------------------------------


def test_label_files_name_the_series_they_refer_to(tmp_path: Path, data: Fixture) -> None:
    (seg_body,) = data.seg.files.values()
    (rt_body,) = data.rtstruct.files.values()
    (tmp_path / "seg.dcm").write_bytes(seg_body)
    (tmp_path / "rt.dcm").write_bytes(rt_body)
    assert referenced_series(tmp_path / "seg.dcm") == {data.ct5n.uid}
    assert referenced_series(tmp_path / "rt.dcm") == {data.gap.uid}


def test_labelled_only_downloads_labels_first_and_keeps_exactly_their_series(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    settings = make_settings(tmp_path, s3)
    table = index_table([s.row() for s in data.all])
    remotes = run(
        {"kind": "idc", "collection_id": COLLECTION}, settings, table, FetchOptions(labelled_only=True)
    )
    expected = names_of(data.seg) | names_of(data.ct5n) | names_of(data.rtstruct) | names_of(data.gap)
    assert {r.name for r in remotes} == expected  # not the localizer of the SEG's study, not the MR subject
    (seg_object,) = (f"/{BUCKET}/{data.seg.prefix}/{name}" for name in data.seg.files)
    (rt_object,) = (f"/{BUCKET}/{data.rtstruct.prefix}/{name}" for name in data.rtstruct.files)
    assert len(s3.requests_for("GET", seg_object)) == 1 and len(s3.requests_for("GET", rt_object)) == 1
    Downloader(settings).fetch_into(remotes, tmp_path / "job")
    # the job's download found the label objects in the cache
    assert len(s3.requests_for("GET", seg_object)) == 1 and len(s3.requests_for("GET", rt_object)) == 1
    placed = tmp_path / "job" / data.seg.patient / data.seg.study / data.seg.uid
    assert [p.read_bytes() for p in placed.iterdir()] == list(data.seg.files.values())


def test_labelled_only_with_a_modality_filter_drops_labels_on_other_modalities(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    settings = make_settings(tmp_path, s3)
    table = index_table([s.row() for s in data.all])
    remotes = run(
        {"kind": "idc", "collection_id": COLLECTION, "modalities": ["CT", "SEG"]},
        settings,
        table,
        FetchOptions(labelled_only=True),
    )
    assert {r.name for r in remotes} == names_of(data.seg) | names_of(data.ct5n)


def test_labelled_only_samples_among_labelled_subjects(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    settings = make_settings(tmp_path, s3)
    table = index_table([s.row() for s in data.all])
    options = FetchOptions(labelled_only=True, max_subjects=1, seed="fixture")
    remotes = run({"kind": "idc", "collection_id": COLLECTION}, settings, table, options)
    (chosen,) = sample_subjects(
        {(COLLECTION, data.ct5n.patient), (COLLECTION, data.gap.patient)}, 1, "fixture"
    )
    pairs = {data.ct5n.patient: (data.seg, data.ct5n), data.gap.patient: (data.rtstruct, data.gap)}
    label, image = pairs[chosen[1]]
    assert {r.name for r in remotes} == names_of(label) | names_of(image)


def test_an_analysis_result_alone_brings_the_images_its_segmentations_refer_to(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    settings = make_settings(tmp_path, s3)
    table = index_table([s.row() for s in data.all])
    remotes = run({"kind": "idc", "analysis_result_id": RESULT}, settings, table)
    assert {r.name for r in remotes} == names_of(data.seg) | names_of(data.ct5n)
    # with the collection, the result's SEG joins the collection's own series, nothing is looked up
    both = run({"kind": "idc", "collection_id": COLLECTION, "analysis_result_id": RESULT}, settings, table)
    assert {r.name for r in both} == set().union(*(names_of(s) for s in data.all))


def test_seg_and_rtstruct_indices_spare_downloading_the_labels(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    index_dir = tmp_path / "idc-index"
    index_dir.mkdir()
    # as idc-index downloads them: a label series and the series it refers to, among other columns
    pq.write_table(
        pa.table(
            {
                "SeriesInstanceUID": [data.seg.uid],
                "segmented_SeriesInstanceUID": [data.ct5n.uid],
                "total_segments": [1],
            }
        ),
        index_dir / "seg_index.parquet",
    )
    pq.write_table(
        pa.table({"SeriesInstanceUID": [data.rtstruct.uid], "referenced_SeriesInstanceUID": [data.gap.uid]}),
        index_dir / "rtstruct_index.parquet",
    )
    settings = make_settings(tmp_path, s3, idc_index_dir=index_dir)
    table = index_table([s.row() for s in data.all])
    remotes = run(
        {"kind": "idc", "collection_id": COLLECTION}, settings, table, FetchOptions(labelled_only=True)
    )
    expected = names_of(data.seg) | names_of(data.ct5n) | names_of(data.rtstruct) | names_of(data.gap)
    assert {r.name for r in remotes} == expected
    assert s3.requests_for("GET", f"/{BUCKET}/") == []  # no object fetched, only listings
    # the estimate is exact with the indices, and counts the localizer of the SEG's study without them
    exact = estimate(COLLECTION, labelled_only=True, index=table, index_dir=index_dir)
    assert (exact.series, exact.subjects) == (4, 2)
    assert exact.instances == 1 + 5 + 1 + 4
    assert exact.bytes == sum(
        len(b) for s in (data.seg, data.ct5n, data.rtstruct, data.gap) for b in s.files.values()
    )
    approximate = estimate(COLLECTION, labelled_only=True, index=table)
    assert (approximate.series, approximate.instances) == (5, 13)


def test_labelled_only_fails_when_no_label_refers_to_a_series_idc_holds(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    table = index_table([data.seg.row(), data.localizer.row()])  # the SEG's CT5N is not in this index
    with pytest.raises(SourceError, match="none of its 1 label series refers to an image series IDC holds"):
        run(
            {"kind": "idc", "collection_id": COLLECTION},
            make_settings(tmp_path, s3),
            table,
            FetchOptions(labelled_only=True),
        )


def test_a_label_object_that_is_not_dicom_fails_naming_it(
    tmp_path: Path, data: Fixture, s3: LocalS3Server
) -> None:
    (name,) = data.seg.files
    s3.put(BUCKET, f"{data.seg.prefix}/{name}", b"not a DICOM file at all")
    table = index_table([data.seg.row(), data.ct5n.row()])
    with pytest.raises(SourceError) as error:
        run({"kind": "idc", "analysis_result_id": RESULT}, make_settings(tmp_path, s3), table)
    assert f"{data.seg.uid}/{name}: not a readable DICOM file" in str(error.value)


def test_safe_part_keeps_uids_and_disambiguates_cleaned_ids() -> None:
    assert (
        safe_part("1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6")
        == "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"
    )
    assert safe_part("LIDC-IDRI-0001") == "LIDC-IDRI-0001"
    cleaned = {
        safe_part("a b"),
        safe_part("a_b"),
        safe_part("a/b"),
        safe_part(".."),
        safe_part("GBM_DSC_MRI_DRO_Bo=15T"),
    }
    assert len(cleaned) == 5
    assert all("/" not in part and part not in (".", "..") and not part.startswith(".") for part in cleaned)
    assert safe_part("a b").startswith("a_b-")
