"""Group commit for webhook deliveries: the receivers' one durable write.

A receiver hands its verdict to `Recorder.record` and awaits it. One writer thread takes every
delivery waiting, records them in ONE transaction, publishes ONE message naming the accepted ones
(through the `publish` function the door gives it: the core imports no Celery), and only then
answers each request. Under load the batches grow by themselves (no
timer, no added wait), so the per-request cost of the commit and the publish shrinks as traffic
rises; alone, a request is its own batch.

Nothing is answered before it is committed. A publish that fails after the commit loses nothing:
the delivery stays `accepted` in the database and the intake sweeper enqueues it later.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError

from .. import runtime
from ..config import Settings
from ..models import DeliveryStatus
from .deliveries import Incoming, Recorded, record_deliveries

log = logging.getLogger(__name__)
MAX_BATCH = 500  # rows per transaction; more wait for the next one

Publish = Callable[[list[str]], None]
"""Enqueues a batch of accepted delivery ids (one message); may raise when the broker is down."""


class Recorder:
    def __init__(self, settings: Settings, publish: Publish):
        self._settings = settings
        self._publish = publish
        self._waiting: queue.SimpleQueue[tuple[Incoming, asyncio.Future, asyncio.AbstractEventLoop]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    async def record(self, item: Incoming) -> Recorded:
        """Record one delivery (raises what the database raised, e.g. when it is unreachable)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._ensure_writer()
        self._waiting.put((item, done, loop))
        return await done

    def _ensure_writer(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._write_forever, daemon=True,
                                                    name="webhook-recorder")
                    self._thread.start()

    def _write_forever(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as exc:  # a bug must not leave requests waiting forever
                log.exception("webhook recorder failed")
                for _, done, loop in batch:
                    loop.call_soon_threadsafe(_settle, done, None, exc)

    def _write(self, batch: list[tuple[Incoming, asyncio.Future, asyncio.AbstractEventLoop]]) -> None:
        try:
            with runtime.database(self._settings).session() as s:
                recorded = record_deliveries(s, [item for item, _, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and isinstance(exc, IntegrityError | DataError):
                # one bad row must not fail the others: record them one by one
                for one in batch:
                    self._write([one])
                return
            log.error("could not record %d webhook deliveries: %s", len(batch), exc)  # e.g. the database is down
            for _, done, loop in batch:
                loop.call_soon_threadsafe(_settle, done, None, exc)
            return
        accepted = [r.id for r in recorded if r.status == DeliveryStatus.ACCEPTED]
        if accepted:
            try:
                self._publish(accepted)
            except Exception as exc:  # recorded all the same: the sweeper enqueues them later
                log.warning("recorded %d deliveries but could not enqueue them (%s); the intake sweeper will",
                            len(accepted), exc)
        for (_, done, loop), result in zip(batch, recorded):
            loop.call_soon_threadsafe(_settle, done, result, None)


def _settle(done: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if done.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


_recorders: dict[tuple[int, int], tuple[Settings, Publish, Recorder]] = {}
_lock = threading.Lock()


def recorder(settings: Settings, publish: Publish) -> Recorder:
    """One recorder (one writer thread) per process, settings and publish function."""
    key = (id(settings), id(publish))
    with _lock:
        hit = _recorders.get(key)
        if hit is None or hit[0] is not settings or hit[1] is not publish:
            hit = _recorders[key] = (settings, publish, Recorder(settings, publish))
        return hit[2]
