"""Retention: what is removed, and when (`product-studio gc`, and the workers' periodic run).

Rows, by age, each kind off unless its setting is set (config.py, "Retention"):
- finished jobs (done, failed, partial) older than `retain_jobs_days`, whose callback is settled
  and none of whose publications is still in flight: the job row and everything under it
  (assets, variants, callback attempts, publications); their blobs go below once unreferenced;
- rejected and duplicate webhook deliveries older than `retain_rejected_deliveries_days`;
- product states (webhook intake's memory of a store product) untouched for
  `retain_product_states_days`.

Blobs, in the folders the pipeline writes (sources, cut-outs, controls, variants, previews;
never `masks/`: a mask version's blob is kept for good, nor any folder this module does not know):
an object no row refers to, written more than `gc_grace` seconds ago, is removed. What rows
refer to: every asset's source, cut-out and its quality document, control images (the recorded
one, and every canvas the job's targets need), every variant's file, every mask version, every
publication's render; for work not finished yet, also the keys the stage plan will give it (a
worker may find such a blob already stored and record it). A preview is kept while the blob it
shows is, unless `retain_previews_days` is set and it is older.

Safety against concurrent workers: a worker stores a blob before it commits the row that names
it, so only blobs older than the grace period are candidates (the store's modification times),
the store is listed *before* the references are read, and the references are read again just
before deleting. Deleting rows uses the same conditions again in its DELETE, so a job reopened
meanwhile (a mask saved) is not removed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from sqlalchemy import and_, delete, exists, func, not_, or_, select

from .. import runtime
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..models import (
    JOB_FINAL,
    PUBLICATION_FINAL,
    STAGE_FINAL,
    Asset,
    Delivery,
    DeliveryStatus,
    Job,
    Mask,
    ProductState,
    Publication,
    Variant,
)
from ..pipeline.plan import control_key, cutout_key, generator_inputs, plan_photo, quality_key, scene_for, variant_key
from ..presets import get_target
from ..storage import BlobInfo
from . import masks

log = logging.getLogger(__name__)

# The folders whose unreferenced blobs are collected (pipeline/plan.py's stages, submit's sources,
# web/media.py's previews). masks/ is not here on purpose: mask versions are kept for good.
COLLECTED = ("sources/", "cutouts/", "controls/", "variants/", "previews/")
PREVIEWS = "previews/"
# The sides web/media.py preview() is asked for: PREVIEW_SIDE (pages) and DISPLAY_SIDE (touch-up).
# tests/test_gc.py checks these against the web door's constants.
PREVIEW_SIDES = (480, 1024)
_CHUNK = 500


def preview_key(key: str, side: int) -> str:
    """The key of the preview web/media.py preview() stores for blob `key` at `side` px."""
    return content_key("previews", "jpg", key, str(side))


@dataclass
class Collected:
    """What a collection removed (or, dry, would remove)."""

    jobs: int = 0
    rejected_deliveries: int = 0
    product_states: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    previews: int = 0
    preview_bytes: int = 0
    kept_young: int = 0  # unreferenced, but written within the grace period
    dry_run: bool = False
    removed_keys: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("removed_keys")
        return d


def _cutoff(days: float | None, now: dt.datetime) -> dt.datetime | None:
    return None if days is None else now - dt.timedelta(days=days)


# --- rows ---------------------------------------------------------------------------------------

def _old_jobs(cutoff: dt.datetime):
    """Conditions of a job old enough to remove: finished before `cutoff`, untouched since, its
    callback settled, no publication in flight."""
    in_flight = exists().where(Publication.job_id == Job.id, Publication.status.not_in(PUBLICATION_FINAL))
    return and_(Job.status.in_(JOB_FINAL), Job.finished_at.is_not(None), Job.finished_at < cutoff,
                Job.updated_at < cutoff, Job.callback_due_at.is_(None), not_(in_flight))


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


def collect_rows(settings: Settings, now: dt.datetime, dry_run: bool, out: Collected) -> None:
    db = runtime.database(settings)
    if (cutoff := _cutoff(settings.retain_jobs_days, now)) is not None:
        with db.session() as s:
            ids = list(s.scalars(select(Job.id).where(_old_jobs(cutoff))))
        for chunk in _chunks(ids):
            if dry_run:
                out.jobs += len(chunk)
                continue
            with db.session() as s:  # the conditions again: a job reopened since is kept
                out.jobs += s.execute(delete(Job).where(Job.id.in_(chunk), _old_jobs(cutoff))
                                      .execution_options(synchronize_session=False)).rowcount
    if (cutoff := _cutoff(settings.retain_rejected_deliveries_days, now)) is not None:
        old = and_(Delivery.status.in_((DeliveryStatus.REJECTED, DeliveryStatus.DUPLICATE)),
                   Delivery.updated_at < cutoff)
        with db.session() as s:
            if dry_run:
                out.rejected_deliveries += s.scalar(select(func.count()).select_from(Delivery).where(old)) or 0
            else:
                out.rejected_deliveries += s.execute(
                    delete(Delivery).where(old).execution_options(synchronize_session=False)).rowcount
    if (cutoff := _cutoff(settings.retain_product_states_days, now)) is not None:
        old = ProductState.updated_at < cutoff
        with db.session() as s:
            if dry_run:
                out.product_states += s.scalar(select(func.count()).select_from(ProductState).where(old)) or 0
            else:
                out.product_states += s.execute(
                    delete(ProductState).where(old).execution_options(synchronize_session=False)).rowcount


# --- references ---------------------------------------------------------------------------------

def _controls(cut: str, targets: Iterable[str], scene: str | None, settings: Settings) -> list[str]:
    """Every control image a job's targets need for the cut-out `cut` (caches, but kept)."""
    try:
        plan = plan_photo(list(targets), scene or None, settings)
    except Exception:  # noqa: BLE001 (a target or scene no longer known: nothing to derive)
        return []
    return [control_key(cut, t, settings.edge_detector) for t in plan.control_targets()]


