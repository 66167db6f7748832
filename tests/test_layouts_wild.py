"""Layouts found in the wild: images and labels paired by id anywhere in the tree, NRRD/MHA/MHD volumes, 2D
image/mask folders, MedMNIST's npz arrays (through harmonising and packaging to Hugging Face `datasets`), and an
explicit layout's subject rule.

Every image is real: nibabel's anatomical MR and pydicom's CT5N series (tests/imaging_fixtures.py), written
in each file format with SimpleITK, nibabel, Pillow or numpy.
"""

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

from app.common.descriptors import parse_source
from app.common.labels import unify_labels
from workers.imaging import arrays
from workers.imaging.cases import Case, LayoutKind, Split
from workers.imaging.errors import LayoutNotRecognisedError, UnreadableItemError
from workers.imaging.harmonise import harmonise_case
from workers.imaging.layout import ExplicitLayout, detect_layout
from workers.imaging.layout_ids import case_key
from workers.imaging.readers import read_item
from workers.pipeline import explicit_layout, prepare_source_root
from workers.pipeline.common import case_from_json, case_to_json, source_checksum
from workers.safety import UnpackLimits
from workers.sources.base import SourceError

LIMITS = UnpackLimits(max_bytes=10**9, max_members=1000, max_ratio=1000)


# --- fixtures from the real scans ----------------------------------------------------------------------------


def _scan(index: int) -> tuple[np.ndarray, np.ndarray]:
    """The anatomical MR rolled along y by 3 * index (a different scan per case) and its affine."""
    volume, affine = fx.anatomical_volume()
    return np.roll(volume, 3 * index, axis=1), affine


def _nifti_pair(image: Path, label: Path, index: int) -> np.ndarray:
    """Write scan `index` to `image` and its two-organ map to `label`; return the label map (x, y, z)."""
    scan, affine = _scan(index)
    labels = fx.two_label_map(scan)
    for path, array in ((image, scan), (label, labels)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), path)
    return labels


def _itk_scan(index: int) -> tuple[sitk.Image, sitk.Image]:
    """Scan `index` and its label map as ITK images with the anatomical MR's real geometry (LAS, 2 mm)."""
    reference = sitk.ReadImage(str(fx.ANATOMICAL))
    array = np.roll(sitk.GetArrayFromImage(reference).astype(np.int16), 3 * index, axis=1)
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    label = sitk.GetImageFromArray(fx.two_label_map(array))
    label.CopyInformation(reference)
    return image, label


def _slice8(z: int) -> np.ndarray:
    """Axial slice z of the anatomical MR as uint8, (y, x) as a picture is stored."""
    volume, _ = fx.anatomical_volume()
    scaled = (volume - volume.min()) / (volume.max() - volume.min()) * 255
    return np.ascontiguousarray(scaled[:, :, z].T.astype(np.uint8))


def _pairs(layout: Any) -> dict[str, str | None]:
    """Image path -> label path, both relative to the layout's root."""
    root = layout.root
    return {
        c.images[0].relative_to(root).as_posix(): c.label.relative_to(root).as_posix() if c.label else None
        for c in layout.cases
    }


UNIFIED = unify_labels({"src": {1: "liver", 2: "spleen"}})


# --- 1. labels anywhere in the tree, paired by id ------------------------------------------------------------


def test_ids_agree_across_case_separators_and_zero_padding() -> None:
    assert case_key("Case7") == case_key("case007") == case_key("CASE_7")
    assert case_key("patient_01") == case_key("Patient1")
    assert case_key("case_1_2") != case_key("case_12")


def test_sibling_folders_pair_by_id_with_label_words_case_and_padding(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "README.txt").parent.mkdir(parents=True)
    (root / "README.txt").write_text("not an image")
    expected = {
        "Images/Case7.nii.gz": "Labels/case007_seg.nii.gz",
        "Images/patient_01.nii.gz": "Labels/SEG_Patient1.nii.gz",
        "Images/p3.nii.gz": "Labels/mask-P03.nii.gz",
        "Images/p4.nii.gz": "Labels/p4_label.nii.gz",
        "Images/scan_5.nii.gz": "Labels/scan_5_gt.nii.gz",
    }
    maps = {}
    for index, (image, label) in enumerate(expected.items()):
        maps[image] = _nifti_pair(root / image, root / label, index)
    # a test image without a label: kept, it sits in the image folder
    _nifti_pair(root / "Images/p9.nii.gz", tmp_path / "elsewhere.nii.gz", 9)
    layout = detect_layout(root)
    assert layout.kind == LayoutKind.ID_PAIRS
    assert _pairs(layout) == {**expected, "Images/p9.nii.gz": None}
    assert layout.warnings == []
    case = next(c for c in layout.cases if c.case_id == "Case7")
    assert case.subject_id == "Case7" and case.split is None
    harmonised = harmonise_case(case, "src", UNIFIED)
    # the label read and reoriented with the image: the same voxel counts per organ as the written map
    written = np.bincount(maps["Images/Case7.nii.gz"].ravel())
    assert np.bincount(sitk.GetArrayFromImage(harmonised.label).ravel()).tolist() == written.tolist()


