"""Layout detection: turn an unpacked source folder into a list of cases.

Public sets ship in a handful of conventions (docs/bundles.md). `detect_layout` tries them from the most
self-describing to the least, so a folder that happens to satisfy two rules gets the one that carries more
information:

1. MSD / nnU-Net raw: `dataset.json` + `imagesTr/` (`labelsTr/`, `imagesTs/`);
2. BIDS: `sub-*/[ses-*/]anat/` with labels under `derivatives/`;
3. array sets: MedMNIST's `.npz` (`train_images`, `train_labels`, ...), one case per element;
4. DICOM trees whose SEG / RTSTRUCT objects name the series they label (workers/imaging/dicom_objects.py);
5. DICOM series folders with a label volume beside them or in their parent (TCIA style);
6. suffix pairs: `X_seg.nii.gz` beside `X.nii.gz` (and `X_<channel>.nii.gz`, BraTS);
7. id pairs: images and labels anywhere in the tree paired by case or subject id (`images/` vs `masks/`,
   `seg_X`, `Case7` vs `case007`), volumes (NIfTI, NRRD, MHA/MHD, DICOM series) and 2D image/mask pictures;
8. class folders: `[split/]class/*.png` (just folders of pictures);
9. last resort, a DICOM tree without labels: every image series, unlabelled.

An explicit layout from the source descriptor always wins: it is the operator's statement about the data.
"""

from __future__ import annotations

import csv
import json
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from workers.imaging.arrays import ArraySet, find_array_sets, load_array, member_name
from workers.imaging.cases import Case, Layout, LayoutKind, Split
from workers.imaging.dicom_objects import dicom_image_cases, dicom_object_cases
from workers.imaging.errors import LayoutNotRecognisedError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = VOLUME_SUFFIXES + RASTER_SUFFIXES
LABEL_SUFFIX_WORDS = ("seg", "mask", "label", "gt")
# `_seg`, `-mask`, `_label`, `_gt` at the end of a stem, any case; also `_labels`/`_masks` which people write too,
# and `.seg` (3D Slicer saves `X.seg.nrrd`).
LABEL_STEM = re.compile(r"^(?P<base>.+?)[_.-](?:seg|mask|masks|label|labels|gt)$", re.IGNORECASE)
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
    wrote a table did so to correct it. For array sets (MedMNIST) it names the classes instead. What
    detection noticed but would not guess is in the layout's `warnings`.
    """
    layout = _find_layout(Path(folder), explicit)
    if layout.kind == LayoutKind.NPZ_ARRAYS:
        # there the table names classes: it is no segmentation label table, and no case gets it as one
        if label_table:
            table = {int(k): v for k, v in label_table.items()}
            layout = Layout(layout.kind, layout.root, _name_classes(layout.cases, table), layout.warnings)
        return layout
    if label_table:
        table = {int(k): v for k, v in label_table.items()}
        layout = Layout(
            layout.kind,
            layout.root,
            [replace(c, label_table=dict(table)) for c in layout.cases],
            layout.warnings,
        )
    return layout


def _find_layout(root: Path, explicit: ExplicitLayout | None) -> Layout:
    if explicit is not None:
        return Layout(LayoutKind.EXPLICIT, root, _explicit_cases(root, explicit))
    root = _single_subfolder(root)
    warnings: list[str] = []
    for kind, finder in (
        (LayoutKind.MSD, _msd_cases),
        (LayoutKind.BIDS, _bids_cases),
        (LayoutKind.NPZ_ARRAYS, _npz_cases),
        (LayoutKind.DICOM_OBJECTS, dicom_object_cases),
        (LayoutKind.DICOM_SERIES, _dicom_cases),
        (LayoutKind.SUFFIX_PAIRS, _suffix_pair_cases),
        (LayoutKind.ID_PAIRS, lambda folder: _id_pair_cases(folder, warnings)),
        (LayoutKind.CLASS_FOLDERS, _class_folder_cases),
        (LayoutKind.DICOM_UNLABELLED, dicom_image_cases),
    ):
        cases = finder(root)
        if cases:
            return Layout(kind, root, cases, warnings)
    raise LayoutNotRecognisedError(
        f"{root}: no known layout (MSD/nnU-Net, BIDS, npz arrays, DICOM series + label, image/label pairs by "
        "suffix or id, class folders); give an explicit layout"
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


# --- array sets (MedMNIST npz) -------------------------------------------------------------------------------

NPZ_SPLITS = {"train": Split.TRAIN, "val": Split.VAL, "test": Split.TEST}


def _npz_cases(root: Path) -> list[Case]:
    """MedMNIST's `.npz` (workers/imaging/arrays.py), or the `.npy` files the fetch unit unpacked from one:
    `{train,val,test}_images` with `{split}_labels`, the official splits. One case per element, its
    `member` naming it (`"train_images[12]"`); images (N, H, W) or (N, H, W, 3) give 2D cases, (N, D, H, W)
    3D ones. Labels (N, 1) (or (N,)) are class ids, kept as text in `class_name` until detect_layout names
    them; (N, K) of 0/1 is multi-label, every positive class in `class_names`. Each element is its own
    subject (MedMNIST publishes no patient ids; its splits are official anyway). With several sets in one
    source, case ids start with the set's name (`pathmnist_train_00012`) and class ids too (`pathmnist/3`), so
    that two sets' classes never merge."""
    sets = [s for s in find_array_sets(root) if any(f"{split}_images" in s.arrays for split in NPZ_SPLITS)]
    cases: list[Case] = []
    for array_set in sets:
        prefix = f"{array_set.stem}_" if len(sets) > 1 else ""
        for split_name, split in NPZ_SPLITS.items():
            images = array_set.arrays.get(f"{split_name}_images")
            if images is None:
                continue
            where = f"{array_set.root.name}: {images.name}"
            if len(images.shape) not in (3, 4):
                raise LayoutNotRecognisedError(
                    f"{where} has shape {images.shape}; expected (N, H, W[, 3]) or (N, D, H, W)"
                )
            count = images.shape[0]
            classes = _npz_classes(array_set, split_name, count, where)
            if prefix:
                # class 0 of one set is not class 0 of another: several sets keep their classes apart
                classes = [
                    (f"{array_set.stem}/{one}" if one is not None else None,
                     tuple(f"{array_set.stem}/{c}" for c in many) if many is not None else None)
                    for one, many in classes
                ]  # fmt: skip
            width = len(str(max(count - 1, 0)))
            image_file = array_set.file_of(images.name)
            for index in range(count):
                case_id = f"{prefix}{split_name}_{index:0{width}d}"
                class_name, class_names = classes[index] if classes else (None, None)
                cases.append(
                    Case(
                        case_id,
                        case_id,
                        (image_file,),
                        None,
                        {},
                        split,
                        class_name,
                        member=member_name(images.name, index),
                        class_names=class_names,
                    )
                )
    return cases


