"""DICOM label objects (SEG, RTSTRUCT) and the trees TCIA / IDC ship them in, built on pydicom's real CT5N series.

CT5N (tests/imaging_fixtures.py) is a clean 5-slice axial CT, 16x16. Segment masks are cut from its HU values
(`tissue_masks`): two structures with real, irregular shapes. SEGs are made with highdicom, RTSTRUCTs with
rt-utils, as a data provider would; copies of the series get new UIDs (deterministic, from their name) so that
one tree can hold several series of it. Arrays are (z, y, x) in SimpleITK's series order throughout.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from imaging_fixtures import CT5N
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TISSUE_NAMES = {1: "Dense tissue", 2: "Soft tissue"}


def series_files(folder: Path, series_uid: str | None = None) -> list[str]:
    """The files of a series under `folder` (subfolders too) in SimpleITK's slice order: the volume's z axis."""
    if series_uid is None:
        (series_uid,) = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid, False, True))


def read_series(folder: Path, series_uid: str | None = None) -> list[Dataset]:
    return [pydicom.dcmread(name) for name in series_files(folder, series_uid)]


def hounsfield(datasets: list[Dataset]) -> np.ndarray:
    return np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])


def tissue_masks(hu: np.ndarray) -> np.ndarray:
    """1 = above 30 HU, 2 = between -100 and 30 HU (as imaging_fixtures.ct5n_label): a label map."""
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[(hu > -100) & (hu <= 30)] = 2
    labels[hu > 30] = 1
    return labels


def copy_series(
    source: Path,
    target: Path,
    name: str,
    *,
    modality: str | None = None,
    image_type: list[str] | None = None,
    patient_id: str | None = None,
    series_number: int | None = None,
) -> str:
    """CT5N (or any one-series folder) copied into `target` as a new series: new Series, SOP Instance and Frame
    of Reference UIDs derived from `name`, optionally another Modality / ImageType / PatientID. File names are
    `<name>-<n>` (bare, no suffix, as many archives have them). Returns the new Series Instance UID."""
    target.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[name, "series"])
    frame_uid = generate_uid(entropy_srcs=[name, "frame"])
    for number, path in enumerate(series_files(source), start=1):
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.SOPInstanceUID = generate_uid(entropy_srcs=[name, str(number)])
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        if modality is not None:
            dataset.Modality = modality
        if image_type is not None:
            dataset.ImageType = image_type
        if patient_id is not None:
            dataset.PatientID = patient_id
        if series_number is not None:
            dataset.SeriesNumber = series_number
        dataset.save_as(target / f"{name}-{number}", enforce_file_format=True)
    return series_uid


def make_seg(
    sources: list[Dataset],
    labels: np.ndarray,
    path: Path,
    names: dict[int, str] | None = None,
    *,
    fractions: np.ndarray | None = None,
    name: str = "seg",
) -> Path:
    """A SEG with highdicom: BINARY from a label map (z, y, x) on `sources` (one dataset per slice, in the same
    order), or FRACTIONAL from `fractions` (z, y, x, segments) in [0, 1]."""
    names = names or TISSUE_NAMES
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in sorted(names.items())
    ]
    common = {
        "source_images": sources,
        "segment_descriptions": descriptions,
        "series_instance_uid": generate_uid(entropy_srcs=[name, "seg-series"]),
        "series_number": 300,
        "sop_instance_uid": generate_uid(entropy_srcs=[name, "seg"]),
        "instance_number": 1,
        "manufacturer": "imagingx tests",
        "manufacturer_model_name": "dicom_fixtures",
        "software_versions": "1",
        "device_serial_number": "1",
    }
    if fractions is None:
        seg = hd.seg.Segmentation(
            pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY, **common
        )
    else:
        seg = hd.seg.Segmentation(
            pixel_array=fractions.astype(np.float32),
            segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
            max_fractional_value=255,
            **common,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def drop_source_references(path: Path) -> None:
    """Remove every frame's source image reference from a SEG, so it can be placed by plane position only."""
    dataset = pydicom.dcmread(path)
    for group in dataset.PerFrameFunctionalGroupsSequence:
        if "DerivationImageSequence" in group:
            del group.DerivationImageSequence
    dataset.save_as(path)


