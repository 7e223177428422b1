"""Recovery of lost messages: a thread in each worker's main process re-enqueues work that the
database says is unfinished and nobody holds (product_studio/jobs/recovery.py says exactly what):
variants whose render lease expired, pending work untouched for `requeue_after` seconds whose
queue in the broker is empty (a backlog still in line is left alone), and completion callbacks
owed but not tried for `requeue_after` seconds past their due time.

Why: acks_late covers a killed worker child, but a killed whole worker on an embedded broker, or
a Redis restarted without persistence, loses messages for good, and a publish can fail after the
commit that made it due. The database does not forget.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery.signals import worker_ready, worker_shutting_down
from kombu.exceptions import OperationalError as BrokerUnreachable

from product_studio.config import get_settings
from product_studio.db import unreachable
from product_studio.errors import TransientError, first_line
from product_studio.jobs import Step
from product_studio.jobs.recovery import due_callbacks, keep_alive, lost_work

from .celery_app import app
from .pipeline import enqueue, queue_of

log = logging.getLogger(__name__)
_stop = threading.Event()


def queued_messages(queue: str) -> int | None:
    """How many messages the broker holds ready on `queue` (not those a worker has reserved);
    0 for a queue the broker does not know; None when the broker cannot be asked."""
    try:
        with app.connection_for_read() as conn:
            channel = conn.channel()
            try:
                return channel.queue_declare(queue=queue, passive=True).message_count
            except conn.channel_errors:  # no such queue (Redis drops an empty list): nothing in it
                return 0
            finally:
                try:
                    channel.close()
                except Exception:  # an AMQP channel is closed by the failed passive declare already
                    pass
    except Exception:
        log.warning("cannot read the length of queue %s", queue, exc_info=True)
        return None


def held_here() -> list[Step]:
    """The pipeline work whose messages this worker holds: reserved (prefetched, waiting for a
    free process), scheduled (a retry's countdown) or running."""
    from celery.worker import state

    held = []
    for request in list(state.requests.values()):  # one C-level copy: safe beside the consumer thread
        if request.task_name in ("cutout", "edges", "variant") and request.args:
            held.append(Step(request.task_name, str(request.args[0])))
    return held


def sweep_assets(older_than: float) -> int:
    keep_alive(held_here())  # first: what this worker holds is not lost, whatever its queue says
    sizes: dict[str, int | None] = {}

    def waiting(step: Step) -> bool:  # the broker still holds messages on its queue (or cannot say)
        queue = queue_of(step)
        if queue not in sizes:
            sizes[queue] = queued_messages(queue)
        return sizes[queue] != 0

    steps = lost_work(older_than, waiting)
    if steps:
        log.warning("re-enqueueing %d lost item(s): %s", len(steps),
                    ", ".join(f"{s.stage} {s.id}" for s in steps[:10]) + (" ..." if len(steps) > 10 else ""))
        enqueue(steps)
    return len(steps)


def sweep_callbacks(older_than: float) -> int:
    steps = due_callbacks(older_than)
    if steps:
        log.warning("sending %d completion callback(s) owed and never sent", len(steps))
        enqueue(steps)
    return len(steps)


# Every kind of recoverable work registers its sweep here (tasks/intake.py adds webhook deliveries).
SWEEPS: list[Callable[[float], int]] = [sweep_assets, sweep_callbacks]


def sweep_once(older_than: float) -> int:
    """Run every sweep once; how many items were re-enqueued in all. Each sweep runs whatever the
    others did; a database or broker that cannot be reached (restarting: the next round tries
    again) is one line a round, anything else a traceback."""
    found, away = 0, []
    for sweep in SWEEPS:
        try:
            found += sweep(older_than)
        except Exception as exc:
            if isinstance(exc, (BrokerUnreachable, OSError, TransientError)) or unreachable(exc):
                away.append(f"{sweep.__name__}: {first_line(exc)}")
            else:
                log.exception("%s failed", sweep.__name__)
    if away:
        log.warning("lost-work sweeps skipped this round (%s)", "; ".join(away))
    return found


def _loop(interval: float, older_than: float) -> None:
    while not _stop.wait(interval):
        sweep_once(older_than)


def _gc_loop(interval: float) -> None:
    """Garbage collection (product_studio/jobs/retention.py) every `interval` seconds, in its own
    thread: listing a large store must not hold up the sweeps above."""
    from product_studio.jobs.retention import collect

    while not _stop.wait(interval):
        try:
            collect()
        except Exception:  # the store or database may be away: the next round tries again
            log.exception("garbage collection failed")


@worker_ready.connect
def _start(**_) -> None:
    settings = get_settings()
    if settings.sweep_interval >= settings.requeue_after:
        log.warning("sweep_interval (%g s) should be well below requeue_after (%g s): the work this worker holds "
                    "is touched once a sweep, and untouched work may be taken for lost",
                    settings.sweep_interval, settings.requeue_after)
    _stop.clear()
    threading.Thread(target=_loop, args=(settings.sweep_interval, settings.requeue_after), daemon=True,
                     name="product-studio-sweeper").start()
    if settings.gc_interval > 0:
        threading.Thread(target=_gc_loop, args=(settings.gc_interval,), daemon=True, name="product-studio-gc").start()


@worker_shutting_down.connect
def _halt(**_) -> None:
    _stop.set()
