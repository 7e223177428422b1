"""The job service: record a job, and the units of work its tasks run.

Doors call `submit`; Celery tasks (tasks/pipeline.py) call the `run_*` functions with ids and
decide only retries and what to enqueue next. Every unit is idempotent: outputs are
content-addressed, written atomically, and recorded by conditional updates, so a redelivered
or duplicated task finds its work already there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta

import cv2
import numpy as np
from sqlalchemy import select, update

from . import runtime
from .config import Settings, get_settings
from .db import AssetSpec, create_job, fail_asset, finish_variant, log_callback, maybe_finish_job, update_stage
from .errors import BadInput, ProductStudioError
from .models import JOB_FINAL, STAGE_FINAL, Asset, Job, StageStatus, Variant, utcnow
from .pipeline.check import check_bytes
from .pipeline.cutout import cut_out
from .pipeline.edges import control_image
from .pipeline.export import encode, encode_png
from .pipeline.ingest import load_bytes
from .pipeline.layout import place
from .pipeline.process import render_variant
from .presets import Target, get_target
from .scenes import ScenePreset, get_scene
from .storage import content_key

# Bump when a stage's output for the same inputs changes: new keys, so old outputs are not reused.
CUTOUT_VERSION = "cutout-1"
RENDER_VERSION = "render-1"
_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes
    title: str | None = None
    category: str | None = None


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def submit(uploads: list[Upload], *, targets: list[str], scene: str | None = None, seed: int = 0,
           origin: str = "api", store_name: str | None = None, callback_url: str | None = None,
           settings: Settings | None = None, enqueue: bool = True) -> tuple[Job, bool]:
    """Validate and record a job, store its sources, and enqueue it. Returns (job, created):
    the same photos with the same parameters find the existing job instead of redoing it."""
    settings = settings or get_settings()
    for t in targets:
        get_target(t)
    if scene:
        get_scene(scene, settings)
    if callback_url:
        from .fetch import check_url

        check_url(callback_url, settings)
    blobs = runtime.store(settings)
    sources = [load_bytes(u.data, u.filename, settings) for u in uploads]  # all validated before any write
    specs = []
    for upload, source, name in zip(uploads, sources, _unique([s.name for s in sources])):
        key = content_key("sources", source.format.lower(), upload.data)
        if not blobs.exists(key):
            blobs.put(key, upload.data)
        specs.append(AssetSpec(name=name, filename=upload.filename, sha256=source.sha256, source_key=key,
                               width=source.width, height=source.height, title=upload.title,
                               category=upload.category))
    params = {"targets": list(dict.fromkeys(targets)), "scene": scene or "", "seed": int(seed)}
    # Titles and categories shape generated scenes' prompts: another title is another job. Only
    # present when given, so jobs without them keep their fingerprints.
    if any(u.title or u.category for u in uploads):
        params["labels"] = [[u.title or "", u.category or ""] for u in uploads]
    with runtime.database(settings).session() as s:
        job, created = create_job(s, origin=origin, params=params, assets=specs, store=store_name,
                                  callback_url=callback_url)
        asset_ids = [a.id for a in job.assets]
    if created and enqueue:
        from tasks.pipeline import enqueue_assets  # the doors enqueue; the core stays importable without Celery

        enqueue_assets(asset_ids)
    return job, created


def regenerate(variant_id: str, *, seed: int | None = None, scene: str | None = None,
               settings: Settings | None = None, enqueue: bool = True) -> tuple[Variant, bool]:
    """Render a finished variant again with another seed (random unless given) and/or scene.
    Returns (the new variant, created); the same seed and scene again find the existing one."""
    import secrets

    from .db import add_variant

    settings = settings or get_settings()
    if scene:
        get_scene(scene, settings)
    seed = secrets.randbelow(2**32) if seed is None else seed
    if not 0 <= seed < 2**32:
        raise BadInput("a seed is between 0 and 4294967295")
    with runtime.database(settings).session() as s:
        variant, created = add_variant(s, variant_id, seed=seed, scene=scene)
        gpu = _preset(get_target(variant.target), variant.scene, settings).backend == "diffusers"
    if created and enqueue:
        from tasks.pipeline import enqueue_variant

        enqueue_variant(variant.id, gpu=gpu)
    return variant, created


# --- units of work ------------------------------------------------------------------------------

def _decode_png(data: bytes) -> np.ndarray:
    bgra = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)


def run_cutout(asset_id: str, settings: Settings | None = None) -> None:
    """Cut out an asset's source photo (or find it done) and store the RGBA PNG."""
    settings = settings or get_settings()
    db, blobs = runtime.database(settings), runtime.store(settings)
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:  # a message from another deployment sharing the broker, or a deleted job
            return
        if asset.cutout_status == StageStatus.DONE and asset.cutout_key and blobs.exists(asset.cutout_key):
            return
        source_key, sha, name = asset.source_key, asset.sha256, asset.name
        update_stage(s, asset_id, "cutout", StageStatus.RUNNING)
    t0 = time.perf_counter()
    params = {"model": settings.cutout_model, "refine": settings.cutout_refine, "flip": settings.cutout_flip_tta}
    key = content_key("cutouts", "png", sha, params, CUTOUT_VERSION)
    if not blobs.exists(key):
        source = load_bytes(blobs.get(source_key), name, settings)
        blobs.put(key, encode_png(cut_out(source.rgb, source.alpha, settings=settings)), "image/png")
    with db.session() as s:
        update_stage(s, asset_id, "cutout", StageStatus.DONE, key=key, seconds=time.perf_counter() - t0)


