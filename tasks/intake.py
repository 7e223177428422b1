"""Webhook intake tasks. A receiver's batch arrives as one message (so the web process publishes
once per batch, not once per request) and fans out to one task per delivery; that task fetches
the images and creates the jobs (product_studio.webhooks.intake, given tasks.pipeline.enqueue for
their steps), with retries for transient errors.

Lost messages: the database says which deliveries are still `accepted`; a thread in each worker
re-enqueues those untouched for `requeue_after` seconds (tasks/sweeper.py, beside lost assets).
"""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded

from product_studio import runtime
from product_studio.backoff import delay
from product_studio.config import get_settings
from product_studio.errors import TransientError, classify
from product_studio.webhooks import intake
from product_studio.webhooks.deliveries import Retried, retry_delivery

from .celery_app import app
from .pipeline import enqueue
from .sweeper import SWEEPS

log = logging.getLogger(__name__)
MAX_RETRIES = 5


def enqueue_deliveries(delivery_ids: list[str]) -> None:
    """One message for a batch of recorded deliveries. No publish retries: the receivers must not
    wait on a broker that is down, and the database still says these deliveries are to do."""
    batch.apply_async((delivery_ids,), queue=get_settings().webhook_queue, retry=False)


@app.task(name="intake.batch")
def batch(delivery_ids: list[str]) -> None:
    queue = get_settings().webhook_queue
    for delivery_id in delivery_ids:
        delivery.apply_async((delivery_id,), queue=queue)


@app.task(bind=True, name="intake.delivery", max_retries=MAX_RETRIES)
def delivery(self, delivery_id: str) -> str:
    """Run one delivery. What a retry can fix (errors.classify: storage, network, database
    trouble, the unforeseen) is retried with backoff, then failed with "gave up after N attempts";
    what it cannot (bad input, a body that cannot be read) fails at once, on the first attempt."""
    try:
        return intake.run_delivery(delivery_id, enqueue)
    except Exception as exc:
        if isinstance(exc, SoftTimeLimitExceeded):
            exc = TransientError(f"timed out after {app.conf.task_soft_time_limit} s")
        error = classify(exc)
        if error.retryable and self.request.retries < MAX_RETRIES:
            intake.release_delivery(delivery_id)  # the retry must be able to take it again
            raise self.retry(exc=exc, countdown=delay(self.request.retries)) from None
        reason = str(error)
        if error.retryable:
            reason = f"gave up after {self.request.retries + 1} attempts: {reason}"
        intake.fail_delivery(delivery_id, reason)
        return "failed"


def retry(delivery_id: str) -> Retried:
    """Retry what failed of a delivery (webhooks.deliveries.retry_delivery, committed), then set it
    going: its intake task again, or its jobs' callback steps. A publish that fails is logged and
    loses nothing: the delivery is `accepted` again (or the callbacks owed), so the workers' sweeper
    sends it after `requeue_after` seconds. Raises NoSuchDelivery (404) and Conflict (409, why not)."""
    with runtime.database().session() as s:
        retried = retry_delivery(s, delivery_id)
    try:
        if retried.intake:
            enqueue_deliveries([delivery_id])
        enqueue(retried.steps)
    except Exception:
        log.exception("delivery %s: the retry is recorded but could not be enqueued; the sweeper will", delivery_id)
    return retried


def sweep_deliveries(older_than: float) -> int:
    lost = intake.lost_deliveries(older_than)
    if lost:
        log.warning("re-enqueueing %d webhook deliveries whose messages were lost", len(lost))
        batch.apply_async((lost,), queue=get_settings().webhook_queue)
    return len(lost)


SWEEPS.append(sweep_deliveries)  # run by the worker's one sweeper thread (tasks/sweeper.py)
