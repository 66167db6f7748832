"""What the job units share: their logger, the messages they return, where a job's files are, errors for people."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.bundles import service
from app.core.config import Settings
from workers.imaging.cases import Case, Split

log = logging.getLogger("imagingx.jobs")
Messages = list[service.Message]


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
