"""The files and folders layout detection looks at: image suffixes (volumes and pictures), stems with double
suffixes such as `.nii.gz` kept whole, DICOM files recognised by content, and folder names that mean a split."""

from __future__ import annotations

from pathlib import Path

from workers.imaging.cases import Split

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = VOLUME_SUFFIXES + RASTER_SUFFIXES
LABEL_SUFFIX_WORDS = ("seg", "mask", "label", "gt")
SPLIT_FOLDER_NAMES = {
    "train": Split.TRAIN,
    "training": Split.TRAIN,
    "val": Split.VAL,
    "valid": Split.VAL,
    "validation": Split.VAL,
    "test": Split.TEST,
    "testing": Split.TEST,
}


def split_suffix(path: Path) -> tuple[str, str]:
    """(stem, suffix) with double suffixes such as `.nii.gz` kept whole."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return path.stem, path.suffix


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 files carry `DICM` at byte 128; file names are often bare numbers, so sniff, not guess."""
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False
