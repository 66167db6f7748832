"""The tasks the web side asks the workers to run, as typed constructors, and how they are sent.

Each task's name is written here once. workers/tasks.py registers its implementation under the same constant,
and tests/test_boundaries.py checks that the two sets agree, so a task and the code that asks for it are linked
by an import, not by a string. The web side builds `TaskMessage`s with the functions below inside its
transaction and calls `send` once that transaction has committed; it never imports the workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery

from app.core.config import get_settings

PING = "workers.tasks.ping"
ADVANCE_BUNDLE = "workers.tasks.advance_bundle"
FETCH_BUNDLE_SOURCE = "workers.tasks.fetch_bundle_source"
HARMONISE_BUNDLE_ITEM = "workers.tasks.harmonise_bundle_item"
PACKAGE_BUNDLE = "workers.tasks.package_bundle"
CLEAN_BUNDLE_WORK = "workers.tasks.clean_bundle_work"
RESUME_BUNDLES = "workers.tasks.resume_bundles"
TASK_NAMES = frozenset(
    {
        PING,
        ADVANCE_BUNDLE,
        FETCH_BUNDLE_SOURCE,
        HARMONISE_BUNDLE_ITEM,
        PACKAGE_BUNDLE,
        CLEAN_BUNDLE_WORK,
        RESUME_BUNDLES,
    }
)


@dataclass(frozen=True)
class TaskMessage:
    """One task to run: its registered name and its (JSON) arguments."""

    task: str
    args: tuple[Any, ...]


def advance_bundle(job_id: str) -> TaskMessage:
    """Move a bundle job's state machine on (start it, or see what its finished units allow next)."""
    return TaskMessage(ADVANCE_BUNDLE, (job_id,))


def fetch_bundle_source(job_id: str, slug: str) -> TaskMessage:
    """Download and unpack one dataset of a job."""
    return TaskMessage(FETCH_BUNDLE_SOURCE, (job_id, slug))


def harmonise_bundle_item(job_id: str, item_id: str) -> TaskMessage:
    """Harmonise one case (image and labels) of a job."""
    return TaskMessage(HARMONISE_BUNDLE_ITEM, (job_id, item_id))


def package_bundle(job_id: str) -> TaskMessage:
    """Write the bundle of a job whose cases are all harmonised."""
    return TaskMessage(PACKAGE_BUNDLE, (job_id,))


def clean_bundle_work(job_id: str) -> TaskMessage:
    """Remove a finished job's working files."""
    return TaskMessage(CLEAN_BUNDLE_WORK, (job_id,))


def resume_bundles() -> TaskMessage:
    """Re-send every unfinished unit of every unfinished job (after a restart)."""
    return TaskMessage(RESUME_BUNDLES, ())


# -- sending ------------------------------------------------------------------------------------------------------
def _redis_url() -> str:
    url = get_settings().redis_url
    if not url:
        raise RuntimeError("REDIS_URL is not set (`imagingx serve` starts a Redis and sets it)")
    return url


class CeleryConfig:
    """Read when Celery first needs its configuration, not at import: `imagingx serve` and the tests set
    REDIS_URL after this module may already have been imported."""

    task_serializer = "json"
    result_serializer = "json"
    accept_content = ["json"]
    # jobs are split into small idempotent tasks: a task is acknowledged only once done, and one lost with
    # its worker goes back to the queue
    task_acks_late = True
    task_reject_on_worker_lost = True
    worker_prefetch_multiplier = 1
    broker_connection_retry_on_startup = True
    result_expires = 7 * 24 * 3600
    timezone = "UTC"
    enable_utc = True

    @property
    def task_default_queue(self) -> str:
        return get_settings().celery_queue

    @property
    def broker_url(self) -> str:
        return _redis_url()

    @property
    def result_backend(self) -> str:
        return _redis_url()


@lru_cache
def celery_app() -> Celery:
    """The one Celery application of a process. The web side only sends with it; a worker process also
    registers its tasks on it (workers/celery_app.py)."""
    celery = Celery("imagingx")
    celery.config_from_object(CeleryConfig())
    return celery


def send(messages: Sequence[TaskMessage]) -> None:
    """Hand tasks to Celery, on IMAGINGX_CELERY_QUEUE. Call only after the transaction that justified them
    has committed (a worker must find what they refer to)."""
    if not messages:
        return
    queue = get_settings().celery_queue
    for message in messages:
        celery_app().send_task(message.task, args=list(message.args), queue=queue)


__all__ = [
    "TASK_NAMES",
    "CeleryConfig",
    "TaskMessage",
    "advance_bundle",
    "celery_app",
    "clean_bundle_work",
    "fetch_bundle_source",
    "harmonise_bundle_item",
    "package_bundle",
    "resume_bundles",
    "send",
]