def test_parallel_split_folders_below_or_above_the_image_and_label_folders(tmp_path: Path) -> None:
    below = tmp_path / "below"
    for split in ("train", "test"):
        _nifti_pair(below / f"data/images/{split}/a.nii.gz", below / f"data/masks/{split}/a_mask.nii.gz", 1)
    _nifti_pair(below / "data/images/Training/b.nii.gz", below / "data/masks/train/b.nii.gz", 2)
    layout = detect_layout(below)
    assert layout.kind == LayoutKind.ID_PAIRS
    assert layout.root == below / "data"  # the one top folder is looked through
    assert _pairs(layout) == {
        "images/train/a.nii.gz": "masks/train/a_mask.nii.gz",
        "images/test/a.nii.gz": "masks/test/a_mask.nii.gz",
        "images/Training/b.nii.gz": "masks/train/b.nii.gz",
    }
    assert {(c.case_id, c.split) for c in layout.cases} == {
        ("train_a", Split.TRAIN),
        ("test_a", Split.TEST),
        ("b", Split.TRAIN),
    }
    above = tmp_path / "above"
    for split, name in (("train", "x1"), ("val", "x2")):
        _nifti_pair(above / f"{split}/imgs/{name}.nii.gz", above / f"{split}/gt/{name}.nii.gz", 3)
    assert {(c.case_id, c.split, c.label.parent.name) for c in detect_layout(above).cases} == {  # type: ignore[union-attr]
        ("x1", Split.TRAIN, "gt"),
        ("x2", Split.VAL, "gt"),
    }


def test_nnunet_style_folders_without_dataset_json_give_their_split(tmp_path: Path) -> None:
    for split in ("Tr", "Ts"):
        _nifti_pair(tmp_path / f"images{split}/liver_1.nii.gz", tmp_path / f"labels{split}/liver_1.nii.gz", 0)
    layout = detect_layout(tmp_path)
    assert layout.kind == LayoutKind.ID_PAIRS
    assert sorted((c.case_id, c.split, c.label.parent.name) for c in layout.cases) == [  # type: ignore[union-attr]
        ("test_liver_1", Split.TEST, "labelsTs"),
        ("train_liver_1", Split.TRAIN, "labelsTr"),
    ]


