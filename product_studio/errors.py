"""The few typed errors of Product Studio.

Each kind is mapped once, here, to what every door needs: a CLI exit code, an HTTP status,
and whether a worker should retry it.
"""

from __future__ import annotations


class ProductStudioError(Exception):
    """Base class: a one-line, user-facing message; never a traceback."""

    exit_code = 1
    http_status = 500
    retryable = False


class BadInput(ProductStudioError):
    """The input itself is wrong (not an image, too big, corrupt...). Retrying cannot help."""

    exit_code = 2
    http_status = 422


class Conflict(BadInput):
    """The request is well formed, but the item's state does not allow it now (e.g. a photo whose
    variants are still rendering). Retrying later, not retrying at once, can help."""

    http_status = 409


class UnknownName(BadInput):
    """A target, scene, detector or backend name that does not exist."""

    def __init__(self, kind: str, name: str, choices: list[str] | tuple[str, ...]):
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}")


class ModelUnavailable(ProductStudioError):
    """Weights or a backend cannot be had here (offline, not installed). Configuration must change."""

    exit_code = 3
    http_status = 503


class TransientError(ProductStudioError):
    """Storage or network trouble that may pass: workers retry these with backoff."""

    exit_code = 4
    http_status = 503
    retryable = True
