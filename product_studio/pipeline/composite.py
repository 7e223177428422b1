"""Put the product's own pixels back on top of a background, with optional shadows.

Generated pixels inside the product are always discarded: a VAE round trip cannot reproduce
them exactly, so the product a shopper sees is the photographed one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .layout import Placement

# Shadows are soft, so they are computed at a fraction of the canvas size and upsampled.
_SHADOW_SCALE = 0.25


@dataclass(frozen=True)
class ShadowStyle:
    contact: float = 0.55  # darkness of the contact shadow right under the product
    cast: float = 0.28  # darkness of the cast shadow
    light_azimuth: float = -35.0  # degrees; 0 = light from the front, negative = from the left
    cast_length: float = 0.45  # cast shadow length as a share of the product height
    softness: float = 0.05  # blur, as a share of the product height
    reflection: float = 0.0  # opacity of a mirror image on glossy floors (0 = none)


def shadow_map(placement: Placement, style: ShadowStyle) -> np.ndarray:
    """(H, W) float32 in 0..1: how much light each canvas pixel loses."""
    H, W = placement.height, placement.width
    s = _SHADOW_SCALE
    small = cv2.resize(placement.canvas_alpha, (max(1, round(W * s)), max(1, round(H * s))),
                       interpolation=cv2.INTER_AREA)
    base = placement.base_y * s
    x0, y0, x1, y1 = placement.box
    height = max(1.0, (placement.base_y - y0) * s)
    out = np.zeros_like(small)

    if style.cast > 0:
        # Lay the silhouette on the floor: squash it towards the base line and lean it away
        # from the light. A point `d` above the base lands `d*length` back into the scene.
        squash = style.cast_length * 0.5
        lean = math.tan(math.radians(-style.light_azimuth)) * 0.6
        m = np.float32([[1, -lean, lean * base], [0, squash, base * (1 - squash)]])
        cast = cv2.warpAffine(small, m, (small.shape[1], small.shape[0]), flags=cv2.INTER_LINEAR)
        cast = cv2.GaussianBlur(cast, (0, 0), max(0.5, height * style.softness * 2))
        out = np.maximum(out, cast * style.cast)

    if style.contact > 0:
        # A thin, dark footprint where the product touches the floor.
        band = max(1, round(height * 0.06))
        foot = np.zeros_like(small)
        b = int(round(base))
        top = max(0, b - band)
        foot[top:b] = small[top:b]
        m = np.float32([[1, 0, 0], [0, 0.25, b * 0.75]])
        foot = cv2.warpAffine(foot, m, (small.shape[1], small.shape[0]), flags=cv2.INTER_LINEAR)
        foot = cv2.GaussianBlur(foot, (0, 0), max(0.5, height * 0.015))
        out = np.maximum(out, np.clip(foot * 2.0, 0, 1) * style.contact)

    return cv2.resize(out, (W, H), interpolation=cv2.INTER_LINEAR)


def _reflect(out: np.ndarray, placement: Placement, strength: float) -> None:
    """Mirror the product in the floor below its base, fading with distance (in place)."""
    x0, y0, x1, _ = placement.box
    base = placement.base_y
    depth = min(out.shape[0] - base, round((base - y0) * 0.35))
    if depth <= 0:
        return
    rows = slice(base - y0 - 1, base - y0 - 1 - depth, -1) if base - y0 - 1 - depth >= 0 else \
        slice(base - y0 - 1, None, -1)
    premul, alpha = placement.premul[rows], placement.alpha[rows]
    depth = alpha.shape[0]
    fade = (strength * np.linspace(1, 0, depth, dtype=np.float32) ** 1.5)[:, None]
    a = cv2.GaussianBlur(alpha * fade, (0, 0), 1.5)
    p = cv2.GaussianBlur(premul * fade[..., None], (0, 0), 1.5)
    region = out[base:base + depth, x0:x1]
    region *= (1.0 - a)[..., None]
    region += p


def composite(background: np.ndarray, placement: Placement, shadow: ShadowStyle | None = None) -> np.ndarray:
    """(H, W, 3) uint8 background + placed product -> (H, W, 3) uint8 image."""
    if background.shape[:2] != (placement.height, placement.width):
        raise ValueError(f"background {background.shape[:2]} does not match canvas {(placement.height, placement.width)}")
    out = background.astype(np.float32)
    if shadow is not None:
        out *= (1.0 - shadow_map(placement, shadow))[..., None]
        if shadow.reflection > 0:
            _reflect(out, placement, shadow.reflection)
    x0, y0, x1, y1 = placement.box
    region = out[y0:y1, x0:x1]
    region *= (1.0 - placement.alpha)[..., None]
    region += placement.premul
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
