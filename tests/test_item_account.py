"""Issue 10, imaging side: items built from real scans (nibabel's anatomical MR, pydicom's CT5N series) with
each defect, harmonised as the job does and read back: one class per meaning, unknown names listed, modality
from the data with the disagreement recorded, no nnU-Net dataset mixing modalities, subject-level 2D splits,
float slices present, a label on another grid refused by default and resampled when allowed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import imaging_fixtures as fx
import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
from PIL import Image

from app.common.labels import unify_labels
from workers.imaging.cases import Case, Split
from workers.imaging.errors import LabelGridMismatchError
from workers.imaging.layout import ExplicitLayout, detect_layout
from workers.imaging.splits import split_cases
from workers.pipeline import harmonise as harmonise_unit
from workers.pipeline.common import case_from_json, case_to_json


def _harmonise(
    case: Case, slug: str, unification: Any, out: Path, catalog: list[str], **options: Any
) -> dict[str, Any]:
    """The harmonise unit's work, the case carried through its job JSON first as between units."""
    job = out.parent.parent
    restored = case_from_json(json.loads(json.dumps(case_to_json(case, job))), job)
    return harmonise_unit.harmonise_to_file(
        restored,
        slug,
        unification,
        catalog[0] if catalog else "image",
        out,
        job / "sources" / slug,
        catalog_modalities=catalog,
        **options,
    )


def _label_values(out: Path, meta: dict[str, Any]) -> set[int]:
    label = sitk.ReadImage(str(out.parent / meta["volumes"]["label"][0]))
    return {int(v) for v in np.unique(sitk.GetArrayViewFromImage(label))}


# -- labels by meaning -------------------------------------------------------------------------------------------


def test_spellings_of_one_meaning_share_one_class_and_unknown_names_are_listed(tmp_path: Path) -> None:
    job = tmp_path / "job"
    sources = {
        "brain-a": {"1": "grey matter", "2": "CSF"},
        "brain-b": {"1": "Gray Matter", "2": "cerebrospinal fluid"},
        "kidney-a": {"1": "left kidney", "2": "Thing X"},
        "kidney-b": {"1": "Kidney L", "2": "kidney_left"},
    }
    layouts = {}
    for slug, names in sources.items():
        fx.build_msd_source(job / "sources" / slug, names=names, cases=1)
        layouts[slug] = detect_layout(job / "sources" / slug)
    unification = unify_labels({slug: layout.cases[0].label_table for slug, layout in layouts.items()})
    assert unification.table == {
        "background": 0,
        "grey_matter": 1,
        "cerebrospinal_fluid": 2,
        "kidney_left": 3,
        "thing_x": 4,
    }
    results = {}
    for slug, layout in layouts.items():
        out = job / "cases" / f"{slug}.npz"
        results[slug] = (out, _harmonise(layout.cases[0], slug, unification, out, ["MR"]))
    # both brain sources' voxels carry the same two ids
    assert _label_values(*results["brain-a"]) == _label_values(*results["brain-b"]) == {0, 1, 2}
    # kidney-b draws its left kidney under two ids: one class in the bundle, recorded as relabelled
    assert _label_values(*results["kidney-b"]) == {0, 3}
    kinds = {slug: [a["kind"] for a in meta["alterations"]] for slug, (_out, meta) in results.items()}
    assert kinds == {"brain-a": [], "brain-b": [], "kidney-a": ["relabelled"], "kidney-b": ["relabelled"]}
    assert [meta["unknown_labels"] for _out, meta in results.values()] == [[], [], ["Thing X"], []]
    assert results["kidney-a"][1]["annotated"] == ["kidney_left", "thing_x"]


# -- modality from the data -------------------------------------------------------------------------------------


