"""Layout detection: turn an unpacked source folder into a list of cases.

Public sets ship in a handful of conventions (BUNDLES.md, Sources). `detect_layout` tries them from the most
self-describing (MSD has a dataset.json) to the least (class folders are just folders of pictures), so a
folder that happens to satisfy two rules gets the one that carries more information. An explicit layout from
the source descriptor always wins: it is the operator's statement about the data.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from workers.imaging.cases import Case, Layout, LayoutKind, Split
from workers.imaging.dicom_objects import dicom_image_cases, dicom_object_cases
from workers.imaging.errors import LayoutNotRecognisedError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = VOLUME_SUFFIXES + RASTER_SUFFIXES
LABEL_SUFFIX_WORDS = ("seg", "mask", "label", "gt")
# `_seg`, `-mask`, `_label`, `_gt` at the end of a stem, any case; also `_labels`/`_masks` which people write too.
LABEL_STEM = re.compile(r"^(?P<base>.+?)[_-](?:seg|mask|masks|label|labels|gt)$", re.IGNORECASE)
CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net v2: case_0000
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


@dataclass(frozen=True)
class ExplicitLayout:
    """An operator's description of a source that `auto` cannot (or should not) guess.

    Globs are relative to the source root. `pairing` is a regex with a named group `case` applied to each
    image and label path (relative, POSIX); images and labels with the same `case` pair up, and several images
    for one case become channels in sorted order. `subject` (optional regex group on the image path) names
    the patient when one patient has several cases. `test_cases` is the official test set, by case or subject.
    """

    image_glob: str
    label_glob: str | None = None
    pairing: str = (
        r"(?P<case>[^/]+?)(?:[_-](?:seg|mask|label|gt|\d{4}))?\.(?:nii\.gz|nii|nrrd|mha|mhd|png|jpe?g)$"
    )
    subject: str | None = None
    label_table: dict[int, str] = field(default_factory=dict)
    test_cases: frozenset[str] = frozenset()


def detect_layout(
    folder: Path | str, explicit: ExplicitLayout | None = None, label_table: dict[int, str] | None = None
) -> Layout:
    """The cases in `folder`, by the explicit layout if given, else by the first known convention that fits.

    `label_table` is the source descriptor's `labels` (local id -> name). It replaces whatever the files say:
    layouts such as image/mask pairs carry no names at all, and where a dataset.json exists the operator who
    wrote a table did so to correct it.
    """
    layout = _find_layout(Path(folder), explicit)
    if label_table:
        table = {int(k): v for k, v in label_table.items()}
        layout = Layout(layout.kind, layout.root, [replace(c, label_table=dict(table)) for c in layout.cases])
    return layout


def _find_layout(root: Path, explicit: ExplicitLayout | None) -> Layout:
    if explicit is not None:
        return Layout(LayoutKind.EXPLICIT, root, _explicit_cases(root, explicit))
    root = _single_subfolder(root)
    for kind, finder in (
        (LayoutKind.MSD, _msd_cases),
        (LayoutKind.BIDS, _bids_cases),
        (LayoutKind.DICOM_OBJECTS, dicom_object_cases),
        (LayoutKind.DICOM_SERIES, _dicom_cases),
        (LayoutKind.SUFFIX_PAIRS, _suffix_pair_cases),
        (LayoutKind.CLASS_FOLDERS, _class_folder_cases),
        (LayoutKind.DICOM_UNLABELLED, dicom_image_cases),
    ):
        cases = finder(root)
        if cases:
            return Layout(kind, root, cases)
    raise LayoutNotRecognisedError(
        f"{root}: no known layout (MSD/nnU-Net, BIDS, DICOM series + label, image/mask pairs, class folders); "
        "give an explicit layout"
    )


def _single_subfolder(root: Path) -> Path:
    """Archives often unpack into one top folder (`Task04_Hippocampus/`); look through it."""
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return _single_subfolder(entries[0])
    return root


# --- MSD / nnU-Net -------------------------------------------------------------------------------------------


def _msd_label_table(labels: dict[str, object]) -> dict[int, str]:
    """MSD writes {"0": "background", "1": "liver"}; nnU-Net v2 writes {"background": 0, "liver": 1} (and
    region-based sets give a list of ids as the value, which we take as its first id)."""
    table: dict[int, str] = {}
    for key, value in labels.items():
        if key.isdigit():
            table[int(key)] = str(value)
        elif isinstance(value, int):
            table[value] = key
        elif isinstance(value, list) and value and isinstance(value[0], int):
            table[value[0]] = key
    return {k: v for k, v in sorted(table.items()) if k != 0}


def _msd_cases(root: Path) -> list[Case]:
    meta_path, images_dir = root / "dataset.json", root / "imagesTr"
    if not (meta_path.is_file() and images_dir.is_dir()):
        return []
    meta = json.loads(meta_path.read_text())
    table = _msd_label_table(meta.get("labels", {}))
    channel_names = _msd_channel_names(meta)
    file_ending = str(meta.get("file_ending", ""))
    cases: list[Case] = []
    for folder, split in (("imagesTr", None), ("imagesTs", Split.TEST)):
        labels_dir = root / ("labelsTr" if folder == "imagesTr" else "labelsTs")
        channels: dict[str, list[Path]] = defaultdict(list)
        for path in sorted((root / folder).glob("*")):
            if not is_image_file(path) or (file_ending and not path.name.endswith(file_ending)):
                continue
            stem, _ = split_suffix(path)
            match = CHANNEL_STEM.match(stem)
            channels[match["case"] if match else stem].append(path)
        for case_id, images in sorted(channels.items()):
            label = next((p for p in sorted(labels_dir.glob(f"{case_id}.*")) if is_image_file(p)), None)
            cases.append(
                Case(case_id, case_id, tuple(images), label, dict(table), split, channel_names=channel_names)
            )
    return cases


def _msd_channel_names(meta: dict[str, object]) -> tuple[str, ...]:
    """MSD's `modality` or nnU-Net v2's `channel_names`: {"0": "FLAIR", "1": "T1w", ...} in channel order."""
    names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(names, dict):
        return ()
    try:
        ordered = sorted((int(k), str(v)) for k, v in names.items())
    except (TypeError, ValueError):
        return ()
    if [index for index, _ in ordered] != list(range(len(ordered))):
        return ()
    return tuple(name for _, name in ordered)


# --- BIDS ----------------------------------------------------------------------------------------------------


def _bids_cases(root: Path) -> list[Case]:
    """Raw anatomical images under sub-*/[ses-*/]anat; labels under derivatives/*/sub-*/... (dseg/mask/label)."""
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        return []
    derived = [p for p in (root / "derivatives").rglob("sub-*") if p.is_file() and is_image_file(p)]
    table = _bids_label_table(root)
    cases: list[Case] = []
    for subject in subjects:
        anat = sorted(p for p in subject.rglob("*") if is_image_file(p) and p.parent.name == "anat")
        for image in anat:
            stem, _ = split_suffix(image)
            entities = stem.rsplit("_", 1)[0]  # sub-01_ses-1_T1w -> sub-01_ses-1
            label = next(
                (
                    p
                    for p in sorted(derived)
                    if split_suffix(p)[0].startswith(entities + "_")
                    and re.search(r"_(dseg|mask|label-[^_]+_(?:dseg|mask|probseg))$", split_suffix(p)[0])
                ),
                None,
            )
            cases.append(Case(stem, subject.name, (image,), label, dict(table)))
    return cases


def _bids_label_table(root: Path) -> dict[int, str]:
    """BIDS describes segmentation values in a `*_dseg.tsv` (columns `index`, `name`)."""
    for tsv in sorted((root / "derivatives").rglob("*dseg.tsv")) if (root / "derivatives").is_dir() else []:
        with tsv.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        table = {int(r["index"]): r["name"] for r in rows if r.get("index", "").isdigit() and r.get("name")}
        return {k: v for k, v in sorted(table.items()) if k != 0}
    return {}


# --- DICOM series + label file -------------------------------------------------------------------------------


def _dicom_cases(root: Path) -> list[Case]:
    """Each folder holding DICOM slices is one case; its label is a volume file in that folder or its parent
    (TCIA-style `patient/series/*.dcm` + `patient/segmentation.nii.gz`). Without a label file anywhere this is
    not the layout: an unlabelled DICOM dump is left to an explicit layout."""
    series_dirs = sorted(
        {p.parent for p in root.rglob("*") if p.is_file() and not is_image_file(p) and is_dicom_file(p)}
    )
    cases: list[Case] = []
    for series_dir in series_dirs:
        candidates = [series_dir] + ([series_dir.parent] if series_dir != root else [])
        label = next(
            (
                p
                for folder in candidates
                for p in sorted(folder.iterdir())
                if p.name.lower().endswith(VOLUME_SUFFIXES) and p.is_file()
            ),
            None,
        )
        relative = series_dir.relative_to(root)
        subject = relative.parts[0] if relative.parts else root.name
        cases.append(Case(relative.as_posix() or root.name, subject, (series_dir,), label))
    if not any(c.label for c in cases):
        return []
    return cases


# --- image / mask pairs by suffix ----------------------------------------------------------------------------


def _suffix_pair_cases(root: Path) -> list[Case]:
    """`X_seg.nii.gz` labels every image in its folder named `X.*` or `X_<anything>.*` (BraTS's channels)."""
    files = sorted(p for p in root.rglob("*") if is_image_file(p))
    labels = [(p, m["base"]) for p in files if (m := LABEL_STEM.match(split_suffix(p)[0]))]
    label_paths = {p for p, _ in labels}
    cases: list[Case] = []
    for label, base in labels:
        images = tuple(
            p
            for p in files
            if p.parent == label.parent
            and p not in label_paths
            and (split_suffix(p)[0] == base or split_suffix(p)[0].startswith(base + "_"))
        )
        if not images:
            continue
        relative = label.parent.relative_to(root)
        subject = relative.parts[0] if relative.parts else base
        cases.append(Case(base, subject, images, label))
    return cases


# --- class-per-folder 2D sets --------------------------------------------------------------------------------


def _class_folder_cases(root: Path) -> list[Case]:
    """`[split/]class/*.png`. Every raster must sit exactly one (or two, under a split folder) levels down, and
    there must be at least two classes: one folder of pictures says nothing about classes."""
    rasters = sorted(p for p in root.rglob("*") if is_image_file(p))
    if not rasters or any(not p.name.lower().endswith(RASTER_SUFFIXES) for p in rasters):
        return []
    cases: list[Case] = []
    for path in rasters:
        parts = path.relative_to(root).parts
        if len(parts) == 2:
            split, class_name = None, parts[0]
        elif len(parts) == 3 and parts[0].lower() in SPLIT_FOLDER_NAMES:
            split, class_name = SPLIT_FOLDER_NAMES[parts[0].lower()], parts[1]
        else:
            return []
        stem, _ = split_suffix(path)
        cases.append(Case(f"{class_name}/{stem}", stem, (path,), None, {}, split, class_name))
    if len({c.class_name for c in cases}) < 2:
        return []
    return cases


# --- explicit ------------------------------------------------------------------------------------------------


def _explicit_cases(root: Path, layout: ExplicitLayout) -> list[Case]:
    pairing = re.compile(layout.pairing)
    subject_rule = re.compile(layout.subject) if layout.subject else None

    def key(path: Path) -> str | None:
        match = pairing.search(path.relative_to(root).as_posix())
        return match["case"] if match else None

    images: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.glob(layout.image_glob)):
        if (case_id := key(path)) is not None:
            images[case_id].append(path)
    labels: dict[str, Path] = {}
    for path in sorted(root.glob(layout.label_glob)) if layout.label_glob else []:
        if (case_id := key(path)) is not None:
            labels.setdefault(case_id, path)
    cases: list[Case] = []
    for case_id, paths in sorted(images.items()):
        paths = [p for p in paths if p not in labels.values()]
        if not paths:
            continue
        subject = case_id
        if subject_rule and (match := subject_rule.search(paths[0].relative_to(root).as_posix())):
            subject = match["subject"]
        split = Split.TEST if {case_id, subject} & layout.test_cases else None
        cases.append(
            Case(case_id, subject, tuple(paths), labels.get(case_id), dict(layout.label_table), split)
        )
    return cases
