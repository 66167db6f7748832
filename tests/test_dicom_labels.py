"""DICOM label objects: indexing a tree by header, pairing SEG / RTSTRUCT with their series by referenced UID, and
drawing them onto the series' grid (workers/imaging/dicom_objects.py, dicom_labels.py).

Every object is made from pydicom's real CT5N series (16x16x5) with the tools data providers use: highdicom for
SEG, rt-utils for RTSTRUCT (tests/dicom_fixtures.py). Masks are cut from the CT's HU values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dicom_fixtures as dfx
import imaging_fixtures as fx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from app.common.labels import Annotation, unify_labels
from workers.imaging.cases import LayoutKind
from workers.imaging.dicom_labels import rasterise_polygons, read_dicom_label
from workers.imaging.dicom_objects import index_dicom_tree
from workers.imaging.errors import SeriesRejectedError, UnreadableItemError
from workers.imaging.harmonise import harmonise_case
from workers.imaging.layout import detect_layout
from workers.imaging.orientation import RAS_DIRECTION_ITK, reorient_to_ras
from workers.imaging.readers import read_item
from workers.pipeline.common import case_from_json, case_to_json

DENSE, SOFT = dfx.TISSUE_NAMES[1], dfx.TISSUE_NAMES[2]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("idc")
    return root, dfx.build_dicom_objects_source(root)


def _expected_labels(folder: Path, series_uid: str | None = None) -> np.ndarray:
    return dfx.tissue_masks(dfx.hounsfield(dfx.read_series(folder, series_uid)))


def _label_array(case) -> np.ndarray:
    """The case's label objects drawn on its series' grid as read (before RAS), and that grid checked."""
    image = read_item(case.images[0], case.series_uid)
    _, geometry = reorient_to_ras(image)
    label = read_dicom_label(case, geometry)
    assert label.GetSize() == image.GetSize()
    assert label.GetOrigin() == pytest.approx(image.GetOrigin())
    assert label.GetSpacing() == pytest.approx(image.GetSpacing())
    assert label.GetDirection() == pytest.approx(image.GetDirection())
    return sitk.GetArrayFromImage(label)


def _case(layout, case_id: str):
    (case,) = [c for c in layout.cases if c.case_id == case_id]
    return case


def _single_ct(root: Path, name: str = "ct", patient: str = "P1") -> tuple[Path, str, list[pydicom.Dataset]]:
    folder = root / "series" / name
    uid = dfx.copy_series(fx.CT5N, folder, name, patient_id=patient, series_number=2)
    return folder, uid, dfx.read_series(folder)


# --- index ---------------------------------------------------------------------------------------------------


def test_index_groups_by_series_and_reads_label_tables(tree: tuple[Path, dict[str, str]]) -> None:
    root, uids = tree
    index = index_dicom_tree(root)
    by_modality = sorted((s.modality, len(s.files)) for s in index.series.values())
    assert by_modality == [
        ("CT", 5),
        ("KO", 1),
        ("MR", 5),
        ("MR", 5),
        ("RTSTRUCT", 1),
        ("SEG", 1),
        ("SEG", 1),
        ("SR", 1),
    ]
    assert sorted(s.series_uid for s in index.image_series) == sorted(
        [uids["ct"], uids["mr"], uids["mosaic"]]
    )
    assert index.series[uids["mosaic"]].is_mosaic and not index.series[uids["ct"]].is_mosaic
    seg, orphan, rtstruct = (
        next(o for o in index.label_objects if o.path.name == name)
        for name in ("ct_seg", "seg_of_missing", "mr_rtstruct")
    )
    assert seg.kind == "SEG" and seg.label_table == {1: DENSE, 2: SOFT}
    assert seg.referenced_series == (uids["ct"],)
    assert rtstruct.kind == "RTSTRUCT" and rtstruct.label_table == {1: DENSE, 2: SOFT}
    assert rtstruct.referenced_series == (uids["mr"],)
    assert len(rtstruct.referenced_instances) == 5  # rt-utils lists every slice as a contour image
    assert index.labelled_series(seg) == (uids["ct"],)
    assert index.labelled_series(rtstruct) == (uids["mr"],)
    assert orphan.referenced_series == (uids["missing"],) and index.labelled_series(orphan) == ()


def test_seg_without_referenced_series_pairs_by_its_source_instances(tmp_path: Path) -> None:
    folder, uid, sources = _single_ct(tmp_path)
    seg_path = dfx.make_seg(sources, _expected_labels(folder), tmp_path / "segs" / "seg")
    dataset = pydicom.dcmread(seg_path)
    del dataset.ReferencedSeriesSequence
    dataset.save_as(seg_path)
    index = index_dicom_tree(tmp_path)
    (seg,) = index.label_objects
    assert seg.referenced_series == ()
    assert index.labelled_series(seg) == (uid,)
    (case,) = detect_layout(tmp_path).cases
    assert case.label == seg_path


# --- layout --------------------------------------------------------------------------------------------------


def test_layout_pairs_by_referenced_uid_not_by_folder(tree: tuple[Path, dict[str, str]]) -> None:
    root, uids = tree
    layout = detect_layout(root)
    assert layout.kind == LayoutKind.DICOM_OBJECTS
    # one case per image series: SEG, RTSTRUCT, SR and KO are none, the orphan SEG's series is absent
    summary = [
        (c.case_id, c.subject_id, c.modality, c.series_uid, c.images[0].relative_to(root).as_posix())
        for c in layout.cases
    ]
    assert summary == [
        ("P1_CT2", "P1", "CT", uids["ct"], "scans"),
        ("P1_MR3", "P1", "MR", uids["mr"], "scans"),
        ("P2_MR7", "P2", "MR", uids["mosaic"], "P2/mosaic"),
    ]
    ct, mr, mosaic = layout.cases
    # the SEG in its own folder labels the CT; the RTSTRUCT beside both series labels the MR it references
    assert ct.label == root / "labels" / "ct_seg" and ct.extra_labels == ()
    assert mr.label == root / "scans" / "mr_rtstruct"
    assert ct.label_table == {1: DENSE, 2: SOFT} and mr.label_table == {1: DENSE, 2: SOFT}
    assert mosaic.label is None and mosaic.label_table == {}
    labels = {c.label for c in layout.cases}
    assert root / "orphans" / "seg_of_missing" not in labels
    assert not {root / "scans" / "report", root / "scans" / "keys"} & labels


def test_dicom_tree_without_label_objects_gives_unlabelled_cases(tmp_path: Path) -> None:
    first = dfx.copy_series(fx.CT5N, tmp_path / "a", "first", patient_id="A", series_number=4)
    second = dfx.copy_series(
        fx.CT5N, tmp_path / "a", "second", modality="PT", patient_id="A", series_number=5
    )
    layout = detect_layout(tmp_path)
    assert layout.kind == LayoutKind.DICOM_UNLABELLED
    assert [(c.case_id, c.modality, c.series_uid, c.label) for c in layout.cases] == [
        ("A_CT4", "CT", first, None),
        ("A_PT5", "PT", second, None),
    ]
    # each reads as its own series out of the one folder
    volume = read_item(layout.cases[1].images[0], layout.cases[1].series_uid)
    assert volume.GetSize() == (16, 16, 5)


def test_existing_dicom_series_layout_still_wins_without_label_objects(tmp_path: Path) -> None:
    layout = detect_layout(fx.build_dicom_source(tmp_path))
    assert layout.kind == LayoutKind.DICOM_SERIES


def test_case_ids_stay_unique_when_series_numbers_repeat(tmp_path: Path) -> None:
    dfx.copy_series(fx.CT5N, tmp_path / "study1", "one", patient_id="P", series_number=2)
    dfx.copy_series(fx.CT5N, tmp_path / "study2", "two", patient_id="P", series_number=2)
    ids = [c.case_id for c in detect_layout(tmp_path).cases]
    assert len(set(ids)) == 2 and all(i.startswith("P_CT2_") and len(i) == len("P_CT2_") + 8 for i in ids)


def test_several_label_objects_combine_when_each_adds_structures(tmp_path: Path) -> None:
    folder, _uid, sources = _single_ct(tmp_path)
    expected = _expected_labels(folder)
    dense = dfx.make_seg(
        sources, (expected == 1).astype(np.uint8), tmp_path / "a" / "dense", {1: DENSE}, name="d"
    )
    soft = dfx.make_rtstruct(folder, {SOFT: expected == 2}, tmp_path / "b" / "soft")
    # a second reader's version of the dense tissue (one voxel row less): clashes with the first SEG
    again = (expected == 1).astype(np.uint8)
    again[:, 0, :] = 0
    other = dfx.make_seg(sources, again, tmp_path / "c" / "dense_again", {1: "dense tissue"}, name="d2")
    (case,) = detect_layout(tmp_path).cases
    index = index_dicom_tree(tmp_path)
    order = sorted(index.label_objects, key=lambda o: o.sort_key)
    seg_objects = [o for o in order if o.kind == "SEG"]
    kept_seg, dropped_seg = seg_objects[0], seg_objects[1]  # the first by Series Instance UID is kept
    assert {kept_seg.path, dropped_seg.path} == {dense, other}
    assert {case.label, *case.extra_labels} == {kept_seg.path, soft}
    assert len(case.notes) == 1 and dropped_seg.sop_instance_uid in case.notes[0]
    assert "dense_tissue" in case.notes[0] and "first by Series Instance UID" in case.notes[0]
    names = sorted(case.label_table.values())
    assert names == sorted([kept_seg.label_table[1], SOFT])
    dense_id = next(i for i, n in case.label_table.items() if n == kept_seg.label_table[1])
    soft_id = next(i for i, n in case.label_table.items() if n == SOFT)
    kept_mask = expected == 1 if kept_seg.path == dense else again == 1
    labels = _label_array(case)
    assert np.array_equal(labels == dense_id, kept_mask)
    assert np.array_equal(labels == soft_id, expected == 2)


def test_label_ids_are_one_per_name_across_the_source(tmp_path: Path) -> None:
    """Two patients whose SEGs number the same structures differently get one id per name: the fusion job
    reads one label table per source."""
    folder_a, _, sources_a = _single_ct(tmp_path, "a", "PA")
    _folder_b, _, sources_b = _single_ct(tmp_path, "b", "PB")
    labels = _expected_labels(folder_a)
    dfx.make_seg(sources_a, labels, tmp_path / "sa", {1: DENSE, 2: SOFT}, name="sa")
    swapped = np.where(labels == 1, 2, np.where(labels == 2, 1, 0)).astype(np.uint8)
    dfx.make_seg(sources_b, swapped, tmp_path / "sb", {1: SOFT, 2: DENSE}, name="sb")
    layout = detect_layout(tmp_path)
    tables = {c.subject_id: c.label_table for c in layout.cases}
    assert tables["PA"] == tables["PB"]
    ids = {name: i for i, name in tables["PA"].items()}
    for case in layout.cases:
        drawn = _label_array(case)
        assert np.array_equal(drawn == ids[DENSE], labels == 1)
        assert np.array_equal(drawn == ids[SOFT], labels == 2)


# --- SEG -----------------------------------------------------------------------------------------------------


def test_seg_label_map_equals_its_masks(tree: tuple[Path, dict[str, str]]) -> None:
    root, uids = tree
    case = _case(detect_layout(root), "P1_CT2")
    expected = _expected_labels(root / "scans", uids["ct"])
    assert np.bincount(expected.ravel()).tolist() == [386, 129, 765]  # two real shapes, not a trivial mask
    assert np.array_equal(_label_array(case), expected)


def test_seg_frames_without_source_references_are_placed_by_position(tmp_path: Path) -> None:
    folder, _, sources = _single_ct(tmp_path)
    expected = _expected_labels(folder)
    dfx.drop_source_references(dfx.make_seg(sources, expected, tmp_path / "segs" / "seg"))
    (case,) = detect_layout(tmp_path).cases
    assert np.array_equal(_label_array(case), expected)


def test_seg_on_another_frame_of_reference_without_sources_is_refused(tmp_path: Path) -> None:
    folder, _, sources = _single_ct(tmp_path)
    seg_path = dfx.make_seg(sources, _expected_labels(folder), tmp_path / "segs" / "seg")
    dfx.drop_source_references(seg_path)
    dataset = pydicom.dcmread(seg_path)
    dataset.FrameOfReferenceUID = pydicom.uid.generate_uid(entropy_srcs=["elsewhere"])
    dataset.save_as(seg_path)
    (case,) = detect_layout(tmp_path).cases
    with pytest.raises(UnreadableItemError) as caught:
        _label_array(case)
    assert caught.value.code == "label_mismatch" and "frame of reference" in caught.value.reason


def test_fractional_seg_is_thresholded_at_one_half(tmp_path: Path) -> None:
    _folder, _, sources = _single_ct(tmp_path)
    hu = dfx.hounsfield(sources)
    fractions = np.zeros((*hu.shape, 2), dtype=np.float32)
    # 0.4 is below the threshold: those voxels stay background, where no other segment covers them
    fractions[..., 0] = np.where(hu > 30, 0.7, np.where((hu > -200) & (hu <= -100), 0.4, 0.0))
    fractions[..., 1] = np.where((hu > -100) & (hu <= 30), 0.6, np.where(hu <= -200, 0.4, 0.0))
    dfx.make_seg(sources, np.zeros(hu.shape, np.uint8), tmp_path / "segs" / "seg", fractions=fractions)
    (case,) = detect_layout(tmp_path).cases
    labels = _label_array(case)
    assert np.array_equal(labels, dfx.tissue_masks(hu))
    assert ((hu > -200) & (hu <= -100)).sum() > 10 and (hu <= -200).sum() > 10  # the 0.4 voxels exist


def test_overlapping_segments_take_the_higher_segment_number(tmp_path: Path) -> None:
    _folder, _, sources = _single_ct(tmp_path)
    hu = dfx.hounsfield(sources)
    stack = np.stack([hu > -100, hu > 30], axis=-1).astype(np.uint8)  # segment 2 lies inside segment 1
    dfx.make_seg(sources, stack, tmp_path / "segs" / "seg", {1: "Body", 2: "Dense"})
    (case,) = detect_layout(tmp_path).cases
    labels = _label_array(case)
    ids = {name: i for i, name in case.label_table.items()}
    assert np.array_equal(labels == ids["Dense"], hu > 30)
    assert np.array_equal(labels == ids["Body"], (hu > -100) & (hu <= 30))


# --- RTSTRUCT ------------------------------------------------------------------------------------------------


def test_rtstruct_label_map_matches_its_masks(tree: tuple[Path, dict[str, str]]) -> None:
    """Boundary rule: a voxel is in when its centre is inside the even-odd area of the ROI's contours on its
    slice, or on a contour. rt-utils traces contours through the centres of a mask's boundary voxels, so the
    mask comes back exactly; the brief's bar (exact inside, Dice >= 0.9) is checked first."""
    root, uids = tree
    case = _case(detect_layout(root), "P1_MR3")
    expected = _expected_labels(root / "scans", uids["ct"])  # the same voxels: mr is a copy of the CT
    labels = _label_array(case)
    for label_id in (1, 2):
        mask, drawn = expected == label_id, labels == label_id
        inner = sitk.GetArrayFromImage(
            sitk.BinaryErode(sitk.GetImageFromArray(mask.astype(np.uint8)), [1, 1, 0])
        ).astype(bool)
        assert inner.any() and drawn[inner].all()  # exact inside
        dice = 2 * (mask & drawn).sum() / (mask.sum() + drawn.sum())
        assert dice >= 0.9
    assert np.array_equal(labels, expected)


