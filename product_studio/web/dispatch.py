"""The web door's way into the job service: record through product_studio.jobs, then hand the
steps it returns to the task layer. Pages and API both come through here."""

from __future__ import annotations

from ..jobs import Submission, Upload, masks, regenerate, submit
from ..jobs.stored import StoredUpload, submit_stored
from ..models import Variant


def _enqueue(steps) -> None:
    if steps:
        from tasks.pipeline import (
            enqueue,  # Celery is imported on first use, not at web start
        )

        enqueue(steps)


def submit_job(uploads: list[Upload] | list[StoredUpload], **options) -> Submission:
    """jobs.submit(uploads, **options), or jobs.stored.submit_stored for uploads the door stored
    already (web/media.py read_uploads), its steps enqueued (none when an existing job was found)."""
    if uploads and isinstance(uploads[0], StoredUpload):
        submission = submit_stored(uploads, **options)
    else:
        submission = submit(uploads, **options)
    _enqueue(submission.steps)
    return submission


def submit_urls_job(urls: list[str], **options) -> Submission:
    """jobs.from_urls.submit_urls(urls, **options): recorded before anything is fetched (each
    photo's cut-out task fetches its URL), its steps enqueued."""
    from ..jobs.from_urls import submit_urls

    submission = submit_urls(urls, **options)
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


def publish_variant(variant_id: str):
    """publish.service.publish_variant, its publications enqueued. Raises NoSuchItem (404),
    Conflict (409: not finished, not from a store product, its store does not publish)."""
    from ..publish.service import publish_variant as record

    requested = record(variant_id)
    _enqueue(requested.steps)
    return requested


def publish_job(job_id: str, *, approved_only: bool):
    """publish.service.publish_job, its publications enqueued (raises as publish_variant)."""
    from ..publish.service import publish_job as record

    requested = record(job_id, approved_only=approved_only)
    _enqueue(requested.steps)
    return requested


def reviewed(variant_id: str, approved: bool | None) -> None:
    """After a review is saved: approving publishes to `publish = "on-approve"` stores. A failure to
    queue it is logged, never undoes the review (the admin can press Publish)."""
    import logging

    from ..publish.service import after_review

    try:
        _enqueue(after_review(variant_id, approved))
    except Exception:
        logging.getLogger(__name__).exception("variant %s: could not queue its publication", variant_id)
