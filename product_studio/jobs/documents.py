"""What the JSON API and completion callbacks say about a job and its variants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import object_session

from .. import runtime
from ..config import Settings
from ..models import JOB_FINAL, Job, Publication, StageStatus, Variant
from ..redact import redact, redact_url


def publication_document(p: Publication) -> dict:
    """Where a variant went: the store product, its state (queued, running, published, failed,
    replaced), the image on the platform and the product's page in the store's admin, or why not."""
    return {"id": p.id, "platform": p.platform, "store": p.store, "product_id": p.product_id, "status": p.status,
            "role": p.role, "image_id": p.remote_id, "image_url": p.remote_url, "admin_url": p.admin_url,
            "error": p.error, "published_at": p.published_at.isoformat() if p.published_at else None}


def _publications(session, where) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    if session is None:
        return out
    for p in session.scalars(select(Publication).where(where).order_by(Publication.created_at)):
        out.setdefault(p.variant_id, []).append(publication_document(p))
    return out


def variant_document(v: Variant, settings: Settings, publications: dict[str, list[dict]] | None = None) -> dict:
    """One variant, with a signed download link that expires after settings.download_url_expires s,
    and its publications (read from its session unless given, by variant id)."""
    if publications is None:
        publications = _publications(object_session(v), Publication.variant_id == v.id)
    return {
        "id": v.id, "target": v.target, "scene": v.scene, "seed": v.seed, "status": v.status,
        "check": v.check_summary, "warnings": v.check_warnings, "ai_generated": v.ai_generated, "approved": v.approved, "error": v.error,
        "url": runtime.store(settings).url(v.key, settings.download_url_expires) if v.key else None,
        "publications": publications.get(v.id, []),
    }


def callback_state(job: Job) -> str:
    """Where a job's completion callback stands: "none" (no callback_url), "waiting" (the job is
    not finished), "sending" (owed: an attempt or a retry is under way or due), "delivered" (the
    last attempt got a 2xx), "failed" (the last attempt failed and no more are coming: it can be
    retried from the Deliveries page or API), or "not sent" (settled without an attempt)."""
    if not job.callback_url:
        return "none"
    if job.status not in JOB_FINAL:
        return "waiting"
    if job.callback_due_at is not None:
        return "sending"
    if not job.callbacks:
        return "not sent"
    return "delivered" if job.callbacks[-1].ok else "failed"


def callback_document(job: Job) -> dict:
    """A job's completion callback as the API, the Deliveries views and the callback itself show
    it: callback_url, callback (callback_state) and callbacks (every attempt, oldest first: url,
    attempt, at, status_code, error, ok), credentials masked."""
    return {"callback_url": redact_url(job.callback_url) if job.callback_url else None,
            "callback": callback_state(job),
            "callbacks": [{"url": redact_url(a.url), "attempt": a.attempt, "at": a.at.isoformat(timespec="seconds"),
                           "status_code": a.status_code, "error": redact(a.error) if a.error else None, "ok": a.ok}
                          for a in job.callbacks]}


def job_document(job: Job, settings: Settings) -> dict:
    """A job with its photos and their variants, each with its publications (the API's JobOut
    schema; also the completion callback's body)."""
    publications = _publications(object_session(job), Publication.job_id == job.id)
    variants = [v for a in job.assets for v in a.variants]
    progress = {s.value: sum(v.status == s for v in variants) for s in StageStatus} | {"total": len(variants)}
    return {
        "id": job.id, "status": job.status, "origin": job.origin, "store": job.store, "error": job.error,
        "created_at": job.created_at.isoformat(), "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "params": {"targets": job.params.get("targets", []), "scene": job.params.get("scene") or None,
                   "seed": job.params.get("seed", 0)},
        "progress": progress, "approved": sum(bool(v.approved) for v in variants), **callback_document(job),
        "assets": [{"id": a.id, "name": a.name, "filename": a.filename, "title": a.title, "category": a.category,
                    "width": a.width, "height": a.height, "sha256": a.sha256, "confidence": a.cutout_confidence,
                    "needs_review": None if a.cutout_confidence is None else a.review_reason is not None, "review_reason": a.review_reason,
                    "mask_version": a.mask_version,
                    "variants": [variant_document(v, settings, publications) for v in a.variants]}
                   for a in job.assets],
    }