def make_rtstruct(series_folder: Path, masks: dict[str, np.ndarray], path: Path) -> Path:
    """An RTSTRUCT with rt-utils from boolean masks (z, y, x) on the one series in `series_folder`. rt-utils
    reads every image under the folder it is given, so it gets a copy holding that series alone."""
    # rt-utils draws with OpenCV, whose wheel needs the system's libGL (Debian: apt-get install libgl1)
    RTStructBuilder = pytest.importorskip(
        "rt_utils",
        reason="RTSTRUCT fixtures need rt-utils' OpenCV, which needs libGL (apt-get install libgl1)",
    ).RTStructBuilder

    with tempfile.TemporaryDirectory(prefix="rtstruct-series-") as scratch:
        for name in series_files(series_folder):
            shutil.copy(name, Path(scratch) / Path(name).name)
        rtstruct = RTStructBuilder.create_new(dicom_series_path=scratch)
        for name, mask in masks.items():
            # rt-utils wants (rows, columns, slices), slices in ascending position: SimpleITK's order here
            rtstruct.add_roi(mask=np.transpose(mask.astype(bool), (1, 2, 0)), name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        rtstruct.save(str(path))
        saved = path if path.name.endswith(".dcm") else path.with_name(path.name + ".dcm")
        saved.rename(path)  # rt-utils adds `.dcm`; keep the name asked for (archives often have none)
    return path


def make_non_image_object(path: Path, modality: str, references: list[Dataset], name: str) -> Path:
    """A minimal SR (Basic Text SR) or KO (Key Object Selection) that references `references`' series, as a
    report or a key-image note sits next to the scans: never an image, never a label."""
    sop_class = {"SR": "1.2.840.10008.5.1.4.1.1.88.11", "KO": "1.2.840.10008.5.1.4.1.1.88.59"}[modality]
    first = references[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[name, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    dataset.PatientID = first.PatientID
    dataset.StudyInstanceUID = first.StudyInstanceUID
    dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series"])
    dataset.SeriesNumber = 900
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = first.SeriesInstanceUID
    referenced_series.ReferencedSOPSequence = []
    for source in references:
        item = Dataset()
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        referenced_series.ReferencedSOPSequence.append(item)
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    evidence.ReferencedSeriesSequence = [referenced_series]
    dataset.CurrentRequestedProcedureEvidenceSequence = [evidence]
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def build_dicom_objects_source(root: Path) -> dict[str, str]:
    """A TCIA/IDC-like tree whose folders mislead, for pairing by referenced UID:

    - `scans/` holds two series of patient P1 side by side: `ct` (CT5N, Modality CT) and `mr` (a copy whose
      header says MR);
    - `labels/ct_seg` is a SEG (highdicom, the two tissue segments) on `ct`, in a folder of its own;
    - `scans/mr_rtstruct` is an RTSTRUCT (rt-utils, the same two tissues) on `mr`, sitting next to both series;
    - `scans/report` (SR) and `scans/keys` (KO) reference `ct`: neither image nor label;
    - `orphans/seg_of_missing` is a SEG on a series that is not in the tree;
    - `P2/mosaic/` is a series of patient P2 whose ImageType says MOSAIC, unlabelled.

    Returns the Series Instance UIDs by name ("ct", "mr", "missing", "mosaic")."""
    scans = root / "scans"
    uids = {
        "ct": copy_series(CT5N, scans, "ct", patient_id="P1", series_number=2),
        "mr": copy_series(CT5N, scans, "mr", modality="MR", patient_id="P1", series_number=3),
        "mosaic": copy_series(
            CT5N,
            root / "P2" / "mosaic",
            "mosaic",
            modality="MR",
            image_type=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"],
            patient_id="P2",
            series_number=7,
        ),
    }
    ct = read_series(scans, uids["ct"])
    labels = tissue_masks(hounsfield(ct))
    make_seg(ct, labels, root / "labels" / "ct_seg", name="ct")
    with tempfile.TemporaryDirectory(prefix="mr-series-") as scratch:
        for name in series_files(scans, uids["mr"]):
            shutil.copy(name, Path(scratch) / Path(name).name)
        make_rtstruct(
            Path(scratch), {TISSUE_NAMES[1]: labels == 1, TISSUE_NAMES[2]: labels == 2}, scans / "mr_rtstruct"
        )
    make_non_image_object(scans / "report", "SR", ct, "report")
    make_non_image_object(scans / "keys", "KO", ct, "keys")
    with tempfile.TemporaryDirectory(prefix="missing-series-") as scratch:
        uids["missing"] = copy_series(CT5N, Path(scratch), "missing", patient_id="P3")
        make_seg(read_series(Path(scratch)), labels, root / "orphans" / "seg_of_missing", name="missing")
    return uids