def test_labels_named_by_the_subject_folder_pair_with_its_scan(tmp_path: Path) -> None:
    """`scans/P1/image.nii.gz` + `segmentations/p01.nii.gz`, and a DICOM series `scans/Patient2/CT/` +
    `segmentations/patient_2.nii.gz`: the label names the subject folder, not the file."""
    _nifti_pair(tmp_path / "scans/P1/image.nii.gz", tmp_path / "segmentations/p01.nii.gz", 0)
    shutil.copytree(fx.CT5N, tmp_path / "scans/Patient2/CT")
    series = read_item(tmp_path / "scans/Patient2/CT")
    ct_label = fx.ct5n_label(series)
    sitk.WriteImage(ct_label, str(tmp_path / "segmentations/patient_2.nii.gz"))
    layout = detect_layout(tmp_path)
    assert layout.kind == LayoutKind.ID_PAIRS
    assert _pairs(layout) == {
        "scans/P1/image.nii.gz": "segmentations/p01.nii.gz",
        "scans/Patient2/CT": "segmentations/patient_2.nii.gz",
    }
    assert {c.subject_id for c in layout.cases} == {"P1", "Patient2"}
    ct_case = next(c for c in layout.cases if c.images[0].name == "CT")
    harmonised = harmonise_case(ct_case, "src", unify_labels({"src": {1: "liver", 2: "spleen"}}))
    expected = sitk.GetArrayFromImage(sitk.DICOMOrient(ct_label, "RAS"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(harmonised.label), expected)


def test_a_folder_every_image_sits_in_is_no_subject(tmp_path: Path) -> None:
    """`images/site_A/<case>` with `labels/<case>`: site_A wraps every image, so each case is its own subject
    (one subject for all would put the whole source in one split); with two sites the site is the subject."""
    for name in ("k1", "k2"):
        _nifti_pair(tmp_path / f"images/site_A/{name}.nii.gz", tmp_path / f"labels/{name}.nii.gz", 0)
    layout = detect_layout(tmp_path)
    assert [(c.case_id, c.subject_id, c.label is not None) for c in layout.cases] == [
        ("k1", "k1", True),
        ("k2", "k2", True),
    ]
    _nifti_pair(tmp_path / "images/site_B/k3.nii.gz", tmp_path / "labels/k3.nii.gz", 0)
    assert [c.subject_id for c in detect_layout(tmp_path).cases] == ["site_A", "site_A", "site_B"]


def test_an_ambiguous_match_is_not_guessed_and_is_reported(tmp_path: Path) -> None:
    # two images with one id (`a-1`, `a_1`) and one label: neither gets it
    _nifti_pair(tmp_path / "images/a-1.nii.gz", tmp_path / "labels/a1.nii.gz", 0)
    _nifti_pair(tmp_path / "images/a_1.nii.gz", tmp_path / "unused.nii.gz", 1)
    # one image and two labels that could be its (`labels/b`, `masks/B`): no pairing either
    _nifti_pair(tmp_path / "images/b.nii.gz", tmp_path / "labels/b.nii.gz", 2)
    _nifti_pair(tmp_path / "images/unused.nii.gz", tmp_path / "masks/B.nii.gz", 3)
    (tmp_path / "images/unused.nii.gz").unlink()
    (tmp_path / "unused.nii.gz").unlink()
    _nifti_pair(tmp_path / "images/c.nii.gz", tmp_path / "labels/c.nii.gz", 4)
    layout = detect_layout(tmp_path)
    assert _pairs(layout) == {
        "images/a-1.nii.gz": None,
        "images/a_1.nii.gz": None,
        "images/b.nii.gz": None,
        "images/c.nii.gz": "labels/c.nii.gz",
    }
    assert len(layout.warnings) == 1
    assert layout.warnings[0].startswith("3 image(s) left without a label")
    for name in ("images/a-1.nii.gz", "images/a_1.nii.gz", "images/b.nii.gz"):
        assert name in layout.warnings[0]


def test_more_self_describing_layouts_still_come_first(tmp_path: Path) -> None:
    # an MSD folder also has images/labels-like folder names: its dataset.json wins
    msd = detect_layout(fx.build_msd_source(tmp_path / "msd"))
    assert msd.kind == LayoutKind.MSD
    # image and label side by side: the suffix rule (with BraTS's channels) comes before pairing by id
    assert detect_layout(fx.build_brats_like_source(tmp_path / "brats")).kind == LayoutKind.SUFFIX_PAIRS
    # class folders whose names hold no image or label word stay classes
    assert detect_layout(fx.build_class_folder_source(tmp_path / "png")).kind == LayoutKind.CLASS_FOLDERS
    # ... and so do `with_mask` / `without_mask` (every file would be a "label": nothing pairs)
    for class_name, z in (("with_mask", 10), ("without_mask", 12)):
        path = tmp_path / "masks-classes" / class_name / "s.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(_slice8(z)).save(path)
    assert detect_layout(tmp_path / "masks-classes").kind == LayoutKind.CLASS_FOLDERS


def test_only_images_in_parallel_folders_is_no_layout(tmp_path: Path) -> None:
    _nifti_pair(tmp_path / "images/a.nii.gz", tmp_path / "elsewhere/b.nii.gz", 0)
    (tmp_path / "elsewhere/b.nii.gz").unlink()
    with pytest.raises(LayoutNotRecognisedError):
        detect_layout(tmp_path)


# --- 2. NRRD and MHA/MHD ---------------------------------------------------------------------------------------


def test_nrrd_mha_and_mhd_pairs_are_found_and_read_with_their_geometry(tmp_path: Path) -> None:
    written: dict[str, tuple[sitk.Image, sitk.Image]] = {}
    for index, (image_name, label_name) in enumerate(
        (
            ("volumes/c1.nrrd", "segmentations/c1.seg.nrrd"),  # 3D Slicer's naming
            ("volumes/c2.mha", "segmentations/c2_label.mha"),
            ("volumes/c3.mhd", "segmentations/C003.mhd"),  # header + .raw beside it
        )
    ):
        image, label = _itk_scan(index)
        for name, item in ((image_name, image), (label_name, label)):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(item, str(tmp_path / name), useCompression=index == 0)
        written[image_name] = (image, label)
    assert (tmp_path / "volumes/c3.raw").is_file()
    layout = detect_layout(tmp_path)
    assert layout.kind == LayoutKind.ID_PAIRS
    assert _pairs(layout) == {
        "volumes/c1.nrrd": "segmentations/c1.seg.nrrd",
        "volumes/c2.mha": "segmentations/c2_label.mha",
        "volumes/c3.mhd": "segmentations/C003.mhd",
    }
    for case in layout.cases:
        image, label = written[case.images[0].relative_to(tmp_path).as_posix()]
        read = read_item(case.images[0])
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
        assert read.GetSpacing() == pytest.approx(image.GetSpacing())
        assert read.GetDirection() == pytest.approx(image.GetDirection())
        harmonised = harmonise_case(case, "src", UNIFIED)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(harmonised.channels[0]),
            sitk.GetArrayFromImage(sitk.DICOMOrient(image, "RAS")),
        )
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(harmonised.label),
            sitk.GetArrayFromImage(sitk.DICOMOrient(label, "RAS")),
        )


