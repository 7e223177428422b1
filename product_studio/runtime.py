"""Per-process handles on the shared services: the database, the blob store and the signing secrets.

Made lazily and once per process; `reset()` drops them after a fork (a Celery worker child must
not reuse its parent's pooled connections).
"""

from __future__ import annotations

import secrets
import threading

from .config import Settings, get_settings
from .db import Database, generated_secret
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
        found = _handles.get("store")
    if found is not None:
        return found  # type: ignore[return-value]
    settings = settings or get_settings()
    blobs = open_store(settings.storage, secret=secret("storage", settings), public_base_url=settings.public_base_url)
    if hasattr(blobs, "ensure_bucket"):
        blobs.ensure_bucket()
    with _lock:
        return _handles.setdefault("store", blobs)  # type: ignore[return-value]


SECRET_NAMES = ("storage", "callback", "session")


def secret(name: str, settings: Settings | None = None) -> str:
    """A signing secret: "storage" (local download links), "callback" (completion callbacks) or
    "session" (session cookies). The configured one (PRODUCT_STUDIO_STORAGE_SECRET, _CALLBACK_SECRET,
    _SESSION_SECRET), else the installation's generated one, kept in the database so that every
    machine sharing the database signs and verifies with the same key (db.generated_secret).
    The first time, a secret an older version generated into data_dir (`.NAME-secret`) is adopted
    instead of a new random one, so its links, callback receivers and sessions keep working.
    Raises ValueError for another name."""
    if name not in SECRET_NAMES:
        raise ValueError(f"no signing secret {name!r}: one of {', '.join(SECRET_NAMES)}")
    settings = settings or get_settings()
    configured = getattr(settings, f"{name}_secret")
    if configured is not None:
        return configured.get_secret_value()
    with _lock:
        cached = _handles.get(f"secret {name}")
    if cached is None:
        legacy = settings.data_dir / f".{name}-secret"

        def propose() -> str:
            return legacy.read_text().strip() if legacy.is_file() else secrets.token_hex(32)

        with database(settings).session() as s:
            cached = generated_secret(s, name, propose)
        with _lock:
            _handles[f"secret {name}"] = cached
    return cached  # type: ignore[return-value]


def reset() -> None:
    with _lock:
        db = _handles.pop("db", None)
        if db is not None:
            db.engine.dispose(close=False)  # the parent's connections stay the parent's
        _handles.clear()
