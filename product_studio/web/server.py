"""How `product-studio serve` runs the web app under uvicorn: who the client is, and how long a
client may take to send its request.

- Forwarded headers (X-Forwarded-For, X-Forwarded-Proto) are believed only from the proxies
  named in PRODUCT_STUDIO_FORWARDED_ALLOW_IPS; by default from nobody (uvicorn on its own trusts
  them from 127.0.0.1, so anything on the machine could pick its own client address and dodge
  the per-address sign-in limit).
- Read deadlines (uvicorn has none for a request in progress): a client has READ_TIMEOUT
  seconds to send a request's headers, counted from the connection (or the end of the previous
  response), and its body must arrive within READ_TIMEOUT seconds plus one second per
  READ_MIN_RATE bytes received, so a client sending a byte a second is dropped however it
  spreads them (the rule of Apache's mod_reqtimeout). Time the app spends not reading (flow
  control paused) does not count against the client. A dropped client gets 408 Request Timeout
  (RFC 9110 section 15.5.9) when no response has started, and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import Settings

log = logging.getLogger(__name__)
_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _ReadDeadlines:
    """Mixed into uvicorn's HTTP protocol classes (httptools and h11 alike: both keep the request
    in progress as `self.cycle` with `more_body` / `response_started` / `response_complete`, and
    `self.flow.read_paused`). A timer per connection checks the deadlines a few times a second."""

    read_timeout: float = 20.0  # seconds; set by protocol_class()
    read_min_rate: int = 1024  # bytes a second

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        now = self.loop.time()  # type: ignore[attr-defined]
        self._phase_start = now  # of the current wait: for headers, or for a body
        self._seen_cycle: Any = None
        self._received = 0  # bytes received on this connection
        self._body_base = 0  # ...when the current body started
        self._last_check = now
        self._tick = min(1.0, self.read_timeout / 4)
        self._deadline_timer: asyncio.TimerHandle | None = self.loop.call_later(  # type: ignore[attr-defined]
            self._tick, self._check_deadlines)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._phase_start = self.loop.time()  # type: ignore[attr-defined]  # now waiting for the next headers

    def _check_deadlines(self) -> None:
        self._deadline_timer = None
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing():
            return
        now = self.loop.time()  # type: ignore[attr-defined]
        elapsed, self._last_check = now - self._last_check, now
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is not self._seen_cycle:  # a new request's headers arrived since the last check
            self._seen_cycle, self._phase_start, self._body_base = cycle, now, self._received
        waited = now - self._phase_start
        if cycle is None or cycle.response_complete:
            if waited > self.read_timeout:
                return self._drop(f"sent no complete request headers in {self.read_timeout:g} s")
        elif cycle.more_body and not cycle.response_started:
            if self.flow.read_paused:  # type: ignore[attr-defined]  # the app is not reading: not the client's fault
                self._phase_start += elapsed
            else:
                allowed = self.read_timeout + (self._received - self._body_base) / self.read_min_rate
                if waited > allowed:
                    return self._drop(f"sent its body slower than {self.read_min_rate} bytes/s after "
                                      f"{self.read_timeout:g} s")
        self._deadline_timer = self.loop.call_later(self._tick, self._check_deadlines)  # type: ignore[attr-defined]

    def _drop(self, why: str) -> None:
        client = self.client  # type: ignore[attr-defined]
        log.warning("dropped %s: it %s (read_timeout)", f"{client[0]}:{client[1]}" if client else "a client", why)
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)  # type: ignore[attr-defined]
        self.transport.close()  # type: ignore[attr-defined]


def protocol_class(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with the read deadlines of
    `settings` (read_timeout seconds, read_min_rate bytes a second)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is not installed
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    return type(f"ReadDeadline{base.__name__}", (_ReadDeadlines, base),
                {"read_timeout": settings.read_timeout, "read_min_rate": settings.read_min_rate})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config: the HTTP protocol with read deadlines,
    and forwarded headers believed only from FORWARDED_ALLOW_IPS (none by default)."""
    proxies = list(settings.forwarded_allow_ips)
    return {"http": protocol_class(settings), "proxy_headers": bool(proxies),
            "forwarded_allow_ips": proxies or None, "timeout_keep_alive": 5}
