"""Units of workers/pipeline/ that need no worker: explicit layouts from descriptors, item ids, source roots."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import imaging_fixtures as fx
import pytest

from app.common.descriptors import parse_source
from workers.imaging.layout import detect_layout
from workers.pipeline import explicit_layout, item_id_for, prepare_source_root
from workers.safety import UnpackLimits, UnsafeArchiveError

LIMITS = UnpackLimits(max_bytes=10**9, max_members=1000, max_ratio=1000)


def test_descriptor_layout_pairs_by_suffix_and_marks_official_tests(tmp_path: Path) -> None:
    root = fx.build_explicit_source(tmp_path / "src")
    for path in sorted((root / "masks").iterdir()):  # masks/<case>.nii.gz -> masks/<case>_gt.nii.gz
        path.rename(path.with_name(path.name.replace(".nii.gz", "_gt.nii.gz")))
    source = parse_source(
        {
            "kind": "local",
            "path": "/data/x",
            "labels": {"1": "liver", "2": "spleen"},
            "layout": {
                "images": "scans/*.nii.gz",
                "labels": "masks/*.nii.gz",
                "pairing": {"by": "suffix", "suffix": "_gt"},
                "split": {"test": ["scans/pat-B_*.nii.gz"]},
            },
        }
    )
    layout = detect_layout(root, explicit_layout(source.layout, root, source.labels), source.labels)
    cases = {case.case_id: case for case in layout.cases}
    assert set(cases) == {"pat-A_visit1", "pat-A_visit2", "pat-B_visit1"}
    assert all(case.label is not None and case.label.name.endswith("_gt.nii.gz") for case in cases.values())
    assert cases["pat-B_visit1"].split == "test" and cases["pat-A_visit1"].split is None
    assert cases["pat-A_visit1"].label_table == {1: "liver", 2: "spleen"}


def test_item_ids_are_portable_and_distinct_per_source() -> None:
    assert item_id_for("chaos-ct", "patient02/CT") == "chaos-ct_patient02-CT"
    assert item_id_for("a", "x y") != item_id_for("b", "x y")
    assert len(item_id_for("s" * 150, "c" * 150)) <= 200


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def test_source_root_unpacks_archives_beside_plain_files(tmp_path: Path) -> None:
    job = tmp_path / "job"
    downloads = job / "downloads" / "s"
    downloads.mkdir(parents=True)
    (downloads / "images.tar.gz").write_bytes(_tar({"imagesTr/a.nii.gz": b"x"}))
    (downloads / "dataset.json").write_text("{}")
    (downloads / "scan.nii.gz").write_bytes(b"\x1f\x8b not an archive, a volume")
    files = sorted(downloads.iterdir())
    root = prepare_source_root(files, downloads, job / "sources" / "s", job, LIMITS)
    assert (root / "images" / "imagesTr" / "a.nii.gz").read_bytes() == b"x"
    assert (root / "dataset.json").is_file() and (root / "scan.nii.gz").is_file()
    # a second call finds the finished folder and leaves it as it is
    assert prepare_source_root(files, downloads, job / "sources" / "s", job, LIMITS) == root


def test_source_root_refuses_a_traversal_and_leaves_nothing(tmp_path: Path) -> None:
    job = tmp_path / "job"
    downloads = job / "downloads" / "s"
    downloads.mkdir(parents=True)
    (downloads / "evil.tar.gz").write_bytes(_tar({"../../evil.txt": b"x"}))
    (downloads / "notes.txt").write_text("hello")
    with pytest.raises(UnsafeArchiveError):
        prepare_source_root(sorted(downloads.iterdir()), downloads, job / "sources" / "s", job, LIMITS)
    assert not (job / "sources" / "s").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not [p for p in (job / "sources").iterdir()], "no staging folder is left behind"


def test_channel_names_come_from_the_source_then_file_names(tmp_path: Path) -> None:
    import json

    import nibabel as nib
    import numpy as np

    from workers.imaging.cases import Case
    from workers.pipeline import channel_names

    task = tmp_path / "Task01_BrainTumour"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    volume = np.zeros((4, 5, 6, 2), dtype=np.int16)  # one 4D NIfTI holding both channels, as MSD ships them
    nib.save(nib.Nifti1Image(volume, np.eye(4)), task / "imagesTr" / "BRATS_001.nii.gz")
    nib.save(
        nib.Nifti1Image(volume[..., 0].astype(np.uint8), np.eye(4)), task / "labelsTr" / "BRATS_001.nii.gz"
    )
    meta = {"modality": {"1": "T1w", "0": "FLAIR"}, "labels": {"0": "background", "1": "edema"}}
    (task / "dataset.json").write_text(json.dumps(meta))
    (case,) = detect_layout(task).cases
    assert case.channel_names == ("FLAIR", "T1w")
    assert channel_names(case, 2) == ("FLAIR", "T1w")

    brats = Case("BraTS_001", "BraTS_001", (Path("BraTS_001_t1.nii.gz"), Path("BraTS_001_t2.nii.gz")))
    assert channel_names(brats, 2) == ("t1", "t2")
    unnamed = Case("c", "c", (Path("scan.nii.gz"),))
    assert channel_names(unnamed, 3) == ("channel1", "channel2", "channel3")


def test_a_unit_already_running_elsewhere_is_left_to_it(
    configured_services: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of a fetch or package unit (a worker's start-up resend, a broker redelivery): the second
    finds the claim taken and leaves, without touching the job; once released, the unit can be claimed."""
    import importlib

    from app.core.config import get_settings
    from workers.pipeline.common import claimed

    # the modules (workers.pipeline re-exports a function named `package`)
    fetch = importlib.import_module("workers.pipeline.fetch")
    package = importlib.import_module("workers.pipeline.package")

    ran: list[str] = []
    monkeypatch.setattr(fetch, "_fetch_source", lambda *args: ran.append("fetch") or [])
    monkeypatch.setattr(package, "_package", lambda *args: ran.append("package") or [])
    settings = get_settings()
    with claimed("fetch:job-1:lits") as first, claimed("package:job-1") as other:
        assert first and other
        with claimed("fetch:job-1:lits") as second:
            assert not second
        assert fetch.fetch_source("job-1", "lits", settings) == []
        assert package.package("job-1", settings) == []
        assert ran == []
    assert fetch.fetch_source("job-1", "lits", settings) == [] and package.package("job-1", settings) == []
    assert ran == ["fetch", "package"]


