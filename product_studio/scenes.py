"""Scene presets: data that says how a background is made around the product.

A preset names its backend (`solid`, `studio`, or a generative one), its palette and surface,
its light and its shadows, and for generative backends a prompt. The scene stage reads only this.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .errors import UnknownName


class ScenePreset(BaseModel, frozen=True):
    name: str
    title: str = ""
    backend: Literal["solid", "studio", "diffusers"] = "studio"
    palette: tuple[str, ...] = Field(("#f3f2ef", "#e9e7e3"), min_length=1)  # wall, floor, accent... as #rrggbb
    surface: str = "sweep"
    light_azimuth: float = -35.0  # degrees: 0 front, negative from the left
    light_softness: float = Field(0.5, ge=0, le=1)
    shadow: Literal["none", "contact", "cast", "both"] = "both"
    reflection: bool = False
    prompt: str = ""
    negative_prompt: str = ""


SCENES: dict[str, ScenePreset] = {
    p.name: p
    for p in [
        ScenePreset(name="solid", title="Flat light-grey colour", backend="solid", palette=("#f2f2f2",),
                    shadow="contact"),
        ScenePreset(name="studio", title="Seamless paper sweep, soft key light from the left"),
    ]
}


def get_scene(name: str) -> ScenePreset:
    try:
        return SCENES[name]
    except KeyError:
        raise UnknownName("scene", name, list(SCENES)) from None


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #rrggbb")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