def test_slicer_seg_nrrd_beside_its_volume_is_a_suffix_pair(tmp_path: Path) -> None:
    image, label = _itk_scan(0)
    (tmp_path / "case1").mkdir()
    sitk.WriteImage(image, str(tmp_path / "case1" / "CT.nrrd"))
    sitk.WriteImage(label, str(tmp_path / "case1" / "CT.seg.nrrd"))
    layout = detect_layout(tmp_path)
    assert layout.kind == LayoutKind.SUFFIX_PAIRS
    assert _pairs(layout) == {"CT.nrrd": "CT.seg.nrrd"}  # relative to `case1`, the one top folder


def test_a_truncated_mha_is_refused(tmp_path: Path) -> None:
    image, _ = _itk_scan(0)
    path = tmp_path / "scan.mha"
    sitk.WriteImage(image, str(path))
    path.write_bytes(path.read_bytes()[:-4096])
    with pytest.raises(UnreadableItemError):
        read_item(path)


# --- 4. 2D image / mask folders --------------------------------------------------------------------------------


def test_2d_image_and_mask_folders_are_segmentation_cases(tmp_path: Path) -> None:
    masks = {}
    for name, mask_name, z in (("x", "x.png", 10), ("y", "y_mask.png", 12), ("z", "Z_Mask.png", 14)):
        picture = _slice8(z)
        mask = (picture > np.percentile(picture, 70)).astype(np.uint8) + (
            picture > np.percentile(picture, 90)
        ).astype(np.uint8)
        for folder, array, file_name in (("images", picture, f"{name}.png"), ("masks", mask, mask_name)):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(tmp_path / folder / file_name)
        masks[name] = mask
    layout = detect_layout(tmp_path)
    assert layout.kind == LayoutKind.ID_PAIRS  # not class folders named `images` and `masks`
    assert _pairs(layout) == {
        "images/x.png": "masks/x.png",
        "images/y.png": "masks/y_mask.png",
        "images/z.png": "masks/Z_Mask.png",
    }
    assert all(c.class_name is None for c in layout.cases)
    for case in layout.cases:
        harmonised = harmonise_case(case, "src", UNIFIED)
        assert harmonised.channels[0].GetDimension() == 2
        np.testing.assert_array_equal(sitk.GetArrayFromImage(harmonised.label), masks[case.case_id])


# --- 3. MedMNIST npz ---------------------------------------------------------------------------------------------


def _medmnist_images(count: int, start: int, rgb: bool = False) -> np.ndarray:
    """`count` different 28x28 uint8 crops of the anatomical MR's axial slices (RGB: the slice in red, its
    neighbour in green, the next in blue)."""
    pictures = []
    for index in range(count):
        z = (start + index) % 22
        crop = _slice8(z)[6:34, 2:30]
        if rgb:
            crop = np.stack([crop, _slice8(z + 1)[6:34, 2:30], _slice8(z + 2)[6:34, 2:30]], axis=-1)
        pictures.append(crop)
    return np.stack(pictures)


