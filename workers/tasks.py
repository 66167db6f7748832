"""Celery tasks. Each is small and idempotent (see ARCHITECTURE.md, Principles)."""

from celery import shared_task


@shared_task(name="workers.tasks.ping")
def ping() -> dict[str, object]:
    """Prove a worker is alive and reaches the database: `{"reply": "pong", "catalog_version": N}`."""
    from app.catalog.service import catalog_version
    from app.core.db import new_session

    with new_session() as session:
        version = catalog_version(session)
    return {"reply": "pong", "catalog_version": version}