def test_sources_fetched_in_parallel_share_the_size_cap_as_they_reserve(configured_services: None) -> None:
    """Each source reserves its expected bytes before downloading: a second source sees the first's
    reservation, not only finished downloads (parallel fetches used to see each other as 0 bytes)."""
    import secrets

    from app.bundles.models import BundleJob, BundleSource
    from app.core.config import get_settings
    from app.core.db import new_session
    from workers.pipeline.fetch import JobCapExceededError, reserve_bytes

    settings = get_settings().model_copy(update={"bundle_max_bytes": 100})
    job_id = secrets.token_urlsafe(12)
    with new_session() as session:
        session.add(BundleJob(id=job_id, state="fetching", name="cap", request={}, warnings=[]))
        session.flush()
        for position, slug in enumerate(("a", "b")):
            session.add(
                BundleSource(job_id=job_id, slug=slug, position=position, name=slug, state="fetching")
            )
        session.commit()
    try:
        reserve_bytes(job_id, "a", 60, settings)
        with pytest.raises(JobCapExceededError, match="110"):
            reserve_bytes(job_id, "b", 50, settings)
        reserve_bytes(job_id, "b", 40, settings)
        reserve_bytes(job_id, "a", 55, settings)  # a's real size replaces its reservation
        with new_session() as session:
            assert session.get(BundleSource, (job_id, "b")).bytes == 40
    finally:
        with new_session() as session:
            session.delete(session.get(BundleJob, job_id))
            session.commit()


def test_packaging_skips_are_read_back_from_the_published_report(tmp_path: Path) -> None:
    """A packaging rerun that finds the bundle already published records the same skips as the run that
    built it: both read them from report.json (a rerun used to record none). Items earlier stages skipped and
    sources never fetched are in the report too, but their own rows already say so: not listed twice."""
    import importlib
    import json

    package = importlib.import_module("workers.pipeline.package")
    (tmp_path / "report.json").write_text(
        json.dumps(
            {
                "skipped": [
                    {
                        "source": "msd",
                        "item": "imagesTr/a.nii.gz",
                        "item_id": "msd_a",
                        "stage": "package",
                        "reason": "label and image sizes differ",
                    },
                    {
                        "source": "msd",
                        "item": "imagesTr/b.nii.gz",
                        "item_id": "msd_b",
                        "stage": "read",
                        "reason": "truncated",
                    },
                    {
                        "source": "gone",
                        "item": package.WHOLE_SOURCE,
                        "stage": "fetch",
                        "reason": "manual download",
                    },
                ]
            }
        )
    )
    assert package._packaging_skipped(tmp_path, {"msd_b"}) == [
        {
            "item_id": "msd_a",
            "source": "msd",
            "stage": "package",
            "file": "imagesTr/a.nii.gz",
            "reason": "label and image sizes differ",
        }
    ]


