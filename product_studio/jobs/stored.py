"""Uploads stored as they arrive: the door checks each photo's type and header (a non-image is
refused at once), stores its bytes and keeps only what the header says, so the web process never
decodes a photo nor holds more than one upload; the cut-out task decodes it, and a photo whose
data is corrupt past its header fails there with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from .. import runtime
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..db import AssetSpec, create_job
from ..naming import unique_names
from ..pipeline.ingest import probe_bytes
from ..pipeline.plan import plan_photo
from .steps import cutouts
from .submit import Submission


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
    """Record a job of stored uploads as jobs.submit records one of bytes (the same fingerprint:
    the same photos and parameters find the same job through either). Raises UnknownName (target,
    scene), BadInput (a callback to a refused address)."""
    settings = settings or get_settings()
    plan_photo(targets, scene, settings)
    if callback_url:
        from ..fetch import check_url

        check_url(callback_url, settings)
    specs = [AssetSpec(name=name, filename=u.filename, sha256=u.sha256, source_key=u.source_key, width=u.width,
                       height=u.height, title=u.title, category=u.category)
             for u, name in zip(uploads, unique_names([u.name for u in uploads]), strict=True)]
    params = {"targets": list(dict.fromkeys(targets)), "scene": scene or "", "seed": int(seed)}
    if any(u.title or u.category for u in uploads):
        params["labels"] = [[u.title or "", u.category or ""] for u in uploads]
    with runtime.database(settings).session() as s:
        job, created = create_job(s, origin=origin, params=params, assets=specs, store=None,
                                  callback_url=callback_url)
        asset_ids = [a.id for a in job.assets]
    return Submission(job, created, cutouts(asset_ids) if created else [])
