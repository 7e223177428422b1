"""The web door's way into the job service: record through product_studio.jobs, then hand the
steps it returns to the task layer. Pages and API both come through here."""

from __future__ import annotations

from ..jobs import Submission, Upload, masks, regenerate, submit
from ..models import Variant


def _enqueue(steps) -> None:
    if steps:
        from tasks.pipeline import (
            enqueue,  # Celery is imported on first use, not at web start
        )

        enqueue(steps)


def submit_job(uploads: list[Upload], **options) -> Submission:
    """jobs.submit(uploads, **options), its steps enqueued (none when an existing job was found)."""
    submission = submit(uploads, **options)
    _enqueue(submission.steps)
    return submission


def regenerate_variant(variant_id: str, **options) -> Variant:
    """jobs.regenerate(variant_id, **options), its step enqueued; the new (or existing) variant.
    Counted first (throttle.check_regeneration): over the limits it raises HTTPException 429."""
    from .throttle import check_regeneration

    check_regeneration(variant_id)
    variant, steps = regenerate(variant_id, **options)
    _enqueue(steps)
    return variant


def save_mask(asset_id: str, alpha, origin: str) -> masks.MaskSaved:
    """jobs.masks.save_mask(...): a new chosen mask, the photo's variants enqueued to render again."""
    saved = masks.save_mask(asset_id, alpha, origin)
    _enqueue(saved.steps)
    return saved


def restore_mask(asset_id: str, version: int) -> masks.MaskSaved:
    """jobs.masks.restore_mask(...), its re-render enqueued."""
    saved = masks.restore_mask(asset_id, version)
    _enqueue(saved.steps)
    return saved
