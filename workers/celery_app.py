"""The Celery application. Broker and result backend are both REDIS_URL; tasks are found in workers.tasks.

Run a worker with `imagingx worker` (or `celery -A workers.celery_app worker`).
"""

from celery import Celery

from app.core.config import get_settings


def _redis_url() -> str:
    url = get_settings().redis_url
    if not url:
        raise RuntimeError("REDIS_URL is not set (`imagingx serve` starts a Redis and sets it)")
    return url


class _Config:
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


def create_celery_app() -> Celery:
    celery = Celery("imagingx")
    celery.config_from_object(_Config())
    celery.autodiscover_tasks(["workers"], related_name="tasks")
    return celery


app = create_celery_app()
celery_app = app

__all__ = ["app", "celery_app", "create_celery_app"]