def _control_target(targets: list[str]) -> Target:
    ts = [get_target(t) for t in targets]
    return next((t for t in ts if not t.pure_white), ts[0])


def run_edges(asset_id: str, settings: Settings | None = None) -> list[tuple[str, bool]]:
    """Store the asset's control image; returns its unsettled variants as (id, needs a GPU)."""
    settings = settings or get_settings()
    db, blobs = runtime.database(settings), runtime.store(settings)
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            return []
        job = asset.job
        cutout_key = asset.cutout_key
        pending = [(v.id, v.target, v.scene) for v in asset.variants if v.status not in STAGE_FINAL]
        targets = job.params["targets"]
        done = asset.edges_status == StageStatus.DONE and asset.control_key and blobs.exists(asset.control_key)
    if not done:
        t0 = time.perf_counter()
        target = _control_target(targets)
        key = content_key("controls", "png", cutout_key, target.name, settings.edge_detector, RENDER_VERSION)
        if not blobs.exists(key):
            placement = place(_decode_png(blobs.get(cutout_key)), target, asset_id)
            blobs.put(key, encode_png(control_image(placement, settings=settings)), "image/png")
        with db.session() as s:
            update_stage(s, asset_id, "edges", StageStatus.DONE, key=key, seconds=time.perf_counter() - t0)
    return [(vid, _preset(get_target(t), scene, settings).backend == "diffusers") for vid, t, scene in pending]


def _preset(target: Target, scene: str, settings: Settings) -> ScenePreset:
    return get_scene(scene or target.default_scene, settings)


def run_variant(variant_id: str, settings: Settings | None = None) -> str | None:
    """Render, export, check and store one variant. Returns the job id if this finished the job
    (the one caller that should send its completion callback), else None."""
    from .db import claim_variant

    settings = settings or get_settings()
    db, blobs = runtime.database(settings), runtime.store(settings)
    with db.session() as s:
        variant = claim_variant(s, variant_id)
        if variant is None:
            return None  # already settled by an earlier delivery
        asset = variant.asset
        v = (variant.target, variant.scene, variant.seed)
        a = (asset.cutout_key, asset.sha256, asset.name, asset.title, asset.category)
    t0 = time.perf_counter()
    target_name, scene, seed = v
    cutout_key, sha, name, title, category = a
    target = get_target(target_name)
    preset = _preset(target, scene, settings)
    key = content_key("variants", target.extension, cutout_key, target.model_dump_json(), preset.model_dump_json(),
                      str(seed), RENDER_VERSION)
    cutout = _decode_png(blobs.get(cutout_key))
    if blobs.exists(key):  # a redelivery after the write but before the record
        data = blobs.get(key)
        placement = place(cutout, target, name)
        ai = preset.backend == "diffusers" and not target.pure_white
    else:
        rendered = render_variant(cutout, target, preset, seed, name=name, title=title, category=category,
                                  settings=settings)
        data = encode(rendered.pixels, target, ai_generated=rendered.ai_generated)
        placement, ai = rendered.placement, rendered.ai_generated
        blobs.put(key, data, _CONTENT_TYPES[target.extension])
    report = check_bytes(data, target, f"{name}/{target.name}", placement.canvas_alpha)
    with db.session() as s:
        done = finish_variant(s, variant_id, key=key, content_type=_CONTENT_TYPES[target.extension], bytes=len(data),
                              width=target.width, height=target.height, check_ok=report.ok,
                              check_summary=report.summary(), ai_generated=ai, seconds=time.perf_counter() - t0)
        job = maybe_finish_job(s, done.asset.job_id) if done else None
        return job.id if job is not None else None


