"""Recording work: every door (pages, API, webhook intake, batch --via-celery) submits through here.

Validation happens before anything is written: unknown targets or scenes, callback addresses,
and every photo's bytes. The same photos with the same parameters find the existing job.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field

from .. import runtime
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..db import AssetSpec, add_variant, create_job
from ..errors import BadInput
from ..models import Job, Variant
from ..naming import unique_names
from ..pipeline.ingest import load_bytes
from ..pipeline.plan import is_generative, plan_photo, scene_for
from ..presets import get_target
from ..scenes import get_scene
from .steps import Step, cutouts

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Upload:
    """One photo as a door received it: the filename is for display only."""

    filename: str
    data: bytes
    title: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool  # False: the same photos and parameters found an existing job
    steps: list[Step] = field(default_factory=list)  # for the task layer to enqueue


def check_request(targets: list[str], scene: str | None, callback_url: str | None, *, check_callback: bool = True,
                  settings: Settings) -> None:
    """What every door checks before anything is written: the targets and scene exist, and (when
    `check_callback`) the callback address is allowed and resolves. Raises UnknownName, BadInput."""
    plan_photo(targets, scene, settings)  # unknown targets and scenes fail here
    if callback_url and check_callback:
        from ..fetch import check_url

        check_url(callback_url, settings)


def record(specs: list[AssetSpec], labels: list[tuple[str | None, str | None]], *, targets: list[str],
           scene: str | None, seed: int, origin: str, store_name: str | None, callback_url: str | None,
           settings: Settings) -> Submission:
    """Record a job of photos already described (`specs`, with each photo's (title, category) in
    `labels`): one fingerprint whichever door recorded it, so the same photos and parameters find
    the same job. Its steps are each photo's cut-out (none when an existing job was found)."""
    specs = [dataclasses.replace(spec, name=name) for spec, name in zip(specs, unique_names([s.name for s in specs]))]
    params = {"targets": list(dict.fromkeys(targets)), "scene": scene or "", "seed": int(seed)}
    # Titles and categories shape generated scenes' prompts: another title is another job. Only
    # present when given, so jobs without them keep their fingerprints.
    if any(title or category for title, category in labels):
        params["labels"] = [[title or "", category or ""] for title, category in labels]
    with runtime.database(settings).session() as s:
        job, created = create_job(s, origin=origin, params=params, assets=specs, store=store_name,
                                  callback_url=callback_url)
        asset_ids = [a.id for a in job.assets]
    return Submission(job, created, cutouts(asset_ids) if created else [])


def submit(uploads: list[Upload], *, targets: list[str], scene: str | None = None, seed: int = 0,
           origin: str = "api", store_name: str | None = None, callback_url: str | None = None,
           check_callback: bool = True, settings: Settings | None = None) -> Submission:
    """Validate and record a job and store its sources; its steps are each photo's cut-out.

    `check_callback`: refuse a callback URL whose address is refused or does not resolve, before
    anything is written (the pages and API: the caller typed it and can fix it). Webhook intake
    passes False: the callback is the store's setting, so an address that cannot be reached fails
    only the callback when it is sent (jobs.completion logs the failed attempt), never the work.

    Raises UnknownName (target, scene), BadInput (a photo that does not decode, a callback to a
    refused address when `check_callback`) before anything is written."""
    settings = settings or get_settings()
    check_request(targets, scene, callback_url, check_callback=check_callback, settings=settings)
    blobs = runtime.store(settings)
    sources = [load_bytes(u.data, u.filename, settings) for u in uploads]  # all validated before any write
    specs = []
    for upload, source in zip(uploads, sources):
        key = content_key("sources", source.format.lower(), upload.data)
        if not blobs.exists(key):
            blobs.put(key, upload.data)
        specs.append(AssetSpec(name=source.name, filename=upload.filename, sha256=source.sha256, source_key=key,
                               width=source.width, height=source.height, title=upload.title,
                               category=upload.category))
    return record(specs, [(u.title, u.category) for u in uploads], targets=targets, scene=scene, seed=seed,
                  origin=origin, store_name=store_name, callback_url=callback_url, settings=settings)


def regenerate(variant_id: str, *, seed: int | None = None, scene: str | None = None,
               settings: Settings | None = None) -> tuple[Variant, list[Step]]:
    """Render a finished variant again with another seed (random unless given) and/or scene.
    Returns the new variant and its step; the same seed and scene again find the existing one
    (and no step). Raises UnknownName (scene), BadInput (seed outside 0..2**32-1)."""
    settings = settings or get_settings()
    if scene:
        get_scene(scene, settings)
    seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"a seed is between 0 and {MAX_SEED}")
    with runtime.database(settings).session() as s:
        variant, created = add_variant(s, variant_id, seed=seed, scene=scene)
        target = get_target(variant.target)
        gpu = is_generative(target, scene_for(target, variant.scene, settings))
    return variant, [Step("variant", variant.id, gpu)] if created else []