def _medmnist(
    path: Path, labels: dict[str, np.ndarray], rgb: bool = False, compressed: bool = False, first: int = 0
) -> dict:
    """An npz as MedMNIST ships it; `labels` per split, its first axis the element count; pictures from
    slice `first` on."""
    data: dict[str, np.ndarray] = {}
    start = first
    for split, split_labels in labels.items():
        data[f"{split}_images"] = _medmnist_images(len(split_labels), start, rgb)
        data[f"{split}_labels"] = split_labels
        start += len(split_labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **data)
    return data


SINGLE = {
    "train": np.array([[0], [1], [1], [0]], dtype=np.uint8),
    "val": np.array([[1]], dtype=np.uint8),
    "test": np.array([[0], [2]], dtype=np.uint8),
}
MULTI = {
    "train": np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=np.uint8),
    "val": np.array([[0, 1, 1]], dtype=np.uint8),
    "test": np.array([[0, 0, 0], [0, 0, 0]], dtype=np.uint8),
}


def test_several_npz_sets_in_one_source_keep_their_classes_apart(tmp_path: Path) -> None:
    # MedMNIST as one catalog dataset: each subset numbers its classes from 0, and those are different classes
    _medmnist(tmp_path / "pathmnist.npz", SINGLE)
    _medmnist(tmp_path / "pneumoniamnist.npz", MULTI)
    cases = detect_layout(tmp_path, label_table={0: "normal", 1: "pneumonia"}).cases
    single = {c.case_id: c.class_name for c in cases if c.case_id.startswith("pathmnist_")}
    multi = {c.case_id: c.class_names for c in cases if c.case_id.startswith("pneumoniamnist_")}
    assert single["pathmnist_train_0"] == "pathmnist/0" and single["pathmnist_test_1"] == "pathmnist/2"
    assert multi["pneumoniamnist_train_0"] == ("pneumoniamnist/0", "pneumoniamnist/2")
    # one table cannot name two subsets' classes: it names none of them
    assert not {*single.values()} & {"normal", "pneumonia"}


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_npz_gives_one_case_per_element_with_official_splits_and_named_classes(
    tmp_path: Path, compressed: bool
) -> None:
    data = _medmnist(tmp_path / "pneumoniamnist.npz", SINGLE, compressed=compressed)
    layout = detect_layout(tmp_path, label_table={0: "normal", 1: "pneumonia"})
    assert layout.kind == LayoutKind.NPZ_ARRAYS
    assert [(c.case_id, c.split, c.member, c.class_name) for c in layout.cases] == [
        ("train_0", Split.TRAIN, "train_images[0]", "normal"),
        ("train_1", Split.TRAIN, "train_images[1]", "pneumonia"),
        ("train_2", Split.TRAIN, "train_images[2]", "pneumonia"),
        ("train_3", Split.TRAIN, "train_images[3]", "normal"),
        ("val_0", Split.VAL, "val_images[0]", "pneumonia"),
        ("test_0", Split.TEST, "test_images[0]", "normal"),
        ("test_1", Split.TEST, "test_images[1]", "2"),  # an id the table lacks stays its number
    ]
    # the table names classes: it is no segmentation label table
    assert all(c.label is None and c.label_table == {} and c.class_names is None for c in layout.cases)
    assert all(c.images == (tmp_path / "pneumoniamnist.npz",) for c in layout.cases)
    for case in layout.cases:
        split, index = case.member.split("_images[")  # type: ignore[union-attr]
        expected = data[f"{split}_images"][int(index[:-1])]
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(read_item(case.images[0], member=case.member)), expected
        )
        harmonised = harmonise_case(case, "src", UNIFIED)
        assert harmonised.label is None and harmonised.channels[0].GetDimension() == 2
    # no names given: class ids as text
    assert [c.class_name for c in detect_layout(tmp_path).cases][:2] == ["0", "1"]


