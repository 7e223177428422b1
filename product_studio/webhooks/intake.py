"""Webhook intake: one recorded delivery -> jobs for its product's new or changed images.

Run by the Celery task in tasks/intake.py (which only decides retries, and gives the function that
enqueues a job's steps: the core imports no Celery), never by the receivers:

1. the body becomes a ProductEvent (BigCommerce's product is read from its API);
2. the product is taken for this delivery unless an update as new or newer was taken already
   (then the delivery is STALE);
3. images whose fingerprint (id, URL, version) was processed before are skipped; the others are
   fetched through the SSRF-safe fetcher, and bytes already processed under another URL skipped;
4. images Product Studio published there itself (publish.recognise: a recorded platform id, or
   its mark in the alt text or file name) are remembered and make no job: publishing makes the
   platform send an update webhook, and that must not loop;
5. one job per scene (jobs.submit, which validates every image before writing anything; each
   new job's steps are enqueued at once, and the job is linked to the product so its variants
   can be published back), then the images are remembered and the delivery settled PROCESSED
   with its jobs.
A refused URL or a broken image fails the whole delivery (FAILED, with the reason naming the URL),
as an upload with one bad photo fails whole. Every step is idempotent: a retried or redelivered
task finds the product already taken by itself and the jobs already there (same fingerprints).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from .. import runtime
from ..config import Settings, get_settings
from ..errors import BadInput
from ..fetch import fetch_image
from ..jobs import Upload, submit
from ..jobs.steps import Step
from ..models import DeliveryStatus
from ..naming import display_label
from ..presets import get_target
from ..publish.records import link_job
from .deliveries import (
    release_delivery as release,
)
from .deliveries import (
    remember_images,
    settle_delivery,
    stale_deliveries,
    start_delivery,
    take_product,
)
from .platforms import PLATFORMS, ImageRef, ProductEvent
from .stores import Store, stores

Enqueue = Callable[[list[Step]], None]
"""Enqueues a new job's steps (tasks.pipeline.enqueue in the worker)."""


def run_delivery(delivery_id: str, enqueue: Enqueue, settings: Settings | None = None) -> str:
    """Process one accepted delivery and return the status it settled with ("settled or taken"
    when another run settled it or is on it); `enqueue` is given the steps of each job it creates.
    BadInput: it cannot succeed; TransientError: try again later (after `release_delivery`)."""
    settings = settings or get_settings()
    db = runtime.database(settings)
    with db.session() as s:
        delivery = start_delivery(s, delivery_id, lease=settings.requeue_after)
        if delivery is None:
            return "settled or taken"
        platform_name, store_name, payload = delivery.platform, delivery.store, delivery.payload or ""
    store = stores(settings).named(platform_name, store_name)
    if store is None:
        raise BadInput(f"{platform_name} store {store_name!r} is no longer configured")
    event = PLATFORMS[platform_name].event(store, payload, settings)

    known: dict[str, str] = {}
    if event.product_id is not None:
        with db.session() as s:
            state, why = take_product(s, platform=platform_name, store=store.name, product_id=event.product_id,
                                      updated_at=event.updated_at, delivery_id=delivery_id)
            if state is None:
                settle_delivery(s, delivery_id, DeliveryStatus.STALE, why)
                return DeliveryStatus.STALE
            known = dict(state.images)
    if not event.images:
        return _settle(settings, delivery_id, DeliveryStatus.IGNORED, "the product has no images")
    changed = [img for img in event.images if img.key not in known]
    if not changed:
        return _settle(settings, delivery_id, DeliveryStatus.IGNORED,
                       f"no new or changed images ({len(event.images)} unchanged)")
    published = _published(settings, platform_name, store.name, event, changed)
    if published:  # the images Product Studio put there: no job from them (no loop)
        _remember(settings, platform_name, store.name, event, {k: "published" for k in published})
        changed = [img for img in changed if img.key not in published]
        if not changed:
            return _settle(settings, delivery_id, DeliveryStatus.IGNORED,
                           f"only images Product Studio published ({len(published)}) are new")

    uploads, seen, processed = [], set(known.values()), {}
    for i, img in enumerate(changed):
        fetched = fetch_image(img.url, settings)
        sha = hashlib.sha256(fetched.data).hexdigest()
        processed[img.key] = sha
        if sha not in seen:  # the same bytes under a new URL are not new
            seen.add(sha)
            uploads.append(Upload(_filename(img, fetched.final_url, i), fetched.data, event.title, event.category))
    if not uploads:
        _remember(settings, platform_name, store.name, event, processed)
        return _settle(settings, delivery_id, DeliveryStatus.IGNORED, "the changed images have the same bytes as before")

    job_ids = _submit(uploads, event, store, platform_name, settings, enqueue)
    with db.session() as s:
        if event.product_id is not None:
            remember_images(s, platform_name, store.name, event.product_id, processed)
        settle_delivery(s, delivery_id, DeliveryStatus.PROCESSED,
                        f"{len(uploads)} new or changed image(s) of {len(event.images)}", job_ids)
    return DeliveryStatus.PROCESSED


