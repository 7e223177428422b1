"""Offline procedural studio backdrops: no weights, no GPU, deterministic from a seed."""

from __future__ import annotations

import cv2
import numpy as np

from ..scenes import ScenePreset, hex_rgb

# Backdrops are smooth: paint them small and upsample; only the grain is full resolution.
_PAINT_LONG_SIDE = 256


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def render_sweep(preset: ScenePreset, width: int, height: int, floor_y: int, seed: int) -> np.ndarray:
    """A seamless paper sweep: wall curving into floor at `floor_y`, lit softly, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    k = _PAINT_LONG_SIDE / max(width, height)
    w, h = max(2, round(width * k)), max(2, round(height * k))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h - 1
    xx /= w - 1
    wall = np.array(hex_rgb(preset.palette[0]), np.float32)
    floor = np.array(hex_rgb(preset.palette[1 % len(preset.palette)]), np.float32)

    horizon = floor_y / height - 0.04  # the sweep bends a little behind the product's base
    bend = 0.18 + 0.1 * preset.light_softness
    t = _smoothstep((yy - horizon + bend / 2) / bend)[..., None]
    img = wall * (1 - t) + floor * t
    img *= (0.93 + 0.07 * yy)[..., None]  # the wall darkens towards the top

    # A soft key light whose position follows the preset's azimuth; the seed nudges it.
    lx = 0.5 + np.sin(np.radians(preset.light_azimuth)) * 0.35 + rng.uniform(-0.08, 0.08)
    ly = horizon - rng.uniform(0.05, 0.2)
    radius = 0.45 + 0.35 * preset.light_softness + rng.uniform(-0.05, 0.05)
    light = np.exp(-(((xx - lx) * w / h) ** 2 + (yy - ly) ** 2) / (2 * radius**2))
    img *= (0.9 + rng.uniform(0.12, 0.18) * light)[..., None]
    vignette = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
    img *= (1 - 0.1 * vignette)[..., None]

    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 1.2, (height, width, 1)).astype(np.float32)  # hides banding
    return np.clip(img + grain + 0.5, 0, 255).astype(np.uint8)
