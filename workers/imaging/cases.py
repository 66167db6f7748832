"""What layout detection hands to the rest of the pipeline: sources as lists of cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class LayoutKind(StrEnum):
    MSD = "msd"  # Medical Segmentation Decathlon / nnU-Net raw folders
    BIDS = "bids"
    SUFFIX_PAIRS = "suffix_pairs"  # image + image_seg / _mask / _label / _gt
    DICOM_SERIES = "dicom_series"  # a folder of DICOM slices with a separate label file
    CLASS_FOLDERS = "class_folders"  # 2D classification: one folder per class
    ID_PAIRS = "id_pairs"  # images and labels anywhere in the tree (images/ vs masks/, seg_X), paired by id
    NPZ_ARRAYS = "npz_arrays"  # MedMNIST: train_images / train_labels ... arrays, one case per element
    DICOM_OBJECTS = "dicom_objects"  # DICOM tree with SEG / RTSTRUCT objects, paired by referenced UID
    DICOM_UNLABELLED = "dicom_unlabelled"  # last resort: every image series of a DICOM tree, no label
    EXPLICIT = "explicit"


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass(frozen=True)
class Case:
    """One training example as the source ships it, before any pixel is read.

    `images` holds one path per channel (a DICOM series folder is one path). `label_table` is the source's own
    local id -> name map, verbatim: unifying names is a later, separate step. `split` is the official split
    when the source publishes one, else None (we assign one by subject later).
    """

    case_id: str
    subject_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    label_table: dict[int, str] = field(default_factory=dict)
    split: Split | None = None
    class_name: str | None = None  # classification sets: the folder the image sat in
    # what each channel is (e.g. "FLAIR", "T1w"), when the source says so (MSD's dataset.json); else empty
    channel_names: tuple[str, ...] = ()
    # array sets (MedMNIST npz): `images[0]` is the `.npz` (or an unpacked `.npy`) and this names the element,
    # e.g. "train_images[12]"; None for a case whose images are whole files
    member: str | None = None
    # multi-label classification: every class the image is positive for (possibly none); None when the source
    # is not multi-label (single-label sets use `class_name`)
    class_names: tuple[str, ...] | None = None
    # the imaging modality as the files' own headers state it (DICOM Modality: "CT", "MR", "PT"); None when
    # the files do not say
    modality: str | None = None
    # DICOM: the Series Instance UID to read from `images[0]`, a folder that may hold several series; None when
    # the folder holds exactly one
    series_uid: str | None = None
    # DICOM label objects (SEG/RTSTRUCT) combined with `label` into one label map, painted after it in this order
    extra_labels: tuple[Path, ...] = ()
    # what layout detection decided about this case and why (e.g. a label object left out), for people
    notes: tuple[str, ...] = ()
    # how `subject_id` was found, for people: "descriptor rule", "file name pattern patient<id>", "BIDS
    # sub-<label> folder"...; empty when each case is its own subject for want of any rule
    subject_from: str = ""


@dataclass(frozen=True)
class Layout:
    kind: LayoutKind
    root: Path
    cases: list[Case]
    # what detection noticed but did not guess (e.g. an image two label files could belong to), for people
    warnings: list[str] = field(default_factory=list)