def test_rasterise_fills_even_odd_and_keeps_the_closed_region() -> None:
    outer = np.array([[1, 1], [7, 1], [7, 7], [1, 7]], dtype=float)
    hole = np.array([[3, 3], [5, 3], [5, 5], [3, 5]], dtype=float)
    mask = rasterise_polygons([outer, hole], (9, 9))
    expected = np.zeros((9, 9), dtype=bool)
    expected[1:8, 1:8] = True  # the outline's voxels are in (closed region)
    expected[4, 4] = False  # strictly inside the hole; the hole's outline voxels stay in
    assert np.array_equal(mask, expected)
    # vertices between voxel centres: only the centres inside count (no snapping of vertices to pixels)
    square = np.array([[0.6, 0.6], [3.4, 0.6], [3.4, 3.4], [0.6, 3.4]])
    expected = np.zeros((6, 6), dtype=bool)
    expected[1:4, 1:4] = True
    assert np.array_equal(rasterise_polygons([square], (6, 6)), expected)
    # a lone point and a two-point line mark the voxels they pass through
    line = rasterise_polygons([np.array([[1.0, 2.0]]), np.array([[3.0, 0.0], [3.0, 2.0]])], (4, 5))
    assert sorted(map(tuple, np.argwhere(line).tolist())) == [(0, 3), (1, 3), (2, 1), (2, 3)]
    # a polygon partly off the image is clipped, not an error
    assert (
        rasterise_polygons([np.array([[-5.0, -5.0], [2.0, -5.0], [2.0, 1.0], [-5.0, 1.0]])], (4, 4)).sum()
        == 6
    )


