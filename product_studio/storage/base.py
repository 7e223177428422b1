"""What every blob store is: the BlobStore protocol, its NotFound error and URL lifetime limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

MAX_URL_EXPIRES = 7 * 24 * 3600  # S3 SigV4 presigned URLs cannot live longer; local URLs keep parity
CHUNK_SIZE = 1024 * 1024  # what one read of a streamed blob holds in memory


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

    def open_read(self, key: str) -> BlobReader:
        """The object opened for reading in chunks; raise NotFound(key) at the call if there is none.
        Nothing is read yet: the caller iterates `chunks()` (which closes it) or closes it."""

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


class BlobReader:
    """An object being read: its size, and its bytes in chunks of at most `chunk_size`, so a
    download or a zip of any size holds one chunk at a time. Close it (or read it to the end
    through `chunks()`); a context manager too."""

    def __init__(self, raw: BinaryIO, size: int, chunk_size: int = CHUNK_SIZE):
        self.raw, self.size, self.chunk_size = raw, size, chunk_size

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)

    def chunks(self) -> Iterator[bytes]:
        """The bytes, a chunk at a time; closes the reader at the end (or when the generator is closed)."""
        try:
            while chunk := self.raw.read(self.chunk_size):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_expires(expires: int) -> int:
    if not 1 <= expires <= MAX_URL_EXPIRES:
        raise ValueError(f"expires must be 1..{MAX_URL_EXPIRES} seconds, not {expires}")
    return expires
