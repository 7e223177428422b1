"""Uploads stored as they arrive: the door checks each photo's type and header (a non-image is
refused at once), stores its bytes and keeps only what the header says, so the web process never
decodes a photo nor holds more than one upload; the cut-out task decodes it, and a photo whose
data is corrupt past its header fails there with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from .. import runtime
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..db import AssetSpec
from ..pipeline.ingest import probe_bytes
from .submit import Submission, check_request, record


@dataclass(frozen=True)
class StoredUpload:
    filename: str  # for display only
    name: str  # output stem
    sha256: str
    source_key: str
    width: int
    height: int
    title: str | None = None
    category: str | None = None


def store_upload(data: bytes, filename: str, *, title: str | None = None, category: str | None = None,
                 settings: Settings | None = None) -> StoredUpload:
    """Check one upload's type and header (BadInput at once) and store its bytes."""
    settings = settings or get_settings()
    probe = probe_bytes(data, filename, settings)
    key = content_key("sources", probe.format.lower(), data)
    blobs = runtime.store(settings)
    if not blobs.exists(key):
        blobs.put(key, data)
    return StoredUpload(filename, probe.name, probe.sha256, key, probe.width, probe.height, title, category)


def submit_stored(uploads: list[StoredUpload], *, targets: list[str], scene: str | None = None, seed: int = 0,
                  origin: str = "api", callback_url: str | None = None,
                  settings: Settings | None = None) -> Submission:
    """Record a job of stored uploads as jobs.submit records one of bytes (jobs.submit.record: the
    same fingerprint, so the same photos and parameters find the same job through either). Raises
    UnknownName (target, scene), BadInput (a callback to a refused address)."""
    settings = settings or get_settings()
    check_request(targets, scene, callback_url, settings=settings)
    specs = [AssetSpec(name=u.name, filename=u.filename, sha256=u.sha256, source_key=u.source_key, width=u.width,
                       height=u.height, title=u.title, category=u.category) for u in uploads]
    return record(specs, [(u.title, u.category) for u in uploads], targets=targets, scene=scene, seed=seed,
                  origin=origin, store_name=None, callback_url=callback_url, settings=settings)