def test_rtstruct_contour_off_every_slice_is_an_error(tmp_path: Path) -> None:
    folder, _, _ = _single_ct(tmp_path)
    expected = _expected_labels(folder)
    path = dfx.make_rtstruct(folder, {DENSE: expected == 1}, tmp_path / "rt" / "rtstruct")
    dataset = pydicom.dcmread(path)
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    points = [float(v) for v in contour.ContourData]
    points[2::3] = [z + 20.0 for z in points[2::3]]  # 20 mm above: 8 slices beyond the last one
    contour.ContourData = [f"{v:.6f}" for v in points]
    dataset.save_as(path)
    (case,) = detect_layout(tmp_path).cases
    with pytest.raises(UnreadableItemError) as caught:
        _label_array(case)
    assert caught.value.code == "contour_off_slice"
    assert DENSE in caught.value.reason and "more than half a slice" in caught.value.reason


# --- harmonise and the pipeline ------------------------------------------------------------------------------


def test_harmonise_case_gives_ras_volumes_with_the_label_on_the_image_grid(
    tree: tuple[Path, dict[str, str]],
) -> None:
    root, uids = tree
    layout = detect_layout(root)
    table: dict[int, str] = {}
    for case in layout.cases:
        table.update(case.label_table)
    assert table == {1: DENSE, 2: SOFT}  # the segment names, as the source's label table
    unified = unify_labels({"idc-collection": table})
    expected = sitk.GetImageFromArray(_expected_labels(root / "scans", uids["ct"]))
    expected.CopyInformation(read_item(root / "scans", uids["ct"]))
    expected_ras, _ = reorient_to_ras(expected)
    for case_id in ("P1_CT2", "P1_MR3"):
        harmonised = harmonise_case(_case(layout, case_id), "idc-collection", unified)
        image, label = harmonised.channels[0], harmonised.label
        assert label is not None
        assert image.GetDirection() == pytest.approx(RAS_DIRECTION_ITK)
        assert label.GetSize() == image.GetSize() == (16, 16, 5)
        assert label.GetOrigin() == image.GetOrigin() and label.GetDirection() == image.GetDirection()
        global_ids = unified.local_to_global["idc-collection"]
        assert np.array_equal(
            sitk.GetArrayViewFromImage(label),
            np.vectorize(global_ids.get)(sitk.GetArrayViewFromImage(expected_ras)),
        )
        assert harmonised.annotations == {
            "dense_tissue": Annotation.ANNOTATED,
            "soft_tissue": Annotation.ANNOTATED,
        }


