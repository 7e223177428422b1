"""A job from image URLs, recorded before anything is fetched: the door answers 202 at once and
each photo's cut-out task fetches its URL first (units.fetch_source). A URL that cannot be fetched
fails its photo (and its variants, with the reason) like a photo that does not decode."""

from __future__ import annotations

from ..config import Settings, get_settings
from ..db import AssetSpec
from ..naming import safe_stem
from .submit import Submission, check_request, record


def submit_urls(urls: list[str], *, targets: list[str], scene: str | None = None, seed: int = 0,
                title: str | None = None, category: str | None = None, origin: str = "api",
                callback_url: str | None = None, settings: Settings | None = None) -> Submission:
    """Validate and record a job whose photos are `urls`, not fetched yet (jobs.submit.record);
    its steps are each photo's cut-out (which fetches it). The same URLs and parameters find the
    existing job. Raises UnknownName (target, scene), BadInput (a callback to a refused address)."""
    settings = settings or get_settings()
    check_request(targets, scene, callback_url, settings=settings)
    specs = [AssetSpec(name=safe_stem(url, "image"), filename=url.rsplit("/", 1)[-1] or "image", sha256="",
                       source_key="", width=0, height=0, title=title, category=category, source_url=url)
             for url in urls]
    return record(specs, [(title, category)] * len(urls), targets=targets, scene=scene, seed=seed, origin=origin,
                  store_name=None, callback_url=callback_url, settings=settings)
