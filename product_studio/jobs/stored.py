"""Uploads stored as they arrive: the door checks each photo's type and header (a non-image is
refused at once), stores its bytes and keeps only what the header says, so the web process never
decodes a photo nor holds more than one upload; the cut-out task decodes it, and a photo whose
data is corrupt past its header fails there with the reason."""

from __future__ import annotations

from .. import runtime
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..db import AssetSpec
from ..pipeline.ingest import probe_bytes
from .submit import Submission, check_request, record

# An upload stored as it arrived is already what create_job records: its asset's description.
StoredUpload = AssetSpec


def store_upload(data: bytes, filename: str, *, title: str | None = None, category: str | None = None,
                 settings: Settings | None = None) -> StoredUpload:
    """Check one upload's type and header (BadInput at once) and store its bytes."""
    settings = settings or get_settings()
    probe = probe_bytes(data, filename, settings)
    key = content_key("sources", probe.format.lower(), data)
    blobs = runtime.store(settings)
    if not blobs.exists(key):
        blobs.put(key, data)
    return StoredUpload(name=probe.name, filename=filename, sha256=probe.sha256, source_key=key, width=probe.width,
                        height=probe.height, title=title, category=category)


def submit_stored(uploads: list[StoredUpload], *, targets: list[str], scene: str | None = None, seed: int = 0,
                  origin: str = "api", callback_url: str | None = None,
                  settings: Settings | None = None) -> Submission:
    """Record a job of stored uploads as jobs.submit records one of bytes (jobs.submit.record: the
    same fingerprint, so the same photos and parameters find the same job through either). Raises
    UnknownName (target, scene), BadInput (a callback to a refused address)."""
    settings = settings or get_settings()
    check_request(targets, scene, callback_url, settings=settings)
    return record(list(uploads), [(u.title, u.category) for u in uploads], targets=targets, scene=scene, seed=seed,
                  origin=origin, store_name=None, callback_url=callback_url, settings=settings)
