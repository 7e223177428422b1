"""Loaded models (rembg sessions, detectors, diffusion pipelines), one per key per process.

Loading happens lazily in the process that uses the model (a Celery worker child, after the
fork), never at import, so no parent process holds weights or a CUDA context.
"""

from __future__ import annotations

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
