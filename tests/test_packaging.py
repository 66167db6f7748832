"""Fused-bundle packaging: build a bundle from small real volumes and read it back the way its users will.

Volumes come from nibabel's test data (an MR anatomical scan and an EPI series), turned into realistic cases
deterministically: a CT-like intensity range, multi-label maps cut from intensity bands, 2D slices for the
classification part. Each test reads the published bundle with the tool a user would use on it: SimpleITK and
nibabel for NIfTI, the nnU-Net layout rules, `sha256sum`, mlcroissant, Hugging Face `datasets`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from app.common.archive import BundleArchive
from app.common.checksums import bundle_files, verify_sha256sums
from workers.packaging import (
    BundleSpec,
    HarmonisedCase,
    LabelConcept,
    LabelTable,
    SkippedItem,
    SourceDataset,
    build_bundle,
)
from workers.packaging.licences import combined_terms
from workers.packaging.publish import PARTIAL_MARKER, BundleExistsError

SOURCES = [
    SourceDataset(
        slug="ct-liver-demo",
        title="CT liver demo",
        licence="CC-BY-4.0",
        url="https://zenodo.org/records/1111111",
        licence_url="https://creativecommons.org/licenses/by/4.0/",
        citation_bibtex="@article{demo2020,\n  title = {A CT liver set},\n  author = {Doe, Jane},\n  year = {2020}\n}",
    ),
    SourceDataset(
        slug="ct-organs-nc",
        title="CT organs (non-commercial)",
        licence="CC-BY-NC-SA-4.0",
        url="https://zenodo.org/records/2222222",
        licence_url="https://creativecommons.org/licenses/by-nc-sa/4.0/",
        stated_licences=(("CC BY-NC-SA 4.0", "dataset.json"),),
        doi="10.5281/zenodo.2222222",
        year="2019",
        authors="Roe, Richard and Poe, Edgar",
    ),
    SourceDataset(
        slug="mr-brain-demo",
        title="MR brain demo",
        licence="CC0-1.0",
        url="https://openneuro.org/datasets/ds000001",
    ),
]
LABELS = LabelTable(
    concepts=(
        LabelConcept("background", 0),
        LabelConcept("liver", 1, "SCT", "10200004", "Liver"),
        LabelConcept("kidney", 2),
        LabelConcept("brain", 3),
    ),
    source_maps={
        "ct-liver-demo": {1: "liver"},
        "ct-organs-nc": {1: "liver", 2: "kidney", 3: "kidney"},
        "mr-brain-demo": {1: "brain"},
    },
)


def _itk(path: str) -> sitk.Image:
    return sitk.ReadImage(os.path.join(data_path, path))


def _geometry(image: sitk.Image) -> dict[str, tuple[float, ...]]:
    return {"spacing": image.GetSpacing(), "origin": image.GetOrigin(), "direction": image.GetDirection()}


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def make_cases() -> list[HarmonisedCase]:
    """Ten items: CT volumes from two sources (train/val/test), one MR volume, 2D slices, and three bad items."""
    cases: list[HarmonisedCase] = []
    epi = _itk("example4d.nii.gz")  # 128 x 96 x 24 x 2
    epi_array = sitk.GetArrayFromImage(epi)  # (2, 24, 96, 128)
    geometry3d = {
        "spacing": epi.GetSpacing()[:3],
        "origin": epi.GetOrigin()[:3],
        "direction": tuple(np.asarray(epi.GetDirection()).reshape(4, 4)[:3, :3].ravel()),
    }
    for index in range(5):
        volume = epi_array[index % 2].astype(np.int32)
        # A CT-like range: air at -1000, soft tissue around 0..200 HU; each case shifted so content differs.
        ct = (np.clip(volume, 0, 1200) - 1000 + 7 * index).astype(np.int16)
        label = np.zeros(ct.shape, np.uint8)
        label[ct > np.percentile(ct, 80)] = 1
        source = "ct-liver-demo" if index < 3 else "ct-organs-nc"
        if source == "ct-organs-nc":
            label[ct > np.percentile(ct, 95)] = 2
        cases.append(
            HarmonisedCase(
                case_id=f"ct_{index:03d}",
                image=ct,
                label=label,
                source=source,
                source_file=f"imagesTr/case_{index}.nii.gz",
                source_checksum=f"md5:{index:032x}",
                subject_id=f"patient{index // 2}",
                modality="CT",
                annotated_labels=("liver",) if source == "ct-liver-demo" else ("kidney", "liver"),
                content_hash=_digest(ct),
                split=("train", "train", "val", "train", "test")[index],
                **geometry3d,
            )
        )
    anatomical = _itk("anatomical.nii")
    anat = sitk.GetArrayFromImage(anatomical).astype(np.int16)
    brain = (anat > np.percentile(anat, 60)).astype(np.uint8) * 3
    cases.append(
        HarmonisedCase(
            case_id="mr_000",
            image=anat,
            label=brain,
            source="mr-brain-demo",
            source_file="sub-01/anat/sub-01_T1w.nii.gz",
            source_checksum="sha256:" + "0" * 64,
            subject_id="sub-01",
            modality="MR",
            annotated_labels=("brain",),
            content_hash=_digest(anat),
            split="train",
            **_geometry(anatomical),
        )
    )
    for index in range(4):
        picture = anat[:, :, 5 + index * 4]
        picture8 = (255 * (picture - anat.min()) / max(1, anat.max() - anat.min())).astype(np.uint8)
        cases.append(
            HarmonisedCase(
                case_id=f"xr_{index:03d}",
                image=picture8,
                spacing=(2.0, 2.0),
                origin=(0.0, 0.0),
                direction=(1.0, 0.0, 0.0, 1.0),
                source="mr-brain-demo",
                source_file=f"slices/{index}.png",
                source_checksum=f"md5:{index + 100:032x}",
                subject_id=f"sub-{index:02d}",
                modality="MR",
                annotated_labels=(),
                content_hash=_digest(picture8),
                split=("train", "train", "val", "test")[index],
                class_label=("normal", "abnormal")[index % 2],
            )
        )
    # Items that must be skipped with a reason, never crash the build or reach the bundle.
    duplicate = cases[0]
    cases.append(
        HarmonisedCase(**{**duplicate.__dict__, "case_id": "ct_dup", "source_file": "other/name.nii.gz"})
    )
    cases.append(
        HarmonisedCase(
            **{
                **cases[1].__dict__,
                "case_id": "ct_badlabel",
                "label": cases[1].label[:-1],
                "content_hash": "x",
            }
        )
    )
    cases.append(
        HarmonisedCase(**{**cases[2].__dict__, "case_id": "ct_nolabel", "label": None, "content_hash": "y"})
    )
    return cases


SPEC = BundleSpec(
    name="liver fusion demo",
    description="Test bundle fusing two CT sources and an MR source.",
    modalities=("CT", "MR"),
    dataset_id=501,
    version="1.0.0",
    date_published="2026-11-28",
)
EARLIER_SKIPS = [
    SkippedItem("ct-organs-nc", "imagesTr/case_9.nii.gz", "download failed: md5 mismatch", stage="fetch")
]


def build(dest: Path, spec: BundleSpec = SPEC, cases: list[HarmonisedCase] | None = None):
    return build_bundle(
        iter(cases if cases is not None else make_cases()),
        sources=SOURCES,
        labels=LABELS,
        dest=dest,
        spec=spec,
        skipped=EARLIER_SKIPS,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("bundles")
    result = build(root / "bundle")
    yield result.path
    shutil.rmtree(root, ignore_errors=True)


def _datasets(bundle: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((bundle / "nnunet").iterdir())}


def test_nnunet_layout_follows_the_rules(bundle: Path) -> None:
    datasets = _datasets(bundle)
    assert sorted(datasets) == ["Dataset501_LiverFusionDemoCt", "Dataset502_LiverFusionDemoMr"]
    for name, folder in datasets.items():
        document = json.loads((folder / "dataset.json").read_text())
        for key in (
            "channel_names",
            "labels",
            "numTraining",
            "file_ending",
            "name",
            "description",
            "licence",
        ):
            assert key in document, key
        assert "reference" in document
        assert document["file_ending"] == ".nii.gz"
        assert document["labels"]["background"] == 0
        assert sorted(document["labels"].values()) == list(range(len(document["labels"])))
        # A truthful channel name: nnU-Net applies CT normalisation only to a channel named exactly "CT".
        assert document["channel_names"] == {"0": "CT" if name.endswith("Ct") else "MR"}
        images = sorted((folder / "imagesTr").glob("*_0000.nii.gz"))
        assert document["numTraining"] == len(images) > 0
        for image_path in images:
            case = image_path.name.removesuffix("_0000.nii.gz")
            label_path = folder / "labelsTr" / f"{case}.nii.gz"
            assert label_path.is_file(), f"{case} has no label"
            image, label = nib.load(image_path), nib.load(label_path)
            assert image.shape == label.shape
            np.testing.assert_allclose(image.affine, label.affine)
            assert set(np.unique(np.asarray(label.dataobj))) <= set(document["labels"].values())
        folds = json.loads((folder / "splits_final.json").read_text())
        assert isinstance(folds, list) and folds
        training = {p.name.removesuffix("_0000.nii.gz") for p in images}
        for fold in folds:
            assert set(fold) == {"train", "val"}
            assert set(fold["train"]) | set(fold["val"]) == training
            assert fold["train"] and fold["val"]  # nnU-Net cannot train a fold with nothing on one side
            if len(training) > 1:
                assert not set(fold["train"]) & set(fold["val"])
            else:  # one case, one subject: the fold trains and validates on it, as nnU-Net's fold `all`
                assert fold["train"] == fold["val"]
    ct = datasets["Dataset501_LiverFusionDemoCt"]
    # The bundle's own split is fold 0; the official test case sits in imagesTs, out of training.
    assert json.loads((ct / "splits_final.json").read_text()) == [
        {"train": ["ct_000", "ct_001", "ct_003"], "val": ["ct_002"]}
    ]
    assert sorted(p.name for p in (ct / "imagesTs").iterdir()) == ["ct_004_0000.nii.gz"]


def test_volumes_read_back_identical_with_simpleitk(bundle: Path) -> None:
    originals = {c.case_id: c for c in make_cases()}
    for path in sorted((bundle / "nnunet").glob("*/images*/*.nii.gz")):
        case = originals[path.name.removesuffix("_0000.nii.gz")]
        image = sitk.ReadImage(str(path))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), case.image)
        np.testing.assert_allclose(image.GetSpacing(), case.spacing, rtol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), case.origin, atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), case.direction, atol=1e-6)
        label_path = Path(str(path).replace("/images", "/labels").replace("_0000.nii.gz", ".nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))), case.label)


def test_sha256sums_cover_and_verify_every_file(bundle: Path) -> None:
    assert verify_sha256sums(bundle) == []
    listed = (bundle / "SHA256SUMS").read_text().splitlines()
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert [line.split("  ", 1)[1] for line in listed] == [f for f in files if f != "SHA256SUMS"]
    # The coreutils tool a user would run agrees.
    checked = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_manifest_has_one_row_per_item_in_both_formats(bundle: Path) -> None:
    table = pq.read_table(bundle / "manifest.parquet").to_pylist()
    with open(bundle / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["item_id"] for r in table] == [r["item_id"] for r in rows]
    assert [r["item_id"] for r in table] == sorted(
        ["ct_000", "ct_001", "ct_002", "ct_003", "ct_004", "mr_000", "xr_000", "xr_001", "xr_002", "xr_003"]
    )
    by_id = {r["item_id"]: r for r in table}
    ct = by_id["ct_003"]
    assert ct["source_dataset"] == "ct-organs-nc" and ct["licence"] == "CC-BY-NC-SA-4.0"
    assert ct["shape"] == [24, 96, 128] and ct["dims"] == 3 and len(ct["spacing"]) == 3
    assert ct["annotated_labels"] == ["kidney", "liver"]
    for record in table:
        for column in (
            "image_path",
            "source_file",
            "source_checksum",
            "subject_id",
            "modality",
            "content_hash",
        ):
            assert record[column], (record["item_id"], column)
        assert (bundle / record["image_path"]).is_file()
        digest = hashlib.sha256((bundle / record["image_path"]).read_bytes()).hexdigest()
        assert digest == record["image_sha256"]


def test_report_lists_skipped_items_with_reasons_and_source_status(bundle: Path) -> None:
    report = json.loads((bundle / "report.json").read_text())
    reasons = {item["item"]: item["reason"] for item in report["skipped"]}
    assert "duplicate content" in reasons["other/name.nii.gz"]
    assert "label shape" in reasons["imagesTr/case_1.nii.gz"]
    assert "no label map" in reasons["imagesTr/case_2.nii.gz"]
    assert "md5 mismatch" in reasons["imagesTr/case_9.nii.gz"]
    status = {s["slug"]: s["status"] for s in report["sources"]}
    assert status == {"ct-liver-demo": "partial", "ct-organs-nc": "partial", "mr-brain-demo": "ok"}
    assert {(r["modality"], r["dims"]): r["items"] for r in report["summary"]} == {
        ("CT", 3): 5,
        ("MR", 2): 4,
        ("MR", 3): 1,
    }
    page = (bundle / "report.html").read_text()
    assert "md5 mismatch" in page and "<table>" in page


def test_licences_say_which_terms_bind_the_whole(bundle: Path) -> None:
    text = (bundle / "LICENSES.md").read_text()
    assert "NonCommercial (ct-organs-nc)" in text
    assert "ShareAlike (ct-organs-nc)" in text
    for source in SOURCES:
        assert source.licence in text
    bib = (bundle / "CITATION.bib").read_text()
    assert "@article{demo2020" in bib and "ct_organs_nc" in bib and "mr_brain_demo" in bib
    bibtexparser = pytest.importorskip("bibtexparser")
    library = bibtexparser.parse_string(bib)
    assert len(library.entries) == 4 and not library.failed_blocks
    entries = {entry.key: entry for entry in library.entries}
    organs = entries["ct_organs_nc"]
    # what the source states reaches its entry: authors, year and DOI, not only a title and a URL
    assert organs["author"] == "Roe, Richard and Poe, Edgar"
    assert organs["year"] == "2019" and organs["doi"] == "10.5281/zenodo.2222222"
    survey = entries["imagingx_survey"]
    assert survey.entry_type == "article" and "2603.27460" in survey["eprint"] and survey["year"] == "2026"
    assert "CC BY-NC-SA 4.0 (dataset.json)" in text  # the licence the source states, with where it was read
    assert combined_terms([SOURCES[2]]).statements() == ["No conditions: every part is public domain or CC0."]
    dataset_json = json.loads((bundle / "nnunet/Dataset501_LiverFusionDemoCt/dataset.json").read_text())
    assert "non-commercial" in dataset_json["licence"]


def test_labels_json_has_codes_and_every_source_map(bundle: Path) -> None:
    labels = json.loads((bundle / "labels.json").read_text())
    assert [(entry["name"], entry["value"]) for entry in labels["labels"]] == [
        ("background", 0),
        ("liver", 1),
        ("kidney", 2),
        ("brain", 3),
    ]
    assert labels["labels"][1]["code"] == {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}
    assert labels["sources"]["ct-organs-nc"] == {"1": "liver", "2": "kidney", "3": "kidney"}


def test_croissant_loads_in_mlcroissant_with_checksums_and_provenance(bundle: Path) -> None:
    mlcroissant = pytest.importorskip("mlcroissant")
    document = json.loads((bundle / "croissant.json").read_text())
    for node in document["distribution"]:
        if node["@type"] == "cr:FileObject":
            content = (bundle / node["contentUrl"]).read_bytes()
            assert node["sha256"] == hashlib.sha256(content).hexdigest()
    assert sorted(d["@id"] for d in document["prov:wasDerivedFrom"]) == sorted(s.url for s in SOURCES)
    dataset = mlcroissant.Dataset(jsonld=bundle / "croissant.json")
    assert not dataset.metadata.ctx.issues.errors, dataset.metadata.ctx.issues.report()
    records = list(dataset.records("manifest"))
    assert len(records) == 10
    assert {r["manifest/item_id"].decode() for r in records} >= {"ct_000", "mr_000", "xr_003"}


def test_2d_part_loads_with_hugging_face_datasets(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(bundle / "images2d"), cache_dir=str(tmp_path / "hf-cache")
    )
    assert {split: loaded[split].num_rows for split in loaded} == {"train": 2, "validation": 1, "test": 1}
    first = loaded["train"][0]
    classes = loaded["train"].features["class_label"]  # a ClassLabel: integers with their names
    assert first["item_id"] == "xr_000" and classes.int2str(first["class_label"]) == "normal"
    original = next(c for c in make_cases() if c.case_id == "xr_000")
    assert first["image"].size == original.image.shape[::-1]  # PIL sizes are (width, height)
    np.testing.assert_array_equal(np.asarray(first["image"]), original.image)
    parquet = pq.read_table(bundle / "images2d_metadata.parquet").to_pylist()
    assert [r["item_id"] for r in parquet] == ["xr_000", "xr_001", "xr_002", "xr_003"]


def test_same_inputs_give_identical_bundles_whatever_the_order_or_parallelism(
    bundle: Path, tmp_path: Path
) -> None:
    shuffled = make_cases()
    random.Random(7).shuffle(shuffled)
    # The shuffle changes which duplicate is seen first; keep the original first so the inputs are the same.
    shuffled.sort(key=lambda c: c.case_id == "ct_dup")
    other = build(
        tmp_path / "again",
        BundleSpec(**{**SPEC.__dict__, "parallelism": "processes", "workers": 2, "compress_threads": 3}),
        shuffled,
    )
    assert (other.path / "SHA256SUMS").read_bytes() == (bundle / "SHA256SUMS").read_bytes()


def test_slices_export_writes_masks_beside_the_imagefolder(tmp_path: Path) -> None:
    spec = BundleSpec(**{**SPEC.__dict__, "slice_axis": 0, "parallelism": "none"})
    cases = [c for c in make_cases() if c.case_id in ("ct_000", "ct_004")]
    result = build(tmp_path / "sliced", spec, cases)
    rows = pq.read_table(result.path / "images2d_metadata.parquet").to_pylist()
    assert rows and all(r["parent_case"] in ("ct_000", "ct_004") for r in rows)
    ct = cases[0]
    first = next(r for r in rows if r["parent_case"] == "ct_000")
    index = int(first["item_id"].rsplit("s", 1)[1])
    from PIL import Image

    stored = np.asarray(Image.open(result.path / first["image_path"])).astype(np.int32)
    np.testing.assert_array_equal(stored + first["intensity_offset"], ct.image[index])
    assert first["label_path"].startswith("images2d_masks/")
    assert verify_sha256sums(result.path) == []


def test_a_failure_mid_write_leaves_no_bundle(tmp_path: Path) -> None:
    def cases_then_crash() -> Iterator[HarmonisedCase]:
        cases = make_cases()
        yield cases[0]
        yield cases[1]
        raise OSError("disk full")

    dest = tmp_path / "crashed"
    with pytest.raises(OSError, match="disk full"):
        build_bundle(cases_then_crash(), sources=SOURCES, labels=LABELS, dest=dest, spec=SPEC)
    assert list(tmp_path.iterdir()) == []
    assert not any(PARTIAL_MARKER in p.name for p in tmp_path.iterdir())


def test_a_published_bundle_is_never_overwritten(bundle: Path) -> None:
    before = (bundle / "SHA256SUMS").read_bytes()
    with pytest.raises(BundleExistsError):
        build(bundle)
    assert (bundle / "SHA256SUMS").read_bytes() == before


def test_archive_is_deterministic_complete_and_what_tarfile_writes(tmp_path: Path) -> None:
    cases = [c for c in make_cases() if c.case_id in ("ct_000", "xr_000")]
    first = build(tmp_path / "a" / "bundle", cases=cases)
    build(tmp_path / "b" / "bundle", cases=cases)
    archive = b"".join(BundleArchive(first.path).read())
    assert len(archive) == BundleArchive(first.path).size
    assert archive == b"".join(BundleArchive(tmp_path / "b" / "bundle").read())
    assert BundleArchive(first.path).sha256() == hashlib.sha256(archive).hexdigest()

    # byte for byte what tarfile writes for the same members, so every tar reader takes it
    def normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    written = tmp_path / "tarfile.tar"
    with tarfile.open(written, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(first.path, arcname="bundle", recursive=False, filter=normalised)
        folders: set[str] = set()
        for relative in bundle_files(first.path):
            parents = relative.split("/")[:-1]
            for depth in range(1, len(parents) + 1):
                folder = "/".join(parents[:depth])
                if folder not in folders:
                    folders.add(folder)
                    tar.add(
                        first.path / folder, arcname=f"bundle/{folder}", recursive=False, filter=normalised
                    )
            tar.add(first.path / relative, arcname=f"bundle/{relative}", filter=normalised)
    assert archive == written.read_bytes()
    with tarfile.open(written) as tar:
        names = set(tar.getnames())
    assert "bundle/SHA256SUMS" in names and "bundle/croissant.json" in names


@pytest.mark.parametrize("start, end", [(0, 1), (0, 512), (100, 5000), (511, 513), (1000, None), (-1, None)])
def test_any_range_of_the_archive_is_the_same_bytes_as_that_slice_of_the_whole(
    start: int, end: int | None, bundle: Path
) -> None:
    archive = BundleArchive(bundle)
    whole = b"".join(archive.read())
    start = archive.size - 1 if start < 0 else start
    assert b"".join(archive.read(start, end)) == whole[start:end]


def test_a_killed_build_leaves_only_a_partial_folder_that_the_next_run_removes(tmp_path: Path) -> None:
    from workers.packaging.publish import remove_stale_partials

    # SIGKILL skips the cleanup: what remains is a `.partial-*` folder, never one with the bundle's name.
    leftover = tmp_path / f"bundle{PARTIAL_MARKER}0123456789ab"
    (leftover / "nnunet").mkdir(parents=True)
    assert remove_stale_partials(tmp_path / "bundle") == [leftover]
    assert list(tmp_path.iterdir()) == []
    result = build(tmp_path / "bundle", cases=[c for c in make_cases() if c.case_id == "ct_000"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"] and result.items == 1


def _prewritten(cases: list[HarmonisedCase], folder: Path) -> list[HarmonisedCase]:
    """The same cases as the harmonising stage hands them over: 3D volumes already compressed to files."""
    from dataclasses import replace

    from workers.packaging.volumes import prewrite_volumes

    out = []
    for case in cases:
        if case.dims != 3 or case.problem() is not None:
            out.append(case)
            continue
        volumes = prewrite_volumes(
            folder, case.case_id, case.image, case.label, case.spacing, case.origin, case.direction
        )
        out.append(replace(case, image=None, label=None, prewritten=volumes))
    return out


def test_prewritten_volumes_give_the_identical_bundle(bundle: Path, tmp_path: Path) -> None:
    result = build(tmp_path / "prewritten", SPEC, _prewritten(make_cases(), tmp_path / "cases"))
    assert (result.path / "SHA256SUMS").read_bytes() == (bundle / "SHA256SUMS").read_bytes()
    assert verify_sha256sums(result.path) == []


def test_prewritten_volumes_slice_like_arrays(tmp_path: Path) -> None:
    spec = BundleSpec(**{**SPEC.__dict__, "slice_axis": 0, "parallelism": "none"})
    cases = [c for c in make_cases() if c.case_id in ("ct_000", "ct_004")]
    from_arrays = build(tmp_path / "arrays", spec, cases)
    from_files = build(tmp_path / "files", spec, _prewritten(cases, tmp_path / "cases"))
    assert (from_files.path / "SHA256SUMS").read_bytes() == (from_arrays.path / "SHA256SUMS").read_bytes()


def test_multi_channel_cases_share_a_dataset_with_channel_names(tmp_path: Path) -> None:
    from dataclasses import replace

    base = next(c for c in make_cases() if c.case_id == "ct_000" and c.image is not None)
    cases = [
        replace(
            base,
            case_id=f"mc_{index}",
            content_hash=f"{index:064x}",
            modality="MR",
            channel_names=("T1", "FLAIR"),
            extra_channels=((base.image // 2).astype(base.image.dtype),),
        )
        for index in range(2)
    ]
    spec = BundleSpec(**{**SPEC.__dict__, "modalities": ("T1+FLAIR",), "parallelism": "none"})
    from_arrays = build(tmp_path / "arrays", spec, cases)
    (dataset,) = (from_arrays.path / "nnunet").iterdir()
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "FLAIR"}
    for case in cases:
        second = sitk.GetArrayFromImage(
            sitk.ReadImage(str(dataset / "imagesTr" / f"{case.case_id}_0001.nii.gz"))
        )
        np.testing.assert_array_equal(second, case.extra_channels[0])
    assert verify_sha256sums(from_arrays.path) == []
    from_files = build(tmp_path / "files", spec, _prewritten_multi(cases, tmp_path / "cases"))
    assert (from_files.path / "SHA256SUMS").read_bytes() == (from_arrays.path / "SHA256SUMS").read_bytes()
    # a case whose channels do not match any of the bundle's datasets is skipped, not mixed in
    with pytest.raises(ValueError, match=r"channels MR are not one of the bundle's \['T1\+FLAIR'\]"):
        build(tmp_path / "single", spec, [replace(cases[0], channel_names=(), extra_channels=())])


def _prewritten_multi(cases: list[HarmonisedCase], folder: Path) -> list[HarmonisedCase]:
    from dataclasses import replace

    from workers.packaging.volumes import prewrite_volumes

    return [
        replace(
            case,
            image=None,
            label=None,
            extra_channels=(),
            prewritten=prewrite_volumes(
                folder,
                case.case_id,
                case.image,
                case.label,
                case.spacing,
                case.origin,
                case.direction,
                extra_images=case.extra_channels,
            ),
        )
        for case in cases
    ]
