"""Celery app and tasks. Tasks take ids, reload state, call the core (product_studio.jobs, product_studio.webhooks), enqueue the steps it returns, declare retries."""

from .celery_app import app

__all__ = ["app"]
