"""Webhook deliveries and product states: the database operations of webhook intake.

Like db.py, every function takes a session and leaves committing to the caller, duplicates are
refused by unique constraints (never by a read alone), and once-only changes are conditional
UPDATEs. The door records whole batches of deliveries in one transaction (`record_deliveries`).
What the Deliveries page, the API and the CLI show, and their retries, are at the end
(`list_deliveries`, `retry_delivery`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, null, or_, select, update
from sqlalchemy.orm import Session, selectinload

from ..errors import BadInput, Conflict
from ..jobs.documents import callback_document, callback_state
from ..jobs.steps import Step
from ..models import JOB_FINAL, Delivery, DeliveryStatus, Job, ProductState, new_id, utcnow
from ..redact import redact, redact_url

FINAL = (DeliveryStatus.PROCESSED, DeliveryStatus.FAILED, DeliveryStatus.STALE, DeliveryStatus.DUPLICATE,
         DeliveryStatus.REJECTED, DeliveryStatus.IGNORED)


@dataclass(frozen=True)
class Incoming:
    """One request as the door judged it: ACCEPTED or IGNORED if verified, else REJECTED."""

    platform: str
    claimed_id: str | None
    topic: str | None
    store: str | None
    payload_sha256: str
    status: str
    reason: str | None = None
    payload: str | None = None  # kept for verified deliveries only


@dataclass(frozen=True)
class Recorded:
    id: str  # the Delivery row
    status: str
    reason: str | None


def _insert_ignoring_claimed(session: Session) -> Any:
    """INSERT ... ON CONFLICT (platform, delivery_id) DO NOTHING, on SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(Delivery.__table__).on_conflict_do_nothing(index_elements=["platform", "delivery_id"])


def record_deliveries(session: Session, batch: Sequence[Incoming]) -> list[Recorded]:
    """Record a batch of requests, in order. A verified delivery takes its claimed id; one whose
    id was taken (the platform's retry, or the same delivery twice in this batch) is recorded as a
    DUPLICATE of the first. Rejected requests never take the id they claim: each gets a generated
    key, so a forgery cannot block the genuine delivery."""
    now = utcnow()
    ids = [new_id() for _ in batch]

    def row(i: int, item: Incoming, **values: Any) -> dict[str, Any]:
        return {"id": ids[i], "platform": item.platform, "delivery_id": item.claimed_id, "claimed_id": item.claimed_id,
                "topic": item.topic, "store": item.store, "received_at": now, "updated_at": now,
                "status": item.status, "reason": item.reason, "payload_sha256": item.payload_sha256,
                "payload": item.payload} | values

    verified = [i for i, item in enumerate(batch) if item.status != DeliveryStatus.REJECTED and item.claimed_id]
    inserted: set[str] = set()
    if verified:
        session.execute(_insert_ignoring_claimed(session), [row(i, batch[i]) for i in verified])
        inserted = set(session.scalars(select(Delivery.id).where(Delivery.id.in_([ids[i] for i in verified]))))
    out, others = [], []
    for i, item in enumerate(batch):
        if ids[i] in inserted:
            out.append(Recorded(ids[i], item.status, item.reason))
        elif i in verified:
            first = session.scalar(select(Delivery.id).where(Delivery.platform == item.platform,
                                                             Delivery.delivery_id == item.claimed_id))
            reason = f"duplicate of delivery {first} ({item.platform} id {item.claimed_id})"
            others.append(row(i, item, delivery_id=f"duplicate:{ids[i]}", status=DeliveryStatus.DUPLICATE,
                              reason=reason, payload=None))
            out.append(Recorded(ids[i], DeliveryStatus.DUPLICATE, reason))
        else:
            status = DeliveryStatus.REJECTED
            others.append(row(i, item, delivery_id=f"rejected:{ids[i]}", status=status, payload=None))
            out.append(Recorded(ids[i], status, item.reason))
    if others:
        session.execute(insert(Delivery.__table__), others)
    return out


def start_delivery(session: Session, delivery_id: str, lease: float) -> Delivery | None:
    """Take an accepted delivery to work on, for `lease` seconds: None when it is unknown, settled,
    or held by another run (a duplicated message). A run that dies keeps it only until the lease
    ends; one that will retry gives it back first (`release_delivery`)."""
    now = utcnow()
    changed = session.execute(
        update(Delivery).where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.ACCEPTED,
                               or_(Delivery.started_at.is_(None), Delivery.started_at < now - timedelta(seconds=lease)))
        .values(started_at=now, updated_at=now).execution_options(synchronize_session=False))
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Delivery, delivery_id, populate_existing=True)


def release_delivery(session: Session, delivery_id: str) -> None:
    """Give back an unsettled delivery (its run will retry later)."""
    session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.ACCEPTED)
                    .values(started_at=None).execution_options(synchronize_session=False))


