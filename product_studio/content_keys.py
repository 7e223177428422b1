"""Content-addressed keys: what every stored output is named by, and what a valid key is.

Keys are f"{folder}/{h[:2]}/{h}.{ext}" with h the SHA-256 of everything the output depends on
(the stage plan, pipeline/plan.py, declares those inputs per stage).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


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
