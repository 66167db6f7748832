"""Deterministic builders of fixture sources from real images shipped inside PyPI wheels.

Everything here derives from pydicom's and nibabel's bundled test data (no download: pydicom can fetch some
test files from the internet, these builders use only files inside the wheels). Multi-label maps are cut from
the real intensities with fixed percentiles, so every run builds byte-identical sources.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import SimpleITK as sitk
from PIL import Image

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
DICOMDIR_TESTS = PYDICOM_FILES / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"  # clean 5-slice axial CT, 16x16, 0.488 x 0.488 x 2.5 mm
CT_GAP = DICOMDIR_TESTS / "77654033" / "CT2"  # 4 axial slices at z = -99.5, 103.0, 104.3, 105.5: a gap
CT_LOCALIZER = DICOMDIR_TESTS / "98892001" / "CT2N"  # two scout images (ImageType LOCALIZER), two planes
MR_MIXED = (
    DICOMDIR_TESTS / "98892003" / "MR2"
)  # series whose 3 slices lie in axial, coronal and sagittal planes
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
ANATOMICAL = NIBABEL_DATA / "anatomical.nii"  # 33x41x25 int16 MR, 2 mm, LAS orientation


def anatomical_volume() -> tuple[np.ndarray, np.ndarray]:
    """nibabel's anatomical MR as little-endian int16 (it is stored big-endian) and its affine."""
    image = nib.load(ANATOMICAL)
    return np.asarray(image.dataobj).astype("<i2"), image.affine


def two_label_map(volume: np.ndarray) -> np.ndarray:
    """1 = brightest 10% of voxels, 2 = the next 15%: two 'organs' with real, irregular shapes."""
    high, low = np.percentile(volume, [90, 75])
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[volume >= low] = 2
    labels[volume >= high] = 1
    return labels


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _variant(volume: np.ndarray, index: int) -> np.ndarray:
    """A different but real-looking scan per case: the anatomical volume rolled along y."""
    return np.roll(volume, 3 * index, axis=1) if index else volume


