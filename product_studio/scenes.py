"""Scene presets: data that says how a background is made around the product.

A preset names its backend (`solid`, `studio`, or a generative one), its palette and surface,
its light and its shadows, and for generative backends a prompt. The scene stage reads only this.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from .errors import BadInput, UnknownName


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #rrggbb")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


class ScenePreset(BaseModel, frozen=True):
    name: str
    title: str = ""
    backend: str = "studio"  # a scene backend's name (backends/registry.py)
    palette: tuple[str, ...] = Field(("#f3f2ef", "#e9e7e3"), min_length=1)  # wall, floor, accent... as #rrggbb
    surface: Literal["sweep", "gradient", "marble", "wood", "concrete", "linen", "podium", "window"] = "sweep"
    light_azimuth: float = -35.0  # degrees: 0 front, negative from the left
    light_softness: float = Field(0.5, ge=0, le=1)
    shadow: Literal["none", "contact", "cast", "both"] = "both"
    reflection: bool = False
    prompt: str = ""
    negative_prompt: str = "blurry, deformed, distorted product, text, watermark, low quality"

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        from .backends.registry import scene_backend

        try:
            scene_backend(backend)
        except UnknownName as exc:  # pydantic reports ValueErrors as validation errors
            raise ValueError(str(exc)) from None
        return backend

    @field_validator("palette")
    @classmethod
    def _hex_colours(cls, palette: tuple[str, ...]) -> tuple[str, ...]:
        for colour in palette:
            hex_rgb(colour)
        return palette


BUILTIN: tuple[ScenePreset, ...] = (
    ScenePreset(name="solid", title="Flat light-grey colour", backend="solid", palette=("#f2f2f2",),
                shadow="contact"),
    ScenePreset(name="studio", title="Seamless paper sweep, soft key light from the left",
                palette=("#f1efeb", "#e7e4df"), surface="sweep",
                prompt="a {product} on a seamless white paper sweep, soft studio light, product photography"),
    ScenePreset(name="gradient", title="Soft warm gradient, floating product", palette=("#f8f4ee", "#d8d1c7"),
                surface="gradient", shadow="contact", light_azimuth=0, light_softness=0.8,
                prompt="a {product} in front of a soft warm gradient backdrop, studio product photography"),
    ScenePreset(name="marble", title="White marble table top, glossy reflection",
                palette=("#e9e6e1", "#f2f0ec", "#8e8984"), surface="marble", reflection=True,
                light_azimuth=-40, light_softness=0.4,
                prompt="a {product} standing on a white marble table, elegant, soft daylight, product photography"),
    ScenePreset(name="wood", title="Warm oak table, plain wall", palette=("#eee7dd", "#b98b60", "#7d5535"),
                surface="wood", light_azimuth=-30, light_softness=0.5,
                prompt="a {product} on a rustic oak wooden table, warm cozy light, lifestyle product photography"),
    ScenePreset(name="concrete", title="Raw concrete floor and wall", palette=("#c9c6c1", "#aeaba6"),
                surface="concrete", light_azimuth=-50, light_softness=0.35,
                prompt="a {product} on a raw concrete surface, minimal industrial style, product photography"),
    ScenePreset(name="linen", title="Natural linen cloth", palette=("#e6dfd2", "#e2d9c9"), surface="linen",
                light_azimuth=-25, light_softness=0.7,
                prompt="a {product} on natural beige linen cloth, soft natural light, product photography"),
    ScenePreset(name="podium", title="Pastel podium on a pastel sweep",
                palette=("#f3d8cf", "#efd0c5", "#f7e4dc"), surface="podium", light_azimuth=-30,
                light_softness=0.6,
                prompt="a {product} on a pastel pink cylinder podium, pastel background, product photography"),
    ScenePreset(name="window", title="Window light falling across a warm wall", palette=("#efe8dd", "#e4dccf"),
                surface="window", light_azimuth=-55, light_softness=0.3,
                prompt="a {product} on a table by a window, sunlight and window shadows, product photography"),
)
# Generative presets: diffusers ControlNet inpainting (PRODUCT_STUDIO_DIFFUSION_* settings say which model).
# The model paints its own light, so only a contact shadow is added.
GENERATIVE: tuple[ScenePreset, ...] = (
    ScenePreset(name="ai-studio", title="Generated studio set", backend="diffusers", shadow="contact",
                prompt="a {product} in a bright professional photo studio, seamless backdrop, softbox light, "
                       "high-end product photography, sharp focus"),
    ScenePreset(name="ai-kitchen", title="Generated kitchen counter", backend="diffusers", shadow="contact",
                prompt="a {product} on a marble kitchen counter, morning light, blurred modern kitchen behind, "
                       "lifestyle product photography"),
    ScenePreset(name="ai-nature", title="Generated outdoor scene", backend="diffusers", shadow="contact",
                prompt="a {product} on a mossy rock in a sunlit forest, shallow depth of field, "
                       "lifestyle product photography"),
)
SCENES: dict[str, ScenePreset] = {p.name: p for p in BUILTIN + GENERATIVE}


def load_user_scenes(path: Path) -> dict[str, ScenePreset]:
    """Presets from a TOML file of [[scene]] tables, with the fields of ScenePreset."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"scenes file {path}: {exc}") from None
    out = {}
    for i, entry in enumerate(raw.get("scene", [])):
        try:
            preset = ScenePreset(**{k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise BadInput(f"scenes file {path}: scene #{i + 1}: {'.'.join(map(str, first['loc']))}: "
                           f"{first['msg']}") from None
        out[preset.name] = preset
    return out


def all_scenes(settings=None) -> dict[str, ScenePreset]:
    """Built-in presets, overridden or extended by the user's scenes file (PRODUCT_STUDIO_SCENES_FILE)."""
    from .config import get_settings

    settings = settings or get_settings()
    if settings.scenes_file is None:
        return SCENES
    return {**SCENES, **load_user_scenes(settings.scenes_file)}


def get_scene(name: str, settings=None) -> ScenePreset:
    scenes = all_scenes(settings)
    try:
        return scenes[name]
    except KeyError:
        raise UnknownName("scene", name, list(scenes)) from None