def test_modality_comes_from_the_data_and_a_disagreeing_catalog_is_recorded(tmp_path: Path) -> None:
    job = tmp_path / "job"
    fx.build_dicom_source(job / "sources" / "tcia")
    fx.build_msd_source(job / "sources" / "msd", cases=1)
    fx.build_bids_source(job / "sources" / "bids")
    fx.build_class_folder_source(job / "sources" / "pngs")
    dicom = detect_layout(job / "sources" / "tcia").cases[0]  # patient01: the real CT5N series
    msd = detect_layout(job / "sources" / "msd").cases[0]  # dataset.json: {"0": "MRI"}
    bids = detect_layout(job / "sources" / "bids").cases[0]  # sub-01_T1w
    png = detect_layout(job / "sources" / "pngs").cases[0]
    unification = unify_labels(
        {"tcia": {1: "liver", 2: "spleen"}, "msd": msd.label_table, "bids": bids.label_table, "pngs": {}}
    )
    found = {}
    for slug, case, catalog in (
        ("tcia", dicom, ["MR"]),  # the catalog is wrong about this series
        ("msd", msd, ["CT"]),
        ("bids", bids, ["CT", "MR"]),  # a dataset listing both: MR is no disagreement
        ("pngs", png, ["XR"]),
    ):
        meta = _harmonise(case, slug, unification, job / "cases" / f"{slug}.npz", catalog)
        found[slug] = (meta["modality"], meta["modality_from"], meta["modality_disagreement"])
    assert found == {
        "tcia": ("CT", "dicom", "catalog says MR, the DICOM header says CT"),
        "msd": ("MR", "dataset.json", "catalog says CT, the source's dataset.json says MR"),
        "bids": ("MR", "bids", None),
        "pngs": ("XR", "catalog", None),
    }


def test_cases_of_different_modality_never_share_an_nnunet_dataset(tmp_path: Path) -> None:
    from workers.packaging import BundleSpec, LabelConcept, LabelTable, SourceDataset, build_bundle
    from workers.pipeline.package import load_harmonised

    job = tmp_path / "job"
    fx.build_dicom_source(job / "sources" / "mixed")  # patient01 CT (patient02's gap series is unreadable)
    fx.build_msd_source(job / "sources" / "mixed" / "msd", cases=2)  # MR beside it, under one catalog entry
    cases = [
        detect_layout(job / "sources" / "mixed").cases[0],
        *detect_layout(job / "sources/mixed/msd").cases,
    ]
    unification = unify_labels({"mixed": {1: "liver", 2: "spleen"}})
    items = []
    for index, case in enumerate(c for c in cases if c.split is None):
        case = Case(**{**case.__dict__, "label_table": {1: "liver", 2: "spleen"}})
        out = job / "cases" / f"case{index}.npz"
        meta = _harmonise(case, "mixed", unification, out, ["CT"])  # the catalog lists CT only
        items.append((f"case{index}", "mixed", case_to_json(case, job), meta, Split.TRAIN))
    assert [meta["modality"] for *_rest, meta, _split in items] == ["CT", "MR", "MR"]
    modalities = tuple(sorted({meta["modality"] for *_rest, meta, _split in items}))
    table = LabelTable(
        concepts=tuple(LabelConcept(name, value) for name, value in unification.table.items()),
        source_maps={"mixed": unification.local_to_concept["mixed"]},
    )
    bundle = build_bundle(
        load_harmonised(items, lambda item_id: job / "cases" / f"{item_id}.npz"),
        sources=[SourceDataset("mixed", "Mixed", "CC-BY-4.0", "https://example.org/mixed")],
        labels=table,
        dest=tmp_path / "bundle",
        spec=BundleSpec(name="mixed", description="CT and MR", modalities=modalities, parallelism="none"),
    ).path
    datasets = sorted((bundle / "nnunet").glob("Dataset*"))
    channels = {}
    for folder in datasets:
        document = json.loads((folder / "dataset.json").read_text())
        cases_in = sorted(p.name for p in (folder / "imagesTr").glob("*.nii.gz"))
        channels[document["channel_names"]["0"]] = cases_in
        # nnU-Net's rules, per dataset: its counts, a label per image on the image's grid, ids from its table
        assert document["numTraining"] == len(cases_in) and document["labels"]["background"] == 0
        for name in cases_in:
            image = nib.load(folder / "imagesTr" / name)
            label = nib.load(folder / "labelsTr" / name.replace("_0000", ""))
            assert image.shape == label.shape
            np.testing.assert_allclose(image.affine, label.affine)
            assert set(np.unique(np.asarray(label.dataobj))) <= set(document["labels"].values())
    report = json.loads((bundle / "report.json").read_text())
    (source,) = report["sources"]
    # the report states per source where modalities and subjects were found and the disagreement per item
    assert source["modality_from"] == {"dicom": 1, "dataset.json": 2}
    assert sum(source["subject_from"].values()) == 3
    assert "catalog says CT, the source's dataset.json says MR" in (bundle / "report.json").read_text()
    assert channels == {
        "CT": ["case0_0000.nii.gz"],
        "MR": ["case1_0000.nii.gz", "case2_0000.nii.gz"],
    }


