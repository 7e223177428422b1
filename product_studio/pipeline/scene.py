"""The scene stage: the background behind the product, on the target's canvas."""

from __future__ import annotations

import numpy as np

from ..backends.scene_studio import render_sweep
from ..presets import Target
from ..scenes import ScenePreset, hex_rgb
from .composite import ShadowStyle
from .layout import Placement


def render_background(target: Target, preset: ScenePreset, placement: Placement, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 background for one variant."""
    size = (target.height, target.width, 3)
    if target.pure_white:
        return np.full(size, 255, np.uint8)
    if preset.backend == "solid":
        return np.broadcast_to(np.array(hex_rgb(preset.palette[0]), np.uint8), size).copy()
    if preset.backend == "studio":
        return render_sweep(preset, target.width, target.height, placement.base_y, seed)
    raise NotImplementedError(f"scene backend {preset.backend!r} is not available yet")


def shadow_style(target: Target, preset: ScenePreset) -> ShadowStyle | None:
    """Shadows only where the target allows them (never on pure-white main images)."""
    if not target.shadows or target.pure_white or preset.shadow == "none":
        return None
    return ShadowStyle(
        contact=0.0 if preset.shadow == "cast" else 0.55,
        cast=0.0 if preset.shadow == "contact" else 0.28,
        light_azimuth=preset.light_azimuth,
        softness=0.03 + 0.06 * preset.light_softness,
    )
