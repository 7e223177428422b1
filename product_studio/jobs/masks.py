"""Touch-up: the masks admins choose for their photos, their versions, and re-rendering from them.

A photo is its source bytes (SHA-256) within a store (the job's store; "" for jobs with none:
pages, API, batch). Its mask versions are rows of `masks`, numbered 1, 2, ... per photo; the
newest is the *chosen* mask, which the cut-out stage of every door uses instead of the models
(jobs/units.run_cutout, and the in-process runs of `process` and `batch`). Restoring an older
version adds a new version with that one's blob, so history only grows; a version with an empty
key means "the models' own cut-out".

Saving a version re-renders every variant of the photo's asset from it: the asset's stages and
variants go back to pending (approvals cleared: the admin approves the new render) and the asset's
cut-out step is returned for the task layer to enqueue.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from .. import content_types, runtime
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..db import reopen_asset
from ..errors import BadInput, Conflict, TransientError
from ..models import STAGE_FINAL, Asset, Job, Mask, StageStatus
from .steps import Step

MODELS = ""  # a version's key when it restores the models' own cut-out
MAX_MASK_BYTES = 64 * 1024 * 1024  # a 100 MP greyscale PNG stays well under this


def scope(store: str | None) -> str:
    """The masks' store scope of a job's store (None: the installation's own jobs)."""
    return store or ""


def chosen(session: Session, store: str | None, sha256: str) -> Mask | None:
    """The newest mask version of a photo in a store, or None when it has none."""
    return session.scalar(select(Mask).where(Mask.store == scope(store), Mask.sha256 == sha256)
                          .order_by(Mask.version.desc()).limit(1))


def versions(session: Session, store: str | None, sha256: str) -> list[Mask]:
    """Every mask version of a photo in a store, newest first."""
    return list(session.scalars(select(Mask).where(Mask.store == scope(store), Mask.sha256 == sha256)
                                .order_by(Mask.version.desc())))


def chosen_alpha(sha256: str, width: int, height: int, store: str | None = None,
                 settings: Settings | None = None) -> np.ndarray | None:
    """The photo's chosen mask as a (height, width) uint8 alpha matte, or None when the models'
    cut-out is to be used: for the in-process doors (`process`)."""
    key = chosen_keys(store, settings, only=[sha256]).get(sha256)
    return load_mask(key, width, height, settings) if key else None


def _has_database(settings: Settings) -> bool:
    """False for an installation whose embedded SQLite database was never made (it has no masks,
    and a one-off `process` should not make it)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    url = make_url(settings.database)
    return url.get_backend_name() != "sqlite" or not url.database or Path(url.database).exists()


def chosen_keys(store: str | None = None, settings: Settings | None = None, *,
                only: Collection[str] | None = None) -> dict[str, str]:
    """{photo SHA-256: blob key of its chosen mask} for every photo of a store that has one (the
    models' cut-out restored counts as none), or for the photos (SHA-256s) `only`: one query for a
    whole batch or job."""
    settings = settings or get_settings()
    if not _has_database(settings):
        return {}
    query = select(Mask.sha256, Mask.key).where(Mask.store == scope(store)).order_by(Mask.version)
    if only is not None:
        query = query.where(Mask.sha256.in_(list(only)))
    try:
        with runtime.database(settings).session() as s:
            newest: dict[str, str] = {}
            for sha, key in s.execute(query):
                newest[sha] = key
    except OperationalError as exc:  # a configured database that is down: say so, never guess
        raise TransientError(f"cannot read the photos' touch-up masks: the database is unreachable "
                             f"({str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__})") from None
    return {sha: key for sha, key in newest.items() if key != MODELS}


def load_mask(key: str, width: int, height: int, settings: Settings | None = None) -> np.ndarray:
    """A stored mask version's blob as a (height, width) uint8 alpha matte. Raises BadInput when it
    does not fit the photo (it always does for the photo it was saved for)."""
    return decode_mask(runtime.store(settings or get_settings()).get(key), width, height)


def encode_mask(alpha: np.ndarray) -> bytes:
    """A (H, W) uint8 alpha matte as a greyscale PNG (255 keeps, 0 removes)."""
    import cv2

    if alpha.ndim != 2 or alpha.dtype != np.uint8:
        raise ValueError(f"a mask is HxW uint8, got {alpha.shape} {alpha.dtype}")
    ok, buf = cv2.imencode(".png", alpha, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - only on memory exhaustion
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_mask(data: bytes, width: int, height: int) -> np.ndarray:
    """A mask PNG for a width x height photo as a (height, width) uint8 alpha matte.

    Greyscale (any bit depth) and RGB are read as grey levels, 255 (white) keeping and 0 (black)
    removing; an image with transparency (RGBA, LA, a palette with tRNS) is read by its alpha, so
    a cut-out exported from another tool works as is. Raises BadInput naming the problem: not a
    PNG, too big, another size than the photo's, or a mask that keeps nothing.
    """
    from PIL import Image

    if len(data) > MAX_MASK_BYTES:
        raise BadInput(f"the mask is over {MAX_MASK_BYTES // (1024 * 1024)} MiB")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise BadInput("the mask must be a PNG image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (width, height):  # checked on the header, before decoding anything
                raise BadInput(f"the mask is {im.size[0]}x{im.size[1]} px; the photo is {width}x{height} px")
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            if has_alpha:
                alpha = np.asarray(im.convert("RGBA").getchannel("A"))
            elif im.mode in ("I", "I;16", "I;16B", "I;16L"):
                alpha = (np.asarray(im, np.float64) * (255 / 65535)).round().astype(np.uint8)
            else:
                alpha = np.asarray(im.convert("L"))
    except BadInput:
        raise
    except Exception as exc:  # Pillow's many ways to refuse a broken file
        raise BadInput(f"the mask PNG cannot be read ({exc})") from None
    if not (alpha >= 128).any():
        raise BadInput("the mask keeps nothing: white (or opaque) pixels mark the product")
    return np.ascontiguousarray(alpha)


# --- saving a version and re-rendering ------------------------------------------------------------

@dataclass(frozen=True)
class MaskSaved:
    """A new mask version and what it set going."""

    asset_id: str
    version: int
    origin: str
    variant_ids: list[str] = field(default_factory=list)  # queued to render again
    steps: list[Step] = field(default_factory=list)  # for the task layer to enqueue


def _photo_assets(session: Session, asset: Asset) -> list[Asset]:
    """Every asset of the same photo (bytes) in the same store scope, the given one first, locked."""
    store = scope(asset.job.store)
    same = session.scalars(
        select(Asset).join(Job).where(Asset.sha256 == asset.sha256, func.coalesce(Job.store, "") == store,
                                      Asset.id != asset.id).order_by(Asset.id).with_for_update(of=Asset))
    return [asset, *same]


def _editable(session: Session, asset_id: str) -> list[Asset]:
    """The asset and the photo's other assets in its store (the mask is the photo's: every job of
    it follows), locked, if all may be rendered again now. Raises BadInput (unknown asset) or
    Conflict (work still running on one of them, named)."""
    asset = session.get(Asset, asset_id, with_for_update=True, populate_existing=True)
    if asset is None:
        raise BadInput(f"no photo {asset_id}")
    assets = _photo_assets(session, asset)
    for a in assets:
        where = "" if a.id == asset_id else f" (the same photo in job {a.job_id})"
        if a.cutout_status in (StageStatus.PENDING, StageStatus.RUNNING):
            raise Conflict(f"photo {a.id}{where} is still being cut out: try again when it is done")
        busy = [v for v in a.variants if v.status not in STAGE_FINAL]
        if busy:
            raise Conflict(f"{len(busy)} variant(s) of photo {a.id}{where} are still rendering: "
                           "try again when they are finished")
    return assets


def _add_version(session: Session, asset: Asset, key: str, origin: str) -> int:
    """Insert the photo's next mask version; concurrent saves each get their own number."""
    store = scope(asset.job.store)
    for _ in range(5):
        latest = session.scalar(select(func.max(Mask.version)).where(Mask.store == store, Mask.sha256 == asset.sha256))
        version = (latest or 0) + 1
        try:
            with session.begin_nested():
                session.add(Mask(store=store, sha256=asset.sha256, version=version, key=key, origin=origin,
                                 asset_id=asset.id))
            return version
        except IntegrityError:
            continue
    raise Conflict("the mask is being changed by someone else: try again")


def _save(asset_id: str, key: str, origin: str, settings: Settings) -> MaskSaved:
    """Add the version and reopen every asset of the photo in the store: the edited one first."""
    with runtime.database(settings).session() as s:
        assets = _editable(s, asset_id)
        version = _add_version(s, assets[0], key, origin)
        variant_ids = [vid for a in assets for vid in reopen_asset(s, a.id)]
    return MaskSaved(asset_id, version, origin, variant_ids, [Step("cutout", a.id) for a in assets])


def save_mask(asset_id: str, alpha: np.ndarray, origin: str, settings: Settings | None = None) -> MaskSaved:
    """Store `alpha` ((H, W) uint8 at the photo's size) as the photo's new chosen mask and set the
    variants of every job of the photo in its store to render again from it (the edited asset's
    first). `origin` says where it came from ("strokes",
    "upload"). Raises BadInput (unknown asset, wrong size), Conflict (work still running)."""
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            raise BadInput(f"no photo {asset_id}")
        size = (asset.height, asset.width)
    if alpha.shape != size or alpha.dtype != np.uint8:
        raise BadInput(f"the mask is {alpha.shape[1]}x{alpha.shape[0]} px; the photo is {size[1]}x{size[0]} px")
    if not (alpha >= 128).any():
        raise BadInput("the mask keeps nothing: keep at least part of the product")
    data = encode_mask(alpha)
    key = content_key("masks", "png", data)
    blobs = runtime.store(settings)
    if not blobs.exists(key):
        blobs.put(key, data, content_types.PNG)
    return _save(asset_id, key, origin, settings)


def restore_mask(asset_id: str, version: int, settings: Settings | None = None) -> MaskSaved:
    """Make an earlier mask version of the photo the chosen one again (as a new version; 0 restores
    the models' own cut-out) and re-render. Raises BadInput (no such asset or version), Conflict."""
    settings = settings or get_settings()
    with runtime.database(settings).session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            raise BadInput(f"no photo {asset_id}")
        if version == 0:
            key, origin = MODELS, "restore of the models' cut-out"
        else:
            old = s.scalar(select(Mask).where(Mask.store == scope(asset.job.store), Mask.sha256 == asset.sha256,
                                              Mask.version == version))
            if old is None:
                raise BadInput(f"photo {asset_id} has no mask version {version}")
            key, origin = old.key, f"restore of {version}"
    return _save(asset_id, key, origin, settings)


# --- the photo and its current mask, for touch-up -------------------------------------------------

_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
_cache_lock = threading.Lock()
_CACHE_SIZE = 2  # an admin touches up one photo at a time; a 2000 px photo and mask are ~16 MB


def _current(asset_id: str, settings: Settings) -> tuple[Asset, str]:
    """The asset and where its current alpha comes from: "mask:<key>" (the photo's chosen mask),
    "cutout:<key>" (its cut-out's alpha), "none" (its cut-out failed: nothing kept). Raises
    BadInput (unknown asset), Conflict (not cut out yet and no mask)."""
    with runtime.database(settings).session() as s:
        asset = s.get(Asset, asset_id)
        if asset is None:
            raise BadInput(f"no photo {asset_id}")
        mask = chosen(s, asset.job.store, asset.sha256)
        s.expunge(asset)
    if mask is not None and mask.key != MODELS:
        return asset, f"mask:{mask.key}"
    if asset.cutout_status == StageStatus.DONE and asset.cutout_key:
        return asset, f"cutout:{asset.cutout_key}"
    if asset.cutout_status == StageStatus.FAILED:
        return asset, "none"
    raise Conflict(f"photo {asset_id} has no cut-out yet: try again when it is done")


def _alpha(asset: Asset, source: str, settings: Settings) -> np.ndarray:
    from ..pipeline.export import decode_png

    kind, _, key = source.partition(":")
    if kind == "mask":
        return load_mask(key, asset.width, asset.height, settings)
    if kind == "cutout":
        return decode_png(runtime.store(settings).get(key))[..., 3].copy()
    return np.zeros((asset.height, asset.width), np.uint8)


def current_mask(asset_id: str, settings: Settings | None = None) -> np.ndarray:
    """What the photo's cut-out uses now, as a (H, W) uint8 alpha matte: its chosen mask, else
    its cut-out's alpha, else (the cut-out failed) all 0. What touch-up shows and refines.
    Raises BadInput (unknown asset), Conflict (not cut out yet, no mask)."""
    settings = settings or get_settings()
    asset, source = _current(asset_id, settings)
    return _alpha(asset, source, settings)


def photo_and_mask(asset_id: str, settings: Settings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The asset's photo, (H, W, 3) uint8 RGB as the pipeline sees it, and current_mask's alpha
    matte, (H, W) uint8. Kept for the last few photos: every stroke of a touch-up asks again.
    Raises BadInput (unknown asset), Conflict (not cut out yet, no mask)."""
    from ..pipeline.ingest import load_bytes

    settings = settings or get_settings()
    asset, source = _current(asset_id, settings)
    with _cache_lock:
        if (asset.source_key, source) in _cache:
            return _cache[asset.source_key, source]
    rgb = load_bytes(runtime.store(settings).get(asset.source_key), asset.name, settings).rgb
    alpha = _alpha(asset, source, settings)
    with _cache_lock:
        while len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[asset.source_key, source] = (rgb, alpha)
    return rgb, alpha


def refine_for(asset_id: str, edit, settings: Settings | None = None) -> np.ndarray:
    """The asset's current mask refined by a touch-up `edit` (pipeline.touchup.Edit): (H, W)
    uint8. Raises BadInput for an unknown asset, an edit that does not fit the photo, or a
    result that keeps nothing; Conflict when the photo has no cut-out yet."""
    from ..pipeline.touchup import refine

    rgb, alpha = photo_and_mask(asset_id, settings)
    edit.check(rgb.shape[1], rgb.shape[0])
    refined = refine(rgb, alpha, edit)
    if not (refined >= 128).any():
        raise BadInput("these strokes remove everything: the mask keeps nothing; undo a remove stroke "
                       "or paint a keep stroke over the product")
    return refined
