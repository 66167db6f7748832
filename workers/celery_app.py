"""The Celery application of a worker: the shared one (app/common/tasks.py: broker and result backend are both
REDIS_URL) with the tasks of workers/tasks.py registered on it.

Run a worker with `imagingx worker` (or `celery -A workers.celery_app worker`).
"""

from celery import Celery

from app.common.tasks import celery_app as shared_celery_app


def create_celery_app() -> Celery:
    celery = shared_celery_app()
    celery.autodiscover_tasks(["workers"], related_name="tasks")
    return celery


app = create_celery_app()
celery_app = app

__all__ = ["app", "celery_app", "create_celery_app"]
