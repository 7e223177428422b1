"""The few typed errors of Product Studio.

Each kind is mapped once, here, to what every door needs: a CLI exit code, an HTTP status,
and whether a worker should retry it.
"""

from __future__ import annotations

import json


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


class BadSetting(BadInput):
    """A PRODUCT_STUDIO_* setting (environment or .env) has a value that cannot be used: the
    message names the variable, the value (never a secret's) and what is accepted."""


class Misconfigured(ProductStudioError):
    """The service's own settings cannot work: storage credentials refused, a database that answers
    but cannot be used. Not the request's fault (HTTP 500), not an outage that may pass (no retry):
    the message names the setting to fix, and the CLI exits 2 as for any bad setting."""

    exit_code = 2


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



# Exceptions from outside the package that the same input always raises again: a retry runs the
# same code on the same bytes. "DataError" is the DB-API name (psycopg, SQLAlchemy) for a value the
# database refuses (a NUL in a text column, a number out of range); it is matched by class name so
# that this base module imports no driver.
_UNREADABLE = (RecursionError, UnicodeError, json.JSONDecodeError)
_REFUSED_BY_DATABASE = "DataError"


def classify(exc: BaseException) -> ProductStudioError:
    """`exc` as the one typed error every door and task acts on; `.retryable` says whether a
    retry can help.

    - A ProductStudioError is returned as it is (its class decides).
    - Input that cannot be read is BadInput, permanent: RecursionError (arrays or objects nested
      deeper than a parser's recursion allows, e.g. a 1,000-deep JSON body), UnicodeError, a JSON
      syntax error (json.JSONDecodeError), a value the database refuses (DB-API DataError).
    - Anything else (a database or broker restarting, a network error, an exception nobody
      foresaw) is TransientError, "TypeName: first line of its message": it may pass, so callers
      retry it a bounded number of times, then record it as failed.

    Never raises; the message is one line of at most about 450 characters.
    """
    if isinstance(exc, ProductStudioError):
        return exc
    lines = str(exc).strip().splitlines()
    detail = lines[0][:400] if lines else ""
    name = type(exc).__name__
    if isinstance(exc, RecursionError):
        return BadInput(f"the input is nested too deeply to be read ({detail or name})")
    if isinstance(exc, _UNREADABLE):
        return BadInput(f"the input cannot be read: {name}: {detail}")
    if any(c.__name__ == _REFUSED_BY_DATABASE for c in type(exc).__mro__):
        return BadInput(f"the database refuses this input: {detail}")
    return TransientError(f"{name}: {detail}" if detail else name)


def first_line(exc: BaseException) -> str:
    """An error's own message in one line: a database error's driver message (its `orig`, without
    SQLAlchemy's statement and links), else the error's; its type's name when it has no text."""
    cause = getattr(exc, "orig", None) or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]
