"""Celery tasks, registered under the names app/common/tasks.py gives them (the web side asks for them through
its typed constructors). Each is small and idempotent (README, Layout): the work is in workers/pipeline/, the
bookkeeping in app/bundles/service.py; a task runs one unit, then sends the tasks the job's state machine asks
for next."""

from celery import shared_task
from celery.signals import worker_ready

from app.common import tasks
from app.core.config import get_settings


@shared_task(name=tasks.PING)
def ping() -> dict[str, object]:
    """Prove a worker is alive and reaches the database: `{"reply": "pong", "catalog_version": N}`."""
    from app.catalog.service import catalog_version
    from app.core.db import new_session

    with new_session() as session:
        version = catalog_version(session)
    return {"reply": "pong", "catalog_version": version}


def _send(messages: list[tasks.TaskMessage]) -> None:
    tasks.send(messages)


@shared_task(name=tasks.ADVANCE_BUNDLE)
def advance_bundle(job_id: str) -> None:
    from app.bundles.service import advance
    from app.core.db import new_session

    with new_session() as session:
        _send(advance(session, job_id))


@shared_task(name=tasks.FETCH_BUNDLE_SOURCE)
def fetch_bundle_source(job_id: str, slug: str) -> None:
    from workers.pipeline import fetch_source

    _send(fetch_source(job_id, slug, get_settings()))


@shared_task(name=tasks.HARMONISE_BUNDLE_ITEM)
def harmonise_bundle_item(job_id: str, item_id: str) -> None:
    from workers.pipeline import harmonise_item

    _send(harmonise_item(job_id, item_id, get_settings()))


@shared_task(name=tasks.PACKAGE_BUNDLE)
def package_bundle(job_id: str) -> None:
    from workers.pipeline import package

    _send(package(job_id, get_settings()))


@shared_task(name=tasks.CLEAN_BUNDLE_WORK)
def clean_bundle_work(job_id: str) -> None:
    from workers.pipeline import clean_work

    clean_work(job_id, get_settings())


@shared_task(name=tasks.RESUME_BUNDLES)
def resume_bundles() -> int:
    """Re-send every unfinished unit of every unfinished job; returns how many tasks were sent."""
    from app.bundles.service import resume_messages
    from app.core.db import new_session

    with new_session() as session:
        messages = resume_messages(session)
    _send(messages)
    return len(messages)


@worker_ready.connect
def _resume_on_start(sender: object = None, **_: object) -> None:
    """A worker that starts (again) picks up jobs a killed worker left unfinished. Sent as a task rather
    than run here, so a database that is not up yet delays the resume instead of the worker's start."""
    if get_settings().database_url:
        resume_bundles.apply_async(queue=get_settings().celery_queue)
