"""Counting what clients do: failed sign-ins per client address, and regenerations.

Counts are moving windows kept by the `limits` library in the storage that
`Settings.rate_limits` names: the broker's Redis when the broker is Redis (or any `limits`
storage URI in PRODUCT_STUDIO_RATE_LIMIT_STORAGE), else this process's memory (`serve` runs one
web process; several share counts only through a shared storage). Failed sign-ins per USERNAME
are counted in the database instead (auth.py), so every web process sees those whatever the
storage. A storage that cannot be reached is logged and the request allowed (the per-username
count still holds for sign-ins), so an outage of Redis never locks admins out.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException
from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from .. import runtime
from ..config import Settings, get_settings
from ..models import Variant

log = logging.getLogger(__name__)


@dataclass
class Counter:
    """One kind of count: a rate ("5/minute") over keys, in a shared storage."""

    name: str
    rate: RateLimitItem
    limiter: MovingWindowRateLimiter

    def blocked_for(self, *key: str) -> int:
        """Seconds until the key may act again (0: now). Does not count anything. An unreachable
        storage is logged and answers 0."""
        try:
            if self.limiter.test(self.rate, self.name, *key):
                return 0
            reset = self.limiter.get_window_stats(self.rate, self.name, *key).reset_time
        except Exception as exc:  # noqa: BLE001 (Redis down: allow, and say so)
            log.warning("%s limit not checked (storage unreachable: %s)", self.name, type(exc).__name__)
            return 0
        return max(1, math.ceil(reset - time.time()))

    def hit(self, *key: str) -> bool:
        """Count one action for the key; False when that went over the rate (it is not counted).
        An unreachable storage is logged and answers True."""
        try:
            return self.limiter.hit(self.rate, self.name, *key)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s limit not counted (storage unreachable: %s)", self.name, type(exc).__name__)
            return True


class Throttle:
    """The counters of one web process, all in the storage `Settings.rate_limits` names."""

    def __init__(self, settings: Settings):
        self.storage: Storage = storage_from_string(settings.rate_limits)
        limiter = MovingWindowRateLimiter(self.storage)
        self.login_client = Counter("login-client", parse(settings.login_client_rate_limit), limiter)
        self.regenerate_variant = Counter("regenerate-variant", parse(settings.regenerate_limit_per_variant), limiter)
        self.regenerate_job = Counter("regenerate-job", parse(settings.regenerate_limit_per_job), limiter)
        self.webhook_rejected = Counter("webhook-rejected", parse(settings.webhook_rejected_rate_limit), limiter)


_throttle: Throttle | None = None
_lock = threading.Lock()


_made_from: Settings | None = None


def throttle() -> Throttle:
    """This process's Throttle, made on first use from the current settings (and made again when
    the settings object changes: a test's fresh installation starts with fresh counts)."""
    global _throttle, _made_from
    settings = get_settings()
    with _lock:
        if _throttle is None or _made_from is not settings:
            _throttle, _made_from = Throttle(settings), settings
        return _throttle


def too_many(seconds: int, message: str) -> HTTPException:
    """A 429 with Retry-After (RFC 6585 section 4; RFC 9110 section 10.2.3), in seconds."""
    return HTTPException(429, message, headers={"Retry-After": str(seconds)})


def check_regeneration(variant_id: str) -> None:
    """Count one regeneration of `variant_id`, per photo and target (so a chain of regenerations
    of regenerations is one count) and per job, against REGENERATE_LIMIT_PER_VARIANT and
    REGENERATE_LIMIT_PER_JOB. Raises HTTPException 404 for an unknown variant and 429 (with
    Retry-After) over either limit. Every door that regenerates comes through here
    (web/dispatch.py)."""
    with runtime.database().session() as s:
        variant = s.get(Variant, variant_id)
        if variant is None:
            raise HTTPException(404, f"no variant {variant_id}")
        photo_target, job = (variant.asset_id, variant.target), variant.asset.job_id
    t = throttle()
    checks = ((t.regenerate_variant, photo_target, "this photo's variant for this target"),
              (t.regenerate_job, (job,), "this job"))
    for counter, key, what in checks:  # both tested before either counts: a refusal costs nothing
        if wait := counter.blocked_for(*key):
            raise too_many(wait, f"too many regenerations of {what} (the limit is {counter.rate}): "
                                 f"try again in {wait} s")
    for counter, key, _ in checks:
        counter.hit(*key)