def _npz_classes(
    array_set: ArraySet, split_name: str, count: int, where: str
) -> list[tuple[str | None, tuple[str, ...] | None]]:
    """(class_name, class_names) per element, ids as text; [] when the split ships no labels."""
    name = f"{split_name}_labels"
    if name not in array_set.arrays:
        return []
    labels = load_array(array_set.file_of(name), name)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != count or not np.issubdtype(labels.dtype, np.integer):
        raise LayoutNotRecognisedError(
            f"{where}: {name} has shape {labels.shape} ({labels.dtype}); expected ({count}, 1) class ids "
            f"or ({count}, K) 0/1 flags"
        )
    if labels.shape[1] == 1:
        return [(str(int(value)), None) for value in labels[:, 0]]
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise LayoutNotRecognisedError(
            f"{where}: {name} has {labels.shape[1]} columns but values other than 0/1"
        )
    return [(None, tuple(str(int(k)) for k in np.flatnonzero(row))) for row in labels]


def _name_classes(cases: list[Case], table: dict[int, str]) -> list[Case]:
    """Array cases carry class ids as text: name them from the descriptor's table (an id it lacks stays
    its number)."""

    def named(class_id: str) -> str:
        # a set-qualified id (`pathmnist/3`, several sets in one source) is not this table's to name
        return table.get(int(class_id), class_id) if class_id.isdigit() else class_id

    return [
        replace(
            case,
            class_name=named(case.class_name) if case.class_name is not None else None,
            class_names=tuple(named(c) for c in case.class_names) if case.class_names is not None else None,
        )
        for case in cases
    ]


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
    labels: list[tuple[Path, str]] = []
    # per folder, its images' (stem, position in `files`) sorted by stem: a label finds its images by bisection,
    # not by a pass over the whole tree (which took minutes for 20k pairs)
    folders: dict[Path, list[tuple[str, int]]] = defaultdict(list)
    for position, path in enumerate(files):
        stem = split_suffix(path)[0]
        if match := LABEL_STEM.match(stem):
            labels.append((path, match["base"]))
        else:
            folders[path.parent].append((stem, position))
    for entries in folders.values():
        entries.sort()
    cases: list[Case] = []
    for label, base in labels:
        entries = folders.get(label.parent, [])
        found: list[int] = []
        for wanted, whole in ((base, True), (base + "_", False)):  # `X.*`, then `X_<anything>.*`
            index = bisect_left(entries, (wanted,))
            while index < len(entries) and (
                entries[index][0] == wanted if whole else entries[index][0].startswith(wanted)
            ):
                found.append(entries[index][1])
                index += 1
        images = tuple(files[position] for position in sorted(found))
        if not images:
            continue
        relative = label.parent.relative_to(root)
        subject = relative.parts[0] if relative.parts else base
        cases.append(Case(base, subject, images, label))
    return cases


