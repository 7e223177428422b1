"""Offline procedural studio scenes: no weights, no GPU, deterministic from a seed.

A scene is a wall and a floor meeting at a horizon set just above the product's base, so the
product always stands on the surface. Surfaces are textures evaluated in the floor's own plane
and projected with a simple pinhole perspective; smooth layers are painted small and upsampled,
only grain and texture are drawn at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..scenes import ScenePreset, hex_rgb

if TYPE_CHECKING:
    from ..config import Settings
    from ..pipeline.layout import Placement
    from ..presets import Target

_PAINT = 256  # long side of the smooth layers (light, vignette, sweep)
_TEXTURE = 640  # side of a surface texture tile


@dataclass(frozen=True)
class Frame:
    """The canvas and where the product sits on it."""

    width: int
    height: int
    base_y: int  # the product's lowest row: the floor line
    top: int  # the product's highest row
    left: int  # the product's horizontal extent
    right: int

    @property
    def horizon(self) -> int:
        """Where wall meets floor: well behind the product, as seen by a camera a little above it,
        so the product stands on the surface rather than in front of its edge."""
        h = self.base_y - 0.55 * (self.base_y - self.top)
        return int(np.clip(h, 0.12 * self.height, self.base_y - 0.04 * self.height))


def _colour(preset: ScenePreset, i: int) -> np.ndarray:
    return np.array(hex_rgb(preset.palette[i % len(preset.palette)]), np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def noise(rng: np.random.Generator, height: int, width: int, scale: float, octaves: int = 4) -> np.ndarray:
    """Fractal value noise in about [-1, 1], (height, width) float32; `scale` is the largest feature in px."""
    out = np.zeros((height, width), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(height / scale) + 2), max(2, int(width / scale) + 2)
        grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        scale /= 2
        if scale < 1.5:
            break
    return out / total


def _floor_coords(frame: Frame, texture_px: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pinhole projection of the floor: for each canvas row/column below the horizon, where it
    falls on a flat texture of `texture_px` px. Returns (map_x, map_y, first_row)."""
    top = frame.horizon + 1
    rows = np.arange(top, frame.height, dtype=np.float32)
    depth = (frame.height - frame.horizon) / np.maximum(rows - frame.horizon, 1.0)  # 1 at the bottom edge
    depth = np.minimum(depth, 40.0)
    texel = texture_px / 1024  # textures are drawn for a 1024 px tile; smaller tiles just repeat sooner
    cols = (np.arange(frame.width, dtype=np.float32) - frame.width / 2) * (0.4 * texel)
    u = cols[None, :] * depth[:, None] + texture_px / 2
    v = np.broadcast_to((texture_px - depth * (texture_px * 0.3))[:, None], u.shape)
    return np.mod(u, texture_px, out=u), np.mod(v, texture_px), top


def _project_floor(texture: np.ndarray, frame: Frame) -> tuple[np.ndarray, int]:
    mx, my, top = _floor_coords(frame, texture.shape[0])
    # Far rows squeeze many texels into one pixel: blur them in, as a lens would.
    floor = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    # Far rows squeeze many texels into one pixel: blur them progressively, as a lens would,
    # instead of letting the texture alias into moire.
    rows = floor.shape[0]
    for frac, sigma in ((0.5, 0.8), (0.25, 1.6), (0.1, 2.5)):
        n = max(1, int(rows * frac))
        floor[:n] = cv2.GaussianBlur(floor[:n], (0, 0), sigma)
    return floor, top


# --- surfaces: each paints a flat, tileable-enough texture of size n x n, RGB float32 -------------

def marble(preset: ScenePreset, rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    turb = noise(rng, n, n, n / 3, 5)
    angle = rng.uniform(0.3, 1.2)
    veins = np.abs(np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(5, 9) + turb * 4.0))
    veins = veins ** rng.uniform(0.25, 0.45)  # thin dark veins, wide light stone
    base, vein = _colour(preset, 1), _colour(preset, 2)
    t = (1 - veins)[..., None]
    return base * (1 - 0.8 * t) + vein * 0.8 * t + 6 * noise(rng, n, n, 12, 2)[..., None]


