"""Per-process handles on the shared services: the database, the blob store and the signing secrets.

Made lazily and once per process; `reset()` drops them after a fork (a Celery worker child must
not reuse its parent's pooled connections).
"""

from __future__ import annotations

import secrets
import threading

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .config import Settings, get_settings
from .db import Database, generated_secret, unreachable
from .errors import Misconfigured, TransientError, first_line
from .redact import redact_url
from .storage import BlobStore, is_local, open_store

_handles: dict[str, object] = {}
_lock = threading.Lock()


def database(settings: Settings | None = None) -> Database:
    """The database, migrated to head; its generated signing secrets are read (or made) here, once,
    so that secret() never opens a second transaction inside a caller's (SQLite's writers queue)."""
    with _lock:
        if "db" not in _handles:
            settings = settings or get_settings()
            db = Database(settings.database)
            try:
                db.upgrade()
            except DBAPIError as exc:
                db.dispose()
                where = f"the database {redact_url(settings.database)}"
                if unreachable(exc):  # down or restarting: may come back (exit 4)
                    raise TransientError(f"{where} cannot be reached: {first_line(exc)} "
                                         "(PRODUCT_STUDIO_DATABASE_URL)") from exc
                # Refused role or password, no such database, a schema or file problem: a setting to fix.
                raise Misconfigured(f"{where} cannot be used: {first_line(exc)} "
                                 "(PRODUCT_STUDIO_DATABASE_URL)") from exc
            _handles["secrets"] = _generated_secrets(db, settings)
            _handles["db"] = db
        return _handles["db"]  # type: ignore[return-value]


def store(settings: Settings | None = None) -> BlobStore:
    with _lock:
        found = _handles.get("store")
    if found is not None:
        return found  # type: ignore[return-value]
    settings = settings or get_settings()
    # Only local files sign their own links; an S3 store (its server signs) needs no database.
    key = secret("storage", settings) if is_local(settings.storage) else ""
    blobs = open_store(settings.storage, secret=key, public_base_url=settings.public_base_url)
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
    Raises ValueError for another name; Misconfigured when the database cannot give it."""
    if name not in SECRET_NAMES:
        raise ValueError(f"no signing secret {name!r}: one of {', '.join(SECRET_NAMES)}")
    settings = settings or get_settings()
    configured = getattr(settings, f"{name}_secret")
    if configured is not None:
        return configured.get_secret_value()
    db = database(settings)
    with _lock:
        found = _handles["secrets"].get(name)  # type: ignore[attr-defined]
    if found is None:  # the database was opened under settings that configured this one
        found = _generated_secrets(db, settings, [name])[name]
        with _lock:
            _handles["secrets"][name] = found  # type: ignore[index]
    return found


def _generated_secrets(db: Database, settings: Settings, names: list[str] | None = None) -> dict[str, str]:
    """The generated secrets `names` (default: those the settings do not configure), from the
    database, made there if new (db.generated_secret)."""
    def propose(name: str) -> str:
        legacy = settings.data_dir / f".{name}-secret"
        return legacy.read_text().strip() if legacy.is_file() else secrets.token_hex(32)

    wanted = names if names is not None else [n for n in SECRET_NAMES if getattr(settings, f"{n}_secret") is None]
    if not wanted:
        return {}
    try:
        with db.session() as s:
            return {n: generated_secret(s, n, lambda n=n: propose(n)) for n in wanted}
    except SQLAlchemyError as exc:
        raise Misconfigured(f"cannot read the generated signing secrets from the database: "
                                 f"{type(exc).__name__}: {first_line(exc)} (or set "
                                 + ", ".join(f"PRODUCT_STUDIO_{n.upper()}_SECRET" for n in wanted) + ")") from exc


def reset() -> None:
    with _lock:
        db = _handles.pop("db", None)
        if db is not None:
            db.engine.dispose(close=False)  # the parent's connections stay the parent's
        _handles.clear()