def test_mosaic_is_skipped_with_its_reason(tree: tuple[Path, dict[str, str]]) -> None:
    root, _ = tree
    case = _case(detect_layout(root), "P2_MR7")
    with pytest.raises(SeriesRejectedError) as caught:
        harmonise_case(case, "idc-collection", unify_labels({"idc-collection": {}}))
    assert caught.value.code == "mosaic" and "Siemens mosaic" in caught.value.reason


def test_case_fields_survive_the_job_json(tmp_path: Path) -> None:
    folder, _, sources = _single_ct(tmp_path)
    expected = _expected_labels(folder)
    dfx.make_seg(sources, (expected == 1).astype(np.uint8), tmp_path / "a" / "dense", {1: DENSE}, name="d")
    dfx.make_rtstruct(folder, {SOFT: expected == 2}, tmp_path / "b" / "soft")
    (case,) = detect_layout(tmp_path).cases
    assert case.extra_labels and case.modality == "CT" and case.series_uid
    back = case_from_json(case_to_json(case, tmp_path), tmp_path)
    assert back == case


def test_series_split_across_folders_reads_whole(tmp_path: Path) -> None:
    folder, uid, sources = _single_ct(tmp_path)
    dfx.make_seg(sources, _expected_labels(folder), tmp_path / "segs" / "seg")
    (tmp_path / "series" / "ct" / "part2").mkdir()
    for name in sorted(p.name for p in folder.iterdir() if p.is_file())[3:]:
        shutil.move(folder / name, folder / "part2" / name)
    (case,) = detect_layout(tmp_path).cases
    assert case.images == (folder,) and case.series_uid == uid
    assert np.array_equal(_label_array(case), _expected_labels(folder, uid))