def test_a_stored_npz_member_is_memory_mapped_and_a_deflated_one_inflated_once(tmp_path: Path) -> None:
    stored = _medmnist(tmp_path / "stored.npz", SINGLE)
    view = arrays.array_view(tmp_path / "stored.npz", "train_images")
    assert isinstance(view, np.memmap)
    np.testing.assert_array_equal(view, stored["train_images"])
    _medmnist(tmp_path / "deflated.npz", SINGLE, compressed=True)
    arrays._inflated_npz_member.cache_clear()
    for index in range(4):
        arrays.read_element(tmp_path / "deflated.npz", f"train_images[{index}]")
    info = arrays._inflated_npz_member.cache_info()
    assert (info.misses, info.hits) == (1, 3)
    element = arrays.read_element(tmp_path / "stored.npz", "train_images[2]")
    assert not np.shares_memory(element, view)  # a case keeps its element, not the whole map
    with pytest.raises(UnreadableItemError, match="has 4 elements"):
        arrays.read_element(tmp_path / "stored.npz", "train_images[4]")
    with pytest.raises(UnreadableItemError):
        arrays.read_element(tmp_path / "stored.npz", "nothing[0]")


def test_an_npz_unpacked_by_the_fetch_unit_reads_its_npy_files_memory_mapped(tmp_path: Path) -> None:
    """In a job an npz is unpacked like any zip: the layout then finds `train_images.npy` ... in a folder."""
    downloads = tmp_path / "downloads"
    data = _medmnist(downloads / "dermamnist.npz", SINGLE, rgb=True, compressed=True)
    root = prepare_source_root(
        [downloads / "dermamnist.npz"], downloads, tmp_path / "job" / "src", tmp_path / "job", LIMITS
    )
    assert (root / "train_images.npy").is_file()
    layout = detect_layout(root)
    assert layout.kind == LayoutKind.NPZ_ARRAYS
    first = layout.cases[1]
    assert first.images == (root / "train_images.npy",) and first.member == "train_images[1]"
    assert isinstance(arrays.array_view(root / "train_images.npy", "train_images"), np.memmap)
    image = read_item(first.images[0], member=first.member)
    assert image.GetNumberOfComponentsPerPixel() == 3  # RGB
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data["train_images"][1])


def test_3d_arrays_give_volumes_and_several_sets_prefix_their_case_ids(tmp_path: Path) -> None:
    volume, _ = fx.anatomical_volume()
    organs = np.stack([volume[:28, :28, :28], np.roll(volume, 5, axis=0)[:28, :28, :28]]).astype(np.int16)
    np.savez(tmp_path / "organmnist3d.npz", train_images=organs, train_labels=np.array([[3], [7]]))
    _medmnist(tmp_path / "breastmnist.npz", {"test": np.array([[1]])})
    layout = detect_layout(tmp_path)
    assert [(c.case_id, c.class_name) for c in layout.cases] == [
        ("breastmnist_test_0", "breastmnist/1"),
        ("organmnist3d_train_0", "organmnist3d/3"),
        ("organmnist3d_train_1", "organmnist3d/7"),
    ]
    volume_image = read_item(layout.cases[2].images[0], member=layout.cases[2].member)
    assert volume_image.GetDimension() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume_image), organs[1])


