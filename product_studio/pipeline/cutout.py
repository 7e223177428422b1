"""Cut-out: source RGB (+ optional alpha) in, RGBA at source resolution out, with its confidence.

The models see a small copy of the photo; everything that decides *which* pixels are product runs
at WORK_SIDE (long side) where it is cheap, and only the edge band is touched at full resolution:

1. predict     each model's probability on the small copy (optionally averaged with a mirrored
               pass), averaged over the models the setting names ("u2netp+u2net")
2. refine_mask colour model -> hysteresis threshold -> drop stray blobs, fill pinholes (binary)
   assess      the confidence score from the models' probabilities and the mask (confidence.py)
3. upsample    guided filter: the binary mask's edges snap to the full-resolution image's edges
4. decontaminate  foreground colours estimated in the soft edge band, so the old background's
               colour does not travel into a new scene
5. compose     RGBA, with fully transparent pixels' RGB set to 0

The default u2netp+u2net gets IoU 0.915 on ECSSD and 0.867 on the alphamatting.com set, against
0.895 / 0.847 for plain rembg with u2netp and 0.909 / 0.787 with u2net (bench/cutout_quality.py).
The refinement's constants were tuned on alphamatting; ECSSD is their held-back set.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..config import Settings, get_settings
from .confidence import CutoutQuality, assess, chosen_mask, given_alpha

WORK_SIDE = 512  # long side (px) where the mask is refined
GUIDE_RADIUS, GUIDE_EPS = 1, 1e-3  # guided filter at WORK_SIDE: thin edge band, edge-preserving
SNAP = 0.05  # guided alpha under this is the filter's tail, not coverage (same for 1 - SNAP)
SEED_LOW, SEED_HIGH = 0.1, 0.6  # probabilities whose colours teach the colour model
LOW, HIGH = 0.2, 0.5  # hysteresis: weak pixels count when connected to strong ones
MIN_BLOB, MAX_HOLE = 0.05, 0.005  # relative to the largest part / the whole object's area


# -- 1. predict --------------------------------------------------------------------------------


def downscale(rgb: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """`rgb` shrunk (never enlarged) so its long side is at most `side`."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def predict(backend, rgb: np.ndarray, flip: bool = False) -> np.ndarray:
    """Foreground probability, HxW float32; `flip` averages in a mirrored pass (2x model time)."""
    prob = backend.predict(rgb)
    if flip:
        prob = (prob + backend.predict(np.ascontiguousarray(rgb[:, ::-1]))[:, ::-1]) * 0.5
    return prob


# -- 2. refine_mask ----------------------------------------------------------------------------


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def colour_posterior(rgb: np.ndarray, prob: np.ndarray, bins: int = 16) -> np.ndarray:
    """`prob` updated by Bayes' rule with colour histograms of the sure foreground and background.

    Saliency models are unsure on low-contrast parts of an object (a dark body under a bright
    head); if those colours are typical of the sure product and rare in the sure background, the
    posterior lifts them. Unseen colours keep the model's probability.
    """
    shift = 8 - int(np.log2(bins))
    q = (rgb >> shift).astype(np.int32)
    index = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    # Eroded, so that blurred edges do not teach each side the other's colours.
    fg = cv2.erode((prob >= SEED_HIGH).astype(np.uint8), _disk(2)) > 0
    bg = cv2.erode((prob < SEED_LOW).astype(np.uint8), _disk(2)) > 0
    if fg.sum() < 50 or bg.sum() < 50:
        return prob

    def log_hist(sel: np.ndarray) -> np.ndarray:
        h = np.bincount(index[sel], minlength=bins**3).astype(np.float32)
        return np.log(h / h.sum() + 1e-5)

    log_ratio = (log_hist(fg) - log_hist(bg))[index]
    p = np.clip(prob, 0.02, 0.98)  # the model is never certain enough to veto the colours
    return (1 / (1 + np.exp(-(np.log(p / (1 - p)) + log_ratio)))).astype(np.float32)


