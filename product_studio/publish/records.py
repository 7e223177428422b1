"""The publications and job_products tables: the database operations of publishing.

Like db.py: every function takes a session and leaves committing to the caller; duplicates are
refused by unique constraints (never by a read alone); once-only changes are conditional UPDATEs
whose row count says who made them. A publication is QUEUED when recorded, RUNNING under a lease
while a worker publishes it (the worker renews the lease; only an expired one is taken over),
then PUBLISHED or FAILED; REPLACED once a later render of the same photo and target took its
place on the product.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import (
    PUBLICATION_FINAL,
    Asset,
    JobProduct,
    Publication,
    PublicationStatus,
    Variant,
    utcnow,
)


def _updated(session: Session, stmt: Any) -> int:
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]


def link_job(session: Session, job_id: str, platform: str, store: str, product_id: str) -> None:
    """Record that job `job_id` was made for this store product (once; a repeat changes nothing)."""
    exists = session.scalar(select(JobProduct.id).where(
        JobProduct.job_id == job_id, JobProduct.platform == platform, JobProduct.store == store,
        JobProduct.product_id == product_id))
    if exists:
        return
    try:
        with session.begin_nested():
            session.add(JobProduct(job_id=job_id, platform=platform, store=store, product_id=product_id))
    except IntegrityError:  # the same link recorded at the same moment by another run
        pass


def products_of(session: Session, job_id: str) -> list[JobProduct]:
    """The store products a job was made for, oldest link first."""
    return list(session.scalars(select(JobProduct).where(JobProduct.job_id == job_id)
                                .order_by(JobProduct.created_at)))


def find(session: Session, variant_id: str, platform: str, store: str, product_id: str) -> Publication | None:
    return session.scalar(select(Publication).where(
        Publication.variant_id == variant_id, Publication.platform == platform, Publication.store == store,
        Publication.product_id == product_id).execution_options(populate_existing=True))


def record(session: Session, *, variant: Variant, job_id: str, platform: str, store: str, product_id: str,
           role: str, mark: str, replaces: str | None) -> tuple[Publication, bool]:
    """Record a publication as QUEUED before it is attempted: (it, True), or (the one recorded
    already, False) when the variant is recorded for this product (race-safe)."""
    row = Publication(variant_id=variant.id, job_id=job_id, platform=platform, store=store, product_id=product_id,
                      status=PublicationStatus.QUEUED, role=role, variant_key=variant.key, mark=mark,
                      replaces=replaces)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        found = find(session, variant.id, platform, store, product_id)
        if found is None:
            raise
        return found, False
    return row, True


def requeue(session: Session, publication_id: str, *, variant_key: str | None, mark: str,
            replaces: str | None, role: str) -> bool:
    """Queue a settled publication again: a failed one retried, or a published one whose variant
    was rendered again (its new render replacing the old image). False when it is queued or
    running already (nothing to do: it is on its way)."""
    return _updated(session, update(Publication).where(
        Publication.id == publication_id, Publication.status.in_(PUBLICATION_FINAL))
        .values(status=PublicationStatus.QUEUED, variant_key=variant_key, mark=mark, replaces=replaces, role=role,
                error=None, lease_until=None, updated_at=utcnow())) == 1  # attempts go on: the claims' tokens


def _lease_expired(now: datetime) -> Any:
    return or_(Publication.lease_until.is_(None), Publication.lease_until < now)


def claim(session: Session, publication_id: str, *, lease: float) -> Publication | None:
    """Take a queued publication (or a running one whose lease expired: its worker died) for
    `lease` seconds; counts the attempt, whose number is the claim's token. None, changing
    nothing, when it is settled, unknown, or held under a live lease."""
    now = utcnow()
    changed = _updated(session, update(Publication).where(
        Publication.id == publication_id,
        or_(Publication.status == PublicationStatus.QUEUED,
            and_(Publication.status == PublicationStatus.RUNNING, _lease_expired(now))))
        .values(status=PublicationStatus.RUNNING, attempts=Publication.attempts + 1,
                lease_until=now + timedelta(seconds=lease), updated_at=now))
    return session.get(Publication, publication_id, populate_existing=True) if changed == 1 else None


def renew(session: Session, publication_id: str, attempt: int, *, lease: float) -> bool:
    """Extend claim number `attempt`'s lease; False when that claim no longer holds it."""
    return _updated(session, update(Publication).where(
        Publication.id == publication_id, Publication.status == PublicationStatus.RUNNING,
        Publication.attempts == attempt).values(lease_until=utcnow() + timedelta(seconds=lease))) == 1


