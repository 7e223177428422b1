"""The scene stage: the background behind the product, on the target's canvas."""

from __future__ import annotations

import numpy as np

from ..backends import scene_studio
from ..presets import Target
from ..scenes import ScenePreset, hex_rgb
from .composite import ShadowStyle
from .layout import Placement


def frame_of(placement: Placement) -> scene_studio.Frame:
    x0, y0, x1, _ = placement.box
    return scene_studio.Frame(placement.width, placement.height, placement.base_y, y0, x0, x1)


def render_background(target: Target, preset: ScenePreset, placement: Placement, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 background for one variant (generative backends are handled by the caller)."""
    size = (target.height, target.width, 3)
    if target.pure_white:
        return np.full(size, 255, np.uint8)
    if preset.backend == "solid":
        return np.broadcast_to(np.array(hex_rgb(preset.palette[0]), np.uint8), size).copy()
    if preset.backend == "studio":
        return scene_studio.render(preset, frame_of(placement), seed)
    raise ValueError(f"scene {preset.name!r}: backend {preset.backend!r} does not paint plain backgrounds")


def shadow_style(target: Target, preset: ScenePreset) -> ShadowStyle | None:
    """Shadows only where the target allows them (never on pure-white main images)."""
    if not target.shadows or target.pure_white or preset.shadow == "none":
        return None
    return ShadowStyle(
        contact=0.0 if preset.shadow == "cast" else 0.55,
        cast=0.0 if preset.shadow == "contact" else 0.28,
        light_azimuth=preset.light_azimuth,
        softness=0.03 + 0.06 * preset.light_softness,
        reflection=0.3 if preset.reflection else 0.0,
    )