def build_msd_source(root: Path, names: dict[str, str] | None = None, cases: int = 3) -> Path:
    """MSD-style `Task98_Abdomen`: imagesTr/labelsTr, one held-out imagesTs case, dataset.json (MSD format,
    {"0": "background", "1": "liver", ...}). Case `abdomen_000` is the anatomical volume unchanged."""
    names = names or {"1": "liver", "2": "spleen"}
    task = root / "Task98_Abdomen"
    volume, affine = anatomical_volume()
    training = []
    for index in range(cases):
        case = f"abdomen_{index:03d}"
        scan = _variant(volume, index)
        _save_nifti(scan, affine, task / "imagesTr" / f"{case}.nii.gz")
        _save_nifti(two_label_map(scan), affine, task / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    _save_nifti(_variant(volume, cases), affine, task / "imagesTs" / f"abdomen_{cases:03d}.nii.gz")
    meta = {
        "name": "Abdomen",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", **names},
        "numTraining": cases,
        "training": training,
        "test": [f"./imagesTs/abdomen_{cases:03d}.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def build_partial_source(root: Path) -> Path:
    """A second source, image/mask pairs, that annotates only the liver and spells it "Hepatic". Its
    `scan_17` is the MSD source's `abdomen_000` stored RAS instead of LAS under another name (a duplicate
    that names cannot find). `scan_18` is a different scan (rolled along z)."""
    volume, affine = anatomical_volume()
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    scan = np.asarray(canonical.dataobj).astype("<i2")
    liver = (two_label_map(scan) == 1).astype(np.uint8)
    _save_nifti(scan, canonical.affine, root / "scan_17.nii.gz")
    _save_nifti(liver, canonical.affine, root / "scan_17_mask.nii.gz")
    other = np.roll(scan, 4, axis=2)
    _save_nifti(other, canonical.affine, root / "scan_18.nii.gz")
    _save_nifti((two_label_map(other) == 1).astype(np.uint8), canonical.affine, root / "scan_18_mask.nii.gz")
    return root


def build_brats_like_source(root: Path) -> Path:
    """Suffix pairs with two channels per case: `BraTS_001/BraTS_001_t1.nii.gz`, `_t2`, `_seg`."""
    volume, affine = anatomical_volume()
    for index in range(2):
        case = f"BraTS_{index + 1:03d}"
        scan = _variant(volume, index)
        _save_nifti(scan, affine, root / case / f"{case}_t1.nii.gz")
        _save_nifti((scan // 2).astype("<i2"), affine, root / case / f"{case}_t2.nii.gz")
        _save_nifti(two_label_map(scan), affine, root / case / f"{case}_seg.nii.gz")
    return root


def build_bids_source(root: Path) -> Path:
    """BIDS raw data with a manual segmentation under derivatives and its `dseg.tsv` label table."""
    volume, affine = anatomical_volume()
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "fixture", "BIDSVersion": "1.8.0"}))
    for index, subject in enumerate(("sub-01", "sub-02")):
        scan = _variant(volume, index)
        _save_nifti(scan, affine, root / subject / "anat" / f"{subject}_T1w.nii.gz")
        _save_nifti(
            two_label_map(scan),
            affine,
            root / "derivatives" / "manual" / subject / "anat" / f"{subject}_dseg.nii.gz",
        )
    (root / "derivatives" / "manual" / "dseg.tsv").write_text(
        "index\tname\n0\tbackground\n1\tLiver\n2\tSpleen\n"
    )
    return root


def ct5n_label(series: sitk.Image) -> sitk.Image:
    """Two classes on the real CT: 1 = voxels above 30 HU, 2 = between -100 and 30 HU."""
    hu = sitk.GetArrayFromImage(series)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[(hu > -100) & (hu <= 30)] = 2
    labels[hu > 30] = 1
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(series)
    return image


def build_dicom_source(root: Path) -> Path:
    """TCIA-style: `patient01/CT/<slices>` + `patient01/segmentation.nii.gz`, plus `patient02` holding the
    real slice-gap series with a label, which the job must skip with a reason."""
    for patient, series_dir in (("patient01", CT5N), ("patient02", CT_GAP)):
        target = root / patient / "CT"
        shutil.copytree(series_dir, target)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(target)))
        sitk.WriteImage(ct5n_label(reader.Execute()), str(root / patient / "segmentation.nii.gz"))
    return root


def build_gap_series(root: Path) -> Path:
    """CT5N with its middle slice dropped: positions 8.76, 6.26, 1.26, -1.24 (one 5 mm step)."""
    shutil.copytree(CT5N, root, ignore=lambda _folder, names: [n for n in names if n == "2693"])
    return root


def build_class_folder_source(root: Path) -> Path:
    """A 2D classification set, `train/<class>/*.png` and `test/<class>/*.png`, from axial slices of the
    anatomical MR: 'upper' slices from the top of the head, 'lower' from the bottom."""
    volume, _ = anatomical_volume()
    scaled = ((volume - volume.min()) / (volume.max() - volume.min()) * 255).astype(np.uint8)
    for split, slices in (("train", range(0, 4)), ("test", range(4, 6))):
        for index in slices:
            for class_name, z in (("lower", index), ("upper", volume.shape[2] - 1 - index)):
                path = root / split / class_name / f"slice_{z:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(scaled[:, :, z].T).save(path)
    return root


def build_explicit_source(root: Path) -> Path:
    """Images and masks in separate folders with different names, which only an explicit layout can pair:
    `scans/pat-A_visit1.nii.gz` + `masks/pat-A_visit1.nii.gz` (two visits of patient A, one of B)."""
    volume, affine = anatomical_volume()
    for index, case in enumerate(("pat-A_visit1", "pat-A_visit2", "pat-B_visit1")):
        scan = _variant(volume, index)
        _save_nifti(scan, affine, root / "scans" / f"{case}.nii.gz")
        _save_nifti(two_label_map(scan), affine, root / "masks" / f"{case}.nii.gz")
    return root
