"""nnU-Net v2 raw-dataset layout: `DatasetNNN_Name/{imagesTr,labelsTr,imagesTs,labelsTs}`, `dataset.json`,
`splits_final.json`.

One dataset per set of channels (a single-channel dataset per modality, and one per multi-channel set such
as T1+T1c+T2+FLAIR): nnU-Net normalises per channel by its *name* ("CT" -> CT normalisation with the dataset's
HU percentiles, anything else -> z-score per image), so CT and MR volumes in one channel would be normalised
wrongly, and a case must bring exactly its dataset's channels. Training and validation cases go to `imagesTr` and the bundle's
patient-level split becomes fold 0 of `splits_final.json`; official test cases go to `imagesTs`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

NNUNET_DIR = "nnunet"
FILE_ENDING = ".nii.gz"
_FALLBACK_FOLDS = 5


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError("nnU-Net dataset ids are 1..999")
    clean = re.sub(r"[^A-Za-z0-9]+", "", name.title()) or "Bundle"
    return f"Dataset{dataset_id:03d}_{clean}"


def case_paths(dataset_relative: str, case_id: str, split: str) -> tuple[str, str]:
    """(image, label) paths of a case relative to the bundle root."""
    suffix = "Ts" if split == "test" else "Tr"
    return (
        f"{dataset_relative}/images{suffix}/{case_id}_0000{FILE_ENDING}",
        f"{dataset_relative}/labels{suffix}/{case_id}{FILE_ENDING}",
    )


def channel_paths(dataset_relative: str, case_id: str, split: str, count: int) -> list[str]:
    """The image path of each channel (`case_0000`, `case_0001`...), relative to the bundle root."""
    suffix = "Ts" if split == "test" else "Tr"
    return [f"{dataset_relative}/images{suffix}/{case_id}_{index:04d}{FILE_ENDING}" for index in range(count)]


def channel_key(channels: tuple[str, ...]) -> str:
    """Which nnU-Net dataset a case belongs to: cases share one only when their channels are the same."""
    return "+".join(channel_name(c) for c in channels)


def channel_name(modality: str) -> str:
    """The channel name nnU-Net reads: exactly "CT" for CT (its CT normalisation), the modality otherwise."""
    return "CT" if modality.strip().upper() == "CT" else modality.strip()


def dataset_json(
    *,
    name: str,
    description: str,
    licence: str,
    reference: str,
    channels: tuple[str, ...],
    labels: dict[str, int],
    num_training: int,
    num_test: int,
) -> dict[str, Any]:
    return {
        "channel_names": {str(index): channel_name(channel) for index, channel in enumerate(channels)},
        "labels": labels,
        "numTraining": num_training,
        "numTest": num_test,
        "file_ending": FILE_ENDING,
        "name": name,
        "description": description,
        "licence": licence,
        "reference": reference,
        "tensorImageSize": "3D",
    }


def splits_final(case_splits: dict[str, tuple[str, str]]) -> list[dict[str, list[str]]]:
    """Folds for the training cases. `case_splits`: case id -> (split, subject id).

    With validation cases: one fold, exactly the bundle's split. Without: up to five folds by subject, the
    subjects dealt in the order of a hash of their id, so one patient's scans never sit on both sides (nnU-Net's
    own random folds would split them) and every fold has cases to train on and to validate. With a single
    subject (or a split that left nothing to train on) no fold can keep the two apart: the one fold trains and
    validates on the same cases, as nnU-Net's fold `all` does.
    """
    training = {case: info for case, info in case_splits.items() if info[0] in ("train", "val")}
    if any(split == "val" for split, _subject in training.values()):
        train = sorted(c for c, (s, _) in training.items() if s == "train")
        val = sorted(c for c, (s, _) in training.items() if s == "val")
        if train:
            return [{"train": train, "val": val}]
        return [
            {"train": val, "val": val}
        ]  # every training case went to validation: nothing apart to train on
    # subjects dealt round-robin in the order of their hash: every fold validates at least one subject and
    # trains on the others (a plain hash modulo 5 could leave a fold with nothing to train on)
    subjects = sorted(
        {subject for _split, subject in training.values()},
        key=lambda subject: (hashlib.sha256(subject.encode()).hexdigest(), subject),
    )
    count = min(_FALLBACK_FOLDS, len(subjects))
    fold_of_subject = {subject: rank % count for rank, subject in enumerate(subjects)}
    folds = []
    for fold in range(count):
        val = sorted(c for c, (_s, subject) in training.items() if fold_of_subject[subject] == fold)
        train = sorted(c for c, (_s, subject) in training.items() if fold_of_subject[subject] != fold)
        folds.append({"train": train, "val": val})
    if count == 1:
        every = sorted(training)
        folds = [{"train": every, "val": every}]
    return folds


def write_dataset_files(
    root: Path,
    dataset_relative: str,
    document: dict[str, Any],
    case_splits: dict[str, tuple[str, str]],
) -> None:
    folder = root / dataset_relative
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(
        json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    folds = splits_final(case_splits)
    (folder / "splits_final.json").write_text(json.dumps(folds, indent=2) + "\n", encoding="utf-8")


def group_by_modality(modalities: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for case, modality in modalities.items():
        groups[channel_name(modality)].append(case)
    return {m: sorted(cases) for m, cases in sorted(groups.items())}
