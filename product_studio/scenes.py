"""Scene presets: data that says how a background is made around the product.

A preset names its backend (`solid`, `studio`, or a generative one), its palette and surface,
its light and its shadows, and for generative backends a prompt. The scene stage reads only this.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .errors import BadInput, UnknownName


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #rrggbb")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


Surface = Literal["sweep", "gradient", "marble", "wood", "concrete", "linen", "paper", "podium", "window"]
# Surfaces a product can stand on (a floor, a table top, a podium's top); "gradient" has none: the
# product floats in front of it.
SUPPORTED: frozenset[str] = frozenset({"sweep", "marble", "wood", "concrete", "linen", "paper", "podium", "window"})


class ScenePreset(BaseModel, frozen=True):
    """A scene preset: how a background is made around the product, as data.

    Colours are "#rrggbb" (0-255 per channel); angles are degrees; strengths and softness are
    0-1. `view` is the camera: "front" (a wall, and a support the product stands on, seen from a
    little above: a floor, a table top, a podium's top) or "top" (a flat lay: the surface fills
    the frame, seen from straight above, no horizon). Shadows: `contact_shadow` is how dark the
    tight shadow is where the product meets its support (0: none, 1: black), `cast_shadow` the
    darkness of the shadow the key light throws, at its root, `cast_length` its length per unit
    of the product's height (1 / tan of the light's elevation: 1.0 is a light 45 degrees up; a
    flat-lay product is taken to stand a tenth of its size above the surface), `shadow_softness`
    its penumbra (0 hard, 1 very soft); `shadow` switches either off. Invalid values raise
    pydantic's ValidationError (a ValueError).
    """

    name: str
    title: str = ""
    backend: str = "studio"  # a scene backend's name (backends/registry.py)
    palette: tuple[str, ...] = Field(("#f3f2ef", "#e9e7e3"), min_length=1)  # wall, floor (, accent...) as #rrggbb
    surface: Surface = "sweep"
    view: Literal["front", "top"] = "front"
    light_azimuth: float = Field(-35.0, ge=-180, le=180)  # degrees: 0 front (a flat lay: top of frame), negative from the left
    light_softness: float = Field(0.5, ge=0, le=1)
    shadow: Literal["none", "contact", "cast", "both"] = "both"
    contact_shadow: float = Field(0.7, ge=0, le=1)
    cast_shadow: float = Field(0.35, ge=0, le=1)
    cast_length: float = Field(0.6, ge=0, le=3)
    shadow_softness: float = Field(0.5, ge=0, le=1)
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

    @model_validator(mode="after")
    def _view_fits_surface(self) -> ScenePreset:
        if self.view == "top" and self.surface == "podium":
            raise ValueError("a podium is seen from the front: view = \"top\" needs another surface")
        return self

    @property
    def has_support(self) -> bool:
        """Whether the product stands on something in this scene (a floor, a table, a podium's top,
        a flat lay's surface), so its base and contact shadow must lie on it."""
        return self.backend == "studio" and (self.view == "top" or self.surface in SUPPORTED)


BUILTIN: tuple[ScenePreset, ...] = (
    ScenePreset(name="solid", title="Flat light-grey colour", backend="solid", palette=("#f2f2f2",),
                shadow="contact"),
    ScenePreset(name="studio", title="Seamless paper sweep, soft key light from the left",
                palette=("#f1efeb", "#e7e4df"), surface="sweep", contact_shadow=0.7, cast_shadow=0.3,
                cast_length=0.7, shadow_softness=0.6,
                prompt="a {product} on a seamless white paper sweep, soft studio light, product photography"),
    ScenePreset(name="gradient", title="Soft warm gradient, floating product", palette=("#f8f4ee", "#d8d1c7"),
                surface="gradient", shadow="contact", contact_shadow=0.45, light_azimuth=0, light_softness=0.8,
                prompt="a {product} in front of a soft warm gradient backdrop, studio product photography"),
    ScenePreset(name="marble", title="White marble table top, glossy reflection",
                palette=("#e9e6e1", "#f2f0ec", "#8e8984"), surface="marble", reflection=True,
                light_azimuth=-40, light_softness=0.4, contact_shadow=0.75, cast_shadow=0.3, cast_length=0.5,
                shadow_softness=0.4,
                prompt="a {product} standing on a white marble table, elegant, soft daylight, product photography"),
    ScenePreset(name="wood", title="Oak plank table, plain wall", palette=("#eee7dd", "#c49a6c", "#8a5e3b"),
                surface="wood", light_azimuth=-30, light_softness=0.5, contact_shadow=0.75, cast_shadow=0.4,
                cast_length=0.7, shadow_softness=0.45,
                prompt="a {product} on a rustic oak wooden table, warm cozy light, lifestyle product photography"),
    ScenePreset(name="concrete", title="Raw concrete floor and wall", palette=("#c9c6c1", "#b3b0ab"),
                surface="concrete", light_azimuth=-50, light_softness=0.35, contact_shadow=0.8, cast_shadow=0.45,
                cast_length=0.9, shadow_softness=0.3,
                prompt="a {product} on a raw concrete surface, minimal industrial style, product photography"),
    ScenePreset(name="linen", title="Natural linen cloth", palette=("#e6dfd2", "#ddd3c1"), surface="linen",
                light_azimuth=-25, light_softness=0.7, contact_shadow=0.65, cast_shadow=0.3, shadow_softness=0.7,
                prompt="a {product} on natural beige linen cloth, soft natural light, product photography"),
    ScenePreset(name="podium", title="Pastel podium on a pastel sweep",
                palette=("#f4dcd3", "#efd3c8", "#f6d7cb"), surface="podium", light_azimuth=-30,
                light_softness=0.6, contact_shadow=0.7, cast_shadow=0.35, cast_length=0.5, shadow_softness=0.5,
                prompt="a {product} on a pastel pink cylinder podium, pastel background, product photography"),
    ScenePreset(name="window", title="Window light falling across a warm wall", palette=("#efe8dd", "#e4dccf"),
                surface="window", light_azimuth=-55, light_softness=0.3, contact_shadow=0.75, cast_shadow=0.5,
                cast_length=1.2, shadow_softness=0.25,
                prompt="a {product} on a table by a window, sunlight and window shadows, product photography"),
    # Flat lays, for products photographed from above: the surface fills the frame, no horizon, and
    # the product throws a soft drop shadow away from a window light at the frame's side (the usual
    # flat-lay set-up: a large soft source low at one side, e.g. Hunter, Biver & Fuqua, "Light:
    # Science and Magic", ch. 5 and 6, on surface texture and shadows seen from above).
    ScenePreset(name="flatlay-marble", title="Flat lay: white marble from above", view="top", surface="marble",
                palette=("#ece9e4", "#f3f1ed", "#8e8984"), light_azimuth=-45, light_softness=0.5,
                contact_shadow=0.6, cast_shadow=0.4, cast_length=0.8, shadow_softness=0.55,
                prompt="flat lay of a {product} on white marble, top-down view, soft daylight, product photography"),
    ScenePreset(name="flatlay-wood", title="Flat lay: oak planks from above", view="top", surface="wood",
                palette=("#eee7dd", "#c8a074", "#8e6340"), light_azimuth=-45, light_softness=0.5,
                contact_shadow=0.65, cast_shadow=0.45, cast_length=0.8, shadow_softness=0.5,
                prompt="flat lay of a {product} on an oak wooden table, top-down view, product photography"),
    ScenePreset(name="flatlay-linen", title="Flat lay: natural linen from above", view="top", surface="linen",
                palette=("#e4dccd", "#ddd2be"), light_azimuth=-40, light_softness=0.7,
                contact_shadow=0.55, cast_shadow=0.35, cast_length=0.7, shadow_softness=0.7,
                prompt="flat lay of a {product} on natural linen cloth, top-down view, product photography"),
    ScenePreset(name="flatlay-paper", title="Flat lay: warm white textured paper", view="top", surface="paper",
                palette=("#f1ede6", "#efeae2"), light_azimuth=-35, light_softness=0.6,
                contact_shadow=0.6, cast_shadow=0.4, cast_length=0.8, shadow_softness=0.6,
                prompt="flat lay of a {product} on textured white paper, top-down view, product photography"),
    ScenePreset(name="flatlay-colour", title="Flat lay: sage green backdrop", view="top", surface="sweep",
                palette=("#b9c7b0", "#b9c7b0"), light_azimuth=-35, light_softness=0.6,
                contact_shadow=0.6, cast_shadow=0.45, cast_length=0.9, shadow_softness=0.5,
                prompt="flat lay of a {product} on a sage green paper backdrop, top-down view, product photography"),
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
    """Presets from a TOML file of [[scene]] tables, with the fields of ScenePreset.

    Each table starts from the preset named by its `extends` (default: the built-in preset of the
    same name, if there is one) and changes only the fields it gives, so `name = "wood"` with
    `contact_shadow = 0.9` darkens the built-in wood's contact shadow and keeps the rest. Raises
    BadInput naming the file, the table and the field for anything invalid (an unknown `extends`
    included)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"scenes file {path}: {exc}") from None
    out: dict[str, ScenePreset] = {}
    for i, entry in enumerate(raw.get("scene", [])):
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        parent = fields.pop("extends", None)
        if "name" not in fields:  # else an extends would take its parent's name and replace it
            raise BadInput(f"scenes file {path}: scene #{i + 1}: name: Field required")
        known = {**SCENES, **out}
        if parent is not None and parent not in known:
            raise BadInput(f"scenes file {path}: scene #{i + 1}: extends: no scene {parent!r} "
                           f"(known: {', '.join(known)})")
        base = known[parent] if parent is not None else SCENES.get(fields.get("name"))
        try:
            inherited = base.model_dump() if base is not None else {}
            preset = ScenePreset(**{**inherited, **fields})
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
