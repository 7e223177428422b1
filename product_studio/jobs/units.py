"""The task runner: the stage plan (pipeline/plan.py) run one unit at a time, outputs in the blob
store and state in the database. Celery tasks (tasks/pipeline.py) call these with ids.

Every unit is idempotent: outputs are content-addressed by the plan's keys, written atomically,
and recorded by conditional updates, so a redelivered or duplicated task finds its work already
there. A variant is rendered under a lease (db.claim_variant) that a thread renews while the render
runs, so a duplicated message never renders it a second time beside a live worker. Each returns
the Steps to take next; it enqueues nothing itself.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import select

from .. import content_types, runtime
from ..config import Settings, get_settings
from ..db import (
    claim_variant,
    fail_asset,
    fail_variant,
    finish_variant,
    held,
    maybe_finish_job,
    release_variant,
    renew_lease,
    update_stage,
)
from ..models import STAGE_FINAL, Asset, StageStatus, Variant
from ..pipeline.check import check_bytes
from ..pipeline.confidence import CutoutQuality
from ..pipeline.export import decode_png, encode, encode_png
from ..pipeline.ingest import load_bytes
from ..pipeline.layout import place
from ..pipeline.plan import (
    control_key,
    cutout_key,
    generator_inputs,
    make_control,
    make_cutout,
    plan_photo,
    quality_key,
    render_variant,
    variant_key,
)
from ..presets import Target, get_target
from . import masks
from .steps import Step, callback



def fetch_source(asset_id: str, settings: Settings) -> None:
    """A photo recorded from a URL and not fetched yet (jobs/from_urls.py): fetch it, check that it
    decodes, store it and record its digest and size. Raises BadInput (a refused address, not an
    image, too big, does not decode: the photo fails with that reason) or TransientError (retried)."""
    from ..content_keys import content_key
    from ..fetch import fetch_image

    db, blobs = runtime.database(settings), runtime.store(settings)
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None or asset.source_key or not asset.source_url:
            return
        url, name = asset.source_url, asset.name
    fetched = fetch_image(url, settings)
    source = load_bytes(fetched.data, name, settings)
    key = content_key("sources", source.format.lower(), fetched.data)
    if not blobs.exists(key):
        blobs.put(key, fetched.data)
    with db.session() as s:
        asset = s.get_one(Asset, asset_id)
        if not asset.source_key:  # a duplicated message may have recorded the same bytes already
            asset.sha256, asset.source_key, asset.width, asset.height = source.sha256, key, source.width, source.height


def run_cutout(asset_id: str, settings: Settings | None = None) -> list[Step]:
    """Cut out an asset's source photo (or find it done): store the RGBA PNG and its quality
    document, and record the confidence and, below settings.cutout_review_below, why it needs
    review. The photo's chosen mask (jobs/masks.py), when an admin saved one, replaces the
    models. Next: its control images."""
    settings = settings or get_settings()
    db, blobs = runtime.database(settings), runtime.store(settings)
    fetch_source(asset_id, settings)
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:  # a message from another deployment sharing the broker, or a deleted job
            return []
        if asset.cutout_status == StageStatus.DONE and asset.cutout_key and blobs.exists(asset.cutout_key):
            return [Step("edges", asset_id)]
        source_key, sha, name, store = asset.source_key, asset.sha256, asset.name, asset.job.store
        mask = masks.chosen(s, store, sha)
        mask_version, mask_key = (mask.version, mask.key) if mask is not None and mask.key != masks.MODELS else (None, None)
        update_stage(s, asset_id, "cutout", StageStatus.RUNNING)
    t0 = time.perf_counter()
    key = cutout_key(sha, settings, mask_key)
    qkey = quality_key(key)
    if blobs.exists(key) and blobs.exists(qkey):
        quality = CutoutQuality.from_dict(json.loads(blobs.get(qkey)))
    else:
        source = load_bytes(blobs.get(source_key), name, settings)
        alpha = masks.decode_mask(blobs.get(mask_key), source.width, source.height) if mask_key else None
        cut = make_cutout(source.rgb, source.alpha, settings, mask=alpha)
        quality = cut.quality
        blobs.put(qkey, json.dumps(quality.as_dict()).encode(), "application/json")
        blobs.put(key, encode_png(cut.rgba), content_types.PNG)  # last: its presence means both are stored
    with db.session() as s:
        now = masks.chosen(s, store, sha)
        if (now.key if now is not None and now.key != masks.MODELS else None) != mask_key:
            # A mask was saved (or restored) while this ran, which reopened the asset and queued
            # its own cut-out: that one records the photo's cut-out, not this stale one.
            return []
        asset = update_stage(s, asset_id, "cutout", StageStatus.DONE, key=key, seconds=time.perf_counter() - t0)
        asset.cutout_confidence = quality.score
        asset.review_reason = quality.review_reason(settings.cutout_review_below)
        asset.mask_version = mask_version
    return [Step("edges", asset_id)]


def _stored_control(cut: str, target: Target, name: str, settings: Settings, cutout_png: bytes | None = None) -> str:
    """The key of the control image for the cut-out `cut` on target's canvas with the configured
    detector: found in the store, or made (from `cutout_png` when the caller has it) and stored."""
    blobs = runtime.store(settings)
    key = control_key(cut, target, settings.edge_detector)
    if not blobs.exists(key):
        cutout = decode_png(cutout_png if cutout_png is not None else blobs.get(cut))
        blobs.put(key, encode_png(make_control(cutout, target, None, settings, name)), content_types.PNG)
    return key


def run_edges(asset_id: str, settings: Settings | None = None) -> list[Step]:
    """Store the asset's control images, one per layout canvas its variants need (the plan's
    control target's is recorded on the asset); next: its unsettled variants."""
    settings = settings or get_settings()
    db, blobs = runtime.database(settings), runtime.store(settings)
    with db.session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None or asset.cutout_status != StageStatus.DONE or not asset.cutout_key:
            return []  # an old message after a mask was saved: the new cut-out chains its own steps
        job = asset.job
        cut, name = asset.cutout_key, asset.name
        pending = [(v.id, v.target, v.scene) for v in asset.variants if v.status not in STAGE_FINAL]
        plan = plan_photo(job.params["targets"], job.params.get("scene") or None, settings)
        done = asset.edges_status == StageStatus.DONE and asset.control_key and blobs.exists(asset.control_key)
    if not done:
        t0 = time.perf_counter()
        cutout_png = blobs.get(cut)
        keys = {t.name: _stored_control(cut, t, name, settings, cutout_png) for t in plan.control_targets()}
        with db.session() as s:
            update_stage(s, asset_id, "edges", StageStatus.DONE, key=keys[plan.control_target.name],
                         seconds=time.perf_counter() - t0)
    return [variant_step(vid, target_name, scene, settings) for vid, target_name, scene in pending]