def wood(preset: ScenePreset, rng: np.random.Generator, n: int) -> np.ndarray:
    """Boards running across the frame, grain along each board, a thin dark gap between boards."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    boards = 6
    board = (yy * boards / n).astype(np.int32)
    offset = rng.uniform(0, 50, boards).astype(np.float32)[board]
    wobble = noise(rng, n, n, n / 4, 3) * 3.0
    grain = 0.5 + 0.5 * np.sin((yy * boards / n * 9 + offset + wobble + xx / n * 0.7) * 2 * np.pi / 3)
    fibre = noise(rng, n // 8, n, 6, 2)
    fibre = cv2.resize(fibre, (n, n), interpolation=cv2.INTER_LINEAR)  # long thin streaks along x
    t = np.clip(0.6 * grain + 0.25 * fibre + 0.2, 0, 1)[..., None]
    img = _colour(preset, 1) * (1 - t) + _colour(preset, 2) * t
    img *= (1 + rng.uniform(-0.07, 0.07, boards).astype(np.float32)[board])[..., None]
    gap = (yy * boards / n) % 1 < 0.012
    img[gap] *= 0.5
    return img


def concrete(preset: ScenePreset, rng: np.random.Generator, n: int) -> np.ndarray:
    base = _colour(preset, 1)
    cloud = noise(rng, n, n, n / 2, 6)
    speck = (rng.random((n, n)) < 0.004).astype(np.float32)
    speck = cv2.GaussianBlur(speck, (0, 0), 0.8) * 60
    return base * (1 + 0.09 * cloud)[..., None] - speck[..., None] + 5 * noise(rng, n, n, 4, 2)[..., None]


def linen(preset: ScenePreset, rng: np.random.Generator, n: int) -> np.ndarray:
    base = _colour(preset, 1)
    warp = noise(rng, 1, n, 3, 2)[0] * 0.6 + np.sin(np.arange(n) * np.pi / 1.5) * 0.4
    weft = noise(rng, n, 1, 3, 2)[:, 0] * 0.6 + np.sin(np.arange(n) * np.pi / 1.5) * 0.4
    weave = warp[None, :] * 0.5 + weft[:, None] * 0.5
    slub = noise(rng, n, n, n / 8, 3)
    return base * (1 + 0.06 * weave + 0.04 * slub)[..., None]


SURFACES: dict[str, Callable[[ScenePreset, np.random.Generator, int], np.ndarray]] = {
    "marble": marble, "wood": wood, "concrete": concrete, "linen": linen,
}


# --- light ------------------------------------------------------------------------------------

def _light(preset: ScenePreset, frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """(H, W) multiplicative light: a soft key from the preset's side, and a gentle vignette."""
    k = _PAINT / max(frame.width, frame.height)
    w, h = max(2, round(frame.width * k)), max(2, round(frame.height * k))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= w - 1
    yy /= h - 1
    lx = 0.5 + np.sin(np.radians(preset.light_azimuth)) * 0.4 + rng.uniform(-0.06, 0.06)
    ly = frame.horizon / frame.height - rng.uniform(0.1, 0.25)
    radius = 0.35 + 0.4 * preset.light_softness + rng.uniform(-0.05, 0.05)
    key = np.exp(-(((xx - lx) * w / h) ** 2 + (yy - ly) ** 2) / (2 * radius**2))
    vignette = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
    light = (0.88 + rng.uniform(0.14, 0.2) * key) * (1 - 0.12 * vignette)
    if preset.surface == "window":
        light *= _window_pattern(w, h, preset, rng)
    return cv2.resize(light.astype(np.float32), (frame.width, frame.height), interpolation=cv2.INTER_CUBIC)


def _window_pattern(w: int, h: int, preset: ScenePreset, rng: np.random.Generator) -> np.ndarray:
    """Soft light through a four-pane window, falling across the wall from the light's side."""
    mask = np.zeros((h, w), np.float32)
    side = -1 if preset.light_azimuth < 0 else 1
    cx = w * (0.5 - side * rng.uniform(0.15, 0.3))
    pw, ph = w * 0.17, h * 0.2
    top = h * rng.uniform(0.05, 0.15)
    for i in range(2):
        for j in range(2):
            x0 = cx + (i - 1) * (pw + w * 0.02)
            y0 = top + j * (ph + h * 0.02)
            cv2.rectangle(mask, (int(x0), int(y0)), (int(x0 + pw), int(y0 + ph)), 1.0, -1)
    shear = np.float32([[1, side * 0.45, -side * 0.2 * w], [0, 1, 0]])
    mask = cv2.warpAffine(mask, shear, (w, h))
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, w * (0.01 + 0.02 * preset.light_softness)))
    return 0.9 + 0.22 * mask


# --- scenes -----------------------------------------------------------------------------------

