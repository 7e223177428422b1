"""Put the product's own pixels back on top of a background, with optional shadows.

Generated pixels inside the product are always discarded: a VAE round trip cannot reproduce
them exactly, so the product a shopper sees is the photographed one.

Shadows follow how a studio photograph shows them (e.g. Hunter, Biver & Fuqua, "Light: Science
and Magic", ch. 4 and 5): a tight, dark contact shadow where the product meets the surface,
whose darkness is the ambient light it blocks, and a cast shadow thrown away from the key light,
longer and softer with distance from the product, since its penumbra widens in proportion to the
distance between the occluder and the surface.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from ..backends.scene_studio import frame_of
from .layout import Placement

# Shadows are soft, so they are computed on a reduced canvas (the product about this many px
# high) and enlarged.
_SHADOW_PX = 360


@dataclass(frozen=True)
class ShadowStyle:
    """How shadows are drawn. Darkness 0-1 (the share of light removed at the shadow's darkest);
    `light_azimuth` degrees (0: from the camera's side, or a flat lay's top edge; negative: from
    the left); `cast_length` the cast shadow's length per unit of product height (1 / tan of the
    light's elevation); `softness` 0-1 its penumbra; `reflection` the opacity (0-1) of a mirror
    image on glossy floors. `view` "front" lays the cast shadow on the floor in the perspective
    of the studio camera (backends/scene_studio.Frame); "top" (a flat lay) offsets it in the
    image plane, the product taken to stand a tenth of its size above the surface.
    `receiver(placement)`: an (H, W) float32 0-1 mask of where shadows can fall (a podium's top),
    or None for anywhere."""

    contact: float = 0.7
    cast: float = 0.35
    light_azimuth: float = -35.0
    cast_length: float = 0.6
    softness: float = 0.5
    reflection: float = 0.0
    view: Literal["front", "top"] = "front"
    receiver: Callable[[Placement], np.ndarray] | None = field(default=None, compare=False)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), max(0.3, sigma)) if sigma > 0.3 else a


def _line(foot: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    """A 1 px line blurred by (sigma_x, sigma_y), scaled so a long horizontal line peaks at 1."""
    return cv2.GaussianBlur(foot, (0, 0), sigma_x, sigmaY=sigma_y) * np.float32(math.sqrt(2 * math.pi) * sigma_y)


def _reduced(placement: Placement) -> tuple[np.ndarray, float]:
    """The product's alpha on a canvas reduced so the product is about _SHADOW_PX high (never
    enlarged), and that scale."""
    x0, y0, x1, _ = placement.box
    size = max(placement.base_y - y0, (x1 - x0) * 0.5, 1)
    s = min(1.0, _SHADOW_PX / size)
    H, W = placement.height, placement.width
    small = cv2.resize(placement.canvas_alpha, (max(1, round(W * s)), max(1, round(H * s))),
                       interpolation=cv2.INTER_AREA)
    return small, s


def _front(placement: Placement, style: ShadowStyle, small: np.ndarray, s: float) -> np.ndarray:
    """Front view: contact shadow along the product's base, cast shadow laid on the floor."""
    frame = frame_of(placement)
    hs, ws = small.shape
    base = placement.base_y * s
    height = max(1.0, (placement.base_y - placement.box[1]) * s)  # product height, reduced px
    fore = frame.camera_height / frame.focal  # how much the floor's depth is foreshortened
    out = np.zeros_like(small)

    if style.cast > 0 and style.cast_length > 0:
        # Lay the silhouette on the floor: a point d above the base lands d*length away from the
        # light, foreshortened in depth (Blinn, "Me and my (fake) shadow", IEEE CG&A 1988).
        az = math.radians(style.light_azimuth)
        lean = -math.sin(az) * style.cast_length
        squash = math.cos(az) * style.cast_length * fore
        m = np.float32([[1, -lean, lean * base], [0, squash, base * (1 - squash)]])
        rows = np.arange(hs, dtype=np.float32)[:, None]
        up = np.clip((base - rows) / height, 0, 1)  # each pixel's height above the base, 0-1
        both = cv2.warpAffine(np.dstack([small, small * up]), m, (ws, hs), flags=cv2.INTER_LINEAR)
        cast, far = both[..., 0], both[..., 1]
        # Penumbra grows with the distance from the contact: blend a sharp and a soft version by
        # how far up the product each shadow pixel comes from.
        reach = height * style.cast_length
        near_sigma = 0.006 * height + 0.02 * style.softness * reach
        far_sigma = 0.02 * height + 0.16 * style.softness * reach
        sharp, soft = _blur(cast, near_sigma), _blur(cast, far_sigma)
        t = np.clip(_blur(far, far_sigma) / np.maximum(soft, 1e-3), 0, 1)
        shadow = sharp * (1 - t) + soft * t
        out = np.maximum(out, shadow * (1 - 0.45 * t) * style.cast)

    if style.contact > 0:
        # Where the product meets the floor: a thin dark core under the columns that touch it, and
        # a wider, softer occlusion under every column, the darker the closer its lowest edge is
        # to the floor (the floor under a bowl's overhang sees little sky). Both are flattened by
        # the floor's foreshortening.
        product = small >= 0.5
        cols = np.flatnonzero(product.any(axis=0))
        touch, near = np.zeros_like(small), np.zeros_like(small)
        row = int(np.clip(round(base) - 1, 0, hs - 1))
        if cols.size:
            bottom = hs - 1 - np.argmax(product[::-1, cols], axis=0)  # lowest product row per column
            gap = np.maximum(base - 1 - bottom, 0)
            touch[row, cols] = np.exp(-gap / max(0.5, 0.012 * height))
            near[row, cols] = np.exp(-gap / max(1.0, 0.08 * height))
        flat = max(fore, 0.25)  # at least a little depth, so the occlusion shows beside a low product
        core = np.clip(_line(touch, 0.01 * height + 0.5, max(0.7, 0.025 * height * flat)) * 1.4, 0, 1)
        halo = np.clip(_line(near, 0.05 * height * (0.5 + style.softness), max(1.0, 0.1 * height * flat)), 0, 1)
        contact = 1 - (1 - core) * (1 - 0.55 * halo)
        out = 1 - (1 - out) * (1 - contact * style.contact)
    return out


def _top(placement: Placement, style: ShadowStyle, small: np.ndarray, s: float) -> np.ndarray:
    """Flat lay: a tight contact shadow hugging the product's edge and a soft drop shadow offset
    away from the light."""
    x0, y0, x1, _ = placement.box
    size = math.sqrt(max(1.0, (x1 - x0) * (placement.base_y - y0))) * s
    az = math.radians(style.light_azimuth)
    direction = np.array([-math.sin(az), math.cos(az)], np.float32)  # away from the light, image (x, y)
    hs, ws = small.shape
    out = np.zeros_like(small)

    def shifted(offset: np.ndarray) -> np.ndarray:
        m = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
        return cv2.warpAffine(small, m, (ws, hs), flags=cv2.INTER_LINEAR)

    if style.cast > 0:
        reach = 0.1 * size * style.cast_length  # the product stands about a tenth of its size high
        drop = _blur(shifted(direction * reach), (0.006 + 0.03 * style.softness) * size + 0.2 * reach)
        out = np.maximum(out, drop * style.cast)
    if style.contact > 0:
        hug = _blur(shifted(direction * 0.004 * size), 0.004 * size + 0.4)
        out = 1 - (1 - out) * (1 - np.clip(hug * 1.3, 0, 1) * style.contact)
    return out


def shadow_map(placement: Placement, style: ShadowStyle) -> np.ndarray:
    """(H, W) float32 in 0..1: how much light each canvas pixel loses to the product's shadows."""
    small, s = _reduced(placement)
    out = _top(placement, style, small, s) if style.view == "top" else _front(placement, style, small, s)
    out = cv2.resize(out, (placement.width, placement.height), interpolation=cv2.INTER_LINEAR)
    if style.receiver is not None:
        out *= style.receiver(placement)
    return out


def _reflect(out: np.ndarray, placement: Placement, strength: float, origin: tuple[int, int] = (0, 0)) -> None:
    """Mirror the product in the floor below its base, fading with distance (in place). `out` is
    the canvas's region whose top-left corner is canvas pixel `origin` (x, y)."""
    x0, y0, x1, _ = placement.box
    base = placement.base_y
    depth = min(placement.height - base, round((base - y0) * 0.35))
    if depth <= 0:
        return
    rows = slice(base - y0 - 1, base - y0 - 1 - depth, -1) if base - y0 - 1 - depth >= 0 else \
        slice(base - y0 - 1, None, -1)
    premul, alpha = placement.premul[rows], placement.alpha[rows]
    depth = alpha.shape[0]
    fade = (strength * np.linspace(1, 0, depth, dtype=np.float32) ** 1.5)[:, None]
    a = cv2.GaussianBlur(alpha * fade, (0, 0), 1.5)
    p = cv2.GaussianBlur(premul * fade[..., None], (0, 0), 1.5)
    ox, oy = origin
    region = out[base - oy:base - oy + depth, x0 - ox:x1 - ox]
    region *= (1.0 - a)[..., None]
    region += p


def composite(background: np.ndarray, placement: Placement, shadow: ShadowStyle | None = None) -> np.ndarray:
    """(H, W, 3) uint8 background + placed product -> (H, W, 3) uint8 image. Only the region the
    product, its shadows and its reflection touch is recomputed; the rest is the background."""
    if background.shape[:2] != (placement.height, placement.width):
        raise ValueError(f"background {background.shape[:2]} does not match canvas {(placement.height, placement.width)}")
    x0, y0, x1, y1 = placement.box
    shade = shadow_map(placement, shadow) if shadow is not None else None
    # The region to recompute: the product's box, its shadow's and its reflection's.
    rx0, ry0, rx1, ry1 = x0, y0, x1, y1
    if shade is not None:
        ys, xs = np.nonzero(cv2.resize(shade, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA) > 0)
        if ys.size:
            rx0, ry0 = min(rx0, int(xs.min()) * 8 - 8), min(ry0, int(ys.min()) * 8 - 8)
            rx1, ry1 = max(rx1, int(xs.max()) * 8 + 16), max(ry1, int(ys.max()) * 8 + 16)
        if shadow.reflection > 0:
            ry1 = max(ry1, placement.base_y + round((placement.base_y - y0) * 0.35) + 1)
    rx0, ry0 = max(0, rx0), max(0, ry0)
    rx1, ry1 = min(placement.width, rx1), min(placement.height, ry1)
    out = background.copy()
    work = background[ry0:ry1, rx0:rx1].astype(np.float32)
    if shade is not None:
        work *= (1.0 - shade[ry0:ry1, rx0:rx1])[..., None]
    if shadow is not None and shadow.reflection > 0:
        _reflect(work, placement, shadow.reflection, (rx0, ry0))
    region = work[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
    region *= (1.0 - placement.alpha)[..., None]
    region += placement.premul
    out[ry0:ry1, rx0:rx1] = np.clip(work + 0.5, 0, 255).astype(np.uint8)
    return out
