"""Layouts that describe themselves: MSD / nnU-Net raw (`dataset.json` + `imagesTr/`, its label table and
channel names), BIDS (`sub-*/[ses-*/]anat/`, labels under `derivatives/`, values in a `*_dseg.tsv`) and
MedMNIST-style array sets (`.npz`, one case per element, official splits, class ids named from the source's
table)."""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from workers.imaging.arrays import ArraySet, find_array_sets, load_array, member_name
from workers.imaging.cases import Case, Split
from workers.imaging.errors import LayoutNotRecognisedError
from workers.imaging.layout_files import is_image_file, split_suffix

CHANNEL_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net v2: case_0000


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


def msd_cases(root: Path) -> list[Case]:
    """MSD / nnU-Net raw: `dataset.json` with `imagesTr/` (and `imagesTs/`, the official test set), each case's
    label the file of the same id in `labelsTr/` (`labelsTs/`); nnU-Net v2's `case_0000`, `case_0001`... are
    one case's channels."""
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


def bids_cases(root: Path) -> list[Case]:
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


def npz_cases(root: Path) -> list[Case]:
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


def name_classes(cases: list[Case], table: dict[int, str]) -> list[Case]:
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