def fail(item_id: str, error: str, *, stage: str = "variant", settings: Settings | None = None) -> str | None:
    """Record a failure for good (bad input, retries exhausted) of a variant, or of an asset's
    "cutout" / "edges" stage (which fails its variants); returns the job id if that finished the job."""
    from .db import fail_variant

    db = runtime.database(settings or get_settings())
    with db.session() as s:
        if stage == "variant":
            v = fail_variant(s, item_id, error)
            job_id = v.asset.job_id if v else None
        else:
            update_stage(s, item_id, stage, StageStatus.FAILED, error=error)
            fail_asset(s, item_id, error)
            job_id = s.get_one(Asset, item_id).job_id
        job = maybe_finish_job(s, job_id) if job_id else None
        return job.id if job is not None else None


# --- completion callbacks ---------------------------------------------------------------------

def variant_document(v: Variant, settings: Settings) -> dict:
    """What the API and callbacks say about one variant, with a signed, expiring download link."""
    return {
        "id": v.id, "target": v.target, "scene": v.scene, "seed": v.seed, "status": v.status,
        "check": v.check_summary, "ai_generated": v.ai_generated, "approved": v.approved, "error": v.error,
        "url": runtime.store(settings).url(v.key, settings.download_url_expires) if v.key else None,
    }


def job_document(job: Job, settings: Settings) -> dict:
    """What a completion callback (and the API) says about a job."""
    return {
        "id": job.id, "status": job.status, "store": job.store, "error": job.error,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "assets": [{"id": a.id, "name": a.name, "sha256": a.sha256,
                    "variants": [variant_document(v, settings) for v in a.variants]} for a in job.assets],
    }


def deliver_callback(job_id: str, attempt: int, settings: Settings | None = None) -> bool:
    """POST the signed completion document to the job's callback URL; log the attempt.
    True when delivered (2xx), False when it should be retried."""
    import httpx

    from .callbacks import HEADER, sign

    settings = settings or get_settings()
    db = runtime.database(settings)
    with db.session() as s:
        job = s.get_one(Job, job_id)
        url = job.callback_url
        if not url or job.status not in JOB_FINAL:
            return True
        body = json.dumps({"event": "job.finished", "job": job_document(job, settings)}).encode()
    from .fetch import check_url

    status, error = None, None
    try:
        check_url(url, settings)  # again: the name may resolve elsewhere by now
    except BadInput as exc:
        with db.session() as s:
            log_callback(s, job_id, url=url, attempt=attempt, error=f"refused: {exc}")
        return True  # settled: retrying cannot make the address acceptable
    try:
        r = httpx.post(url, content=body, timeout=10, headers={
            "Content-Type": "application/json", HEADER: sign(settings.secret("callback"), body)})
        status = r.status_code
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    with db.session() as s:
        log_callback(s, job_id, url=url, attempt=attempt, status_code=status, error=error)
    return status is not None and 200 <= status < 300


# --- recovery -----------------------------------------------------------------------------------

def stale_assets(older_than: float, settings: Settings | None = None) -> list[str]:
    """Assets with unsettled variants untouched for `older_than` seconds: their messages were lost
    (a killed worker, a broker restarted without persistence). Each is claimed by bumping its
    variants' updated_at, so concurrent sweepers do not both re-enqueue it."""
    db = runtime.database(settings or get_settings())
    cutoff = utcnow() - timedelta(seconds=older_than)
    with db.session() as s:
        rows = s.execute(select(Variant.asset_id, Variant.id, Variant.updated_at)
                         .where(Variant.status.not_in(STAGE_FINAL), Variant.updated_at < cutoff)).all()
        claimed = set()
        for asset_id, vid, seen in rows:
            bumped = s.execute(update(Variant).where(Variant.id == vid, Variant.updated_at == seen)
                               .values(updated_at=utcnow()).execution_options(synchronize_session=False))
            if bumped.rowcount == 1:
                claimed.add(asset_id)
        return sorted(claimed)


def is_permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix: record them as failed at once."""
    return isinstance(exc, ProductStudioError) and not exc.retryable