# --- images and labels anywhere in the tree, paired by id ----------------------------------------------------

# Folder names are read as words (`imagesTr` -> images, tr; `ISIC2018_Task1_Training_GroundTruth` -> isic,
# task, training, ground, truth): a folder with a label word holds labels, one with an image word images.
LABEL_FOLDER_WORDS = frozenset(
    {"label", "labels", "mask", "masks", "seg", "segs", "segmentation", "segmentations", "gt", "groundtruth"}
    | {"truth", "annotation", "annotations"}
)
IMAGE_FOLDER_WORDS = frozenset(
    {"image", "images", "img", "imgs", "scan", "scans", "volume", "volumes", "data", "input", "inputs"}
)
# nnU-Net's imagesTr / labelsTs: `tr` and `ts` name a split only next to an image or label word
_ROLE_SPLIT_WORDS = {"tr": Split.TRAIN, "ts": Split.TEST}
_LABEL_WORDS = r"seg|segs|segmentation|mask|masks|label|labels|gt|annotation|annot"
_IMAGE_WORDS = r"img|image|scan|vol|volume"
# `seg_X`, `mask-X`, `X_seg`, `X_label`, `X.seg` (3D Slicer's `X.seg.nrrd`), or a stem that is only the word
LABEL_AFFIX = re.compile(
    rf"^(?:{_LABEL_WORDS})(?:[_.-]+(?P<rest>.+))?$|^(?P<base>.+?)[_.-]+(?:{_LABEL_WORDS})$", re.IGNORECASE
)
IMAGE_AFFIX = re.compile(
    rf"^(?:{_IMAGE_WORDS})(?:[_.-]+(?P<rest>.+))?$|^(?P<base>.+?)[_.-]+(?:{_IMAGE_WORDS})$", re.IGNORECASE
)

IdKey = tuple[str | int, ...]


def case_key(text: str) -> IdKey:
    """An id as compared across folders: letters lower-cased, digit runs as numbers, separators dropped, so
    `Case7`, `case007` and `case_7` agree, and `patient_01` agrees with `Patient1`; `case_1_2` and `case_12`
    do not (the digit runs differ)."""
    return tuple(int(t) if t.isdigit() else t for t in re.findall(r"[a-z]+|\d+", text.lower()))


def _strip_affix(stem: str, pattern: re.Pattern[str]) -> tuple[str, bool]:
    """`stem` without the words `pattern` finds at its start or end (repeatedly: `seg_X_mask`), and whether
    there were any."""
    found = False
    while match := pattern.match(stem):
        found = True
        stem = match["rest"] or match["base"] or ""
        if not stem:
            break
    return stem, found


def _folder_words(name: str) -> list[str]:
    return re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())


@dataclass(frozen=True)
class _FolderRole:
    role: str | None  # "image", "label" or None
    split: Split | None
    plain: bool  # neither a role nor only a split: a subject, case or site folder (or a wrapper)