def test_unnamed_channels_carry_their_modality_so_datasets_never_mix(tmp_path: Path) -> None:
    job = tmp_path / "job"
    volume, affine = fx.anatomical_volume()
    results = {}
    for slug, catalog in (("ct-set", ["CT"]), ("mr-set", ["MR"])):
        root = job / "sources" / slug
        for folder in ("first", "second"):  # one file per channel, named alike: the source names no channel
            (root / folder).mkdir(parents=True)
            nib.save(nib.Nifti1Image(volume, affine), root / folder / "case1.nii.gz")
        case = Case("case1", "case1", (root / "first" / "case1.nii.gz", root / "second" / "case1.nii.gz"))
        meta = _harmonise(case, slug, unify_labels({slug: {}}), job / "cases" / f"{slug}.npz", catalog)
        results[slug] = (meta["modality_from"], meta["channels"])
    assert results == {
        "ct-set": ("catalog", ["CT_channel1", "CT_channel2"]),
        "mr-set": ("catalog", ["MR_channel1", "MR_channel2"]),
    }


# -- subjects and classes in 2D -----------------------------------------------------------------------------------


def _slices_as_pngs(root: Path, names: list[str]) -> None:
    """Real MR slices (nibabel's anatomical volume) saved under the given relative names."""
    volume, _ = fx.anatomical_volume()
    scaled = ((volume - volume.min()) / (volume.max() - volume.min()) * 255).astype(np.uint8)
    for index, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scaled[:, :, index % volume.shape[2]].T).save(path)


def test_2d_subjects_come_from_file_names_and_splits_keep_each_subject_together(tmp_path: Path) -> None:
    names = [
        f"{view}/patient{patient:03d}_slice{index}.png"
        for patient in range(1, 13)
        for view, index in (("Axial", 1), ("axial", 2), ("Coronal", 3), ("Sagittals", 4), ("sagittal", 5))
    ]
    _slices_as_pngs(tmp_path / "src", names)
    layout = detect_layout(tmp_path / "src")
    assert {c.class_name for c in layout.cases} == {"axial", "coronal", "sagittal"}  # one class per meaning
    assert {c.subject_id for c in layout.cases} == {f"patient{p:03d}" for p in range(1, 13)}
    assert {c.subject_from for c in layout.cases} == {"file name pattern patient<id>"}
    splits = split_cases(layout.cases, seed="imagingx", test_fraction=0.3, val_fraction=0.2)
    per_subject: dict[str, set[Split]] = {}
    for case in layout.cases:
        per_subject.setdefault(case.subject_id, set()).add(splits[case.case_id])
    assert all(len(found) == 1 for found in per_subject.values())
    assert len({split for found in per_subject.values() for split in found}) >= 2  # and it is a real split


@pytest.mark.parametrize(
    "names, subjects, rule",
    [
        (
            ["a/sub-01_T1w_5.png", "b/sub-01_T1w_6.png", "a/sub-02_T1w_5.png", "b/sub-02_T1w_9.png"],
            {"sub-01", "sub-02"},
            "BIDS sub-<label>",
        ),
        (
            ["a/P12_1.png", "b/P12_2.png", "a/P7_1.png", "b/P7_3.png"],
            {"P12", "P7"},
            "file name pattern <id>_<n>",
        ),
        (
            ["a/ISIC_0024306.png", "b/ISIC_0024307.png", "a/ISIC_0024308.png"],
            {"ISIC_0024306", "ISIC_0024307", "ISIC_0024308"},
            "none: one subject per image (ISIC ids name images)",
        ),
        # letters alone are no patient id: "img" would put every image in one subject
        (["a/img_001.png", "b/img_002.png", "a/img_003.png"], {"img_001", "img_002", "img_003"}, None),
    ],
)
def test_common_file_name_patterns_name_subjects_and_nothing_is_guessed(
    tmp_path: Path, names: list[str], subjects: set[str], rule: str | None
) -> None:
    _slices_as_pngs(tmp_path / "src", names)
    layout = detect_layout(tmp_path / "src")
    assert {c.subject_id for c in layout.cases} == subjects
    assert {c.subject_from for c in layout.cases} == {rule or "none: one subject per image"}