def settle_delivery(session: Session, delivery_id: str, status: str, reason: str | None = None,
                    job_ids: Sequence[str] = ()) -> bool:
    """Record a delivery's outcome, once: False if it was settled already. The body is dropped
    once it has served (its digest stays); a failed delivery keeps it, to be looked at."""
    keep = {} if status == DeliveryStatus.FAILED else {"payload": None}
    changed = session.execute(
        update(Delivery).where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.ACCEPTED)
        .values(status=status, reason=reason, job_id=job_ids[0] if job_ids else None,
                job_ids=list(job_ids) if job_ids else null(), updated_at=utcnow(), **keep)  # null(): SQL NULL
        .execution_options(synchronize_session=False))
    return changed.rowcount == 1  # type: ignore[attr-defined]


def stale_deliveries(session: Session, older_than: float) -> list[str]:
    """Accepted deliveries nobody touched for `older_than` seconds (their message was lost: a
    publish that failed after the commit, a broker restarted without persistence). Each is claimed
    by bumping updated_at, so two sweepers do not both re-enqueue it."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    rows = session.execute(select(Delivery.id, Delivery.updated_at).where(
        Delivery.status == DeliveryStatus.ACCEPTED, Delivery.updated_at < cutoff)).all()
    claimed = []
    for delivery_id, seen in rows:
        bumped = session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.updated_at == seen)
                                 .values(updated_at=utcnow()).execution_options(synchronize_session=False))
        if bumped.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(delivery_id)
    return claimed


def _state(session: Session, platform: str, store: str, product_id: str) -> ProductState | None:
    return session.scalar(select(ProductState).where(
        ProductState.platform == platform, ProductState.store == store, ProductState.product_id == product_id)
        .with_for_update().execution_options(populate_existing=True))


def take_product(session: Session, *, platform: str, store: str, product_id: str, updated_at: dt.datetime | None,
                 delivery_id: str) -> tuple[ProductState | None, str | None]:
    """Take a product for a delivery: (its state, None), or (None, why not) when an update as new
    or newer was taken already (a stale or repeated event). The delivery that took it may take
    it again (its own retry). No updated_at: always taken, nothing to compare."""
    from sqlalchemy.exc import IntegrityError

    state = _state(session, platform, store, product_id)
    if state is None:
        state = ProductState(platform=platform, store=store, product_id=product_id, source_updated_at=updated_at,
                             delivery_id=delivery_id, images={})
        try:
            with session.begin_nested():
                session.add(state)
            return state, None
        except IntegrityError:  # another delivery of this product got there first
            state = _state(session, platform, store, product_id)
            assert state is not None
    if state.delivery_id == delivery_id:
        return state, None
    if updated_at is not None and state.source_updated_at is not None and updated_at <= state.source_updated_at:
        return None, (f"stale: product {product_id} was updated at {updated_at.isoformat()}, not after the update "
                      f"already taken ({state.source_updated_at.isoformat()})")
    if updated_at is not None:
        state.source_updated_at = updated_at
    state.delivery_id = delivery_id
    return state, None


def remember_images(session: Session, platform: str, store: str, product_id: str, images: dict[str, str]) -> None:
    """Add processed images (fingerprint -> SHA-256 of the bytes) to a product's state."""
    state = _state(session, platform, store, product_id)
    if state is not None and images:
        state.images.update(images)


# ---------------------------------------------------------------------------------------------
# What is shown (the Deliveries page, GET /api/v1/deliveries, `product-studio deliveries`) and
# what can be retried from there


STATUSES = tuple(str(s) for s in DeliveryStatus)


class NoSuchDelivery(BadInput):
    """No delivery has that id (HTTP 404; exit code 2)."""

    http_status = 404


def _job_ids(delivery: Delivery) -> list[str]:
    return list(delivery.job_ids or ([delivery.job_id] if delivery.job_id else []))


def _why_not(delivery: Delivery, failed_callbacks: list[str]) -> str | None:
    """Why nothing of the delivery can be retried, or None when something can."""
    d = delivery
    if d.status == DeliveryStatus.FAILED and d.payload is not None:
        return None
    if failed_callbacks:
        return None
    if d.status == DeliveryStatus.REJECTED:
        return (f"delivery {d.id} was rejected ({redact(d.reason or 'no reason recorded')}): it was never verified, so "
                "there is nothing to run again; a genuine delivery the platform sends again is recorded anew")
    if d.status == DeliveryStatus.DUPLICATE:
        return f"delivery {d.id} is a {d.reason or 'duplicate'}: retry that one"
    if d.status == DeliveryStatus.ACCEPTED:
        return f"delivery {d.id} is still being processed"
    if d.status == DeliveryStatus.FAILED:
        return (f"delivery {d.id} failed, but its payload was not kept, so it cannot be run again; have the "
                "platform send the product again (save it in the store)")
    return f"nothing of delivery {d.id} failed: it was {d.status} and no completion callback of its jobs failed"


