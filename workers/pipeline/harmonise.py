"""The harmonise unit: one item read, reoriented to RAS, relabelled by name, hashed and (3D) compressed, so that
packaging only links files. `harmonise_to_file` is the work itself, free of the database (bench/fusion runs it)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from app.bundles import service
from app.bundles.models import BundleItem, BundleJob
from app.bundles.schemas import ItemState, JobState
from app.catalog.models import Dataset
from app.core.config import Settings
from app.core.db import new_session
from workers.imaging.cases import Case
from workers.imaging.errors import UnreadableItemError
from workers.imaging.layout import split_suffix
from workers.packaging.checksums import sha256_file
from workers.pipeline.common import (
    Messages,
    case_from_json,
    case_path,
    log,
    reason_for,
    source_dir,
)


def _labels_unification(labels: dict[str, Any]) -> Any:
    from workers.imaging.labels import LabelUnification

    return LabelUnification(
        table=dict(labels["table"]),
        local_to_concept={
            s: {int(k): v for k, v in m.items()} for s, m in labels["local_to_concept"].items()
        },
        local_to_global={s: {int(k): v for k, v in m.items()} for s, m in labels["local_to_global"].items()},
    )


def _save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """np.savez without compression (packaging compresses once), published by rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            np.savez(sink, **arrays)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def harmonise_to_file(
    case: Case, slug: str, unification: Any, modality: str, out: Path, source_root: Path
) -> dict[str, Any]:
    """The work of one item, free of the database (bench/fusion runs it too): read, RAS, relabel and hash
    `case`; write a 3D case's volumes compressed next to `out` (a 2D case's arrays to `out`, uncompressed
    .npz), by rename; and return what packaging needs."""
    import SimpleITK as sitk

    from workers.imaging.harmonise import harmonise_case
    from workers.packaging.volumes import prewrite_volumes

    copied = copy_stored_case(case, slug, unification, modality, out, source_root)
    if copied is not None:
        return copied
    harmonised = harmonise_case(case, slug, unification)
    names = channel_names(case, len(harmonised.channels))
    if len(names) > 1 and harmonised.channels[0].GetDimension() != 3:
        raise UnreadableItemError(
            case.images[0], "multi_channel", "several channels are packaged for 3D only"
        )
    image = harmonised.channels[0]
    # views, not copies: the images live until the arrays are on disk
    image_array = sitk.GetArrayViewFromImage(image)
    label_array = sitk.GetArrayViewFromImage(harmonised.label) if harmonised.label is not None else None
    volumes = None
    if image.GetDimension() == 3:
        # compressed here, on whichever worker runs this item, so packaging only links files
        written = prewrite_volumes(
            out.parent,
            out.stem,
            image_array,
            label_array,
            image.GetSpacing(),
            image.GetOrigin(),
            image.GetDirection(),
            extra_images=[sitk.GetArrayViewFromImage(channel) for channel in harmonised.channels[1:]],
        )
        volumes = {
            "image": [written.image.path.name, written.image.size, written.image.sha256],
            "extra": [[f.path.name, f.size, f.sha256] for f in written.extra_images],
            "label": [written.label.path.name, written.label.size, written.label.sha256]
            if written.label
            else None,
            "shape": list(written.shape),
            "label_range": list(written.label_range) if written.label_range else None,
        }
    else:
        arrays = {"image": image_array}
        if label_array is not None:
            arrays["label"] = label_array
        _save_arrays(out, **arrays)
    return {
        "volumes": volumes,
        "channels": list(names) if len(names) > 1 else [],
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
        "dims": image.GetDimension(),
        "content_hash": harmonised.content_hash,
        "annotated": _annotated(harmonised.annotations),
        "modality": modality,
        "source_file": case.images[0].relative_to(source_root).as_posix() if case.images else "",
        "source_checksum": _source_checksum(case.images[0]) if case.images else "",
        "original_orientation": harmonised.original.orientation if harmonised.original is not None else None,
    }


