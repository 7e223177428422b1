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

import logging
from collections.abc import Callable, Iterable

from celery.exceptions import SoftTimeLimitExceeded

from product_studio.backoff import delay
from product_studio.errors import TransientError, classify
from product_studio.jobs import Step, units
from product_studio.jobs.completion import deliver_callback
from product_studio.jobs.recovery import is_permanent
from product_studio.publish import service as publishing

from .celery_app import app

log = logging.getLogger(__name__)

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
        steps = fail(str(classify(exc)))  # one line, ours or "TypeName: message"
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
    _auto_publish(variant_id)


def _auto_publish(variant_id: str) -> None:
    """`publish = "auto"` stores get a finished variant (publish.service.after_render); a failure
    here is logged and never undoes the render."""
    try:
        enqueue(publishing.after_render(variant_id))
    except Exception:
        log.exception("variant %s: could not queue its automatic publication", variant_id)


@app.task(bind=True, name="publish", max_retries=MAX_RETRIES)
def publish(self, publication_id: str) -> None:
    """Publish one variant to its store product, exactly once (product_studio.publish): rate limits,
    5xx and timeouts are retried with backoff (a platform's asked-for wait honoured), then recorded
    as failed; what the platform refuses is recorded as failed at once, with its message."""
    try:
        steps = publishing.run_publication(publication_id)
    except Exception as exc:
        if isinstance(exc, SoftTimeLimitExceeded):
            exc = TransientError(f"timed out after {app.conf.task_soft_time_limit} s")
        error = classify(exc)
        retries = self.request.retries
        if error.retryable and retries < MAX_RETRIES:
            wait = max(float(getattr(exc, "retry_after", 0) or 0), delay(retries))
            raise self.retry(exc=exc, countdown=wait) from None
        reason = f"gave up after {retries + 1} attempts: {error}" if error.retryable else str(error)
        publishing.fail_publication(publication_id, reason)
        return
    enqueue(steps)


@app.task(bind=True, name="callback", max_retries=CALLBACK_RETRIES)
def callback(self, job_id: str) -> None:
    """The signed completion callback, retried with backoff (every attempt is logged), then given
    up. The job's outbox entry is held while the chain is alive, settled when it ends."""
    retries = self.request.retries
    retry_in = delay(retries + 1, cap=600) if retries < CALLBACK_RETRIES else None
    if not deliver_callback(job_id, attempt=retries + 1, retry_in=retry_in):
        raise self.retry(countdown=retry_in)


_ROUTES = {"cutout": (cutout, INTAKE), "edges": (edges, "cpu"), "variant": (variant, "cpu"),
           "callback": (callback, "cpu"), "publish": (publish, "cpu")}
