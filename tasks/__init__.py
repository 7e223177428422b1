"""Celery app and tasks. Tasks take ids, reload state, call product_studio.work, declare retries."""

from .celery_app import app

__all__ = ["app"]