def test_labels_that_do_not_fit_their_images_are_refused_with_the_reason(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", train_images=_medmnist_images(3, 0), train_labels=np.array([[0], [1]]))
    with pytest.raises(LayoutNotRecognisedError, match=r"train_labels has shape \(2, 1\)"):
        detect_layout(tmp_path)


def test_new_case_fields_survive_the_json_between_units(tmp_path: Path) -> None:
    _medmnist(tmp_path / "src" / "chestmnist.npz", MULTI)
    layout = detect_layout(tmp_path / "src", label_table={0: "effusion", 1: "nodule", 2: "mass"})
    assert [c.class_names for c in layout.cases[:4]] == [
        ("effusion", "mass"),
        (),
        ("nodule",),
        ("effusion", "nodule", "mass"),
    ]
    for case in layout.cases:
        data = json.loads(json.dumps(case_to_json(case, tmp_path)))
        assert case_from_json(data, tmp_path) == case
    single = Case("a", "a", (tmp_path / "src" / "chestmnist.npz",), class_name="x")
    assert case_from_json(json.loads(json.dumps(case_to_json(single, tmp_path))), tmp_path) == single
    # rows written before these fields existed still load
    old = case_to_json(single, tmp_path)
    del old["member"], old["class_names"]
    assert case_from_json(old, tmp_path) == single


def _package_npz_sources(tmp_path: Path, sources: dict[str, tuple[dict, dict[int, str]]]) -> Path:
    """Fetch-to-bundle for npz sources without the database: detect, harmonise each item (the unit's work),
    carry the case through its JSON, load it as packaging does, build the bundle."""
    from workers.packaging import BundleSpec, LabelConcept, LabelTable, SourceDataset, build_bundle
    from workers.pipeline import harmonise as harmonise_unit
    from workers.pipeline.package import load_harmonised

    job = tmp_path / "job"
    unification = unify_labels({slug: {} for slug in sources})
    items = []
    for position, (slug, (labels, table)) in enumerate(sources.items()):
        root = job / "sources" / slug
        _medmnist(root / f"{slug}.npz", labels, compressed=True, first=10 * position)
        for case in detect_layout(root, label_table=table).cases:
            item_id = f"{slug}_{case.case_id}"
            restored = case_from_json(case_to_json(case, job), job)
            out = job / "cases" / f"{item_id}.npz"
            meta = harmonise_unit.harmonise_to_file(restored, slug, unification, "XR", out, root)
            assert meta["source_file"] == f"{slug}.npz#{case.member}"
            items.append((item_id, slug, case_to_json(case, job), meta, case.split))
    bundle = build_bundle(
        load_harmonised(items, lambda item_id: job / "cases" / f"{item_id}.npz"),
        sources=[SourceDataset(slug, slug, "CC-BY-4.0", f"https://example.org/{slug}") for slug in sources],
        labels=LabelTable(concepts=(LabelConcept("background", 0),)),
        dest=tmp_path / "bundle",
        spec=BundleSpec(name="npz demo", description="MedMNIST-like", parallelism="none"),
    )
    return bundle.path


def test_multi_label_npz_packages_a_list_column_hugging_face_datasets_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    bundle = _package_npz_sources(
        tmp_path,
        {
            "chest": (MULTI, {0: "effusion", 1: "nodule", 2: "mass"}),
            "pneumonia": ({"train": SINGLE["train"][:2]}, {0: "normal", 1: "pneumonia"}),
        },
    )
    assert not list((bundle / "images2d").rglob("metadata.csv"))
    assert sorted(p.parent.name for p in (bundle / "images2d").rglob("metadata.parquet")) == [
        "test",
        "train",
        "validation",
    ]
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(bundle / "images2d"), cache_dir=str(tmp_path / "hf-cache")
    )
    classes = loaded["train"].features["class_label"]
    assert isinstance(classes, datasets.ClassLabel)  # a real class-label feature, the same in every split
    assert classes.names == ["effusion", "mass", "nodule", "normal", "pneumonia"]
    assert all(loaded[split].features == loaded["train"].features for split in loaded)

    def names(row: dict[str, Any]) -> tuple[str | None, list[str]]:
        single = classes.int2str(row["class_label"]) if row["class_label"] >= 0 else None
        return single, [classes.int2str(value) for value in row["class_labels"]]

    rows = {row["item_id"]: row for split in loaded for row in loaded[split]}
    assert {split: loaded[split].num_rows for split in loaded} == {"train": 6, "validation": 1, "test": 2}
    assert names(rows["chest_train_0"]) == (None, ["effusion", "mass"])
    assert names(rows["chest_train_1"]) == (None, [])
    assert names(rows["chest_train_3"]) == (None, ["effusion", "nodule", "mass"])
    assert names(rows["chest_test_0"]) == (None, [])  # a split with no finding at all still loads
    assert names(rows["pneumonia_train_1"]) == ("pneumonia", [])
    np.testing.assert_array_equal(np.asarray(rows["chest_train_2"]["image"]), _medmnist_images(4, 0)[2])
    manifest = {r["item_id"]: r for r in pq.read_table(bundle / "manifest.parquet").to_pylist()}
    assert manifest["chest_val_0"]["class_labels"] == ["nodule", "mass"]
    assert manifest["chest_val_0"]["source_file"] == "chest.npz#val_images[0]"


