"""Recovery of lost messages: a thread in each worker's main process re-enqueues work that the
database says is unfinished but nobody has touched for `requeue_after` seconds.

Why: acks_late covers a killed worker child, but a killed whole worker on an embedded broker, or
a Redis restarted without persistence, loses messages for good. The database does not forget.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery.signals import worker_ready, worker_shutting_down

from product_studio.config import get_settings
from product_studio.jobs.recovery import stale_assets

from .pipeline import enqueue

log = logging.getLogger(__name__)
_stop = threading.Event()


def sweep_assets(older_than: float) -> int:
    steps = stale_assets(older_than)
    if steps:
        log.warning("re-enqueueing %d asset(s) whose messages were lost", len(steps))
        enqueue(steps)
    return len(steps)


# Every kind of recoverable work registers its sweep here (tasks/intake.py adds webhook deliveries).
SWEEPS: list[Callable[[float], int]] = [sweep_assets]


def sweep_once(older_than: float) -> int:
    """Run every sweep once; how many items were re-enqueued in all."""
    found = 0
    for sweep in SWEEPS:
        try:
            found += sweep(older_than)
        except Exception:  # the broker or database may be restarting: try again next round
            log.exception("%s failed", sweep.__name__)
    return found


def _loop(interval: float, older_than: float) -> None:
    while not _stop.wait(interval):
        sweep_once(older_than)


@worker_ready.connect
def _start(**_) -> None:
    settings = get_settings()
    _stop.clear()
    threading.Thread(target=_loop, args=(settings.sweep_interval, settings.requeue_after), daemon=True,
                     name="product-studio-sweeper").start()


@worker_shutting_down.connect
def _halt(**_) -> None:
    _stop.set()
