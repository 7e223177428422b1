"""Webhook receivers for store platforms (issue 6): one route, POST /webhooks/{platform}, for every
platform in product_studio.webhooks.platforms.PLATFORMS (another name: 404). Each platform checks
its own signature; no session auth.

    POST /webhooks/shopify       X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of the raw body)
    POST /webhooks/woocommerce   X-WC-Webhook-Signature (same scheme); the unsigned creation ping
    POST /webhooks/bigcommerce   thin payload; X-Product-Studio-Token header set on the hook
    POST /webhooks/generic       X-Product-Studio-Signature: t=<unix>,v1=<hex>, 5-minute window

A receiver only verifies, records and enqueues (platforms give a few seconds and retry on any
non-2xx): no JSON parsing it can avoid, no image fetching, no job creation; the intake task does
those. Every request is recorded, rejected ones with their reason. Answers: 200 for verified
deliveries, duplicates and ignored topics included (BigCommerce counts only 200); 401 bad or
missing signature (checked before the body is parsed at all); 400 a verified body that does not
parse (not UTF-8, not JSON, nested too deep, not an object); 422 a verified body that cannot be
used; 413 too big; 503 when the delivery could not be recorded (the platform will retry). No
request body, signed or not, can make a receiver answer 500.
"""

from __future__ import annotations

import hashlib
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..config import Settings, get_settings
from ..errors import BadInput
from ..models import DeliveryStatus
from ..webhooks.deliveries import Incoming
from ..webhooks.platforms import (
    PLATFORMS,
    Platform,
    UnreadableBody,
    WooCommerce,
    generic_event,
    json_object,
)
from ..webhooks.recorder import recorder
from ..webhooks.stores import stores
from .throttle import throttle

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
log = logging.getLogger(__name__)
MAX_BODY = 5 * 1024 * 1024  # Shopify products with many variants run to a few hundred kB


