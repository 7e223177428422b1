"""Signed callbacks: `X-Product-Studio-Signature: t=<unix>,v1=<hex hmac-sha256>`.

The HMAC covers f"{t}.{raw body}", so a captured request cannot be replayed with another body,
and receivers reject timestamps older than a few minutes. The same scheme signs our completion
callbacks and verifies the generic webhook door.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Product-Studio-Signature"
TOLERANCE = 300  # seconds a signed request stays valid


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secrets: list[str] | tuple[str, ...], body: bytes, header: str | None, now: float | None = None,
           tolerance: int = TOLERANCE) -> bool:
    """True if `header` signs `body` with any of `secrets` (a rotation may have two) and is fresh."""
    if not header:
        return False
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    given = fields.get("v1", "")
    return any(hmac.compare_digest(sign(s, body, t).split("v1=", 1)[1], given) for s in secrets)
