"""Publishing's service: what the doors call, and the unit the Celery task runs.

Doors (pages, API, CLI) and the task layer call:

    publish_variant(variant_id)            the admin asks: record (or re-queue) its publications
    publish_job(job_id, approved_only)     every finished variant of a job (or the approved ones)
    after_review(variant_id, approved)     `publish = "on-approve"` stores: approving publishes
    after_render(variant_id)               `publish = "auto"` stores: a variant that passed its
                                           check, of a photo not marked for review
    run_publication(publication_id)        the task's unit: publish one, exactly once
    fail_publication(id, reason)           the task's last word after its retries
    lost_publications(older_than)          the sweeper's: messages lost, workers killed

Each returns the Steps to enqueue (Step("publish", publication id)); none enqueues anything.

Exactly once: a publication is recorded before it is attempted; its task claims it under a lease
that a thread renews while it works (a duplicated message finds it held or settled); every
attempt starts by reading the product's images back, and an image carrying the publication's mark
(alt text and file name, marks.py) means an earlier attempt got through: it is settled, not
uploaded again. Only a platform that has not listed the mark is sent the image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .. import content_types, runtime
from ..backoff import delay
from ..config import Settings, get_settings
from ..db import Database, held
from ..errors import Conflict, TransientError
from ..jobs.steps import Step
from ..models import (
    Job,
    Publication,
    PublicationStatus,
    StageStatus,
    Variant,
)
from ..redact import redact
from ..webhooks.stores import Store, stores
from . import marks, records
from .base import Image, NoSuchItem, Publisher, Rejected, Remote

log = logging.getLogger(__name__)
ROUNDS = 3  # attempts within one task run (each reads back first) before the task's own retry
ACTIVE = ("on-approve", "auto")


def publisher_for(store: Store, settings: Settings) -> Publisher:
    """The publisher of `store`'s platform, made with its credentials. Rejected when the platform
    cannot be published to or the store lacks what publishing needs."""
    if store.platform == "shopify":
        from .shopify import Shopify

        return Shopify(store, settings)
    if store.platform == "woocommerce":
        from .woocommerce import WooCommerce

        return WooCommerce(store, settings)
    if store.platform == "bigcommerce":
        from .bigcommerce import BigCommerce

        return BigCommerce(store, settings)
    raise Rejected(f"publishing to {store.platform} is not supported")


@dataclass(frozen=True)
class Requested:
    """What a publish request recorded: the publications now queued, and their Steps."""

    queued: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @staticmethod
    def of(ids: list[str]) -> Requested:
        return Requested(ids, [Step("publish", i) for i in ids])


def _store(settings: Settings, platform: str, name: str) -> Store | None:
    return stores(settings).named(platform, name)


def _role(store: Store, variant: Variant) -> str:
    """"main" for the variant that is to become the product's main image (replace-main stores: the
    store's first target, made from the job's first photo); "append" for the others."""
    if store.mode == "replace-main" and store.targets and variant.target == store.targets[0] \
            and variant.asset.position == 0:
        return "main"
    return "append"


def _request(session, variant: Variant, settings: Settings, *, republish: bool, explicit: bool,
             when: tuple[str, ...] = ACTIVE) -> list[str]:
    """Record or re-queue `variant`'s publication on every product its job was made for, in stores
    whose `publish` is one of `when`; the ids queued. `republish`: a published variant rendered
    again since is queued again (its new render replaces the old image on the product).
    `explicit`: the admin asked, so what cannot be published is an error (Conflict), not a skip."""
    links = records.products_of(session, variant.asset.job_id)
    if not links:
        if explicit:
            raise Conflict("this job was not made from a store product (only webhook jobs can be published)")
        return []
    if variant.status != StageStatus.DONE or not variant.key:
        if explicit:
            raise Conflict(f"variant {variant.id} is {variant.status}: only finished variants can be published")
        return []
    queued = []
    for link in links:
        store = _store(settings, link.platform, link.store)
        if store is None or store.publish not in when:
            if explicit:
                why = "is no longer configured" if store is None else f"has publish = {store.publish!r}"
                raise Conflict(f"{link.platform} store {link.store!r} {why}: nothing is published to it")
            continue
        mark, role = marks.make_mark(variant.id, variant.key), _role(store, variant)
        existing = records.find(session, variant.id, link.platform, link.store, link.product_id)
        earlier = [p for p in records.siblings(session, variant.id, link.platform, link.store, link.product_id)
                   if p.status == PublicationStatus.PUBLISHED and p.remote_id]
        replaces = earlier[-1].remote_id if earlier else None
        if existing is None:
            pub, created = records.record(session, variant=variant, job_id=link.job_id, platform=link.platform,
                                          store=link.store, product_id=link.product_id, role=role, mark=mark,
                                          replaces=replaces)
            if created:
                queued.append(pub.id)
            continue
        status = existing.status
        again = status == PublicationStatus.FAILED and explicit
        again |= status == PublicationStatus.REPLACED and explicit
        rerendered = status == PublicationStatus.PUBLISHED and existing.variant_key != variant.key
        again |= rerendered and republish
        if again:
            replaces = existing.remote_id if rerendered else replaces
            if records.requeue(session, existing.id, variant_key=variant.key, mark=mark, replaces=replaces,
                               role=role):
                queued.append(existing.id)
    return queued


def publish_variant(variant_id: str, settings: Settings | None = None) -> Requested:
    """The admin asks to publish a variant: to every product its job was made for. A failed or
    replaced publication is queued again; a published one whose variant was rendered again since
    is republished, its new render replacing the old image; one published as it is, or on its way,
    is left alone. Raises NoSuchItem (no such variant), Conflict (not finished, not from a store
    product, or its store does not publish)."""
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        variant = s.get(Variant, variant_id)
        if variant is None:
            raise NoSuchItem(f"no variant {variant_id}")
        return Requested.of(_request(s, variant, settings, republish=True, explicit=True))


def publish_job(job_id: str, *, approved_only: bool, settings: Settings | None = None) -> Requested:
    """Publish a job's finished variants whose check passed (`approved_only`: only the approved
    ones; a rejected one never). Raises NoSuchItem, Conflict (not from a store product, the store
    does not publish, or nothing to publish)."""
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NoSuchItem(f"no job {job_id}")
        if not records.products_of(s, job_id):
            raise Conflict("this job was not made from a store product (only webhook jobs can be published)")
        chosen = [v for v in records.variants_of_job(s, job_id) if v.status == StageStatus.DONE
                  and v.approved is not False and (v.approved if approved_only else v.check_ok)]
        if not chosen:
            raise Conflict("no approved variants to publish" if approved_only
                           else "no finished variants that passed their check")
        queued = []
        for v in chosen:
            queued += _request(s, v, settings, republish=True, explicit=True)
        return Requested.of(queued)


def after_review(variant_id: str, approved: bool | None, settings: Settings | None = None) -> list[Step]:
    """An admin reviewed a variant: approving publishes it to `publish = "on-approve"` stores (a
    re-render approved again replaces the earlier image). Never raises for what cannot be published."""
    if not approved:
        return []
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        variant = s.get(Variant, variant_id)
        if variant is None:
            return []
        return Requested.of(_request(s, variant, settings, republish=True, explicit=False,
                                     when=("on-approve",))).steps


def after_render(variant_id: str, settings: Settings | None = None) -> list[Step]:
    """A variant finished rendering: `publish = "auto"` stores get it when its check passed and its
    photo is not marked for review. A re-render is not republished on its own (only when asked)."""
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        variant = s.get(Variant, variant_id)
        if variant is None or variant.status != StageStatus.DONE or not variant.check_ok \
                or variant.asset.review_reason or variant.approved is False:
            return []
        return Requested.of(_request(s, variant, settings, republish=False, explicit=False, when=("auto",))).steps


# --- the unit the task runs -----------------------------------------------------------------------


def run_publication(publication_id: str, settings: Settings | None = None) -> list[Step]:
    """Publish one recorded publication, exactly once; nothing to enqueue after it.

    Does nothing when it is settled or held by another worker under a live lease. Raises
    Rejected (the platform refused: the caller records it failed), TransientError / Throttled
    (try again later: the claim is given back first)."""
    settings = settings or get_settings()
    db = runtime.database(settings)
    with db.session() as s:
        pub = records.claim(s, publication_id, lease=settings.requeue_after)
        if pub is None:
            return []
        variant = s.get_one(Variant, pub.variant_id)
        asset = variant.asset
        attempt, platform, store_name = pub.attempts, pub.platform, pub.store
        if variant.status != StageStatus.DONE or variant.key != pub.variant_key:
            records.settle_failed(s, publication_id, f"variant {variant.id} was rendered again since it was queued: "
                                                     "publish it again")
            return []
        title = asset.title or asset.name
        key, ctype, stem = variant.key, variant.content_type or content_types.JPEG, f"{asset.name}-{variant.target}"
    store = _store(settings, platform, store_name)
    if store is None:
        with db.session() as s:
            records.settle_failed(s, publication_id, f"{platform} store {store_name!r} is no longer configured")
        return []
    lease = settings.requeue_after
    with held(db, f"publication {publication_id}", lambda s: records.renew(s, publication_id, attempt, lease=lease),
              lambda s: records.release(s, publication_id, attempt), lease):
        blobs = runtime.store(settings)
        link = blobs.url(key, settings.download_url_expires)
        image = Image(data=blobs.get(key), filename=marks.file_name(stem, pub.mark, content_types.extension_for(ctype)),
                      content_type=ctype, alt=marks.alt_text(title, pub.mark), mark=pub.mark,
                      url=link if link.startswith(("https://", "http://")) else None)
        publisher = publisher_for(store, settings)
        try:
            remote = _publish_rounds(publisher, db, pub, image, attempt)
            admin_url = publisher.admin_url(pub.product_id)
        finally:
            close = getattr(publisher, "close", None)
            if close:
                close()
    with db.session() as s:
        records.settle_published(s, publication_id, remote_id=remote.id, remote_url=remote.url, admin_url=admin_url)
    log.info("published variant %s to %s product %s as %s", pub.variant_id, platform, pub.product_id, remote.id)
    return []


def _publish_rounds(publisher: Publisher, db: Database, pub: Publication, image: Image, attempt: int) -> Remote:
    """`_publish_once`, again after a TransientError (each round reads back first), ROUNDS times."""
    for n in range(ROUNDS):
        try:
            return _publish_once(publisher, db, pub, image, attempt)
        except Rejected:
            raise
        except TransientError as exc:
            if n == ROUNDS - 1:
                raise
            wait = getattr(exc, "retry_after", None) or delay(n, cap=10.0)
            log.info("publication %s: %s; reading back and trying again in %.1f s", pub.id, exc, wait)
            time.sleep(min(wait, 10.0))
    raise AssertionError("unreachable")


def _publish_once(publisher: Publisher, db: Database, pub: Publication, image: Image, attempt: int) -> Remote:
    product = pub.product_id
    before = publisher.images(product)
    mine = next((r for r in before if r.carries(image.mark)), None)
    replaces = pub.replaces
    if pub.role == "main" and replaces is None and mine is None:
        first = next((r for r in before if not r.ours()), None)
        if first is not None:
            with db.session() as s:
                records.set_replaces(s, pub.id, attempt, first.id)
            replaces = first.id
    if mine is None:
        mine = publisher.attach(product, image)
    mine = publisher.wait_ready(product, mine)
    if pub.role == "main" and mine.position != 0:
        publisher.make_first(product, mine)
    if replaces and replaces != mine.id and any(r.id == replaces for r in before):
        publisher.detach(product, replaces)
    return mine


def fail_publication(publication_id: str, reason: str, settings: Settings | None = None) -> None:
    """Record a publication FAILED with `reason` (credentials masked): the platform refused it, or
    the task's retries ran out. A settled one is left as it is."""
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        pub = s.get(Publication, publication_id)
        secrets = []
        if pub is not None and (store := _store(settings, pub.platform, pub.store)) is not None:
            secrets = store.credentials()
        records.settle_failed(s, publication_id, redact(reason, secrets))


def lost_publications(older_than: float, settings: Settings | None = None) -> list[Step]:
    """Steps for publications whose message was lost or whose worker died (records.lost)."""
    with runtime.database(settings or get_settings()).session() as s:
        return [Step("publish", pid) for pid in records.lost(s, older_than)]