def hysteresis(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The connected parts of `weak` that contain a `strong` pixel (as in Canny's edge tracking)."""
    n, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return keep[labels]


def clean_mask(mask: np.ndarray, min_blob: float = MIN_BLOB, max_hole: float = MAX_HOLE) -> np.ndarray:
    """Drop parts smaller than `min_blob` x the largest part; fill holes under `max_hole` x area.

    Big holes stay: a mug's handle or a ring's middle shows real background.
    """
    mask = mask.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n > 2:
        area = stats[:, cv2.CC_STAT_AREA]
        keep = area >= min_blob * area[1:].max()
        keep[0] = False
        mask = keep[labels].astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - mask, connectivity=4)
    small = stats[:, cv2.CC_STAT_AREA] < max_hole * mask.sum()
    # Background regions that touch the border are outside the object, not holes in it.
    small[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = False
    small[0] = False  # label 0 is the object itself
    return (mask > 0) | small[labels]


def refine_mask(rgb: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Binary product mask (HxW bool) from a model probability and the image it came from.

    Colours may widen what the model found but not add objects of their own: every kept part must
    hold a pixel the model itself scored >= HIGH.
    """
    return clean_mask(hysteresis(colour_posterior(rgb, prob) >= LOW, prob >= HIGH))


# -- 3. guided upsampling ----------------------------------------------------------------------


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, src: np.ndarray, r: int = GUIDE_RADIUS, eps: float = GUIDE_EPS):
    """He et al.'s colour guided filter: A (HxWx3), b (HxW) with output = sum(A * guide) + b.

    guide: HxWx3 float32 in [0, 1]; src: HxW float32. Written with cv2.boxFilter because
    cv2.ximgproc is not in the headless wheel.
    """
    mean_i, mean_p = _box(guide, r), _box(src, r)
    cov_ip = _box(guide * src[..., None], r) - mean_i * mean_p[..., None]
    var = {}
    for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
        var[i, j] = _box(guide[..., i] * guide[..., j], r) - mean_i[..., i] * mean_i[..., j] + (eps if i == j else 0)
    a, b, c, d, e, f = (var[k] for k in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
    # Closed-form inverse of the symmetric 3x3 covariance, per pixel.
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * i00 + b * i01 + c * i02
    x, y, z = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    coef = np.dstack([i00 * x + i01 * y + i02 * z, i01 * x + i11 * y + i12 * z, i02 * x + i12 * y + i22 * z])
    coef /= det[..., None]
    offset = mean_p - (coef * mean_i).sum(-1)
    return _box(coef, r), _box(offset, r)


def _sample(field: np.ndarray, ys: np.ndarray, xs: np.ndarray, full_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of a small `field` at full-resolution pixels (ys, xs): N or Nx C."""
    n = len(ys)
    rows = -(-n // 1024)  # cv2.remap wants maps under 32767 rows: lay the points out 1024 wide
    maps = np.zeros((2, rows * 1024), np.float32)
    maps[0, :n] = (xs + 0.5) * (field.shape[1] / full_shape[1]) - 0.5
    maps[1, :n] = (ys + 0.5) * (field.shape[0] / full_shape[0]) - 0.5
    out = cv2.remap(field, maps[0].reshape(rows, 1024), maps[1].reshape(rows, 1024), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * 1024, -1)[:n] if out.ndim == 3 else out.reshape(-1)[:n]


def _band(mask_small: np.ndarray, full_shape: tuple[int, int], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution pixels within `radius` small pixels of the mask's outline."""
    m = mask_small.astype(np.uint8)
    near = cv2.dilate(m, _disk(radius)) != cv2.erode(m, _disk(radius))
    near = cv2.resize(near.astype(np.uint8), full_shape[::-1], interpolation=cv2.INTER_NEAREST)
    return np.nonzero(near)


def upsample_alpha(rgb_small: np.ndarray, mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Full-resolution uint8 alpha from a small binary mask, its edges guided by `rgb`.

    The guided filter's coefficients are computed small and evaluated only in the edge band at
    full resolution (elsewhere alpha is plainly 0 or 255), so the cost barely grows with size.
    """
    full = rgb.shape[:2]
    alpha = cv2.resize(mask.astype(np.uint8) * 255, full[::-1], interpolation=cv2.INTER_NEAREST)
    coef, offset = guided_coefficients(rgb_small.astype(np.float32) * (1 / 255), mask.astype(np.float32))
    ys, xs = _band(mask, full, 2 * GUIDE_RADIUS + 1)
    if len(ys) == 0:  # nothing found, or nothing but product: no edge to refine
        return alpha
    guide = rgb[ys, xs].astype(np.float32) * (1 / 255)
    soft = (_sample(coef, ys, xs, full) * guide).sum(1) + _sample(offset, ys, xs, full)
    # Faint tails would tint a pure-white (255) target background a few pixels out: snap them.
    soft = (soft - SNAP) * (1 / (1 - 2 * SNAP))
    alpha[ys, xs] = np.clip(soft * 255 + 0.5, 0, 255).astype(np.uint8)
    return alpha


# -- 4. decontaminate --------------------------------------------------------------------------


def decontaminate(rgb: np.ndarray, alpha: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """RGB with the soft edge band's colours replaced by estimated foreground colours.

    An edge pixel is a mix I = a*F + (1-a)*B. pymatting's multilevel estimator (Germer et al.
    2020) finds smooth F and B; run at full size it costs ~0.5 s at 2048 px, so it runs at `side`
    and each band pixel keeps its own detail through the blur-fusion correction of Forte & Pitie
    (2021): F = F' + a * (I - a*F' - (1-a)*B'). Opaque and transparent pixels are untouched.
    """
    from pymatting import (
        estimate_foreground_ml,  # numba-compiled; imported only when used
    )

    ys, xs = np.nonzero((alpha > 0) & (alpha < 255))
    if len(ys) == 0:
        return rgb
    small_rgb = downscale(rgb, side).astype(np.float32) * (1 / 255)
    small_alpha = cv2.resize(alpha, small_rgb.shape[1::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    fg, bg = estimate_foreground_ml(small_rgb, small_alpha, return_background=True)
    a = alpha[ys, xs].astype(np.float32)[:, None] * (1 / 255)
    image = rgb[ys, xs].astype(np.float32) * (1 / 255)
    f, b = _sample(fg, ys, xs, alpha.shape), _sample(bg, ys, xs, alpha.shape)
    f = f + a * (image - a * f - (1 - a) * b)
    out = rgb.copy()
    out[ys, xs] = np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


# -- 5. the stage ------------------------------------------------------------------------------


def compose(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """HxWx4 RGBA; fully transparent pixels get RGB 0 (no hidden old background, smaller PNGs)."""
    rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    rgba[..., 3] = alpha
    return cv2.bitwise_and(rgba, rgba, mask=alpha)  # 15x faster than rgba[alpha == 0] = 0


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class Cutout:
    rgba: np.ndarray  # HxWx4 uint8 at the source's resolution
    quality: CutoutQuality


def cut_out_masked(rgb: np.ndarray, mask: np.ndarray, *, settings: Settings | None = None,
                   decontaminate_edges: bool = True) -> Cutout:
    """The product on transparency from an admin's mask (touch-up): (H, W, 3) uint8 RGB and the
    (H, W) uint8 alpha matte (255 keeps, 0 removes) in, (H, W, 4) uint8 RGBA out. No model runs;
    the soft edge band is decontaminated like a model's (the photo's background is still in it),
    unless `decontaminate_edges` is False (a photo with its own transparency has no background
    behind its edges to unmix). Raises ValueError for arrays of the wrong shape or dtype."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"cut_out needs HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if mask.shape != rgb.shape[:2] or mask.dtype != np.uint8:
        raise ValueError(f"the mask must be {rgb.shape[:2]} uint8, got {mask.shape} {mask.dtype}")
    if decontaminate_edges and (settings or get_settings()).cutout_decontaminate:
        rgb = decontaminate(rgb, mask)
    return Cutout(compose(rgb, mask), chosen_mask(mask))


def cut_out_scored(rgb: np.ndarray, alpha: np.ndarray | None = None, *, settings: Settings | None = None,
                   backend=None) -> Cutout:
    """The product on transparency (HxWx4 uint8 RGBA at the source's resolution) and how far to
    trust it (pipeline/confidence.py).

    The models the setting names (settings.cutout_model, e.g. "u2netp+u2net") each predict, and
    their probabilities are averaged; `backend` (one, or a list) replaces them. `alpha` (HxW uint8),
    when the input already had transparency, is used as the mask as is and no model runs; its
    edge colours are kept too: whoever made that alpha had no other background to unmix.
    Raises ValueError for arrays of the wrong shape or dtype, ModelUnavailable for missing weights.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"cut_out needs HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if alpha is not None:
        if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
            raise ValueError(f"alpha must be {rgb.shape[:2]} uint8, got {alpha.shape} {alpha.dtype}")
        return Cutout(compose(rgb, alpha), given_alpha(alpha))

    settings = settings or get_settings()
    if backend is None:
        from ..backends.cutout_rembg import backends_for

        backend = backends_for(settings)
    backends = backend if isinstance(backend, list | tuple) else [backend]
    small = downscale(rgb)
    probs = [predict(b, small, flip=settings.cutout_flip_tta) for b in backends]
    prob = probs[0] if len(probs) == 1 else np.mean(probs, axis=0, dtype=np.float32)
    if not settings.cutout_refine:  # the model's own soft mask, like plain rembg
        mask = cv2.resize(prob, rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        return Cutout(compose(rgb, np.clip(mask * 255 + 0.5, 0, 255).astype(np.uint8)), assess(probs, prob >= 0.5))
    mask = refine_mask(small, prob)
    quality = assess(probs, mask)
    alpha = upsample_alpha(small, mask, rgb)
    if settings.cutout_decontaminate:
        rgb = decontaminate(rgb, alpha)
    return Cutout(compose(rgb, alpha), quality)


def cut_out(rgb: np.ndarray, alpha: np.ndarray | None = None, *, settings: Settings | None = None,
            backend=None) -> np.ndarray:
    """cut_out_scored(...).rgba: HxWx4 uint8 RGBA at the source's resolution."""
    return cut_out_scored(rgb, alpha, settings=settings, backend=backend).rgba


def _unpack(loaded: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(loaded, np.ndarray):
        return loaded, None
    if isinstance(loaded, tuple):
        return loaded
    return loaded.rgb, loaded.alpha  # an ingest.Source


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cut_out_many(items: Iterable[Any], *, load: Callable[[Any], Any] | None = None,
                 save: Callable[[Any, np.ndarray], Any] | None = None, workers: int | None = None,
                 settings: Settings | None = None, backend=None) -> Iterator[Any]:
    """Cut out many images with every core busy; yields one result per item, in order.

    Each item runs `load(item)` (-> rgb, (rgb, alpha) or an ingest.Source; default: the item
    itself), then cut_out, then `save(item, rgba)` (default: the RGBA is the result), all in one of
    `workers` threads sharing one model session. ONNX Runtime, OpenCV, zlib and numpy release the
    GIL, so threads overlap decoding, inference, refinement and encoding of different photos.
    At most 2 x workers items are in flight, so a long catalogue does not pile up in memory.
    An item's exception is raised when its result is reached.
    """
    settings = settings or get_settings()
    workers = workers or default_workers()
    if backend is None:
        from ..backends.cutout_rembg import backends_for

        # Parallelism comes from images in flight: split the cores between them, not inside ORT
        # (unless configured; either way only the first user of the process's session decides).
        threads = settings.cutout_threads or max(1, default_workers() // workers)
        backend = backends_for(settings, threads=threads)

    def job(item: Any) -> Any:
        rgb, alpha = _unpack(load(item) if load else item)
        rgba = cut_out(rgb, alpha, settings=settings, backend=backend)
        return save(item, rgba) if save else rgba

    with ThreadPoolExecutor(workers, thread_name_prefix="cutout") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(job, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
