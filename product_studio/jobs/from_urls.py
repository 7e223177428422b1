"""A job from image URLs, recorded before anything is fetched: the door answers 202 at once and
each photo's cut-out task fetches its URL first (units.fetch_source). A URL that cannot be fetched
fails its photo (and its variants, with the reason) like a photo that does not decode."""

from __future__ import annotations

from .. import runtime
from ..config import Settings, get_settings
from ..db import AssetSpec, create_job
from ..fetch import check_url
from ..naming import safe_stem, unique_names
from ..pipeline.plan import plan_photo
from .steps import cutouts
from .submit import Submission


def submit_urls(urls: list[str], *, targets: list[str], scene: str | None = None, seed: int = 0,
                title: str | None = None, category: str | None = None, origin: str = "api",
                callback_url: str | None = None, settings: Settings | None = None) -> Submission:
    """Validate and record a job whose photos are `urls`, not fetched yet; its steps are each
    photo's cut-out (which fetches it). The same URLs and parameters find the existing job.
    Raises UnknownName (target, scene), BadInput (a callback to a refused address)."""
    settings = settings or get_settings()
    plan_photo(targets, scene, settings)
    if callback_url:
        check_url(callback_url, settings)
    names = unique_names([safe_stem(u, "image") for u in urls])
    specs = [AssetSpec(name=name, filename=url.rsplit("/", 1)[-1] or "image", sha256="", source_key="", width=0,
                       height=0, title=title, category=category, source_url=url)
             for url, name in zip(urls, names, strict=True)]
    params = {"targets": list(dict.fromkeys(targets)), "scene": scene or "", "seed": int(seed)}
    if title or category:
        params["labels"] = [[title or "", category or ""] for _ in urls]
    with runtime.database(settings).session() as s:
        job, created = create_job(s, origin=origin, params=params, assets=specs, callback_url=callback_url)
        asset_ids = [a.id for a in job.assets]
    return Submission(job, created, cutouts(asset_ids) if created else [])
