"""The harmonise unit: one item read, reoriented to RAS, relabelled by name, hashed and (3D) compressed, so that
packaging only links files. `harmonise_to_file` is the work itself, free of the database (bench/fusion runs it)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from app.bundles import service
from app.bundles.models import BundleItem, BundleJob
from app.catalog.models import Dataset
from app.common.jobs import BuildOptions, ItemStage, ItemState, JobState
from app.core.config import Settings
from app.core.db import new_session
from workers.imaging.cases import Case
from workers.imaging.errors import LabelGridMismatchError, UnreadableItemError
from workers.pipeline import harmonise_account as account
from workers.pipeline import plain
from workers.pipeline.common import (
    Messages,
    case_from_json,
    case_path,
    item_result,
    log,
    reason_for,
    source_checksum,
    source_dir,
)


def _labels_unification(labels: dict[str, Any]) -> Any:
    from app.common.labels import LabelUnification

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
            # allow_pickle is savez's own default, named so that no array name can be taken for it
            np.savez(sink, allow_pickle=True, **arrays)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def harmonise_to_file(
    case: Case,
    slug: str,
    unification: Any,
    modality: str,
    out: Path,
    source_root: Path,
    *,
    catalog_modalities: Sequence[str] | None = None,
    resample_mismatched_labels: bool = False,
    slices_2d: bool = False,
) -> dict[str, Any]:
    """The work of one item, free of the database (bench/fusion runs it too): read, RAS, relabel and hash
    `case`; write a 3D case's volumes compressed next to `out` (a 2D case's arrays to `out`, uncompressed
    .npz), by rename; and return what packaging needs, with the item's account: its `alterations`, where its
    modality came from (`modality_from`, `modality_disagreement`), the label names no vocabulary knew
    (`unknown_labels`) and how its subject was found (`subject_from`).

    `modality` is the catalog's (the last resort when the data says nothing), `catalog_modalities` all the
    catalog lists for the dataset (default: `modality` alone). A label on another grid than its image raises
    LabelGridMismatchError unless `resample_mismatched_labels`. `slices_2d`: the bundle also cuts 2D slices,
    so how float voxels will be stored in them is recorded."""
    import SimpleITK as sitk

    from workers.imaging.harmonise import harmonise_case
    from workers.imaging.modality import case_modality
    from workers.packaging.volumes import prewrite_volumes

    found = case_modality(case, list(catalog_modalities) if catalog_modalities is not None else [modality])
    # plain NIfTI cases first: copied when already in the bundle's form, else decoded without ITK images
    for fast_way in (plain.copy_stored_case, plain.decode_plain_case):
        result = fast_way(case, slug, unification, found.modality, out, source_root)
        if result is not None:
            alterations = account.plain_alterations(case, slug, unification, result["direction"])
            if slices_2d:
                alterations += account.prewritten_slice_alterations(case, out, result)
            return account.with_account(result, case, found, alterations)
    harmonised = harmonise_case(
        case, slug, unification, resample_mismatched_labels=resample_mismatched_labels
    )
    if len(harmonised.channels) > 1 and harmonised.channels[0].GetDimension() != 3:
        raise UnreadableItemError(
            case.images[0], "multi_channel", "several channels are packaged for 3D only"
        )
    image = harmonised.channels[0]
    # views, not copies: the images live until the arrays are on disk
    image_array = sitk.GetArrayViewFromImage(image)
    label_array = sitk.GetArrayViewFromImage(harmonised.label) if harmonised.label is not None else None
    alterations = [a.as_json() for a in harmonised.alterations]
    written = None
    if image.GetDimension() == 3:
        if slices_2d:
            alterations += account.slice_alterations(image_array.dtype, lambda: image_array)
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
    else:
        arrays = {"image": image_array}
        if label_array is not None:
            arrays["label"] = label_array
        _save_arrays(out, **arrays)
    result = item_result(
        case,
        source_root,
        volumes=written,
        channels=len(harmonised.channels),
        geometry=(image.GetSpacing(), image.GetOrigin(), image.GetDirection()),
        dims=image.GetDimension(),
        content_hash=harmonised.content_hash,
        annotations=harmonised.annotations,
        modality=found.modality,
        source_checksum=source_checksum(case.images[0]) if case.images else "",
        original_orientation=harmonised.original.orientation if harmonised.original is not None else None,
    )
    return account.with_account(result, case, found, alterations)


def _harmonise(
    job_id: str,
    item: BundleItem,
    labels: dict[str, Any],
    modalities: list[str],
    options: BuildOptions,
    settings: Settings,
) -> dict[str, Any]:
    job_dir = service.work_dir(settings, job_id)
    case = case_from_json(item.case, job_dir)
    return harmonise_to_file(
        case,
        item.slug,
        _labels_unification(labels),
        # the catalog's first modality is the last resort: the data's own statement comes first
        modalities[0] if modalities else "image",
        case_path(settings, job_id, item.item_id),
        source_dir(settings, job_id, item.slug),
        catalog_modalities=modalities,
        resample_mismatched_labels=options.resample_mismatched_labels,
        slices_2d=options.slices_2d is not None,
    )


def harmonise_item(job_id: str, item_id: str, settings: Settings) -> Messages:
    """Read, reorient and relabel one item into the job's `cases/` folder (a 3D item's compressed volumes, a
    2D item's `.npz`); an unreadable item is skipped with its reason and the job goes on."""
    with new_session() as session:
        job = session.get(BundleJob, job_id)
        item = session.get(BundleItem, (job_id, item_id))
        if job is None or job.state != JobState.harmonising or item is None:
            return []
        if item.state != ItemState.pending:
            return service.advance(session, job_id, settings)
        dataset_modalities = session.scalar(select(Dataset.modalities).where(Dataset.slug == item.slug)) or []
        labels = job.labels or {}
        options = BuildOptions.model_validate((job.request or {}).get("options", {}))
        session.expunge(item)
    try:
        outcome: dict[str, Any] = {
            "state": ItemState.done,
            "harmonised": _harmonise(job_id, item, labels, list(dataset_modalities), options, settings),
        }
    except LabelGridMismatchError as error:
        # read, but refused while harmonising: the request did not allow resampling the label
        outcome = {
            "state": ItemState.skipped,
            "stage": ItemStage.harmonise,
            "reason": reason_for(error, source_dir(settings, job_id, item.slug)),
        }
    except UnreadableItemError as error:
        outcome = {
            "state": ItemState.skipped,
            "stage": ItemStage.read,
            "reason": reason_for(error, source_dir(settings, job_id, item.slug)),
        }
    except Exception as error:
        # SimpleITK raises RuntimeError for files it cannot parse, numpy ValueError for odd shapes; whatever
        # one item does, the job goes on without it and says why
        if not isinstance(error, OSError | RuntimeError | ValueError | MemoryError):
            log.exception("bundle %s: item %s failed unexpectedly", job_id, item_id)
        reason = reason_for(error, source_dir(settings, job_id, item.slug))
        outcome = {
            "state": ItemState.skipped,
            "stage": ItemStage.read,
            "reason": f"could not be read: {reason}",
        }
    with new_session() as session:
        row = session.get(BundleItem, (job_id, item_id), with_for_update=True)
        if row is not None and row.state == ItemState.pending:
            row.state = outcome["state"]
            row.reason = outcome.get("reason")
            row.stage = outcome.get("stage")
            row.harmonised = outcome.get("harmonised")
            session.commit()
        return service.advance(session, job_id, settings)