def variant_step(variant_id: str, target: str, scene: str, settings: Settings | None = None) -> Step:
    """The Step that renders a variant of `target` in `scene` ("" = the target's default): on a GPU
    worker when a model paints it. Raises UnknownName for a target or scene that is not known."""
    settings = settings or get_settings()
    return Step("variant", variant_id, plan_photo([get_target(target)], scene or None, settings).targets[0].generative)


def run_variant(variant_id: str, settings: Settings | None = None) -> list[Step]:
    """Render, export, check and store one variant; next: the job's completion callback, when
    this variant finished the job (exactly one caller gets it).

    The variant is claimed under a lease of settings.requeue_after seconds, renewed while it
    renders; nothing is done (no Steps) when it is settled or another worker holds a live lease.
    Errors propagate after the claim is given back (the caller retries or records the failure)."""
    settings = settings or get_settings()
    db = runtime.database(settings)
    with db.session() as s:
        cut = s.scalar(select(Asset.cutout_key).join(Variant).where(
            Variant.id == variant_id, Asset.cutout_status == StageStatus.DONE))
        if not cut:  # an old message after a mask was saved: the new cut-out chains to this variant
            return []
        variant = claim_variant(s, variant_id, lease=settings.requeue_after)
        if variant is None:
            return []  # settled by an earlier delivery, or being rendered under another's live lease
        attempt = variant.attempts
    lease = settings.requeue_after
    with held(db, f"variant {variant_id}", lambda s: renew_lease(s, variant_id, attempt, lease=lease),
              lambda s: release_variant(s, variant_id, attempt), lease):
        return _render_variant(variant_id, settings)


def _render_variant(variant_id: str, settings: Settings) -> list[Step]:
    db, blobs = runtime.database(settings), runtime.store(settings)
    with db.session() as s:
        variant = s.get_one(Variant, variant_id)
        asset = variant.asset
        target_name, scene, seed = variant.target, variant.scene, variant.seed
        cut, name, title, category = asset.cutout_key, asset.name, asset.title, asset.category
    t0 = time.perf_counter()
    target = get_target(target_name)
    p = plan_photo([target], scene or None, settings).targets[0]
    key = variant_key(cut, target, p.preset, seed, generator_inputs(target, p.preset, title, category, settings))
    ctype = content_types.for_extension(target.extension)
    cutout = decode_png(blobs.get(cut))
    if blobs.exists(key):  # a redelivery after the write but before the record
        data = blobs.get(key)
        placement = place(cutout, target, name)
    else:
        control = None
        if p.generative:  # the control stage's image for this canvas (made here for a regenerate)
            control = decode_png(blobs.get(_stored_control(cut, target, name, settings)))
        rendered = render_variant(cutout, target, p.preset, seed, name=name, control=control, title=title,
                                  category=category, settings=settings)
        data = encode(rendered.pixels, target, ai_generated=rendered.ai_generated)
        placement = rendered.placement
        blobs.put(key, data, ctype)
    report = check_bytes(data, target, f"{name}/{target.name}", placement.canvas_alpha, placement.scale)
    with db.session() as s:
        done = finish_variant(s, variant_id, key=key, content_type=ctype, bytes=len(data), width=target.width,
                              height=target.height, check_ok=report.ok, check_summary=report.summary(),
                              check_warnings=report.warnings_line(), ai_generated=p.generative,
                              seconds=time.perf_counter() - t0)
        job = maybe_finish_job(s, done.asset.job_id) if done else None
        return callback(job.id if job is not None else None)


def fail(item_id: str, error: str, *, stage: str = "variant", settings: Settings | None = None) -> list[Step]:
    """Record a failure for good (bad input, retries exhausted) of a variant, or of an asset's
    "cutout" / "edges" stage (which fails its variants); next: the completion callback if that
    finished the job."""
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
        return callback(job.id if job is not None else None)
