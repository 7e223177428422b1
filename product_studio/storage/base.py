"""What every blob store is: the BlobStore protocol, its NotFound error and URL lifetime limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MAX_URL_EXPIRES = 7 * 24 * 3600  # S3 SigV4 presigned URLs cannot live longer; local URLs keep parity


@dataclass(frozen=True)
class BlobInfo:
    """One stored object as a listing shows it: its key, size in bytes and when it was last
    written (unix seconds; a put of the same key again makes it newer)."""

    key: str
    size: int
    modified: float


class NotFound(KeyError):
    """No object under this key.

    A KeyError, not a ProductStudioError: a missing blob is an ordinary lookup miss that callers
    handle on the spot (compute the output, or answer 404 for a download). If one escapes, it is an
    inconsistency between database and storage, i.e. a bug (HTTP 500), not user error or a retry.
    """

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:  # KeyError's default str() is the repr of the key
        return f"no stored object {self.key!r}"


@runtime_checkable
class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store `data` atomically; putting the same key again replaces the object."""

    def get(self, key: str) -> bytes:
        """The object's bytes; raise NotFound(key) if there is none."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; no error if it is missing."""

    def url(self, key: str, expires: int = 3600) -> str:
        """A download URL signed to stay valid for `expires` seconds."""

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with `prefix` (a plain string prefix, not a folder), lazily.

        The order is unspecified: SeaweedFS, unlike AWS, does not list in key order.
        """

    def listing(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Like keys(), with each object's size and modification time (what retention needs)."""


def check_expires(expires: int) -> int:
    if not 1 <= expires <= MAX_URL_EXPIRES:
        raise ValueError(f"expires must be 1..{MAX_URL_EXPIRES} seconds, not {expires}")
    return expires