def _wall(preset: ScenePreset, frame: Frame) -> np.ndarray:
    k = _PAINT / max(frame.width, frame.height)
    h = max(2, round(frame.height * k))
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    wall = _colour(preset, 0) * (0.94 + 0.06 * y)  # a little darker towards the top
    return cv2.resize(np.repeat(wall, 2, axis=1), (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)


def _sweep(preset: ScenePreset, frame: Frame, img: np.ndarray) -> None:
    """Curve the wall into a floor of the second colour with no visible seam."""
    y = np.arange(frame.height, dtype=np.float32)[:, None, None]
    bend = frame.height * (0.15 + 0.1 * preset.light_softness)
    t = _smoothstep((y - frame.horizon + bend / 2) / bend)
    img *= 1 - t
    img += _colour(preset, 1) * t


def _gradient(preset: ScenePreset, frame: Frame, img: np.ndarray) -> None:
    """A radial gradient from the first colour behind the product to the second at the edges."""
    k = _PAINT / max(frame.width, frame.height)  # smooth: paint small, upsample
    w, h = max(2, round(frame.width * k)), max(2, round(frame.height * k))
    xx = (np.arange(w, dtype=np.float32) / k - (frame.left + frame.right) / 2) / frame.width
    yy = (np.arange(h, dtype=np.float32) / k - frame.horizon) / frame.height
    t = _smoothstep(np.sqrt(xx[None, :] ** 2 + yy[:, None] ** 2) / 0.75)[..., None]
    small = _colour(preset, 0) * (1 - t) + _colour(preset, 1) * t
    img[:] = cv2.resize(small, (frame.width, frame.height), interpolation=cv2.INTER_CUBIC)


def _podium(preset: ScenePreset, frame: Frame, img: np.ndarray) -> None:
    """A pastel cylinder whose top is the floor the product stands on."""
    _sweep(preset, frame, img)
    cx = (frame.left + frame.right) / 2
    half = max((frame.right - frame.left) * 0.62, frame.width * 0.18)
    top_h = half * 0.22  # the ellipse of the top, seen from slightly above
    top_y = frame.base_y - top_h * 0.35
    body = _colour(preset, 2)
    yy = np.arange(frame.height, dtype=np.float32)[:, None]
    xx = np.arange(frame.width, dtype=np.float32)[None, :]
    dx = np.broadcast_to((xx - cx) / half, (frame.height, frame.width))
    side = (np.abs(dx) <= 1) & (yy >= top_y)
    shade = (1 - 0.22 * dx**2 + 0.06 * np.sign(-np.sin(np.radians(preset.light_azimuth))) * dx)
    img[side] = (body * shade[..., None])[side] * 0.93
    top = ((xx - cx) / half) ** 2 + ((yy - top_y) / top_h) ** 2 <= 1
    img[top] = (body * 1.04)[None, :].repeat(int(top.sum()), 0)
    edge = cv2.GaussianBlur(img, (0, 0), 1.0)  # anti-alias the cylinder's outline
    ring = cv2.dilate(top.astype(np.uint8) | side.astype(np.uint8), np.ones((3, 3), np.uint8)) ^ \
        cv2.erode(top.astype(np.uint8) | side.astype(np.uint8), np.ones((3, 3), np.uint8))
    img[ring > 0] = edge[ring > 0]


def render(preset: ScenePreset, frame: Frame, seed: int) -> np.ndarray:
    """The scene for `preset` around a product at `frame`, as (H, W, 3) uint8."""
    rng = np.random.default_rng([seed, sum(map(ord, preset.name))])
    img = _wall(preset, frame)
    surface = preset.surface
    if surface in ("sweep", "window"):
        _sweep(preset, frame, img)
    elif surface == "gradient":
        _gradient(preset, frame, img)
    elif surface == "podium":
        _podium(preset, frame, img)
    elif surface in SURFACES:
        texture = SURFACES[surface](preset, rng, _TEXTURE)
        floor, top = _project_floor(texture, frame)
        if surface == "linen":  # cloth drapes: the wall behind is the same cloth, seen flat
            img[:] = cv2.resize(texture, (frame.width, frame.height)) * 0.97
        # A soft seam where the table edge meets the wall.
        blend = _smoothstep((np.arange(top, frame.height, dtype=np.float32) - top) / 6)[:, None, None]
        img[top:] = img[top:] * (1 - blend) + floor * blend
        img[top - 2:top + 2] *= 0.97
    else:
        raise ValueError(f"scene {preset.name!r}: unknown surface {surface!r}")
    img *= _light(preset, frame, rng)[..., None]
    img += _grain(rng, frame.height, frame.width)[..., None]  # hides banding in smooth gradients
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _grain(rng: np.random.Generator, height: int, width: int, tile: int = 509) -> np.ndarray:
    """Film grain from one tile repeated (a prime size, so the repeat is invisible): cheap at 2000 px."""
    t = rng.standard_normal((tile, tile), dtype=np.float32) * 1.1
    return np.tile(t, (height // tile + 1, width // tile + 1))[:height, :width]


def frame_of(placement: Placement) -> Frame:
    """The Frame (canvas and product extent, px) of a placed product."""
    x0, y0, x1, _ = placement.box
    return Frame(placement.width, placement.height, placement.base_y, y0, x0, x1)


def paint(target: Target, preset: ScenePreset, placement: Placement, seed: int, *, control: np.ndarray | None = None,
          title: str | None = None, category: str | None = None, settings: Settings | None = None) -> np.ndarray:
    """The registry's entry for `studio`: render() on the placement's frame, (H, W, 3) uint8."""
    return render(preset, frame_of(placement), seed)


def paint_solid(target: Target, preset: ScenePreset, placement: Placement, seed: int, *,
                control: np.ndarray | None = None, title: str | None = None, category: str | None = None,
                settings: Settings | None = None) -> np.ndarray:
    """The registry's entry for `solid`: the preset's first palette colour, (H, W, 3) uint8."""
    size = (placement.height, placement.width, 3)
    return np.broadcast_to(np.array(hex_rgb(preset.palette[0]), np.uint8), size).copy()
