"""Blob storage shared by web, CLI and workers on many machines: local filesystem or S3-compatible.

Writes are atomic (readers see all of an object or nothing) and keys are content-addressed
(`content_key`), so a retried or duplicated task finds its output already there.

Importing this package stays light: boto3 is imported only when an s3:// store is opened.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

MAX_URL_EXPIRES = 7 * 24 * 3600  # S3 SigV4 presigned URLs cannot live longer; local URLs keep parity

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


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


def check_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise ValueError.

    Segments of [A-Za-z0-9._-] joined by "/", none empty or starting with "." (so no "..", no
    hidden names that could clash with temp files), at most 1024 characters (the S3 limit).
    """
    if not isinstance(key, str) or not key or len(key) > 1024 or not all(
        _SEGMENT.fullmatch(s) and len(s) <= 255 for s in key.split("/")
    ):
        raise ValueError(f"invalid storage key {key!r}: use [A-Za-z0-9._-] segments joined by '/', no '..'")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix for keys(): "" or a key, optionally ending with "/"."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def content_key(stage: str, ext: str, *parts: bytes | str | Mapping) -> str:
    """A content-addressed key: f"{stage}/{h[:2]}/{h}.{ext}", h = sha256 of `parts`.

    Pass everything the output depends on: source bytes (or their sha256), stage parameters
    (a mapping is hashed as canonical JSON) and the backend's name and version. Each part is
    framed with its type and length, so ("ab", "c") and ("a", "bc") give different keys.
    """
    if not re.fullmatch(r"[A-Za-z0-9]+", ext):
        raise ValueError(f"invalid extension {ext!r}")
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Mapping):
            tag, raw = b"j", json.dumps(part, sort_keys=True, separators=(",", ":")).encode()
        elif isinstance(part, str):
            tag, raw = b"s", part.encode()
        elif isinstance(part, bytes | bytearray | memoryview):
            tag, raw = b"b", memoryview(part).cast("B")  # no copy of a large source
        else:
            raise TypeError(f"content_key parts must be bytes, str or a mapping, not {type(part).__name__}")
        h.update(tag + str(len(raw)).encode() + b":")
        h.update(raw)
    digest = h.hexdigest()
    return check_key(f"{stage}/{digest[:2]}/{digest}.{ext}")


def check_expires(expires: int) -> int:
    if not 1 <= expires <= MAX_URL_EXPIRES:
        raise ValueError(f"expires must be 1..{MAX_URL_EXPIRES} seconds, not {expires}")
    return expires


def open_store(url: str, *, secret: str, public_base_url: str | None = None) -> BlobStore:
    """Open a store from a URL.

    - a plain path or "file:///abs/path": LocalStore; `secret` signs its download URLs and
      `public_base_url` (e.g. "https://studio.example.com") prefixes them.
    - "s3://bucket[/prefix][?endpoint=http://127.0.0.1:8333&region=us-east-1&addressing=path]":
      S3Store. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID /
      AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance roles); `access_key` and `secret_key`
      query parameters override it (avoid them where the URL may be logged; percent-encode
      values, as AWS secrets may hold "+" and "/"). `region` defaults to boto3's own, then
      us-east-1. `addressing`
      defaults to "path" when an endpoint is given (SeaweedFS, MinIO), else "auto".
      Opening touches no network: call `ensure_bucket()` once at start-up if needed.
    """
    if "://" not in url:
        from product_studio.storage.local import LocalStore

        return LocalStore(Path(url), secret, public_base_url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ValueError(f"storage URL {url!r}: use file:///absolute/path")
        from product_studio.storage.local import LocalStore

        return LocalStore(Path(parts.path), secret, public_base_url)
    if parts.scheme == "s3":
        query = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=bool(parts.query)).items()}
        allowed = {"endpoint", "region", "access_key", "secret_key", "addressing"}
        if unknown := set(query) - allowed:
            raise ValueError(f"storage URL: unknown s3 option(s) {sorted(unknown)}; known: {sorted(allowed)}")
        if not parts.netloc:
            raise ValueError(f"storage URL {url!r}: no bucket; use s3://bucket/prefix")
        from product_studio.storage.s3 import S3Store

        return S3Store(
            parts.netloc,
            parts.path.strip("/"),
            endpoint_url=query.get("endpoint"),
            region=query.get("region"),
            access_key=query.get("access_key"),
            secret_key=query.get("secret_key"),
            addressing=query.get("addressing"),
        )
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}; use a path, file:// or s3://")
