"""Place the cut-out product on a target's canvas.

Everything downstream (control image, inpaint mask, shadows, composite) works in the canvas
coordinates this stage fixes. The product is resampled once, premultiplied by its alpha so
transparent neighbours never bleed dark fringes into the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..errors import BadInput
from ..presets import Target

# Alpha below this (of 255) is matting noise: it is dropped, and never stretches the crop.
_NOISE_ALPHA = 8
# What "the product" is, everywhere: its pixels at least half opaque. Layout scales the box of
# these pixels to the target's `fill`, and check measures fill on exactly the same pixels
# (check.known_background), so the pipeline never makes a variant its own check rejects. The
# fainter rim of a soft edge (fur, hair, motion blur) is still drawn: it lies outside the box.
PRODUCT_ALPHA = 0.5
# Scene targets stand the product on a floor this share of the canvas above the bottom edge:
# room in front of it for the surface it stands on, its contact shadow and reflection, and a
# podium's body (scene_studio draws the support's far edge behind the product).
FLOOR_MARGIN = 0.18


@dataclass(frozen=True)
class Placement:
    width: int  # canvas
    height: int
    x: int  # top-left of the product box on the canvas
    y: int
    premul: np.ndarray  # (h, w, 3) float32: colour * alpha, 0..255
    alpha: np.ndarray  # (h, w) float32, 0..1
    scale: float  # source px -> canvas px

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.alpha.shape
        return self.x, self.y, self.x + w, self.y + h

    @property
    def base_y(self) -> int:
        """Canvas row where the product meets the floor: just below its lowest product row."""
        rows = np.flatnonzero(product_pixels(self.alpha).any(axis=1))
        return self.y + int(rows[-1]) + 1 if rows.size else self.y + self.alpha.shape[0]

    @cached_property
    def canvas_alpha(self) -> np.ndarray:
        """(H, W) float32 alpha of the product over the whole canvas."""
        out = np.zeros((self.height, self.width), np.float32)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.alpha
        return out

    def over(self, grey: int) -> np.ndarray:
        """The product alone over a flat grey canvas, (H, W, 3) uint8: what edge detectors see."""
        out = np.full((self.height, self.width, 3), grey, np.uint8)
        x0, y0, x1, y1 = self.box
        pixels = self.premul + grey * (1.0 - self.alpha[..., None])
        out[y0:y1, x0:x1] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        return out


def product_pixels(alpha: np.ndarray) -> np.ndarray:
    """Which pixels are product (bool, same shape): at least PRODUCT_ALPHA opaque. `alpha` is
    uint8 (0-255, a cut-out) or float (0-1, a placement's or canvas alpha)."""
    if alpha.dtype == np.uint8:
        return alpha >= round(PRODUCT_ALPHA * 255)
    return alpha >= PRODUCT_ALPHA


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def alpha_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of every pixel that is not matting noise (uint8 alpha): what layout crops
    and resamples, soft rim included. None if there are none."""
    return _box(alpha >= _NOISE_ALPHA)


def product_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the product's pixels (product_pixels): what layout scales to the
    target's fill and check measures. None if there are none."""
    return _box(product_pixels(alpha))


def _extent(profile: np.ndarray) -> tuple[float, float]:
    """Where a 1-D alpha profile (0-1, some value >= PRODUCT_ALPHA) crosses PRODUCT_ALPHA, to a
    fraction of a pixel (pixel i spans i..i+1): where its resampled copy crosses it too, at any
    enlargement. Whole pixels would be off by up to one source pixel times the enlargement."""
    inside = np.flatnonzero(profile >= PRODUCT_ALPHA)
    a, b = int(inside[0]), int(inside[-1])
    lo = float(a) if a == 0 else a - 0.5 + (PRODUCT_ALPHA - profile[a - 1]) / (profile[a] - profile[a - 1])
    n = profile.size
    hi = float(n) if b == n - 1 else b + 0.5 + (profile[b] - PRODUCT_ALPHA) / (profile[b] - profile[b + 1])
    return lo, hi


def place(cutout: np.ndarray, target: Target, name: str = "image") -> Placement:
    """Scale and position an RGBA cut-out (uint8, source resolution) on the target canvas.

    The product (product_pixels) spans `target.fill` of the canvas and is centred, or stands on
    the floor line for bottom-aligned targets; its soft rim comes along around it, cut off only
    where it would leave the canvas. Placement.scale is the enlargement (source px -> canvas px)
    that check reports."""
    crop_box = alpha_box(cutout[..., 3])
    if crop_box is None or product_box(cutout[..., 3]) is None:
        raise BadInput(f"{name}: no product found (the cut-out is empty"
                       + (")" if crop_box is None else ": no pixel of it is even half opaque)"))
    cx0, cy0, cx1, cy1 = crop_box
    crop = cutout[cy0:cy1, cx0:cx1]
    # The product's extent in crop pixels, where its alpha crosses PRODUCT_ALPHA.
    profile = crop[..., 3].astype(np.float32) * (1 / 255)
    left, right = _extent(profile.max(axis=0))
    top, bottom = _extent(profile.max(axis=1))
    bw, bh = max(right - left, 1.0), max(bottom - top, 1.0)
    scale = target.fill * min(target.width / bw, target.height / bh)

    # Where the crop's origin lands on the canvas (canvas px) so that the product is centred, or
    # stands on the floor line.
    pw, ph = bw * scale, bh * scale
    fx = (target.width - pw) / 2 - left * scale
    if target.align == "bottom":
        fy = max(0.0, target.height - round(target.height * FLOOR_MARGIN) - ph) - top * scale
    else:
        fy = (target.height - ph) / 2 - top * scale
    # Only the part of the crop that lands on the canvas is resampled: a faint rim or haze can
    # reach far beyond a small product, and enlarged whole it would not fit in memory.
    sx0, sy0 = max(0, math.floor(-fx / scale) - 1), max(0, math.floor(-fy / scale) - 1)
    sx1 = min(crop.shape[1], math.ceil((target.width - fx) / scale) + 1)
    sy1 = min(crop.shape[0], math.ceil((target.height - fy) / scale) + 1)
    crop = crop[sy0:sy1, sx0:sx1]
    x, y = round(fx + sx0 * scale), round(fy + sy0 * scale)

    w, h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
    alpha = crop[..., 3].astype(np.float32) * (1 / 255)
    premul = crop[..., :3].astype(np.float32) * alpha[..., None]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    premul = cv2.resize(premul, (w, h), interpolation=interp)
    alpha = cv2.resize(alpha, (w, h), interpolation=interp)
    # Matting noise (and the faint tail an upscale smears it into) is not product: a pure-white
    # background must stay exactly 255 there. Cubic also overshoots at hard edges: clip.
    alpha[alpha < _NOISE_ALPHA / 255] = 0
    np.clip(alpha, 0, 1, out=alpha)
    np.clip(premul, 0, 255 * alpha[..., None], out=premul)

    # What still overhangs (rounding, the margin pixel kept for resampling) is cut at the canvas edge.
    cut_l, cut_t = max(0, -x), max(0, -y)
    cut_r, cut_b = max(0, x + w - target.width), max(0, y + h - target.height)
    if cut_l or cut_t or cut_r or cut_b:
        alpha = np.ascontiguousarray(alpha[cut_t:h - cut_b, cut_l:w - cut_r])
        premul = np.ascontiguousarray(premul[cut_t:h - cut_b, cut_l:w - cut_r])
        x, y = x + cut_l, y + cut_t
    return Placement(target.width, target.height, x, y, premul, alpha, scale)
