"""nnU-Net dataset ids that do not collide within one owner's bundles.

nnU-Net finds a dataset by its id alone (`nnUNetv2_train 501 ...`): two folders `Dataset501_*` in one
`nnUNet_raw` make it refuse both. So each bundle of an owner gets ids none of the owner's other bundles uses.
The request may name the first id (`options.nnunet_dataset_id`): it is honoured as given. Otherwise the
submission picks the smallest id from 500 up (nnU-Net's authors keep 500+ for people's own datasets) that the
owner's other bundles do not use, and records it in the request. A bundle with several modalities needs one
id per modality, known only at packaging: `packaging_ids` then takes the next ids its owner's bundles leave
free, under a per-owner lock, and records them on the job so a rerun writes the same folders.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.bundles.models import BundleJob
from app.common.errors import Conflict

FIRST_OWN_ID = 500
LAST_ID = 999


def _lock_owner(session: Session, owner: str | None) -> None:
    """Serialise id choices per owner until the transaction ends (two submissions at once would pick the
    same id)."""
    if owner:
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"nnunet-ids:{owner}"}
        )


def used_ids(session: Session, owner: str | None, *, except_job: str | None = None) -> set[int]:
    """The ids the owner's bundles use or will use: those recorded at packaging, else the requested first id."""
    if not owner:
        return set()
    rows = session.execute(
        select(BundleJob.id, BundleJob.nnunet_ids, BundleJob.request).where(BundleJob.owner == owner)
    )
    used: set[int] = set()
    for job_id, ids, request in rows:
        if job_id == except_job:
            continue
        if ids:
            used.update(int(i) for i in ids)
        elif (first := ((request or {}).get("options") or {}).get("nnunet_dataset_id")) is not None:
            used.add(int(first))
    return used


def _next_free(used: set[int], start: int, count: int) -> list[int]:
    ids = [i for i in range(start, LAST_ID + 1) if i not in used][:count]
    if len(ids) < count:
        raise Conflict(
            f"no free nnU-Net dataset id from {start} to {LAST_ID} for {count} dataset(s): this owner's bundles "
            "use them; choose options.nnunet_dataset_id"
        )
    return ids


def default_first_id(session: Session, owner: str | None) -> int:
    """The first id a new bundle of `owner` gets when its request names none (the caller commits)."""
    _lock_owner(session, owner)
    return _next_free(used_ids(session, owner), FIRST_OWN_ID, 1)[0]


def packaging_ids(session: Session, job: BundleJob, count: int) -> list[int]:
    """One id per modality for `job` (the caller commits): the recorded ones if packaging chose them before,
    else the request's first id and then the next ids the owner's other bundles leave free."""
    if job.nnunet_ids and len(job.nnunet_ids) == count:
        return [int(i) for i in job.nnunet_ids]
    _lock_owner(session, job.owner)
    first = ((job.request or {}).get("options") or {}).get("nnunet_dataset_id") or FIRST_OWN_ID
    used = used_ids(session, job.owner, except_job=job.id)
    ids = [int(first), *_next_free(used, int(first) + 1, count - 1)]
    job.nnunet_ids = ids
    return ids
