"""Per-process handles on the shared services: the database and the blob store.

Made lazily and once per process; `reset()` drops them after a fork (a Celery worker child must
not reuse its parent's pooled connections).
"""

from __future__ import annotations

import threading

from .config import Settings, get_settings
from .db import Database
from .storage import BlobStore, open_store

_handles: dict[str, object] = {}
_lock = threading.Lock()


def database(settings: Settings | None = None) -> Database:
    with _lock:
        if "db" not in _handles:
            db = Database((settings or get_settings()).database)
            db.upgrade()
            _handles["db"] = db
        return _handles["db"]  # type: ignore[return-value]


def store(settings: Settings | None = None) -> BlobStore:
    with _lock:
        if "store" not in _handles:
            settings = settings or get_settings()
            blobs = open_store(settings.storage, secret=settings.secret("storage"),
                               public_base_url=settings.public_base_url)
            if hasattr(blobs, "ensure_bucket"):
                blobs.ensure_bucket()
            _handles["store"] = blobs
        return _handles["store"]  # type: ignore[return-value]


def reset() -> None:
    with _lock:
        db = _handles.pop("db", None)
        if db is not None:
            db.engine.dispose(close=False)  # the parent's connections stay the parent's
        _handles.clear()
