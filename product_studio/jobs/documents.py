"""What the JSON API and completion callbacks say about a job and its variants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import object_session

from .. import runtime
from ..config import Settings
from ..models import Job, Publication, StageStatus, Variant


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
        "progress": progress, "approved": sum(bool(v.approved) for v in variants),
        "assets": [{"id": a.id, "name": a.name, "filename": a.filename, "title": a.title, "category": a.category,
                    "width": a.width, "height": a.height, "sha256": a.sha256, "confidence": a.cutout_confidence,
                    "needs_review": None if a.cutout_confidence is None else a.review_reason is not None, "review_reason": a.review_reason,
                    "mask_version": a.mask_version,
                    "variants": [variant_document(v, settings, publications) for v in a.variants]}
                   for a in job.assets],
    }