def _folder_role(name: str) -> _FolderRole:
    words = _folder_words(name)
    role = (
        "label"
        if LABEL_FOLDER_WORDS.intersection(words)
        else "image"
        if IMAGE_FOLDER_WORDS.intersection(words)
        else None
    )
    splits = [SPLIT_FOLDER_NAMES[w] for w in words if w in SPLIT_FOLDER_NAMES]
    if role is not None:
        splits += [_ROLE_SPLIT_WORDS[w] for w in words if w in _ROLE_SPLIT_WORDS]
        return _FolderRole(role, splits[0] if splits else None, False)
    if words and all(w in SPLIT_FOLDER_NAMES for w in words):
        return _FolderRole(None, splits[0], False)
    return _FolderRole(None, None, True)


@dataclass(frozen=True)
class _Item:
    """An image or label file (or DICOM series folder) as the pairing sees it."""

    path: Path
    stem: str
    name: IdKey  # the stem's id, image/label words stripped
    context: tuple[object, ...]  # the folders above it, image/label folders dropped, split folders by split
    plain_folders: tuple[str, ...]  # the subject / case / site folders above it, outermost first
    split: Split | None
    in_image_folder: bool


def _item(path: Path, root: Path, *, series: bool = False) -> tuple[_Item, bool]:
    """The item for `path` and whether it is a label: below a label folder (the deepest image or label folder
    decides), or, outside any label folder, named with a label word (`seg_X`, `X_mask`...)."""
    relative = path.relative_to(root)
    folders = relative.parts[:-1]
    stem = path.name if series else split_suffix(path)[0]
    roles = [_folder_role(f) for f in folders]
    deepest = next((r.role for r in reversed(roles) if r.role is not None), None)
    label_stem, label_words = _strip_affix(stem, LABEL_AFFIX)
    is_label = not series and (deepest == "label" or label_words)
    # both sides lose both kinds of word: `images/scan_17.nii` pairs with `masks/scan_17_mask.nii`
    name = _strip_affix(label_stem, IMAGE_AFFIX)[0]
    context: list[object] = []
    for folder, role in zip(folders, roles, strict=True):
        if role.split is not None:
            context.append(role.split)
        elif role.plain:
            context.append(case_key(folder))
    split = next((r.split for r in reversed(roles) if r.split is not None), None)
    plain = tuple(f for f, r in zip(folders, roles, strict=True) if r.plain)
    in_image_folder = any(r.role == "image" for r in roles)
    return _Item(path, stem, case_key(name), tuple(context), plain, split, in_image_folder), is_label


def _common_prefix(rows: list[tuple[str, ...]]) -> int:
    if not rows:
        return 0
    length = min(len(r) for r in rows)
    for index in range(length):
        if len({r[index] for r in rows}) > 1:
            return index
    return length


def _pair_by_keys(images: list[_Item], labels: list[_Item]) -> tuple[dict[int, int], set[int]]:
    """Image index -> label index, and the images left unpaired because the match was ambiguous.

    Three passes, each over what the previous ones left: the same id in the same folders (split folders and
    subject folders alike, image/label folders aside); the same id anywhere; an id equal to the other side's
    subject or case folder (`images/P1/scan.nii` and `labels/P1.nii`; only folders that differ between
    items count). In each pass a key shared by more than one image or more than one label pairs none of
    them, and an image reaching two labels (or a label reached by two images) is not paired: never a guess.
    """

    def folder_keys(items: list[_Item]) -> list[IdKey]:
        """Each item's nearest subject / case folder as an id; () when it has none, or only folders every
        item of its side sits in (wrappers, not subjects)."""
        varying = _common_prefix([item.plain_folders for item in items])
        return [case_key(i.plain_folders[-1]) if len(i.plain_folders) > varying else () for i in items]

    sides = ((images, folder_keys(images)), (labels, folder_keys(labels)))
    passes: tuple[Callable[[_Item, IdKey], list[object]], ...] = (
        lambda item, _folder: [(item.context, item.name)],
        lambda item, _folder: [item.name] if item.name else [],
        lambda item, folder: [k for k in {item.name, folder} if k],
    )
    pairs: dict[int, int] = {}
    taken: set[int] = set()
    ambiguous: set[int] = set()
    for keys_of in passes:
        image_keys: dict[object, set[int]] = defaultdict(set)
        label_keys: dict[object, set[int]] = defaultdict(set)
        for (items, folders), keys, done in zip(sides, (image_keys, label_keys), (pairs, taken), strict=True):
            for index, (item, folder) in enumerate(zip(items, folders, strict=True)):
                if index not in done:
                    for key in keys_of(item, folder):
                        keys[key].add(index)
        candidates: dict[int, set[int]] = defaultdict(set)
        for key, image_indices in image_keys.items():
            label_indices = label_keys.get(key)
            if not label_indices:
                continue
            if len(image_indices) == 1 and len(label_indices) == 1:
                candidates[next(iter(image_indices))].add(next(iter(label_indices)))
            else:
                ambiguous |= image_indices
        claims = Counter(label for found in candidates.values() for label in found)
        for image_index, found in candidates.items():
            label_index = next(iter(found))
            if len(found) == 1 and claims[label_index] == 1:
                pairs[image_index] = label_index
                taken.add(label_index)
            else:
                ambiguous.add(image_index)
    return pairs, ambiguous - set(pairs)


