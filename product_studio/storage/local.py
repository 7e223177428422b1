"""Blobs as files under a root directory (a local disk or a volume shared by all machines)."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterator
from pathlib import Path

from product_studio.content_keys import check_key, check_prefix
from product_studio.errors import TransientError
from product_studio.files import atomic_write_bytes
from product_studio.storage.base import BlobInfo, BlobReader, NotFound, check_expires


def sign(secret: str, key: str, expires: int) -> str:
    # The newline (never in a key) keeps (key, expires) unambiguous: without it "a1"+"23"
    # and "a12"+"3" would share a signature, letting a URL be re-pointed and its expiry stretched.
    return hmac.new(secret.encode(), f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def verify(secret: str, key: str, expires: int | str, sig: str, now: float | None = None) -> bool:
    """True if `sig` signs (key, expires) and `expires` (unix seconds) has not passed.

    Arguments come straight from a request, so anything malformed is simply False.
    """
    try:
        check_key(key)
        expires = int(expires)
    except (ValueError, TypeError):
        return False
    if expires < (time.time() if now is None else now):
        return False
    # Bytes: compare_digest raises TypeError on non-ASCII str, and `sig` is untrusted.
    return hmac.compare_digest(sign(secret, key, expires).encode(), str(sig).encode())


class LocalStore:
    def __init__(self, root: str | os.PathLike, secret: str, public_base_url: str | None = None):
        if not secret:
            raise ValueError("LocalStore needs a non-empty secret to sign download URLs")
        self.root = Path(root).resolve()
        self.secret = secret
        self.public_base_url = (public_base_url or "").rstrip("/")

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        # content_type is not stored: the web app derives it from the key's extension.
        path = self._path(key)
        try:
            atomic_write_bytes(path, data)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            # On a filesystem "a" cannot be both an object and a folder of objects ("a/b").
            raise ValueError(f"storage key {key!r} clashes with an existing key or key prefix") from None
        except OSError as e:
            raise TransientError(f"cannot write {path}: {e.strerror or e}") from e

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(key) from None
        except OSError as e:
            raise TransientError(f"cannot read {path}: {e.strerror or e}") from e

    def open_read(self, key: str) -> BlobReader:
        path = self._path(key)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the reader
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(key) from None
        except OSError as e:
            raise TransientError(f"cannot read {path}: {e.strerror or e}") from e
        # Writes replace the file by rename, so this open file stays the whole old object.
        return BlobReader(f, os.fstat(f.fileno()).st_size)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            pass  # a folder is not an object: nothing to delete
        except OSError as e:
            raise TransientError(f"cannot delete {path}: {e.strerror or e}") from e

    def url(self, key: str, expires: int = 3600) -> str:
        check_key(key)
        until = int(time.time()) + check_expires(expires)
        return f"{self.public_base_url}/files/{key}?expires={until}&sig={sign(self.secret, key, until)}"

    def verify(self, key: str, expires: int | str, sig: str, now: float | None = None) -> bool:
        """Check a download URL's query parameters (see module-level `verify`)."""
        return verify(self.secret, key, expires, sig, now)

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)  # here, not in a generator: a bad prefix fails at the call
        # Walk only the deepest folder the prefix names, then filter by the full string prefix.
        folder = prefix.rpartition("/")[0]
        return (k for k in self._walk(self.root / folder, folder) if k.startswith(prefix))

    def listing(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        return (info for info in self._walk_info(self.root / folder, folder) if info.key.startswith(prefix))

    def _walk_info(self, path: Path, rel: str) -> Iterator[BlobInfo]:
        for key in self._walk(path, rel):
            try:
                st = (self.root / key).stat()
            except FileNotFoundError:
                continue  # deleted since it was listed
            except OSError as e:
                raise TransientError(f"cannot stat {key}: {e.strerror or e}") from e
            yield BlobInfo(key, st.st_size, st.st_mtime)

    def _walk(self, path: Path, rel: str) -> Iterator[str]:
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise TransientError(f"cannot list {path}: {e.strerror or e}") from e
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue  # temp files of writes in progress (or left by a killed process)
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key)
            elif entry.is_file(follow_symlinks=False):
                yield key
