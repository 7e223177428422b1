"""The scene stage: the background behind the product, on the target's canvas.

Pure-white targets are white; everything else is painted by the preset's backend, looked up by
name in the registry (product_studio/backends/registry.py).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..backends import scene_studio
from ..backends.registry import scene_backend
from ..backends.scene_studio import frame_of, support_mask  # noqa: F401 (the studio's geometry, for callers and tests)
from ..config import Settings
from ..presets import Target
from ..scenes import ScenePreset
from .composite import ShadowStyle
from .layout import Placement


def render_background(target: Target, preset: ScenePreset, placement: Placement, seed: int, *,
                      control: np.ndarray | None = None, title: str | None = None, category: str | None = None,
                      settings: Settings | None = None) -> np.ndarray:
    """(H, W, 3) uint8 background for one variant. A generative backend needs `control`, the
    (H, W, 3) uint8 ControlNet control image on the same canvas (pipeline.edges)."""
    if target.pure_white:
        return np.full((target.height, target.width, 3), 255, np.uint8)
    backend = scene_backend(preset.backend)
    if backend.generative and control is None:
        raise ValueError(f"scene {preset.name!r}: backend {preset.backend!r} needs a control image")
    return backend.painter()(target, preset, placement, seed, control=control, title=title, category=category,
                             settings=settings)


def shadow_style(target: Target, preset: ScenePreset) -> ShadowStyle | None:
    """The preset's shadows (its contact and cast darkness 0-1, cast length, softness, light and
    view), only where the target allows them: never on pure-white main images. None: no shadows.
    Studio podium scenes end the shadows at the podium's top (scene_studio.receiver)."""
    if not target.shadows or target.pure_white or preset.shadow == "none":
        return None
    receiver = None
    if preset.backend == "studio" and preset.view == "front" and preset.surface == "podium":
        receiver = partial(scene_studio.receiver, preset)
    return ShadowStyle(
        contact=0.0 if preset.shadow == "cast" else preset.contact_shadow,
        cast=0.0 if preset.shadow == "contact" else preset.cast_shadow,
        light_azimuth=preset.light_azimuth,
        cast_length=preset.cast_length,
        softness=preset.shadow_softness,
        reflection=0.3 if preset.reflection and preset.view == "front" else 0.0,
        view=preset.view,
        receiver=receiver,
    )