def release(session: Session, publication_id: str, attempt: int) -> bool:
    """Give claim number `attempt` back (its task retries later): queued again."""
    return _updated(session, update(Publication).where(
        Publication.id == publication_id, Publication.status == PublicationStatus.RUNNING,
        Publication.attempts == attempt).values(status=PublicationStatus.QUEUED, lease_until=None,
                                                updated_at=utcnow())) == 1


def set_replaces(session: Session, publication_id: str, attempt: int, remote_id: str) -> bool:
    """Remember, before attaching, which image a main image replaces (claim `attempt` only)."""
    return _updated(session, update(Publication).where(
        Publication.id == publication_id, Publication.attempts == attempt, Publication.replaces.is_(None))
        .values(replaces=remote_id)) == 1


def settle_published(session: Session, publication_id: str, *, remote_id: str, remote_url: str | None,
                     admin_url: str | None) -> bool:
    """PUBLISHED, once: False when it was settled already (a duplicate finishing second). The
    publications it replaces (earlier renders of the same photo and target on this product) are
    marked REPLACED in the same transaction."""
    now = utcnow()
    done = _updated(session, update(Publication).where(
        Publication.id == publication_id, Publication.status.not_in(PUBLICATION_FINAL))
        .values(status=PublicationStatus.PUBLISHED, remote_id=remote_id, remote_url=remote_url,
                admin_url=admin_url, error=None, lease_until=None, published_at=now, updated_at=now)) == 1
    if done:
        pub = session.get_one(Publication, publication_id, populate_existing=True)
        for other in siblings(session, pub.variant_id, pub.platform, pub.store, pub.product_id):
            _updated(session, update(Publication).where(
                Publication.id == other.id, Publication.status == PublicationStatus.PUBLISHED)
                .values(status=PublicationStatus.REPLACED, updated_at=now))
    return done


def settle_failed(session: Session, publication_id: str, error: str) -> bool:
    """FAILED with the reason, once: False when it was settled already."""
    return _updated(session, update(Publication).where(
        Publication.id == publication_id, Publication.status.not_in(PUBLICATION_FINAL))
        .values(status=PublicationStatus.FAILED, error=error[:2000], lease_until=None, updated_at=utcnow())) == 1


def siblings(session: Session, variant_id: str, platform: str, store: str, product_id: str) -> list[Publication]:
    """Other publications on the same product of the same photo and target (other renders: a new
    seed is another variant row), oldest first."""
    variant = session.get_one(Variant, variant_id)
    same = select(Variant.id).where(Variant.asset_id == variant.asset_id, Variant.target == variant.target,
                                    Variant.id != variant.id)
    return list(session.scalars(select(Publication).where(
        Publication.variant_id.in_(same), Publication.platform == platform, Publication.store == store,
        Publication.product_id == product_id).order_by(Publication.created_at)))


def lost(session: Session, older_than: float, *, now: datetime | None = None) -> list[str]:
    """Publications whose message was lost: QUEUED and untouched for `older_than` seconds, or
    RUNNING under an expired lease (the worker died). Each is taken by bumping updated_at,
    conditional on the value read, so two sweepers do not both enqueue it; returns their ids."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than)
    rows = session.execute(select(Publication.id, Publication.updated_at).where(or_(
        and_(Publication.status == PublicationStatus.QUEUED, Publication.updated_at < cutoff),
        and_(Publication.status == PublicationStatus.RUNNING, Publication.lease_until < now)))).all()
    return [pid for pid, seen in rows if _updated(session, update(Publication).where(
        Publication.id == pid, Publication.updated_at == seen).values(updated_at=now)) == 1]


def of_job(session: Session, job_id: str) -> dict[str, list[Publication]]:
    """A job's publications by variant id."""
    out: dict[str, list[Publication]] = {}
    for pub in session.scalars(select(Publication).where(Publication.job_id == job_id)
                               .order_by(Publication.created_at)):
        out.setdefault(pub.variant_id, []).append(pub)
    return out


def published_ids(session: Session, platform: str, store: str, product_id: str) -> set[str]:
    """The platform ids of every image publishing put on this product (any status that got one)."""
    return {rid for rid in session.scalars(select(Publication.remote_id).where(
        Publication.platform == platform, Publication.store == store, Publication.product_id == product_id,
        Publication.remote_id.is_not(None))) if rid}


def variants_of_job(session: Session, job_id: str) -> Sequence[Variant]:
    """A job's variants in photo order, then creation order."""
    return session.scalars(select(Variant).join(Asset).where(Asset.job_id == job_id)
                           .order_by(Asset.position, Variant.created_at)).all()
