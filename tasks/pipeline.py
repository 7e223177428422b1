"""The tasks: per photo cutout -> edges -> one variant task per target (in parallel), each of
which renders, exports, checks and stores; the last to finish sends the job's callback.

No task waits on another: each enqueues the next step. Generative variants go to the `gpu`
queue, everything else to `cpu`; a photo's first step goes to `cpu-intake`. Workers take from
their queues in turn, so a big batch keeps finishing photos as it goes instead of cutting out
every photo before the first variant is rendered.
"""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from product_studio import work
from product_studio.errors import ProductStudioError, TransientError

from .celery_app import app

MAX_RETRIES = 5
CALLBACK_RETRIES = 8


INTAKE = "cpu-intake"


def enqueue_assets(asset_ids: list[str]) -> None:
    for asset_id in asset_ids:
        cutout.apply_async((asset_id,), queue=INTAKE)


def enqueue_variant(variant_id: str, *, gpu: bool) -> None:
    """One more variant of a photo whose cut-out is done (a regenerate)."""
    variant.apply_async((variant_id,), queue="gpu" if gpu else "cpu")


def _give_up_or_retry(task, exc: BaseException, fail) -> None:
    """Permanent errors (bad input, missing model) are recorded at once; transient ones retried
    with exponential backoff, then recorded."""
    if isinstance(exc, SoftTimeLimitExceeded):
        exc = TransientError(f"timed out after {app.conf.task_soft_time_limit} s")
    if not work.is_permanent(exc) and task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=min(60, 2 ** task.request.retries))
    job_id = fail(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ProductStudioError) else str(exc))
    if job_id:
        callback.apply_async((job_id,), queue="cpu")


@app.task(bind=True, name="cutout", max_retries=MAX_RETRIES)
def cutout(self, asset_id: str) -> None:
    try:
        work.run_cutout(asset_id)
    except Exception as exc:
        _give_up_or_retry(self, exc, lambda error: work.fail(asset_id, error, stage="cutout"))
        return
    edges.apply_async((asset_id,), queue="cpu")


@app.task(bind=True, name="edges", max_retries=MAX_RETRIES)
def edges(self, asset_id: str) -> None:
    try:
        variants = work.run_edges(asset_id)
    except Exception as exc:
        _give_up_or_retry(self, exc, lambda error: work.fail(asset_id, error, stage="edges"))
        return
    for variant_id, gpu in variants:
        variant.apply_async((variant_id,), queue="gpu" if gpu else "cpu")


@app.task(bind=True, name="variant", max_retries=MAX_RETRIES)
def variant(self, variant_id: str) -> None:
    try:
        job_id = work.run_variant(variant_id)
    except Exception as exc:
        _give_up_or_retry(self, exc, lambda error: work.fail(variant_id, error))
        return
    if job_id:
        callback.apply_async((job_id,), queue="cpu")


@app.task(bind=True, name="callback", max_retries=CALLBACK_RETRIES)
def callback(self, job_id: str) -> None:
    """The signed completion callback, retried with backoff (every attempt is logged)."""
    if not work.deliver_callback(job_id, attempt=self.request.retries + 1):
        if self.request.retries < CALLBACK_RETRIES:
            raise self.retry(countdown=min(600, 2 ** (self.request.retries + 1)))


@app.task(name="sweep")
def sweep(older_than: float) -> int:
    """Re-enqueue assets whose messages were lost; returns how many."""
    stale = work.stale_assets(older_than)
    enqueue_assets(stale)
    return len(stale)
