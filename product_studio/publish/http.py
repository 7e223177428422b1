"""One store API's HTTP client, shared by the publishers: timeouts, rate limits honoured, server
errors retried where a retry is safe, and credentials kept out of every message.

- A rate-limited request (HTTP 429, or what the platform's `throttled` hook recognises, e.g.
  Shopify's HTTP 200 with a THROTTLED error) was not run: it is sent again after the wait the
  platform names (Retry-After, X-Rate-Limit-Time-Reset-Ms, Shopify's query cost), up to
  RATE_RETRIES times and MAX_WAIT seconds a wait; beyond that Throttled is raised for the task to
  retry later.
- A 5xx, a timeout or a broken connection may have happened after the platform acted. A read
  (`idempotent=True`) is sent again at once with backoff (backoff.delay); a write raises
  TransientError, and the service reads the product back before it tries again.
- 401/403 and other 4xx answers are Rejected with the platform's own message (404 is returned to
  the caller, which knows what is missing).

The base URL is configuration (the stores file or settings), trusted like BigCommerce's catalog
API in webhook intake: it is not put through fetch.py's address checks, so a store on a private
network works.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from ..backoff import delay
from ..errors import TransientError
from ..redact import redact
from .base import Rejected, Throttled

log = logging.getLogger(__name__)
RATE_RETRIES = 6  # rate-limited sends of one request before giving up to the task's retry
SERVER_RETRIES = 3  # re-sends of an idempotent request after a 5xx or a network error
MAX_WAIT = 60.0  # s: a longer wait is left to the task's retry (the worker is not held)

Throttle = Callable[[httpx.Response], float | None]
"""Seconds to wait when `response` says the request was throttled and not run; None otherwise."""


def standard_wait(response: httpx.Response) -> float | None:
    """HTTP 429's wait: Retry-After (seconds), BigCommerce's X-Rate-Limit-Time-Reset-Ms, else 1 s."""
    if response.status_code != 429:
        return None
    for header, scale in (("retry-after", 1.0), ("x-rate-limit-time-reset-ms", 0.001)):
        value = response.headers.get(header, "")
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue
    return 1.0


def platform_message(response: httpx.Response) -> str:
    """The platform's own words about a refused request: a JSON body's message/title/errors, else
    the start of its text (at most 500 characters)."""
    try:
        doc = response.json()
    except (ValueError, UnicodeDecodeError):
        return " ".join(response.text.split())[:500]
    if isinstance(doc, dict):
        parts = []
        for key in ("message", "title", "detail", "errors", "error"):
            if doc.get(key):
                value = doc[key]
                parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        if parts:
            return ": ".join(parts)[:500]
    return json.dumps(doc, ensure_ascii=False)[:500]


class Api:
    """Requests to one store's API: `base` URL, default `headers` (its credentials), `secrets`
    masked in every message. Close it after use (or use it as a context manager)."""

    def __init__(self, name: str, base: str, headers: dict[str, str], *, timeout: float,
                 secrets: Iterable[str] = (), throttle: Throttle = standard_wait, auth: Any = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.name = name
        self.base = base.rstrip("/")
        self.secrets = [s for s in secrets if s]
        self.throttle = throttle
        self.sleep = sleep
        self.client = httpx.Client(headers=headers, timeout=timeout, trust_env=False, follow_redirects=False,
                                   auth=auth)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, what: str, idempotent: bool, **kwargs: Any) -> httpx.Response:
        """Send one request (httpx keyword arguments) and return the answer: 2xx, or 404 for the
        caller to read. `what` names it in errors ("shopify productUpdate"). Raises Rejected
        (401, 403, other 4xx: the platform's message), Throttled (still rate-limited after
        RATE_RETRIES waits, or asked to wait longer than MAX_WAIT), TransientError (5xx, timeout,
        network; for a write at once, for a read after SERVER_RETRIES re-sends)."""
        url = self.url(path)
        rate_waits = server_tries = 0
        while True:
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TimeoutException:
                problem = f"{what}: {self.name} did not answer in time"
                response = None
            except httpx.HTTPError as exc:
                problem = f"{what}: {self.name} is unreachable ({type(exc).__name__})"
                response = None
            else:
                problem = None
                wait = self.throttle(response)
                if wait is not None:
                    rate_waits += 1
                    if rate_waits > RATE_RETRIES or wait > MAX_WAIT:
                        raise Throttled(f"{what}: {self.name} is rate-limiting (wait {wait:.1f} s)", wait)
                    log.info("%s: rate-limited by %s; waiting %.2f s", what, self.name, wait)
                    self.sleep(wait)
                    continue
                if response.status_code >= 500:
                    problem = f"{what}: {self.name} answered {response.status_code}"
            if problem is not None:
                if not idempotent or server_tries >= SERVER_RETRIES:
                    raise TransientError(self.redact(problem))
                self.sleep(delay(server_tries, cap=8.0))
                server_tries += 1
                continue
            assert response is not None
            if response.status_code in (401, 403):
                raise Rejected(self.redact(f"{what}: {self.name} refused the credentials ({response.status_code}): "
                                           f"{platform_message(response)}"))
            if response.status_code >= 400 and response.status_code != 404:
                raise Rejected(self.redact(f"{what}: {self.name} refused it ({response.status_code}): "
                                           f"{platform_message(response)}"))
            return response
