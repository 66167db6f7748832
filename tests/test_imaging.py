"""Harmonising imaging sources: layouts, readers, RAS, label unification, dedup, splits, slicing.

All images are real: pydicom's and nibabel's bundled test data, built into sources by tests/imaging_fixtures.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import imaging_fixtures as fx
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app.common.labels import Annotation, normalise_concept, snomed_code, unify_labels
from workers.imaging.cases import LayoutKind, Split
from workers.imaging.dedup import content_hash, find_duplicates
from workers.imaging.errors import LayoutNotRecognisedError, SeriesRejectedError, UnreadableItemError
from workers.imaging.harmonise import harmonise_case
from workers.imaging.layout import ExplicitLayout, detect_layout
from workers.imaging.orientation import RAS_DIRECTION_ITK, axis_codes, reorient_to_ras
from workers.imaging.readers import read_dicom_folder, read_dicom_series, read_item, read_volume
from workers.imaging.slicing import slice_volume
from workers.imaging.splits import assign_splits, split_cases


def test_fixture_data_ships_in_the_wheels() -> None:
    for path in (fx.CT5N, fx.CT_GAP, fx.CT_LOCALIZER, fx.MR_MIXED, fx.ANATOMICAL):
        assert path.exists(), f"{path} is not in the installed wheel"
    assert len(list(fx.CT5N.iterdir())) == 5


# --- layout detection ----------------------------------------------------------------------------------------


def test_detects_msd_folder_with_label_table_and_official_test_case(tmp_path: Path) -> None:
    root = fx.build_msd_source(tmp_path)
    # MSD's tarballs really contain macOS resource forks (`._case.nii.gz`) next to every image.
    (root / "Task98_Abdomen" / "imagesTr" / "._abdomen_000.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    layout = detect_layout(root)
    assert layout.kind == LayoutKind.MSD
    assert layout.root.name == "Task98_Abdomen"  # looked through the archive's single top folder
    by_id = {c.case_id: c for c in layout.cases}
    assert sorted(by_id) == ["abdomen_000", "abdomen_001", "abdomen_002", "abdomen_003"]
    assert by_id["abdomen_000"].label == layout.root / "labelsTr" / "abdomen_000.nii.gz"
    assert by_id["abdomen_000"].label_table == {1: "liver", 2: "spleen"}
    assert by_id["abdomen_003"].split == Split.TEST and by_id["abdomen_003"].label is None


def test_detects_bids_with_derivative_labels(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_bids_source(tmp_path))
    assert layout.kind == LayoutKind.BIDS
    assert [(c.subject_id, c.images[0].name, c.label.name if c.label else None) for c in layout.cases] == [
        ("sub-01", "sub-01_T1w.nii.gz", "sub-01_dseg.nii.gz"),
        ("sub-02", "sub-02_T1w.nii.gz", "sub-02_dseg.nii.gz"),
    ]
    assert layout.cases[0].label_table == {1: "Liver", 2: "Spleen"}


def test_detects_suffix_pairs_with_channels(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_brats_like_source(tmp_path))
    assert layout.kind == LayoutKind.SUFFIX_PAIRS
    first = layout.cases[0]
    assert first.case_id == "BraTS_001" and first.subject_id == "BraTS_001"
    assert [p.name for p in first.images] == ["BraTS_001_t1.nii.gz", "BraTS_001_t2.nii.gz"]
    assert first.label is not None and first.label.name == "BraTS_001_seg.nii.gz"


def test_detects_dicom_series_with_separate_label(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_dicom_source(tmp_path))
    assert layout.kind == LayoutKind.DICOM_SERIES
    assert [(c.subject_id, c.images[0].name, c.label.name if c.label else None) for c in layout.cases] == [
        ("patient01", "CT", "segmentation.nii.gz"),
        ("patient02", "CT", "segmentation.nii.gz"),
    ]


def test_detects_class_folders_with_split_folders(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_class_folder_source(tmp_path))
    assert layout.kind == LayoutKind.CLASS_FOLDERS
    assert {c.class_name for c in layout.cases} == {"lower", "upper"}
    assert sum(c.split == Split.TEST for c in layout.cases) == 4
    assert sum(c.split == Split.TRAIN for c in layout.cases) == 8


def test_unknown_layout_needs_explicit_one_which_overrides(tmp_path: Path) -> None:
    root = fx.build_explicit_source(tmp_path)
    # `scans/` + `masks/` under the same names pair up by id (tests/test_layouts_wild.py); without the masks
    # nothing says what the scans are
    assert detect_layout(root).kind == LayoutKind.ID_PAIRS
    unlabelled = fx.build_explicit_source(tmp_path / "unlabelled")
    for mask in (unlabelled / "masks").iterdir():
        mask.unlink()
    with pytest.raises(LayoutNotRecognisedError):
        detect_layout(unlabelled)
    explicit = ExplicitLayout(
        image_glob="scans/*.nii.gz",
        label_glob="masks/*.nii.gz",
        subject=r"(?P<subject>pat-[A-Z])_",
        label_table={1: "liver", 2: "spleen"},
        test_cases=frozenset({"pat-B"}),
    )
    layout = detect_layout(root, explicit)
    assert layout.kind == LayoutKind.EXPLICIT
    assert [(c.case_id, c.subject_id, c.split) for c in layout.cases] == [
        ("pat-A_visit1", "pat-A", None),
        ("pat-A_visit2", "pat-A", None),
        ("pat-B_visit1", "pat-B", Split.TEST),
    ]
    assert all(c.label is not None and c.label.parent.name == "masks" for c in layout.cases)
    # An explicit layout also wins over a folder `auto` would read differently.
    brats = fx.build_brats_like_source(tmp_path / "brats")
    forced = detect_layout(
        brats, ExplicitLayout(image_glob="*/*_t1.nii.gz", pairing=r"(?P<case>BraTS_\d+)_t1")
    )
    assert forced.kind == LayoutKind.EXPLICIT
    assert [len(c.images) for c in forced.cases] == [1, 1]


# --- readers -------------------------------------------------------------------------------------------------


def test_ct5n_reads_to_a_volume_with_its_geometry() -> None:
    volume = read_dicom_series(fx.CT5N)
    assert volume.GetSize() == (16, 16, 5)
    assert volume.GetSpacing() == pytest.approx((0.488281, 0.488281, 2.5))
    # HU stay raw and int16 (ITK widens to int32 when a rescale is present).
    assert volume.GetPixelID() == sitk.sitkInt16
    assert sitk.GetArrayViewFromImage(volume).min() == -888


@pytest.mark.parametrize(
    ("series", "code", "words"),
    [
        (fx.CT_GAP, "slice_gap", "uneven slice spacing"),
        (fx.CT_LOCALIZER, "localizer", "localizer"),
    ],
)
def test_bad_series_rejected_with_reason(series: Path, code: str, words: str) -> None:
    with pytest.raises(SeriesRejectedError) as caught:
        read_dicom_series(series)
    assert caught.value.code == code
    assert words in caught.value.reason


def test_gap_made_by_dropping_a_middle_slice_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SeriesRejectedError) as caught:
        read_dicom_series(fx.build_gap_series(tmp_path / "CT4"))
    assert caught.value.code == "slice_gap"
    assert "2.5 to 5 mm" in caught.value.reason


def test_folder_with_several_series_reports_each_rejection() -> None:
    images, errors = read_dicom_folder(fx.MR_MIXED)
    assert {e.code for e in errors} == {"mixed_orientation"}
    assert len(errors) == 2 and all("mixes slice orientations" in e.reason for e in errors)
    assert [image.GetSize() for image in images] == [(16, 16, 1)]  # the lone single-slice series is fine
    with pytest.raises(UnreadableItemError) as caught:
        read_dicom_series(fx.MR_MIXED)
    assert caught.value.code == "several_series"


def test_corrupt_files_raise_a_specific_error(tmp_path: Path) -> None:
    truncated = tmp_path / "broken.nii.gz"
    truncated.write_bytes(gzip.compress(fx.ANATOMICAL.read_bytes())[:2000])
    short = tmp_path / "short.nii"
    short.write_bytes(fx.ANATOMICAL.read_bytes()[:3000])
    not_png = tmp_path / "broken.png"
    not_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    expected = {
        truncated: "truncated",
        short: "truncated",
        not_png: "unreadable",
        tmp_path / "gone.nii": "missing",
    }
    # ITK alone pads a truncated NIfTI with zeros and reports success; the reader must not.
    for path, code in expected.items():
        with pytest.raises(UnreadableItemError) as caught:
            read_item(path)
        assert caught.value.path == path and caught.value.code == code and caught.value.reason


def test_png_reads_as_2d(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_class_folder_source(tmp_path))
    image = read_item(layout.cases[0].images[0])
    assert image.GetDimension() == 2 and image.GetSize() == (33, 41)
    assert reorient_to_ras(image) == (image, None)


# --- orientation ---------------------------------------------------------------------------------------------


def test_reorientation_to_ras_keeps_voxels_spacing_and_dtype(tmp_path: Path) -> None:
    original = read_item(fx.ANATOMICAL)
    assert axis_codes(original) == "LAS"
    ras, geometry = reorient_to_ras(original)
    assert ras.GetDirection() == pytest.approx(RAS_DIRECTION_ITK)
    assert ras.GetSpacing() == original.GetSpacing() and ras.GetPixelID() == sitk.sitkInt16
    voxels, affine = fx.anatomical_volume()
    # nibabel's array is [x, y, z]; LAS -> RAS flips x only.
    assert np.array_equal(sitk.GetArrayFromImage(ras).transpose(2, 1, 0), voxels[::-1])
    assert geometry is not None and geometry.orientation == "LAS"
    assert np.allclose(geometry.affine_ras, affine, atol=1e-4)
    sitk.WriteImage(ras, str(tmp_path / "ras.nii.gz"))
    written = nib.load(tmp_path / "ras.nii.gz")
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")
    assert np.allclose(written.affine, nib.as_closest_canonical(nib.load(fx.ANATOMICAL)).affine, atol=1e-4)


def test_dicom_lps_volume_reoriented_to_ras() -> None:
    ras, geometry = reorient_to_ras(read_dicom_series(fx.CT5N))
    assert geometry is not None and geometry.orientation == "LPS"
    assert ras.GetDirection() == pytest.approx(RAS_DIRECTION_ITK)
    assert ras.GetPixelID() == sitk.sitkInt16


# --- labels --------------------------------------------------------------------------------------------------


def test_synonyms_share_one_concept() -> None:
    assert {normalise_concept(n) for n in ("liver", "Liver", " LIVER ", "hepatic", "Hepatic")} == {"liver"}
    assert normalise_concept("left kidney") == "kidney_left"  # sided forms of a known structure: one concept
    assert normalise_concept("Left Wobble") == "left_wobble"  # unknown structures keep their own concept
    assert normalise_concept("body") == "body"  # not folded into the catalog's whole-body region
    assert snomed_code("liver") == ("10200004", "Liver")


def test_two_spellings_get_one_global_id_and_partial_labels_are_unknown(tmp_path: Path) -> None:
    msd = detect_layout(fx.build_msd_source(tmp_path / "msd"))
    # Image/mask pairs name no labels: the source descriptor's `labels` supplies them.
    partial = detect_layout(fx.build_partial_source(tmp_path / "partial"), label_table={1: "Hepatic"})
    assert partial.kind == LayoutKind.SUFFIX_PAIRS
    assert all(c.label_table == {1: "Hepatic"} for c in partial.cases)
    sources = {
        "msd": {1: "liver", 2: "spleen"},
        "partial": {1: "Hepatic"},
        "other": {3: "Liver", 4: "SPLEEN"},
    }
    unified = unify_labels(sources)
    assert unified.table == {"background": 0, "liver": 1, "spleen": 2}
    assert unified.local_to_global["partial"] == {0: 0, 1: 1}
    assert unified.local_to_global["other"] == {0: 0, 3: 1, 4: 2}
    # Source order does not change ids.
    assert unify_labels(dict(reversed(list(sources.items())))).table == unified.table

    case = next(c for c in partial.cases if c.case_id == "scan_17")
    harmonised = harmonise_case(case, "partial", unified)
    assert harmonised.annotations == {"liver": Annotation.ANNOTATED, "spleen": Annotation.UNKNOWN}
    labels = sitk.GetArrayViewFromImage(harmonised.label)
    assert set(np.unique(labels)) == {0, 1}  # spleen voxels are not there, and are not claimed as background

    full = harmonise_case(msd.cases[0], "msd", unified)
    assert full.annotations == {"liver": Annotation.ANNOTATED, "spleen": Annotation.ANNOTATED}
    # The same voxels are liver in both sources after unification.
    assert np.array_equal(sitk.GetArrayViewFromImage(full.label) == 1, labels == 1)


def test_one_source_keeps_its_label_ids_and_later_sources_follow() -> None:
    alone = unify_labels({"msd-liver": {1: "liver", 2: "liver tumour"}})
    assert alone.table == {"background": 0, "liver": 1, "liver_tumour": 2}
    assert alone.local_to_global["msd-liver"] == {0: 0, 1: 1, 2: 2}
    pair = {"b-kits": {1: "kidney", 2: "tumour"}, "a-spleen": {1: "spleen", 2: "Hepatic"}}
    unified = unify_labels(pair)
    assert unified.table == {"background": 0, "spleen": 1, "liver": 2, "kidney": 3, "tumour": 4}
    assert unify_labels(dict(reversed(list(pair.items())))).table == unified.table


def test_label_value_missing_from_the_table_is_reported(tmp_path: Path) -> None:
    msd = detect_layout(fx.build_msd_source(tmp_path, cases=1))
    unified = unify_labels({"msd": {1: "liver"}})  # the table forgot label 2
    with pytest.raises(UnreadableItemError) as caught:
        harmonise_case(msd.cases[0], "msd", unified)
    assert caught.value.code == "unknown_label_value" and "[2]" in caught.value.reason


def test_dicom_case_harmonises_and_gap_case_is_skipped(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_dicom_source(tmp_path))
    unified = unify_labels({"tcia": {1: "liver", 2: "spleen"}})
    good = harmonise_case(layout.cases[0], "tcia", unified)
    assert good.channels[0].GetSize() == (16, 16, 5)
    assert good.label is not None and good.label.GetSize() == (16, 16, 5)
    assert good.label.GetDirection() == pytest.approx(RAS_DIRECTION_ITK)
    assert np.array_equal(
        sitk.GetArrayViewFromImage(good.label) == 1, sitk.GetArrayViewFromImage(good.channels[0]) > 30
    )
    with pytest.raises(SeriesRejectedError) as caught:
        harmonise_case(layout.cases[1], "tcia", unified)
    assert caught.value.code == "slice_gap"


# --- dedup ---------------------------------------------------------------------------------------------------


def test_dedup_finds_the_same_scan_under_another_name_and_orientation(tmp_path: Path) -> None:
    msd = detect_layout(fx.build_msd_source(tmp_path / "msd"))
    partial = detect_layout(fx.build_partial_source(tmp_path / "partial"))
    hashes = {}
    for source, layout in (("msd", msd), ("partial", partial)):
        for case in layout.cases:
            image, _ = reorient_to_ras(read_item(case.images[0]))
            hashes[(source, case.case_id)] = content_hash(image)
    assert find_duplicates(hashes) == [[("msd", "abdomen_000"), ("partial", "scan_17")]]
    # Same bytes, different spacing: not the same scan.
    image = read_item(fx.ANATOMICAL)
    stretched = sitk.Image(image)
    stretched.SetSpacing((2.0, 2.0, 4.0))
    assert content_hash(stretched) != content_hash(image)


# --- splits --------------------------------------------------------------------------------------------------


def test_splits_are_deterministic_patient_level_and_honour_official_tests(tmp_path: Path) -> None:
    subjects = [f"subject-{n:03d}" for n in range(200)]
    first = assign_splits(subjects, seed="bundle-1", test_fraction=0.2, val_fraction=0.1)
    assert first == assign_splits(
        list(reversed(subjects)), seed="bundle-1", test_fraction=0.2, val_fraction=0.1
    )
    assert first != assign_splits(subjects, seed="bundle-2", test_fraction=0.2, val_fraction=0.1)
    counts = {split: sum(v == split for v in first.values()) for split in Split}
    assert 20 <= counts[Split.TEST] <= 60 and 5 <= counts[Split.VAL] <= 40
    # A subject keeps its split when other subjects join.
    grown = assign_splits([*subjects, "subject-new"], seed="bundle-1", test_fraction=0.2, val_fraction=0.1)
    assert all(grown[s] == first[s] for s in subjects)
    # Official splits: a test subject stays test, an official training subject never becomes test.
    drawn_test = next(s for s in subjects if first[s] == Split.TEST)
    drawn_train = next(s for s in subjects if first[s] == Split.TRAIN)
    official = {drawn_test: Split.TRAIN, drawn_train: Split.TEST}
    honoured = assign_splits(
        subjects, seed="bundle-1", test_fraction=0.2, val_fraction=0.1, official=official
    )
    assert honoured[drawn_train] == Split.TEST and honoured[drawn_test] != Split.TEST

    msd = detect_layout(fx.build_msd_source(tmp_path))
    assert split_cases(msd.cases, seed="x", test_fraction=0.0)["abdomen_003"] == Split.TEST
    explicit = detect_layout(
        fx.build_explicit_source(tmp_path / "explicit"),
        ExplicitLayout(image_glob="scans/*.nii.gz", subject=r"(?P<subject>pat-[A-Z])_"),
    )
    by_case = split_cases(explicit.cases, seed="any", test_fraction=0.5)
    assert by_case["pat-A_visit1"] == by_case["pat-A_visit2"]  # both visits of one patient together


# --- slicing -------------------------------------------------------------------------------------------------


def test_slicing_counts_and_skips_empty_label_slices() -> None:
    image, _ = reorient_to_ras(read_item(fx.ANATOMICAL))
    voxels = sitk.GetArrayFromImage(image)
    labels = np.zeros(voxels.shape, dtype=np.uint8)
    labels[10:14, 5:20, 3:9] = 1  # axial (z) 10..13, coronal (y) 5..19, sagittal (x) 3..8
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    assert len(list(slice_volume(image, plane="axial"))) == 25
    assert len(list(slice_volume(image, plane="sagittal"))) == 33
    kept = list(slice_volume(image, label, plane="axial", skip_empty=True))
    assert [s.index for s in kept] == [10, 11, 12, 13]
    assert kept[0].image.shape == (41, 33) and kept[0].label is not None and kept[0].label.sum() == 15 * 6
    assert len(list(slice_volume(image, label, plane="coronal", skip_empty=True))) == 15
    assert len(list(slice_volume(image, label, plane="sagittal", skip_empty=True))) == 6


def test_every_layout_harmonises_end_to_end(tmp_path: Path) -> None:
    unified = unify_labels({"brats": {1: "liver", 2: "spleen"}, "bids": {1: "Liver", 2: "Spleen"}, "png": {}})
    brats = detect_layout(fx.build_brats_like_source(tmp_path / "brats"))
    first = harmonise_case(brats.cases[0], "brats", unified)
    assert len(first.channels) == 2 and all(
        c.GetDirection() == pytest.approx(RAS_DIRECTION_ITK) for c in first.channels
    )
    bids = detect_layout(fx.build_bids_source(tmp_path / "bids"))
    assert [harmonise_case(c, "bids", unified).content_hash for c in bids.cases] == [
        harmonise_case(c, "brats", unified).content_hash for c in brats.cases
    ]  # the same two scans under BIDS and BraTS names
    png = detect_layout(fx.build_class_folder_source(tmp_path / "png"))
    flat = harmonise_case(png.cases[0], "png", unified)
    assert flat.label is None and flat.original is None
    assert set(flat.annotations.values()) == {Annotation.UNKNOWN}  # a classification set draws no organs


def test_nifti_named_gz_but_stored_plain_is_read(tmp_path: Path) -> None:
    """Some hosts publish uncompressed NIfTI under a `.nii.gz` name; ITK reads it, so must we."""
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), plain)
    misnamed = tmp_path / "scan.nii.gz"
    misnamed.write_bytes(plain.read_bytes())
    image = read_volume(misnamed)
    assert image.GetSize() == (4, 5, 6)
    assert sitk.GetArrayFromImage(image).sum() == volume.sum()
    # cut short, it is refused like a cut .nii (ITK alone would pad it with zeros)
    misnamed.write_bytes(plain.read_bytes()[:-100])
    with pytest.raises(UnreadableItemError) as caught:
        read_volume(misnamed)
    assert caught.value.code == "truncated"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
def test_remap_labels_maps_every_voxel_and_names_unknown_values(dtype: type) -> None:
    from app.common.labels import UnknownLabelValueError, remap_labels

    local = np.array([[0, 1, 2], [2, 1, 0]], dtype=dtype)
    assert remap_labels(local, {0: 0, 1: 2, 2: 1}).tolist() == [[0, 2, 1], [1, 2, 0]]
    with pytest.raises(UnknownLabelValueError, match=r"\[2\]"):
        remap_labels(local, {0: 0, 1: 1})
    assert remap_labels(local, {0: 0, 1: 300, 2: 1}).dtype == np.uint16
    # ids that all stay: the same array back for uint8 (no copy), a uint8 copy for wider types
    same = remap_labels(local, {0: 0, 1: 1, 2: 2, 5: 3})
    assert same.tolist() == local.tolist() and same.dtype == np.uint8
    assert (same is local) == (np.dtype(dtype) == np.uint8)


def test_remap_labels_refuses_negative_fractional_and_handles_large_ids() -> None:
    from app.common.labels import UnknownLabelValueError, remap_labels

    with pytest.raises(UnknownLabelValueError, match=r"\[-1\]"):
        remap_labels(np.array([0, -1, 3], dtype=np.int16), {0: 0, 3: 1})
    with pytest.raises(UnknownLabelValueError, match=r"1\.5"):
        remap_labels(np.array([0.0, 1.5]), {0: 0, 1: 1})
    assert remap_labels(np.array([70000, 0]), {0: 0, 70000: 1}).tolist() == [1, 0]
    assert remap_labels(np.zeros((0, 3), dtype=np.uint8), {0: 0}).shape == (0, 3)
