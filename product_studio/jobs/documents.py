"""What the JSON API and completion callbacks say about a job and its variants."""

from __future__ import annotations

from .. import runtime
from ..config import Settings
from ..models import Job, Variant


def variant_document(v: Variant, settings: Settings) -> dict:
    """One variant, with a signed download link that expires after settings.download_url_expires s."""
    return {
        "id": v.id, "target": v.target, "scene": v.scene, "seed": v.seed, "status": v.status,
        "check": v.check_summary, "warnings": v.check_warnings, "ai_generated": v.ai_generated, "approved": v.approved, "error": v.error,
        "url": runtime.store(settings).url(v.key, settings.download_url_expires) if v.key else None,
    }


def job_document(job: Job, settings: Settings) -> dict:
    """A job with its photos and their variants (the API's JobOut schema)."""
    return {
        "id": job.id, "status": job.status, "store": job.store, "error": job.error,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "assets": [{"id": a.id, "name": a.name, "sha256": a.sha256, "confidence": a.cutout_confidence,
                    "needs_review": None if a.cutout_confidence is None else a.review_reason is not None, "review_reason": a.review_reason,
                    "mask_version": a.mask_version,
                    "variants": [variant_document(v, settings) for v in a.variants]} for a in job.assets],
    }