async def _read_body(request: Request) -> bytes | None:
    """The raw body (signatures cover its exact bytes), or None when it is over MAX_BODY."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _judge(platform: Platform, request: Request, body: bytes, sha: str) -> tuple[Incoming, int]:
    """What the door decides, before anything is written: the record and the HTTP status.

    Authenticity first: the signature (or token) is checked over the raw bytes before anything
    parses the body, so an unsigned request can cost nothing but a digest. A verified body that
    does not parse (not UTF-8, not JSON, nested deeper than platforms.MAX_DEPTH, not an object)
    is 400, recorded as rejected; one that parses but says something unusable is 422."""
    settings = get_settings()
    headers = request.headers
    claim = platform.claim(headers)
    base = {"platform": platform.name, "claimed_id": _fit(claim.delivery_id),
            "topic": (claim.topic or "")[:128] or None, "payload_sha256": sha}
    configured = stores(settings)
    candidates = configured.candidates(platform.name, claim.source, any_source=platform.source_in_body)
    verdict = platform.verify(candidates, headers, body)
    if verdict.store is None:
        return Incoming(store=None, status=DeliveryStatus.REJECTED, reason=verdict.reason, **base), 401
    store = verdict.store.name
    try:
        payload = body.decode("utf-8")
        claim = platform.read_claim(claim, body)
    except UnicodeDecodeError:
        return Incoming(store=store, status=DeliveryStatus.REJECTED, reason="the body is not UTF-8", **base), 400
    except UnreadableBody as exc:
        return Incoming(store=store, status=DeliveryStatus.REJECTED, reason=str(exc), **base), 400
    base |= {"claimed_id": _fit(claim.delivery_id), "topic": (claim.topic or "")[:128] or None}
    if platform.source_in_body and not verdict.store.serves(claim.source):
        # The token is some store's; the payload must name a store that token belongs to.
        verdict = platform.verify(configured.candidates(platform.name, claim.source), headers, body)
        if verdict.store is None:
            reason = f"the payload names a store ({(claim.source or 'none')[:80]}) this token is not for"
            return Incoming(store=store, status=DeliveryStatus.REJECTED, reason=reason, **base), 401
        store = verdict.store.name
    if claim.topic not in platform.topics:
        reason = f"topic {claim.topic!r} is not handled (only {', '.join(sorted(platform.topics))})"
        return Incoming(store=store, status=DeliveryStatus.IGNORED, reason=reason,
                        **(base | {"claimed_id": base["claimed_id"] or f"sha256:{sha}"})), 200
    if platform.name == "generic":
        problem = _generic_problem(claim.delivery_id, body, settings)
        if problem:
            return Incoming(store=store, status=DeliveryStatus.REJECTED, reason=problem, **base), 422
    # No id from the platform: the body's digest is the id, so an identical resend is a duplicate.
    claimed = base["claimed_id"] or f"sha256:{sha}"
    return Incoming(store=store, status=DeliveryStatus.ACCEPTED, payload=payload,
                    **(base | {"claimed_id": claimed})), 200


def _fit(delivery_id: str | None) -> str | None:
    """Ids fit their column (255): a longer one (never a platform's) is stood for by its digest."""
    if delivery_id is None or len(delivery_id) <= 255:
        return delivery_id
    return "sha256:" + hashlib.sha256(delivery_id.encode()).hexdigest()


def _generic_problem(delivery_id: str | None, body: bytes, settings: Settings) -> str | None:
    """The generic door checks its body at once: its sender is a program that can fix it."""
    try:
        generic_event(json_object(body, "the body"), settings)
    except BadInput as exc:
        return str(exc)
    return None if delivery_id else "the body has no id"


def publish(delivery_ids: list[str]) -> None:
    """The recorder's publish: one intake message per batch. Celery is imported at the first
    delivery, not when the web process starts."""
    from tasks.intake import enqueue_deliveries

    enqueue_deliveries(delivery_ids)


async def receive(platform: Platform, request: Request) -> JSONResponse:
    body = await _read_body(request)
    if body is None:
        item, code = Incoming(platform=platform.name, claimed_id=None, topic=None, store=None, payload_sha256="",
                              status=DeliveryStatus.REJECTED, reason=f"body over {MAX_BODY} bytes"), 413
    else:
        if isinstance(platform, WooCommerce) and not request.headers.get(platform.signature_header):
            if (webhook_id := platform.ping(body)) is not None:
                return JSONResponse({"ok": True, "ping": webhook_id})
        try:
            item, code = _judge(platform, request, body, hashlib.sha256(body).hexdigest())
        except BadInput as exc:  # our configuration (the stores file) is broken: the platform retries later
            log.error("cannot judge a %s webhook: %s", platform.name, exc)
            return JSONResponse({"error": "the webhook configuration is broken; retry later"}, status_code=503)
    if item.status == DeliveryStatus.REJECTED and request.client is not None:
        # Rejections are recorded at most WEBHOOK_REJECTED_RATE_LIMIT per client address: a flood
        # of forgeries gets 429 and leaves no rows (accepted, duplicate and ignored ones are never counted).
        counter = throttle().webhook_rejected
        if not counter.hit(request.client.host):
            wait = counter.blocked_for(request.client.host) or 1
            return JSONResponse({"error": f"too many rejected requests from this address: try again in {wait} s"},
                                status_code=429, headers={"Retry-After": str(wait)})
    try:
        recorded = await recorder(get_settings(), publish).record(item)
    except Exception:
        return JSONResponse({"error": "the delivery could not be recorded; retry later"}, status_code=503)
    if recorded.status == DeliveryStatus.REJECTED:
        log.warning("rejected %s webhook %s: %s", platform.name, recorded.id, recorded.reason)
    answer = {"status": str(recorded.status), "delivery": recorded.id}
    if recorded.reason:
        answer["reason"] = recorded.reason
    return JSONResponse(answer, status_code=code)


@router.post("/{platform}")
async def webhook(platform: str, request: Request) -> JSONResponse:
    found = PLATFORMS.get(platform)
    if found is None:
        known = ", ".join(PLATFORMS)
        return JSONResponse({"error": f"no webhook receiver for {platform[:80]!r} (only {known})"}, status_code=404)
    return await receive(found, request)
