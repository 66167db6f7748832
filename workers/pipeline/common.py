"""What the job units share: their logger, the messages they return, where a job's files are, errors for people."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.bundles import service
from app.bundles.status import case_source_file as case_source_file  # re-exported for the units
from app.common.tasks import TaskMessage
from app.core.config import Settings
from app.core.db import get_engine
from workers.imaging.cases import Case, Split
from workers.imaging.layout_files import split_suffix

log = logging.getLogger("imagingx.jobs")
Messages = list[TaskMessage]


@contextmanager
def claimed(unit: str) -> Iterator[bool]:
    """Whether this process may run `unit` (e.g. `fetch:<job>:<slug>`): a PostgreSQL advisory lock held on a
    connection of its own while the unit runs. Copies of one unit can run at once: every worker that starts
    re-sends the unfinished units, and the broker redelivers a unit whose worker outlives its visibility
    timeout. A copy that finds the lock taken leaves the work to the holder; a worker that dies loses its
    connection and so its lock, and the copy sent on its behalf takes over."""
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        key = {"unit": unit}
        mine = bool(connection.scalar(text("SELECT pg_try_advisory_lock(hashtextextended(:unit, 0))"), key))
        try:
            yield mine
        finally:
            if mine:
                connection.execute(text("SELECT pg_advisory_unlock(hashtextextended(:unit, 0))"), key)


def case_to_json(case: Case, job_dir: Path) -> dict[str, Any]:
    def rel(path: Path) -> str:
        return path.resolve().relative_to(job_dir.resolve()).as_posix()

    return {
        "case_id": case.case_id,
        "subject_id": case.subject_id,
        "images": [rel(p) for p in case.images],
        "label": rel(case.label) if case.label is not None else None,
        "label_table": {str(k): v for k, v in case.label_table.items()},
        "split": case.split.value if case.split is not None else None,
        "class_name": case.class_name,
        "channel_names": list(case.channel_names),
        "member": case.member,
        "class_names": list(case.class_names) if case.class_names is not None else None,
        "modality": case.modality,
        "series_uid": case.series_uid,
        "extra_labels": [rel(p) for p in case.extra_labels],
        "notes": list(case.notes),
        "subject_from": case.subject_from,
    }


def case_from_json(data: dict[str, Any], job_dir: Path) -> Case:
    return Case(
        case_id=data["case_id"],
        subject_id=data["subject_id"],
        images=tuple(job_dir / p for p in data["images"]),
        label=job_dir / data["label"] if data["label"] else None,
        label_table={int(k): v for k, v in data["label_table"].items()},
        split=Split(data["split"]) if data["split"] else None,
        class_name=data["class_name"],
        channel_names=tuple(data.get("channel_names") or ()),
        member=data.get("member"),
        class_names=tuple(data["class_names"]) if data.get("class_names") is not None else None,
        modality=data.get("modality"),
        series_uid=data.get("series_uid"),
        extra_labels=tuple(job_dir / p for p in data.get("extra_labels") or ()),
        notes=tuple(data.get("notes") or ()),
        subject_from=data.get("subject_from") or "",
    )


def case_path(settings: Settings, job_id: str, item_id: str) -> Path:
    return service.work_dir(settings, job_id) / "cases" / f"{item_id}.npz"


def source_dir(settings: Settings, job_id: str, slug: str) -> Path:
    return service.work_dir(settings, job_id) / "sources" / slug


def reason_for(error: BaseException, folder: Path | None = None) -> str:
    """The error for people: paths inside the job's work folder are given relative to the source."""
    text = str(error).strip() or type(error).__name__
    if folder is not None:
        text = text.replace(f"{folder}/", "").replace(str(folder), ".")
    return text[:2000]


def annotated_list(annotations: dict[str, Any]) -> list[str]:
    """The concepts a case's source annotated, sorted: what the item records for packaging."""
    from app.common.labels import Annotation

    return sorted(concept for concept, status in annotations.items() if status == Annotation.ANNOTATED)


def channel_names(case: Case, count: int) -> tuple[str, ...]:
    """A name for each channel: the source's own (MSD's dataset.json), else the part of each file's name after
    the case id (`BraTS_001_t1.nii.gz` -> `t1`), else `channel1`, `channel2`..."""
    if len(case.channel_names) == count:
        return case.channel_names
    if count == 1:
        return ("",)
    if len(case.images) == count:
        names = []
        for path in case.images:
            stem = split_suffix(path)[0]
            rest = stem[len(case.case_id) :] if stem.startswith(case.case_id) else stem
            names.append(rest.strip("_-.") or stem)
        if len(set(names)) == count:
            return tuple(names)
    return tuple(f"channel{index}" for index in range(1, count + 1))


def source_checksum(path: Path) -> str:
    """sha256 of an item's source file, for provenance ("" for a DICOM series: a folder of files). Remembered
    per file version (path, inode, size, modification time): the cases of an array set (MedMNIST) share one
    file, which each process then hashes once, not once per element."""
    if path.is_dir():
        return ""
    status = path.stat()
    return _file_sha256(path, status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: Path, _inode: int, _size: int, _mtime_ns: int) -> str:
    from app.common.checksums import sha256_file

    return sha256_file(path)


def item_result(
    case: Case,
    source_root: Path,
    *,
    volumes: Any,
    channels: int,
    geometry: tuple[Any, Any, Any],
    dims: int,
    content_hash: str,
    annotations: dict[str, Any],
    modality: str,
    source_checksum: str,
    original_orientation: str | None,
) -> dict[str, Any]:
    """What a harmonised item records for packaging (BundleItem.harmonised), whichever way made it.
    `volumes`: a 3D case's PrewrittenVolumes (None for 2D: its arrays are in the .npz); `geometry`: ITK's
    (spacing, origin, direction) after reorientation; `annotations`: the source's annotation status per
    concept."""
    names = channel_names(case, channels)
    return {
        "volumes": None
        if volumes is None
        else {
            "image": _file_entry(volumes.image),
            "extra": [_file_entry(f) for f in volumes.extra_images],
            "label": _file_entry(volumes.label) if volumes.label else None,
            "shape": list(volumes.shape),
            "label_range": list(volumes.label_range) if volumes.label_range else None,
        },
        "channels": list(names) if len(names) > 1 else [],
        "spacing": list(geometry[0]),
        "origin": list(geometry[1]),
        "direction": list(geometry[2]),
        "dims": dims,
        "content_hash": content_hash,
        "annotated": annotated_list(annotations),
        "modality": modality,
        "source_file": source_file(case, source_root),
        "source_checksum": source_checksum,
        "original_orientation": original_orientation,
    }


def source_file(case: Case, source_root: Path) -> str:
    """The item's file relative to its source, and for an array set's element which one
    (`pathmnist.npz#train_images[12]`): packaging names skipped items by it, so it must tell cases apart."""
    if not case.images:
        return ""
    relative = case.images[0].relative_to(source_root).as_posix()
    return f"{relative}#{case.member}" if case.member else relative


def _file_entry(written: Any) -> list[Any]:
    return [written.path.name, written.size, written.sha256]