def _planned(s, asset: Asset, job: Job, settings: Settings) -> Iterator[str]:
    """The keys unfinished work of `asset` will record: a worker may find them already stored."""
    try:
        mask = masks.chosen(s, job.store, asset.sha256)
        mask_key = mask.key if mask is not None and mask.key != masks.MODELS else None
        cut = cutout_key(asset.sha256, settings, mask_key)
    except Exception:  # noqa: BLE001
        return
    yield cut
    yield quality_key(cut)
    yield from _controls(cut, job.params.get("targets") or [], job.params.get("scene"), settings)
    for v in asset.variants:
        try:
            target = get_target(v.target)
            preset = scene_for(target, v.scene or None, settings)
            yield variant_key(cut, target, preset, v.seed,
                              generator_inputs(target, preset, asset.title, asset.category, settings))
        except Exception:  # noqa: BLE001
            continue


def referenced(settings: Settings | None = None) -> set[str]:
    """Every blob key the database refers to, or that unfinished work will record."""
    settings = settings or get_settings()
    keys: set[str] = set()
    with runtime.database(settings).session() as s:
        rows = s.execute(select(Asset.source_key, Asset.cutout_key, Asset.control_key, Job.params)
                         .join(Job, Asset.job_id == Job.id)).yield_per(1000)
        for source, cut, control, params in rows:
            keys.add(source)
            if cut:
                keys.update((cut, quality_key(cut)))
                keys.update(_controls(cut, (params or {}).get("targets") or [], (params or {}).get("scene"),
                                      settings))
            if control:
                keys.add(control)
        keys.update(k for k in s.scalars(select(Variant.key).where(Variant.key.is_not(None))) if k)
        keys.update(k for k in s.scalars(select(Mask.key)) if k)
        keys.update(k for k in s.scalars(select(Publication.variant_key).where(Publication.variant_key.is_not(None)))
                    if k)
        unfinished = exists().where(Variant.asset_id == Asset.id, Variant.status.not_in(STAGE_FINAL))
        active = s.scalars(select(Asset).join(Job, Asset.job_id == Job.id).where(or_(
            Job.status.not_in(JOB_FINAL), Asset.cutout_status.not_in(STAGE_FINAL),
            Asset.edges_status.not_in(STAGE_FINAL), unfinished)))
        for asset in active:
            keys.update(_planned(s, asset, asset.job, settings))
    keys.discard(masks.MODELS)
    return keys


# --- blobs --------------------------------------------------------------------------------------

def _listing(blobs) -> list[BlobInfo]:
    return [info for prefix in COLLECTED for info in blobs.listing(prefix)]


def collect_blobs(settings: Settings, now: float, dry_run: bool, out: Collected) -> None:
    blobs = runtime.store(settings)
    listed = _listing(blobs)  # first: a blob recorded after this is in the references read next
    young = now - settings.gc_grace
    old_preview = None if settings.retain_previews_days is None else now - settings.retain_previews_days * 86400

    def candidates(keep: set[str]) -> list[BlobInfo]:
        shown = {preview_key(k, side) for k in keep for side in PREVIEW_SIDES}
        found = []
        for info in listed:
            if info.key.startswith(PREVIEWS):
                gone = info.key not in shown or (old_preview is not None and info.modified < old_preview)
            else:
                gone = info.key not in keep
            if gone:
                found.append(info)
        return found

    first = candidates(referenced(settings))
    old = [i for i in first if i.modified < young]
    out.kept_young += len(first) - len(old)
    if not old:
        return
    # Again, just before deleting: what a worker recorded meanwhile stays.
    still = {i.key for i in candidates(referenced(settings))}
    for info in old:
        if info.key not in still:
            continue
        if not dry_run:
            blobs.delete(info.key)
        out.removed_keys.append(info.key)
        if info.key.startswith(PREVIEWS):
            out.previews += 1
            out.preview_bytes += info.size
        else:
            out.blobs += 1
            out.blob_bytes += info.size


def collect(settings: Settings | None = None, *, dry_run: bool = False, now: float | None = None) -> Collected:
    """Remove what retention says (see the module's doc): old rows first, then the blobs nothing
    refers to any more. `dry_run`: remove nothing, count what would go (blobs of rows that would
    be removed are not counted: they are still referenced)."""
    settings = settings or get_settings()
    now = time.time() if now is None else now
    out = Collected(dry_run=dry_run)
    collect_rows(settings, dt.datetime.fromtimestamp(now, dt.UTC), dry_run, out)
    collect_blobs(settings, now, dry_run, out)
    if not dry_run and (out.jobs or out.rejected_deliveries or out.product_states or out.blobs or out.previews):
        log.info("gc removed %d job(s), %d rejected deliveries, %d product state(s), %d blob(s) (%d bytes), "
                 "%d preview(s) (%d bytes)", out.jobs, out.rejected_deliveries, out.product_states, out.blobs,
                 out.blob_bytes, out.previews, out.preview_bytes)
    return out
