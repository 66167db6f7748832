"""Celery side of Imaging-X: the app (celery_app.py) and its tasks (tasks.py)."""
