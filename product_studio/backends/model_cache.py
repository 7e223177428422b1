"""Loaded models (rembg sessions, detectors, diffusion pipelines), one per key per process.

Loading happens lazily in the process that uses the model (a Celery worker child, after the
fork), never at import, so no parent process holds weights or a CUDA context.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Hashable
from typing import Any

_models: dict[Hashable, Any] = {}
_lock = threading.Lock()
loads: dict[Hashable, int] = {}  # how many times each key was built: tests assert it stays at 1


def get(key: Hashable, build: Callable[[], Any]) -> Any:
    """Return the cached model for `key`, building it once (thread-safe)."""
    model = _models.get(key)
    if model is not None:
        return model
    with _lock:
        if key not in _models:
            _models[key] = build()
            loads[key] = loads.get(key, 0) + 1
        return _models[key]


def clear(kind: str | None = None) -> None:
    """Drop cached models: all, or those whose key is a tuple starting with `kind` ("rembg")."""
    with _lock:
        for key in [k for k in _models if kind is None or (isinstance(k, tuple) and k[:1] == (kind,))]:
            del _models[key]


# --- why a load failed -------------------------------------------------------------------------
# Loaders (diffusers, transformers, huggingface_hub) wrap their errors in plain OSError/ValueError
# with the real cause chained below, so the whole chain is read. Classes are matched by name (in
# each exception's MRO) so this module imports none of those libraries.

# The model may be had on a later try: the hub or network failed, or files are there but not whole.
_PASSING = frozenset({
    "TimeoutError", "TimeoutException", "TransportError", "NetworkError", "ConnectError", "ProtocolError",
    "RemoteProtocolError", "ConnectionError",  # requests/httpx/builtins; OfflineModeIsEnabled is excepted below
    "IncompleteSnapshotError",  # the hub cache lists files that are not there yet: a download in progress
    "SafetensorError", "JSONDecodeError", "UnicodeDecodeError", "EOFError", "UnpicklingError", "BadZipFile",
    "CorruptedCacheException", "DDUFCorruptedFileError",  # a file cut short or being written
})
_PASSING_STATUS = frozenset({408, 425, 429})  # and every 5xx
# The model is not there: no such repository, revision or file, no access, not a valid id, or not
# in the cache while offline.
_ABSENT = frozenset({
    "RepositoryNotFoundError", "GatedRepoError", "DisabledRepoError", "RevisionNotFoundError",
    "EntryNotFoundError", "HFValidationError", "OfflineModeIsEnabled", "FileNotFoundError", "NotADirectoryError",
})
_ABSENT_STATUS = frozenset({401, 403, 404, 410})
# diffusers reports a file missing from a local folder as a bare OSError/ValueError with these words.
_ABSENT_WORDS = ("no file named", "does not appear to have a file named", "is neither a valid local path",
                 "is not the path to a directory containing", "is not a local folder and is not a valid model")


def causes(exc: BaseException) -> list[BaseException]:
    """`exc`, then what caused it (__cause__, else __context__), and so on to the first error."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _status(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_absent(exc: BaseException, ident: str, offline: bool = False) -> bool:
    """Whether a failure to load model `ident` (a hub id or a local path) means the model is truly
    not there, so only a configuration change can help; False means a later try may succeed.

    Reads the whole chain of causes. A later try may succeed (False) when any link is a network
    failure (timeout, connection, protocol), an HTTP 5xx/408/425/429 answer, or a file that exists
    but is not whole (a cut-off safetensors or JSON file, a hub snapshot still being downloaded):
    those take precedence, because a loader that cannot reach the hub then also reports the model
    missing from its cache. Truly absent (True): `ident` is neither an existing path nor a valid
    hub id; or the hub said 401/403/404/410 (no such repository, revision or file, or no access);
    or `offline` (no hub may be asked) and `ident` is a hub id that did not load from the cache; or
    a local folder lacks a file the model needs.
    Anything else is treated as passing (False): only a model known to be absent is permanent.
    """
    chain = causes(exc)
    names = [{c.__name__ for c in type(e).__mro__} for e in chain]
    for e, n in zip(chain, names):
        status = _status(e)
        if status is not None and (status >= 500 or status in _PASSING_STATUS):
            return False
        if n & _PASSING and "OfflineModeIsEnabled" not in n:
            return False
    local = os.path.exists(os.path.expanduser(ident))
    if not local and (offline or not _REPO_ID.fullmatch(ident)):
        return True
    for e, n in zip(chain, names):
        if n & _ABSENT or _status(e) in _ABSENT_STATUS:
            return True
        if any(words in str(e) for words in _ABSENT_WORDS):
            return True
    return False


# huggingface_hub's rule for a repo id ("name" or "namespace/name"), without importing it.
_REPO_ID = re.compile(r"(?!.*(--|\.\.))(?![-.])[\w.-]{1,96}(?<![-.])(/(?![-.])[\w.-]{1,96}(?<![-.]))?")