def fail_delivery(delivery_id: str, reason: str, settings: Settings | None = None) -> None:
    """Settle a delivery FAILED (a refused URL, a broken image, retries exhausted)."""
    _settle(settings or get_settings(), delivery_id, DeliveryStatus.FAILED, reason)


def release_delivery(delivery_id: str, settings: Settings | None = None) -> None:
    """Give an unsettled delivery back before its task retries, so the retry can take it."""
    with runtime.database(settings or get_settings()).session() as s:
        release(s, delivery_id)


def lost_deliveries(older_than: float, settings: Settings | None = None) -> list[str]:
    """Accepted deliveries untouched for `older_than` seconds: their messages were lost."""
    with runtime.database(settings or get_settings()).session() as s:
        return stale_deliveries(s, older_than)


def _settle(settings: Settings, delivery_id: str, status: str, reason: str) -> str:
    with runtime.database(settings).session() as s:
        settle_delivery(s, delivery_id, status, reason[:2000])
    return status


def _remember(settings: Settings, platform: str, store: str, event: ProductEvent, images: dict[str, str]) -> None:
    if event.product_id is not None:
        with runtime.database(settings).session() as s:
            remember_images(s, platform, store, event.product_id, images)


def _published(settings: Settings, platform: str, store: str, event: ProductEvent,
               images: list[ImageRef]) -> set[str]:
    """The keys of `images` that publishing put on the product (publish.recognise)."""
    from ..publish.recognise import ours

    with runtime.database(settings).session() as s:
        return ours(s, platform, store, event.product_id, images)


def _filename(img: ImageRef, final_url: str, index: int) -> str:
    """The image's file name from its URL, e.g. "blue-shirt.jpg": shown as the photo's name; ingest
    makes the output stem from it (naming.safe_stem) like any other door's file name."""
    name = PurePosixPath(urlsplit(final_url).path).name or PurePosixPath(urlsplit(img.url).path).name
    return display_label(name, f"image-{index + 1}")


def _submit(uploads: list[Upload], event: ProductEvent, store: Store, platform: str,
            settings: Settings, enqueue: Enqueue) -> list[str]:
    """One job per scene, each enqueued as soon as it is recorded. The first job makes every target;
    later scenes only re-make the scene targets (a pure-white target looks the same in every scene)."""
    targets = list(event.targets or store.targets)
    scenes: list[str | None] = list(event.scenes or store.scenes) or [None]
    callback = event.callback_url or store.callback_url
    job_ids = []
    for i, scene in enumerate(scenes):
        wanted = targets if i == 0 else [t for t in targets if not get_target(t).pure_white]
        if not wanted:
            continue
        # The callback is the store's setting: an address that cannot be reached fails only the
        # callback when it is sent (a failed attempt, on the Deliveries page), never the job.
        submission = submit(uploads, targets=wanted, scene=scene, origin=f"webhook:{platform}",
                            store_name=store.name, callback_url=callback, check_callback=False,
                            settings=settings)
        if event.product_id is not None:  # where its variants are published back to
            with runtime.database(settings).session() as s:
                link_job(s, submission.job.id, platform, store.name, event.product_id)
        if submission.steps:
            enqueue(list(submission.steps))
        job_ids.append(submission.job.id)
    return job_ids