def test_a_descriptor_subject_rule_wins_and_is_named(tmp_path: Path) -> None:
    _slices_as_pngs(
        tmp_path / "src", ["scans/site1-p9-a.png", "scans/site1-p9-b.png", "scans/site2-p9-a.png"]
    )
    explicit = ExplicitLayout(
        image_glob="scans/*.png",
        pairing=r"(?P<case>[^/]+)\.png$",
        subject=r"(?P<subject>site\d-p\d+)",
    )
    layout = detect_layout(tmp_path / "src", explicit)
    assert [(c.subject_id, c.subject_from) for c in layout.cases] == [
        ("site1-p9", "descriptor rule"),
        ("site1-p9", "descriptor rule"),
        ("site2-p9", "descriptor rule"),
    ]


def test_subject_rule_reaches_the_harmonised_item(tmp_path: Path) -> None:
    job = tmp_path / "job"
    _slices_as_pngs(job / "sources" / "views", ["Axial/pat1_1.png", "Coronal/pat1_2.png", "axial/pat2_1.png"])
    layout = detect_layout(job / "sources" / "views")
    unification = unify_labels({"views": {}})
    meta = _harmonise(layout.cases[0], "views", unification, job / "cases" / "a.npz", ["MR"])
    assert meta["subject_from"] == "file name pattern patient<id>"
    assert meta["unknown_labels"] == []  # "axial" is a known class


# -- float slices -------------------------------------------------------------------------------------------------


def _float_msd(root: Path, fractions: bool) -> Path:
    """MSD-like: the real MR stored as float32, as MSD ships CT (whole values), or with fractions."""
    fx.build_msd_source(root, cases=1)
    image = root / "Task98_Abdomen" / "imagesTr" / "abdomen_000.nii.gz"
    loaded = nib.load(image)
    voxels = np.asarray(loaded.dataobj).astype("<f4") + (np.float32(0.25) if fractions else 0)
    nib.save(nib.Nifti1Image(voxels, loaded.affine), image)
    return root


@pytest.mark.parametrize("fractions", [False, True])
def test_float_volumes_give_2d_slices_that_keep_every_value(
    tmp_path: Path, fractions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from workers.packaging import BundleSpec, LabelConcept, LabelTable, SourceDataset, build_bundle
    from workers.pipeline.package import load_harmonised

    job = tmp_path / "job"
    case = detect_layout(_float_msd(job / "sources" / "msd", fractions)).cases[0]
    unification = unify_labels({"msd": case.label_table})
    meta = _harmonise(case, "msd", unification, job / "cases" / "c.npz", ["MR"], slices_2d=True)
    casts = [a for a in meta["alterations"] if a["kind"] == "cast"]
    assert len(casts) == (0 if fractions else 1)
    assert fractions or "16-bit integers" in casts[0]["detail"]
    bundle = build_bundle(
        load_harmonised(
            [("c", "msd", case_to_json(case, job), meta, Split.TRAIN)], lambda _i: job / "cases" / "c.npz"
        ),
        sources=[SourceDataset("msd", "MSD", "CC-BY-SA-4.0", "https://example.org/msd")],
        labels=LabelTable(
            concepts=tuple(LabelConcept(n, v) for n, v in unification.table.items()),
            source_maps={"msd": unification.local_to_concept["msd"]},
        ),
        dest=tmp_path / "bundle",
        spec=BundleSpec(
            name="floats", description="float slices", modalities=("MR",), slice_axis=0, parallelism="none"
        ),
    ).path
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(next((bundle / "nnunet").rglob("c_0000.nii.gz")))))
    suffix = ".tiff" if fractions else ".png"
    written = sorted((bundle / "images2d" / "train").glob(f"*{suffix}"))
    assert written, "the float volume's slices must be in the bundle"
    assert not list((bundle / "images2d" / "train").glob("*.tiff" if not fractions else "*.png"))
    rows = pq.read_table(bundle / "images2d" / "train" / "metadata.parquet").to_pylist()
    by_name = {row["file_name"]: row for row in rows}
    # croissant names the pictures' file set, whichever format they took, and still validates
    document = json.loads((bundle / "croissant.json").read_text())
    includes = {node.get("includes") for node in document["distribution"] if node["@type"] == "cr:FileSet"}
    assert f"images2d/*/*{suffix}" in includes
    mlcroissant = pytest.importorskip("mlcroissant")
    checked = mlcroissant.Dataset(jsonld=bundle / "croissant.json")
    assert not checked.metadata.ctx.issues.errors, checked.metadata.ctx.issues.report()
    # and Hugging Face `datasets` loads them, values intact, with a (here empty) ClassLabel
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(bundle / "images2d"), cache_dir=str(tmp_path / "hf-cache")
    )["train"]
    assert loaded.num_rows == len(written) and loaded.features["class_label"].names == []
    first = min(written, key=lambda p: p.name)
    row = next(r for r in loaded if r["item_id"] == first.stem)
    assert row["class_label"] == -1
    np.testing.assert_array_equal(
        np.asarray(row["image"]).astype(np.float64) + row["intensity_offset"],
        np.asarray(Image.open(first)).astype(np.float64) + row["intensity_offset"],
    )
    for path in written:
        index = int(path.stem.rsplit("s", 1)[1])
        stored = np.asarray(Image.open(path)).astype(np.float64) + float(
            by_name[path.name]["intensity_offset"]
        )
        np.testing.assert_array_equal(stored, volume[index].astype(np.float64))