def test_single_label_npz_gets_a_class_label_feature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    bundle = _package_npz_sources(tmp_path, {"pneumonia": (SINGLE, {0: "normal", 1: "pneumonia"})})
    assert not list((bundle / "images2d").rglob("metadata.csv"))
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(bundle / "images2d"), cache_dir=str(tmp_path / "hf-cache")
    )
    first = loaded["train"][0]
    classes = loaded["train"].features["class_label"]
    assert classes.names == ["2", "normal", "pneumonia"]  # id 2 is not in the source's table: kept as it is
    assert first["item_id"] == "pneumonia_train_0"
    assert classes.int2str(first["class_label"]) == "normal"


def test_3d_classification_arrays_are_skipped_by_packaging_with_the_reason(tmp_path: Path) -> None:
    from workers.packaging import (
        BundleSpec,
        HarmonisedCase,
        LabelConcept,
        LabelTable,
        SourceDataset,
        build_bundle,
    )

    organs = np.stack([fx.anatomical_volume()[0][:28, :28, :28]] * 1).astype(np.int16)
    volume_case = HarmonisedCase(
        case_id="organ_0",
        image=organs[0],
        spacing=(1.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        source="organ",
        source_file="organ.npz#train_images[0]",
        source_checksum="",
        subject_id="organ/organ_0",
        modality="CT",
        annotated_labels=(),
        content_hash="h0",
        split="train",
        class_label="liver",
    )
    picture = HarmonisedCase(
        **{**volume_case.__dict__, "case_id": "pic", "image": _slice8(5), "spacing": (1.0, 1.0)}
        | {"origin": (0.0, 0.0), "direction": (1.0, 0.0, 0.0, 1.0), "content_hash": "h1"}
    )
    result = build_bundle(
        iter([volume_case, picture]),
        sources=[SourceDataset("organ", "organ", "CC-BY-4.0", "https://example.org/organ")],
        labels=LabelTable(concepts=(LabelConcept("background", 0),)),
        dest=tmp_path / "bundle",
        spec=BundleSpec(name="organ", description="3D classes", parallelism="none"),
    )
    assert [(s.item, s.reason) for s in result.skipped] == [
        (
            "organ.npz#train_images[0]",
            "a 3D classification case: 3D cases are packaged for segmentation (nnU-Net) only",
        )
    ]


def test_an_array_sets_file_is_hashed_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.common.checksums as checksums

    _medmnist(tmp_path / "set.npz", SINGLE)
    calls: list[Path] = []
    real = checksums.sha256_file
    monkeypatch.setattr(checksums, "sha256_file", lambda path: calls.append(path) or real(path))
    digests = {source_checksum(tmp_path / "set.npz") for _ in range(5)}
    assert len(digests) == 1 and calls == [tmp_path / "set.npz"]


# --- 5. an explicit layout's subject rule ---------------------------------------------------------------------


def test_explicit_layout_subject_rule_comes_from_the_descriptor(tmp_path: Path) -> None:
    root = fx.build_explicit_source(tmp_path / "src")
    source = parse_source(
        {
            "kind": "local",
            "path": "/data/x",
            "labels": {"1": "liver", "2": "spleen"},
            "layout": {
                "images": "scans/*.nii.gz",
                "labels": "masks/*.nii.gz",
                "subject": r"(?P<subject>pat-[A-Z])_visit",
                "split": {"test": ["scans/pat-B_*.nii.gz"]},
            },
        }
    )
    explicit = explicit_layout(source.layout, root, source.labels)  # type: ignore[arg-type]
    assert isinstance(explicit, ExplicitLayout) and explicit.subject == r"(?P<subject>pat-[A-Z])_visit"
    layout = detect_layout(root, explicit, source.labels)
    assert [(c.case_id, c.subject_id, c.split) for c in layout.cases] == [
        ("pat-A_visit1", "pat-A", None),
        ("pat-A_visit2", "pat-A", None),
        ("pat-B_visit1", "pat-B", Split.TEST),
    ]
    without = parse_source({"kind": "local", "path": "/data/x", "layout": {"images": "scans/*.nii.gz"}})
    assert without.layout.subject is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (r"(?P<patient>pat-[A-Z])", "named group `(?P<subject>...)`"),
        (r"(?P<subject>pat-[A-Z]", "not a regular"),
    ],
)
def test_a_subject_rule_without_its_group_or_not_a_regex_is_refused(rule: str, words: str) -> None:
    with pytest.raises(SourceError, match=r"layout\.ExplicitLayout\.subject") as raised:
        parse_source({"kind": "local", "path": "/x", "layout": {"images": "*.nii.gz", "subject": rule}})
    assert words in str(raised.value)