def copy_stored_case(
    case: Case, slug: str, unification: Any, modality: str, out: Path, source_root: Path
) -> dict[str, Any] | None:
    """`harmonise_to_file`'s result for a 3D case whose files need no change (workers/imaging/passthrough.py:
    RAS NIfTI, unscaled, labels already in the bundle's ids), made by copying its compressed bytes after one
    checked pass; None when any file needs decoding, with nothing left behind."""
    from workers.imaging.labels import annotated_concepts
    from workers.imaging.passthrough import copy_checked, identity_labels, same_grid, stored_volume
    from workers.packaging.volumes import prewritten_path

    if not case.images:
        return None
    images = [stored_volume(path) for path in case.images]
    label = stored_volume(case.label) if case.label is not None else None
    first = images[0]
    if (
        first is None
        or any(image is None or not same_grid(image, first) for image in images)
        or (case.label is not None and (label is None or not same_grid(label, first)))
    ):
        return None
    names = channel_names(case, len(images))
    folder, name = out.parent, out.stem
    written: list[Path] = []

    def copy(volume: Any, suffix: str, is_label: bool = False) -> Any:
        copied = copy_checked(volume, prewritten_path(folder, name, suffix), is_label)
        if copied is not None:
            written.append(copied.path)
        return copied

    try:
        label_file = None
        if label is not None:
            # the label first: it is small, and it decides whether the big image can be copied at all
            if label.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
                return None
            label_file = copy(label, "label", is_label=True)
            if label_file is None:
                return None
            low, high = label_file.value_range or (0, 0)
            # what prewrite_volumes would store: uint8 unless a value needs 16 bits
            needed = np.dtype(np.uint8) if high < 256 else np.dtype(np.uint16)
            if label.dtype != needed or not identity_labels(unification.local_to_global[slug], int(high)):
                return None
        image_files = [
            copy(image, "image" if index == 0 else f"image{index}") for index, image in enumerate(images)
        ]
        if any(image_file is None for image_file in image_files):
            return None
    finally:
        if len(written) != len(images) + (label is not None):
            for path in written:
                path.unlink(missing_ok=True)
    image_file = image_files[0]
    annotated = annotated_concepts(case.label_table) if case.label is not None else frozenset()
    return {
        "volumes": {
            "image": [image_file.path.name, image_file.size, image_file.sha256],
            "extra": [[f.path.name, f.size, f.sha256] for f in image_files[1:]],
            "label": [label_file.path.name, label_file.size, label_file.sha256] if label_file else None,
            "shape": list(first.shape),
            "label_range": [int(low), int(high)] if label_file and label_file.value_range else None,
        },
        "channels": list(names) if len(names) > 1 else [],
        "spacing": list(first.spacing),
        "origin": list(first.origin),
        "direction": list(first.direction),
        "dims": 3,
        "content_hash": image_file.content_hash,
        "annotated": _annotated(unification.annotation_status(annotated)),
        "modality": modality,
        "source_file": case.images[0].relative_to(source_root).as_posix(),
        "source_checksum": image_file.sha256,  # the copy is the source file, byte for byte
        "original_orientation": "RAS",
    }


def _annotated(annotations: dict[str, Any]) -> list[str]:
    from workers.imaging.labels import Annotation

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


def _harmonise(
    job_id: str, item: BundleItem, labels: dict[str, Any], modality: str, settings: Settings
) -> dict[str, Any]:
    job_dir = service.work_dir(settings, job_id)
    return harmonise_to_file(
        case_from_json(item.case, job_dir),
        item.slug,
        _labels_unification(labels),
        modality,
        case_path(settings, job_id, item.item_id),
        job_dir / "sources" / item.slug,
    )


def _source_checksum(path: Path) -> str:
    if path.is_dir():  # a DICOM series: its files, in name order
        return ""
    return sha256_file(path)


def harmonise_item(job_id: str, item_id: str, settings: Settings) -> Messages:
    """Read, reorient and relabel one item into `cases/<item>.npz`; an unreadable item is skipped with its
    reason and the job goes on."""
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        item = session.get(BundleItem, (job_id, item_id))
        if job is None or job.state != JobState.harmonising or item is None:
            return []
        if item.state != ItemState.pending:
            return service.advance(session, job_id, settings)
        dataset_modalities = session.scalar(select(Dataset.modalities).where(Dataset.slug == item.slug)) or []
        labels = job.labels or {}
        session.expunge(item)
    modality = dataset_modalities[0] if dataset_modalities else "image"
    try:
        outcome: dict[str, Any] = {
            "state": ItemState.done,
            "harmonised": _harmonise(job_id, item, labels, modality, settings),
        }
    except UnreadableItemError as error:
        outcome = {
            "state": ItemState.skipped,
            "reason": reason_for(error, source_dir(settings, job_id, item.slug)),
        }
    except Exception as error:
        # SimpleITK raises RuntimeError for files it cannot parse, numpy ValueError for odd shapes; whatever
        # one item does, the job goes on without it and says why
        if not isinstance(error, OSError | RuntimeError | ValueError | MemoryError):
            log.exception("bundle %s: item %s failed unexpectedly", job_id, item_id)
        reason = reason_for(error, source_dir(settings, job_id, item.slug))
        outcome = {"state": ItemState.skipped, "reason": f"could not be read: {reason}"}
    with new_session() as session:
        row = session.get(BundleItem, (job_id, item_id), with_for_update=True)
        if row is not None and row.state == ItemState.pending:
            row.state = outcome["state"]
            row.reason = outcome.get("reason")
            row.harmonised = outcome.get("harmonised")
            session.commit()
        return service.advance(session, job_id, settings)