# -- grids --------------------------------------------------------------------------------------------------------


def _short_label_msd(root: Path) -> Case:
    """MSD-like: a label one slice short of its image (the real MR, 25 slices; the label 24)."""
    fx.build_msd_source(root, cases=1)
    label = root / "Task98_Abdomen" / "labelsTr" / "abdomen_000.nii.gz"
    loaded = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(loaded.dataobj)[:, :, :-1], loaded.affine), label)
    return detect_layout(root).cases[0]


def test_a_label_on_another_grid_is_refused_by_default_with_the_reason(tmp_path: Path) -> None:
    job = tmp_path / "job"
    case = _short_label_msd(job / "sources" / "msd")
    unification = unify_labels({"msd": case.label_table})
    with pytest.raises(LabelGridMismatchError) as caught:
        _harmonise(case, "msd", unification, job / "cases" / "c.npz", ["MR"])
    assert caught.value.code == "label_grid_mismatch"
    assert "size" in caught.value.reason and "resample_mismatched_labels" in caught.value.reason


def test_a_label_on_another_grid_is_resampled_when_allowed_and_recorded(tmp_path: Path) -> None:
    job = tmp_path / "job"
    case = _short_label_msd(job / "sources" / "msd")
    unification = unify_labels({"msd": case.label_table})
    out = job / "cases" / "c.npz"
    meta = _harmonise(case, "msd", unification, out, ["MR"], resample_mismatched_labels=True)
    assert [a["kind"] for a in meta["alterations"]] == ["resampled"]
    assert "nearest neighbour" in meta["alterations"][0]["detail"]
    image = sitk.ReadImage(str(out.parent / meta["volumes"]["image"][0]))
    label = sitk.ReadImage(str(out.parent / meta["volumes"]["label"][0]))
    assert label.GetSize() == image.GetSize()
    assert _label_values(out, meta) <= {0, 1, 2}  # nearest neighbour invents no label value


def test_a_2d_mask_of_another_size_is_refused_or_scaled_when_allowed(tmp_path: Path) -> None:
    job = tmp_path / "job"
    root = job / "sources" / "pairs"
    _slices_as_pngs(root, ["images/case_1.png"])
    mask = (np.asarray(Image.open(root / "images" / "case_1.png")) > 100).astype(np.uint8)
    (root / "masks").mkdir()
    Image.fromarray(mask[::2, ::2]).save(root / "masks" / "case_1.png")  # half the size
    case = Case(
        "case_1", "case_1", (root / "images" / "case_1.png",), root / "masks" / "case_1.png", {1: "liver"}
    )
    unification = unify_labels({"pairs": {1: "liver"}})
    with pytest.raises(LabelGridMismatchError):
        _harmonise(case, "pairs", unification, job / "cases" / "p.npz", ["MR"])
    meta = _harmonise(
        case, "pairs", unification, job / "cases" / "p.npz", ["MR"], resample_mismatched_labels=True
    )
    assert [a["kind"] for a in meta["alterations"]] == ["resampled"]
    with np.load(job / "cases" / "p.npz") as arrays:
        assert arrays["label"].shape == arrays["image"].shape
        np.testing.assert_array_equal(arrays["label"][::2, ::2], mask[::2, ::2])


def test_ensure_fixture_folders_are_independent(tmp_path: Path) -> None:
    # the builders copy real series: a second build beside the first must not share files with it
    fx.build_dicom_source(tmp_path / "a")
    shutil.rmtree(tmp_path / "a" / "patient02")
    fx.build_dicom_source(tmp_path / "b")
    assert (tmp_path / "b" / "patient02" / "CT").is_dir()
