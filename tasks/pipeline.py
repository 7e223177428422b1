"""The tasks: per photo cutout -> edges (control images) -> one variant task per target (in
parallel), each of which renders, exports, checks and stores; the last to finish sends the job's
callback.

The core (product_studio.jobs) does the work and returns the Steps to take next; this module only
turns Steps into messages and declares retries. No task waits on another. Generative variants go
to the `gpu` queue, everything else to `cpu`; a photo's first step goes to `cpu-intake`. Workers
take from their queues in turn, so a big batch keeps finishing photos as it goes instead of
cutting out every photo before the first variant is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from celery.exceptions import SoftTimeLimitExceeded

from product_studio.backoff import delay
from product_studio.errors import ProductStudioError, TransientError
from product_studio.jobs import Step, units
from product_studio.jobs.completion import deliver_callback
from product_studio.jobs.recovery import is_permanent

from .celery_app import app

MAX_RETRIES = 5
CALLBACK_RETRIES = 8
INTAKE = "cpu-intake"


def queue_of(step: Step) -> str:
    """The queue a step's message goes on. Raises KeyError for an unknown stage."""
    return "gpu" if step.gpu else _ROUTES[step.stage][1]


def enqueue(steps: Iterable[Step]) -> None:
    """Publish one message per step, on its stage's queue. Raises the broker's error when a publish
    fails (after kombu's own retries); the database still says what is to do, and the sweeper
    (tasks/sweeper.py) publishes it later."""
    for step in steps:
        _ROUTES[step.stage][0].apply_async((step.id,), queue=queue_of(step))


def _run(task, unit: Callable[[str], list[Step]], item_id: str, fail: Callable[[str], list[Step]]) -> None:
    """Run a unit and enqueue its next steps. Permanent errors (bad input, missing model) are
    recorded at once; transient ones retried with exponential backoff, then recorded."""
    try:
        steps = unit(item_id)
    except Exception as exc:
        if isinstance(exc, SoftTimeLimitExceeded):
            exc = TransientError(f"timed out after {app.conf.task_soft_time_limit} s")
        if not is_permanent(exc) and task.request.retries < MAX_RETRIES:
            raise task.retry(exc=exc, countdown=delay(task.request.retries)) from None
        steps = fail(str(exc) if isinstance(exc, ProductStudioError) else f"{type(exc).__name__}: {exc}")
    enqueue(steps)


@app.task(bind=True, name="cutout", max_retries=MAX_RETRIES)
def cutout(self, asset_id: str) -> None:
    _run(self, units.run_cutout, asset_id, lambda error: units.fail(asset_id, error, stage="cutout"))


@app.task(bind=True, name="edges", max_retries=MAX_RETRIES)
def edges(self, asset_id: str) -> None:
    _run(self, units.run_edges, asset_id, lambda error: units.fail(asset_id, error, stage="edges"))


@app.task(bind=True, name="variant", max_retries=MAX_RETRIES)
def variant(self, variant_id: str) -> None:
    _run(self, units.run_variant, variant_id, lambda error: units.fail(variant_id, error))


@app.task(bind=True, name="callback", max_retries=CALLBACK_RETRIES)
def callback(self, job_id: str) -> None:
    """The signed completion callback, retried with backoff (every attempt is logged), then given
    up. The job's outbox entry is held while the chain is alive, settled when it ends."""
    retries = self.request.retries
    retry_in = delay(retries + 1, cap=600) if retries < CALLBACK_RETRIES else None
    if not deliver_callback(job_id, attempt=retries + 1, retry_in=retry_in):
        raise self.retry(countdown=retry_in)


_ROUTES = {"cutout": (cutout, INTAKE), "edges": (edges, "cpu"), "variant": (variant, "cpu"),
           "callback": (callback, "cpu")}