def _id_pair_items(root: Path) -> tuple[list[_Item], list[_Item]]:
    images: list[_Item] = []
    labels: list[_Item] = []
    series_folders: set[Path] = set()
    for path in sorted(root.rglob("*")):
        if any(part.startswith((".", "__MACOSX")) for part in path.relative_to(root).parts):
            continue
        if is_image_file(path):
            item, is_label = _item(path, root)
            (labels if is_label else images).append(item)
        elif path.is_file() and path.parent != root and is_dicom_file(path):
            series_folders.add(path.parent)
    for folder in sorted(series_folders):
        item, _ = _item(folder, root, series=True)
        roles = [_folder_role(f) for f in folder.relative_to(root).parts]
        # a DICOM folder below a label folder holds SEG/RTSTRUCT objects, a matter for another layout
        if not any(r.role == "label" for r in roles) and not _strip_affix(folder.name, LABEL_AFFIX)[1]:
            images.append(item)
    return images, labels


def _id_pair_cases(root: Path, warnings: list[str] | None = None) -> list[Case]:
    """Images and labels anywhere in the tree, paired by case or subject id (_pair_by_keys): sibling folders
    (`images/` vs `masks/`, `scans/` vs `segmentations/`, in any case and at any depth, with parallel split
    folders below or above them), label words before or after the id (`seg_X`, `X_mask`, `X.seg.nrrd`), ids
    that differ in case, separators or zero padding. 2D pictures pair the same way and are segmentation cases.

    An image without a label stays a case (an official test set often ships none) if it sits in an image
    folder or beside a paired image; labels without an image are dropped. Ambiguous matches are not guessed:
    those images stay unlabelled (packaging then skips a 3D training case for want of a label map, with that
    reason) and `warnings` says which. Not this layout unless at least one pair is found."""
    images, labels = _id_pair_items(root)
    if not images or not labels:
        return []
    pairs, ambiguous = _pair_by_keys(images, labels)
    varying = _common_prefix([item.plain_folders for item in images])  # wrapper folders name no subject
    if not pairs:
        return []
    paired_folders = {images[index].path.parent for index in pairs}
    kept = [
        index
        for index, image in enumerate(images)
        if index in pairs or image.in_image_folder or image.path.parent in paired_folders
    ]
    stems = Counter(images[index].stem for index in kept)
    cases: list[Case] = []
    for index in kept:
        image = images[index]
        case_id = image.stem
        if stems[case_id] > 1:  # `images/train/case1` and `images/test/case1`
            folders = [f for f in image.path.relative_to(root).parts[:-1] if _folder_role(f).role is None]
            if image.split is not None and not any(_folder_role(f).split for f in folders):
                folders.append(image.split.value)  # the split came with `imagesTr` / `imagesTs`
            case_id = "_".join([*folders, image.stem])
        subject = image.plain_folders[varying] if len(image.plain_folders) > varying else case_id
        label = labels[pairs[index]].path if index in pairs else None
        cases.append(Case(case_id, subject, (image.path,), label, {}, image.split))
    if warnings is not None and ambiguous:
        examples = ", ".join(images[i].path.relative_to(root).as_posix() for i in sorted(ambiguous)[:5])
        more = f" and {len(ambiguous) - 5} more" if len(ambiguous) > 5 else ""
        warnings.append(
            f"{len(ambiguous)} image(s) left without a label: more than one label file (or image) shares "
            f"their id, so none was guessed ({examples}{more}); give an explicit layout to pair them"
        )
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