def test_a_source_carries_the_licences_and_citation_it_states() -> None:
    """What packaging is told about a source: the catalog's licence, and beside it every licence stated by the
    source's files, its host (IDC's per-series licences) and the resolver's table, with where each was read;
    the DOI from the descriptor before the host's; authors from the host's citation; the year from the
    catalog."""
    import importlib

    from app.bundles.models import BundleSource
    from app.catalog.models import Dataset

    package = importlib.import_module("workers.pipeline.package")
    source = BundleSource(
        slug="demo-set",
        name="Demo set",
        descriptor={"kind": "doi", "doi": "10.5281/zenodo.7840229"},
        stated={"licences": [{"licence": "CC-BY 4.0", "from": "demo/dataset.json"}]},
    )
    dataset = Dataset(
        slug="demo-set",
        name="Demo set",
        licence="CC-BY-4.0",
        licence_source="the host's record: CC BY 4.0",
        year=2021,
        url="https://example.org/demo",
        source_facts={
            "doi": "10.7937/K9/TCIA.2021.DEMO",
            "licences": {"CC-BY-4.0": 12, "CC-BY-NC-3.0": 2},
            "citation": "Doe, J., & Roe, R. (2021). Data From Demo (Version 2) [Data set]. The Cancer Imaging "
            "Archive. https://doi.org/10.7937/K9/TCIA.2021.DEMO",
        },
    )
    described = package.source_dataset(source, dataset)
    assert described.licence == "CC-BY-4.0"
    assert described.stated_licences == (
        ("CC-BY-4.0", "the host's record: CC BY 4.0"),
        ("CC-BY-4.0", "IDC: 12 series"),
        ("CC-BY-NC-3.0", "IDC: 2 series"),
        ("CC-BY 4.0", "demo/dataset.json"),
    )
    assert described.doi == "10.5281/zenodo.7840229"
    assert described.year == "2021" and described.authors == "Doe, J. and Roe, R."
    assert "author = {Doe, J. and Roe, R.}" in described.citation_bibtex
    bare = package.source_dataset(BundleSource(slug="bare", name="Bare"), None)
    assert (bare.licence, bare.stated_licences, bare.doi, bare.year, bare.authors) == (
        "unknown",
        (),
        "",
        "",
        "",
    )


def test_harmonisings_account_of_an_item_reaches_the_case_packaging_gets(tmp_path: Path) -> None:
    """The keys harmonising writes into an item's record (all optional) become the HarmonisedCase fields the
    account is built from; an item without them gets empty defaults."""
    import importlib

    import numpy as np

    from workers.imaging.cases import Split

    package = importlib.import_module("workers.pipeline.package")
    np.savez(tmp_path / "item.npz", image=np.zeros((4, 5), dtype=np.uint8))
    meta = {
        "spacing": [1.0, 1.0],
        "origin": [0.0, 0.0],
        "direction": [1.0, 0.0, 0.0, 1.0],
        "source_file": "train/a/x.png",
        "source_checksum": "",
        "modality": "XR",
        "annotated": [],
        "content_hash": "h",
        "dims": 2,
    }
    noted = {
        **meta,
        "alterations": [{"kind": "cast", "detail": "float64 -> uint8"}, {"kind": "rescaled"}],
        "modality_from": "dicom",
        "modality_disagreement": "catalog says CT",
        "unknown_labels": ["blob"],
        "subject_from": "file name pattern",
    }
    case = {"subject_id": "s1", "class_name": "a"}
    items = [("x_1", "x", case, noted, Split.TRAIN), ("x_2", "x", case, meta, Split.TRAIN)]
    first, second = package.load_harmonised(items, lambda _item_id: tmp_path / "item.npz")
    assert first.alterations == (("cast", "float64 -> uint8"), ("rescaled", ""))
    assert (first.modality_from, first.modality_disagreement) == ("dicom", "catalog says CT")
    assert first.unknown_labels == ("blob",) and first.subject_from == "file name pattern"
    assert (second.alterations, second.modality_from, second.unknown_labels, second.subject_from) == (
        (),
        "",
        (),
        "",
    )