def _document(delivery: Delivery, jobs: list[Job]) -> dict[str, Any]:
    failed = [j.id for j in jobs if callback_state(j) == "failed"]
    why_not = _why_not(delivery, failed)
    if why_not is None:
        retry = ("run its intake again" if delivery.status == DeliveryStatus.FAILED
                 else f"send the failed completion callback of {len(failed)} job(s) again")
    else:
        retry = why_not
    return {
        "id": delivery.id, "received_at": delivery.received_at.isoformat(timespec="seconds"),
        "platform": delivery.platform, "store": delivery.store, "topic": delivery.topic,
        "platform_id": delivery.claimed_id, "status": delivery.status,
        "reason": redact(delivery.reason) if delivery.reason else None,
        "retryable": why_not is None, "retry": retry,
        "jobs": [{"id": j.id, "status": j.status, **callback_document(j)} for j in jobs],
    }


def list_deliveries(session: Session, *, status: str | None = None, limit: int = 50,
                    offset: int = 0) -> list[dict[str, Any]]:
    """Deliveries, newest first (received time, then id): `limit` of them from `offset`, only those
    with `status` when given. Each is a JSON-ready document: id, received_at (ISO 8601, UTC),
    platform, store, topic, platform_id (the id the platform gave it), status, reason, retryable
    and retry (what a retry would do, or why it cannot be retried), and jobs: each job it made with
    its status, callback_url, callback (callback_state) and callbacks (every attempt: url, attempt,
    at, status_code, error, ok). URLs and errors have credentials masked. Raises BadInput for an
    unknown status."""
    if status is not None and status not in STATUSES:
        raise BadInput(f"unknown delivery status {status!r}; choose one of: {', '.join(STATUSES)}")
    query = select(Delivery).order_by(Delivery.received_at.desc(), Delivery.id.desc())
    if status is not None:
        query = query.where(Delivery.status == status)
    rows = list(session.scalars(query.limit(limit).offset(offset)))
    wanted = {j for d in rows for j in _job_ids(d)}
    jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(wanted))
                                             .options(selectinload(Job.callbacks)))} if wanted else {}
    return [_document(d, [jobs[j] for j in _job_ids(d) if j in jobs]) for d in rows]


def delivery_document(session: Session, delivery_id: str) -> dict[str, Any]:
    """One delivery's document, as `list_deliveries` makes them. Raises NoSuchDelivery."""
    delivery = session.get(Delivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise NoSuchDelivery(f"no delivery {delivery_id}")
    ids = _job_ids(delivery)
    jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids))
                                             .execution_options(populate_existing=True))} if ids else {}
    return _document(delivery, [jobs[j] for j in ids if j in jobs])


@dataclass(frozen=True)
class Retried:
    """What a retry set going. The door enqueues it after the commit: `intake`, the delivery's
    intake task again; `steps`, the callback steps of `jobs`, whose failed callbacks are owed again."""

    delivery_id: str
    intake: bool
    jobs: list[str]
    steps: list[Step]


def retry_delivery(session: Session, delivery_id: str) -> Retried:
    """Retry what failed of a delivery. A FAILED delivery whose verified payload is kept goes back
    to ACCEPTED, to be run by its intake again (it keeps the product it took, so unless a newer
    update was taken meanwhile it makes its jobs now); otherwise the failed completion callbacks
    of its jobs are owed again (Job.callback_due_at, so the sweeper sends them if the message is
    lost). Both are conditional UPDATEs: two retries at once set it going once (the other gets 409).

    Raises NoSuchDelivery (404), Conflict (409, with the reason: a rejected or duplicate delivery,
    one still being processed, one whose payload was not kept, one where nothing failed)."""
    document = delivery_document(session, delivery_id)
    delivery = session.get_one(Delivery, delivery_id)
    if not document["retryable"]:
        raise Conflict(document["retry"])
    now = utcnow()
    if delivery.status == DeliveryStatus.FAILED:
        changed = session.execute(
            update(Delivery).where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.FAILED,
                                   Delivery.payload.is_not(None))
            .values(status=DeliveryStatus.ACCEPTED, started_at=None, updated_at=now,
                    reason=f"retried; it had failed: {delivery.reason or 'no reason recorded'}"[:2000])
            .execution_options(synchronize_session=False))
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"delivery {delivery_id} changed meanwhile (another retry?): reload and look again")
        return Retried(delivery_id, True, [], [])
    owed = []
    for job in (j["id"] for j in document["jobs"] if j["callback"] == "failed"):
        changed = session.execute(
            update(Job).where(Job.id == job, Job.callback_due_at.is_(None), Job.status.in_(JOB_FINAL),
                              Job.callback_url.is_not(None))
            .values(callback_due_at=now).execution_options(synchronize_session=False))
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            owed.append(job)
    if not owed:
        raise Conflict(f"the callbacks of delivery {delivery_id} are being sent already (another retry?)")
    return Retried(delivery_id, False, owed, [Step("callback", job_id) for job_id in owed])
