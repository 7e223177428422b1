"""Offline procedural studio scenes: no weights, no GPU, deterministic from a seed.

Front view: a pinhole camera looks level at the product from a little above its base. The product
stands on a support (a floor, a table top, a podium's top) whose surface is a material texture
laid in that plane and seen in perspective; the support ends at a wall behind the product. Top
view (flat lays): the surface fills the frame, seen from straight above, with no horizon.

Materials (wood planks, woven linen, marble, concrete, paper) are drawn flat, as periodic
textures in the surface's own coordinates, from band-limited lattice noise and analytic patterns
whose finest features are faded out below the texture's resolution ("clamping": Norton, Rockwood
& Skolmoski, "Clamping: a method of antialiasing textured surfaces by bandwidth limiting in object
space", SIGGRAPH 1982). A floor seen in perspective is then resampled with each canvas pixel's
own footprint: every canvas row is one line of constant depth, so the footprint is an
axis-aligned box in texture space, integrated exactly with prefix sums (summed-area filtering:
Crow, "Summed-area tables for texture mapping", SIGGRAPH 1984), widened by a depth-of-field blur
away from the product's depth. Far rows average many texels instead of aliasing into moire.

Units: canvas px; "world" lengths are px at the product's depth (1 world px = 1 canvas px on
the product's base line); material sizes are in units of 1/1000 of the canvas' long side, so a
scene looks the same at any canvas size. Colours are RGB 0-255 float32 until the final uint8.
"""

from __future__ import annotations

import math
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
_FOCAL = 1.2  # focal length as a share of the canvas' long side (a normal lens, about 45 mm on 35 mm film)
_EYE = 0.55  # the camera's eye level above the product's base, as a share of the product's height
_WALL_DEPTH = 3.0  # the wall behind a table stands at this many times the product's distance
_FLOOR_SPAN = 1.6  # a floor texture tile spans this many canvas widths (world px) in each direction
_MAX_TEXELS = 2048  # longest side of a floor texture tile
_DOF = 0.006  # circle of confusion (canvas px per px of long side) of a surface far out of focus


@dataclass(frozen=True)
class Frame:
    """The canvas (px) and where the product sits on it (px, from layout.Placement), and the
    camera that sees it: the eye level, focal length and the support's far edge follow from
    these."""

    width: int
    height: int
    base_y: int  # the product's lowest row + 1: where it meets its support
    top: int  # the product's highest row
    left: int  # the product's horizontal extent
    right: int

    @property
    def unit(self) -> float:
        """Material unit: 1/1000 of the canvas' long side, px."""
        return max(self.width, self.height) / 1000

    @property
    def focal(self) -> float:
        """Focal length, px."""
        return _FOCAL * max(self.width, self.height)

    @property
    def camera_height(self) -> float:
        """The camera's height above the support's plane in world px (px at the product's depth):
        about half the product's height, as a product is photographed level with its middle,
        at least a tenth of the canvas so the support never shrinks to a sliver."""
        h = _EYE * (self.base_y - self.top)
        return float(np.clip(h, 0.1 * self.height, max(0.1 * self.height, self.base_y - 0.06 * self.height)))

    @property
    def eye_level(self) -> float:
        """Canvas row (float) of the horizon proper: where a level camera's lines of sight meet."""
        return self.base_y - self.camera_height

    @property
    def horizon(self) -> int:
        """Canvas row where the support's far edge meets the wall: behind the product, between
        the eye level and its base, so the product stands on the surface rather than in front of
        its edge."""
        return int(round(self.eye_level + self.camera_height / _WALL_DEPTH))

    def depth(self, rows: np.ndarray) -> np.ndarray:
        """Depth (world px along the camera's axis) of the support's plane at canvas rows below the
        eye level (pixel centres at row + 0.5); the product's base row is at depth `focal`."""
        return self.focal * self.camera_height / np.maximum(rows + 0.5 - self.eye_level, 1e-3)


def _colour(preset: ScenePreset, i: int) -> np.ndarray:
    return np.array(hex_rgb(preset.palette[i % len(preset.palette)]), np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


# --- band-limited periodic noise --------------------------------------------------------------

def _resize_periodic(a: np.ndarray, fv: int, fu: int) -> np.ndarray:
    """(fv, fu) (integers) times the resolution of a periodic 2-D array, cubic: the result wraps
    around seamlessly too."""
    p = 2
    padded = np.pad(a, [(p, p), (p, p)] + [(0, 0)] * (a.ndim - 2), mode="wrap")
    big = cv2.resize(padded, (padded.shape[1] * fu, padded.shape[0] * fv), interpolation=cv2.INTER_CUBIC)
    return big[p * fv:(p + a.shape[0]) * fv, p * fu:(p + a.shape[1]) * fu]


def noise(rng: np.random.Generator, nv: int, nu: int, cell_v: float, cell_u: float | None = None,
          octaves: int = 4, gain: float = 0.5, periodic: bool | None = None) -> np.ndarray:
    """Fractal value noise (Perlin, "An image synthesizer", SIGGRAPH 1985: octaves of smoothly
    interpolated random lattices, each half the size and `gain` the amplitude of the last), as a
    (nv, nu) float32 field of about unit standard deviation. `cell_v`, `cell_u`: the largest
    features, texels (anisotropic when they differ). Octaves finer than 2 texels are left out, so
    the field is band-limited to what the texels can hold. Built coarse to fine: each octave's
    lattice is added to the sum so far enlarged twice, then the sum is enlarged to (nv, nu).

    `periodic` (default: when nv and nu are powers of two) makes the field tile seamlessly; cell
    sizes are then rounded to powers of two. Raises ValueError for a periodic field whose sides
    are not powers of two."""
    cell_u = cell_v if cell_u is None else cell_u
    pow2 = (nv & (nv - 1)) == 0 and (nu & (nu - 1)) == 0
    periodic = pow2 if periodic is None else periodic
    if periodic and not pow2:
        raise ValueError(f"a periodic noise field needs sides that are powers of two, not {nv}x{nu}")
    if periodic:
        kv = int(np.clip(round(math.log2(max(cell_v, 1.0))), 0, math.log2(nv)))
        ku = int(np.clip(round(math.log2(max(cell_u, 1.0))), 0, math.log2(nu)))
        cell_v, cell_u = 2.0**kv, 2.0**ku
        gv, gu = nv >> kv, nu >> ku
    else:
        gv, gu = max(1, math.ceil(nv / cell_v)), max(1, math.ceil(nu / cell_u))
    acc = rng.uniform(-1, 1, (gv, gu)).astype(np.float32)
    amp, total = 1.0, 1.0
    for _ in range(octaves - 1):
        if min(cell_v, cell_u) < 4.0:  # the next octave would be under 2 texels
            break
        acc = _resize_periodic(acc, 2, 2) if periodic else \
            cv2.resize(acc, (acc.shape[1] * 2, acc.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
        amp *= gain
        acc += rng.uniform(-amp, amp, acc.shape).astype(np.float32)
        total += amp * amp
        cell_v, cell_u = cell_v / 2, cell_u / 2
    if acc.shape != (nv, nu):
        if periodic:
            acc = _resize_periodic(acc, nv // acc.shape[0], nu // acc.shape[1])
        else:
            acc = cv2.resize(acc, (nu, nv), interpolation=cv2.INTER_CUBIC)
    return acc * np.float32(1 / (0.5 * math.sqrt(total)))


def _blur_wrap(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (sigma in texels) of a periodic texture, wrapping around its edges. Wide blurs
    run on a copy reduced by a power of two (sides allowing) and enlarged back."""
    k = 1
    while sigma / (2 * k) >= 1.5 and img.shape[0] % (2 * k) == 0 and img.shape[1] % (2 * k) == 0:
        k *= 2
    if k > 1:
        small = cv2.resize(img, (img.shape[1] // k, img.shape[0] // k), interpolation=cv2.INTER_AREA)
        small = _blur_wrap(small, math.sqrt(max(sigma**2 - (0.5 * k) ** 2, 0.25)) / k)
        return _resize_periodic(small, k, k)
    p = int(math.ceil(3 * sigma)) + 1
    padded = np.pad(img, [(p, p), (p, p)] + [(0, 0)] * (img.ndim - 2), mode="wrap")
    return cv2.GaussianBlur(padded, (0, 0), sigma)[p:-p, p:-p]


def _clamp(period_texels: float, full: float = 4.0, gone: float = 2.0) -> float:
    """Amplitude to keep of a pattern with this period (texels): 1 at `full` and above, 0 at `gone`
    and below (its average replaces it): frequency clamping."""
    return float(_smoothstep((period_texels - gone) / (full - gone)))


# --- materials: flat periodic textures in the surface's plane --------------------------------

@dataclass(frozen=True)
class Grid:
    """A texture's sampling: (nv, nu) texels of (tv, tu) world px each; `unit` is the material unit
    in world px; `light` the direction (u, v) the key light comes from, for relief shading."""

    nv: int
    nu: int
    tv: float
    tu: float
    unit: float
    light: tuple[float, float] = (-0.7, -0.7)

    def texels(self, world: float, axis: str) -> float:
        """A length in world px, in texels along axis "u" or "v"."""
        return world / (self.tu if axis == "u" else self.tv)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """World px of the texel centres: (v of each row (nv,), u of each column (nu,)), float32."""
        return ((np.arange(self.nv, dtype=np.float32) + 0.5) * np.float32(self.tv),
                (np.arange(self.nu, dtype=np.float32) + 0.5) * np.float32(self.tu))


@dataclass(frozen=True)
class Material:
    """A surface texture as K weights per texel and K colours: the colour of a texel is
    sum_k channels[..., k] * colours[k]. Filtering is linear, so the weights are what a
    projection averages (K <= 2 channels instead of 3) and colours are applied after."""

    channels: np.ndarray  # (nv, nu, K) float32, periodic
    colours: np.ndarray  # (K, 3) float32, RGB 0-255

    def rgb(self, channels: np.ndarray | None = None) -> np.ndarray:
        """(..., 3) float32 RGB 0-255 of these channels (default: the texture's own)."""
        ch = self.channels if channels is None else channels
        if ch.shape[-1] == 1:
            return ch * self.colours[0]
        return cv2.transform(ch, np.ascontiguousarray(self.colours.T))


def _relief(height: np.ndarray, grid: Grid, strength: float) -> np.ndarray:
    """Lambert-like shading of a height field (texel units) lit from grid.light: 1 +- strength per
    unit slope."""
    lu, lv = grid.light
    dv, du = np.gradient(height)
    return 1.0 - strength * (du * np.float32(lu) + dv * np.float32(lv))


def wood(preset: ScenePreset, rng: np.random.Generator, grid: Grid) -> Material:
    """Oak planks running along u: growth rings along each plank (dark, narrow latewood bands
    between wide earlywood, wavy where the saw cut them at a slant: Hoadley, "Understanding Wood",
    2000, ch. 1 and 3), pores in fine streaks, each board its own tint, boards butted end to end,
    a dark gap between planks with a slight bevel. Palette: 1 earlywood, 2 latewood. (nv, nu, 2)."""
    nv, nu, U = grid.nv, grid.nu, grid.unit
    span_v, span_u = nv * grid.tv, nu * grid.tu
    planks = max(1, round(span_v / (115 * U)))
    plank_w = np.float32(span_v / planks)
    v, u = grid.coords()
    row_plank = np.minimum((v / plank_w).astype(np.int32), planks - 1)
    s = v / plank_w - row_plank  # 0-1 across the plank

    # Boards are long: a plank row is one board across the tile, or two butted at two random
    # joints (the one crossing the tile's edge wraps around, so the tile stays periodic).
    joints = np.sort(rng.uniform(0, span_u, (planks, 2)), axis=1).astype(np.float32)
    joints[rng.random(planks) > min(1.0, span_u / (1800 * U))] = np.inf
    j0, j1 = joints[row_plank, 0][:, None], joints[row_plank, 1][:, None]
    second = (u[None, :] > j0) & (u[None, :] <= j1)

    def per_board(lo: float, hi: float) -> np.ndarray:
        values = rng.uniform(lo, hi, (planks, 2)).astype(np.float32)[row_plank]
        return np.where(second, values[:, 1:2], values[:, 0:1])

    rings, phase, tint = per_board(5, 9), per_board(0, 10), per_board(0.91, 1.09)
    wave = noise(rng, nv, nu, grid.texels(plank_w * 0.6, "v"), grid.texels(700 * U, "u"), 3)
    figure = noise(rng, nv, nu, grid.texels(plank_w * 0.4, "v"), grid.texels(160 * U, "u"), 2)
    g = s[:, None] * rings + phase + 0.6 * wave + 0.25 * figure
    keep = _clamp(grid.texels(plank_w, "v") / 9, 6, 2.5)  # the narrowest rings, texels (the bands hold 3 harmonics)
    c = 0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * g)
    late = c * c * c  # dark, narrow latewood bands (mean 5/16)
    if keep < 1:
        late = keep * late + (1 - keep) * (5 / 16)
    pores = noise(rng, nv, nu, grid.texels(2.5 * U, "v"), grid.texels(60 * U, "u"), 2)
    t = np.clip(0.22 + 0.55 * late + (0.08 * _clamp(grid.texels(2.5 * U, "v"))) * pores + 0.1 * figure, 0, 1)

    # The gap between planks and the butt joints: dark lines 1.5 units wide, anti-aliased.
    gap = 1.5 * U
    d_plank = np.minimum(s, 1 - s) * plank_w  # world px to the nearest plank edge
    cover = _smoothstep((gap - d_plank) / grid.tv + 0.5)[:, None]
    d_joint = np.minimum(np.abs(u[None, :] - j0), np.abs(u[None, :] - j1))
    cover = np.maximum(cover, _smoothstep((0.7 * gap - d_joint) / grid.tu + 0.5))
    bevel = 1 + 0.06 * _smoothstep((5 * U - d_plank) / (5 * U)) * np.where(s < 0.5, 1, -1)
    m = tint * bevel[:, None] * (1 - 0.55 * cover)
    return Material(np.dstack([m * (1 - t), m * t]), np.stack([_colour(preset, 1), _colour(preset, 2)]))


def _lines(field: np.ndarray, width: np.ndarray | float) -> np.ndarray:
    """Lines along the zero crossings of `field`, about `width` texels wide whatever the field's
    slope (first-order distance |f| / |grad f|; the slope is floored at half its median, so flat
    spots do not swell into blobs), 0-1 float32. Widths under 1.2 texels are kept at 1.2 so the
    lines stay anti-aliased."""
    gv, gu = np.gradient(field)
    slope = np.sqrt(gu * gu + gv * gv)
    slope = np.maximum(slope, 0.5 * float(np.median(slope[::7, ::7])) + 1e-6)
    x = np.abs(field) / (slope * np.maximum(width, 1.2))
    return np.exp(-x * x)


def marble(preset: ScenePreset, rng: np.random.Generator, grid: Grid) -> Material:
    """Carrara-like marble: white stone with soft grey clouds and a network of grey veins: main
    veins running mostly one way and thinner ones crossing them, each the zero crossings of a sine
    bent by fractal noise (Perlin's marble, "An image synthesizer", SIGGRAPH 1985), varying in
    width and fading in and out along their length. Palette: 1 stone, 2 veins."""
    nv, nu, U = grid.nv, grid.nu, grid.unit
    v, u = grid.coords()
    span_v, span_u = nv * grid.tv, nu * grid.tu
    texel = min(grid.tu, grid.tv)

    def veins(spacing: float, slant: float, bend: float, width: float, cell: float) -> np.ndarray:
        # Whole numbers of bands across the tile keep it periodic. The bending noise's slope stays
        # below the sine's (gain 0.4: its fine octaves are gentle), so veins meander without loops.
        ku = max(1, round(span_u / spacing * abs(math.cos(slant))))
        kv = max(1, round(span_v / spacing * abs(math.sin(slant)))) * (1 if slant > 0 else -1)  # never straight
        phase = (np.float32(2 * np.pi * ku / span_u) * u[None, :] + np.float32(2 * np.pi * kv / span_v) * v[:, None])
        bent = noise(rng, nv, nu, grid.texels(cell, "v"), grid.texels(cell, "u"), 6, 0.4)
        field = np.sin(phase + np.float32(bend) * bent)
        w = (width / texel) * np.exp(0.5 * noise(rng, nv, nu, grid.texels(150 * U, "v"), grid.texels(150 * U, "u"), 2))
        fade = _smoothstep(0.55 + 0.5 * noise(rng, nv, nu, grid.texels(300 * U, "v"), grid.texels(300 * U, "u"), 3))
        return _lines(field, w) * fade

    slant = rng.uniform(0.5, 1.0) * rng.choice([-1, 1])
    main = veins(800 * U, slant, 1.0, 2.6 * U, 600 * U)
    halo = _blur_wrap(main, 9 * U / texel)
    thin = veins(330 * U, slant + rng.choice([-1, 1]) * rng.uniform(0.9, 1.3), 1.2, 0.9 * U, 300 * U)
    cloud = noise(rng, nv, nu, grid.texels(260 * U, "v"), grid.texels(260 * U, "u"), 5)
    t = np.clip(0.6 * main + 0.35 * halo + 0.28 * thin + 0.05 * cloud + 0.05, 0, 1)
    return Material(np.dstack([1 - t, t]), np.stack([_colour(preset, 1), _colour(preset, 2)]))


def concrete(preset: ScenePreset, rng: np.random.Generator, grid: Grid) -> Material:
    """Cast concrete: large soft mottling, smaller blotches, sand grain in relief, and air pits.
    Palette: 1 concrete."""
    nv, nu, U = grid.nv, grid.nu, grid.unit
    cloud = noise(rng, nv, nu, grid.texels(350 * U, "v"), grid.texels(350 * U, "u"), 5)
    blotch = noise(rng, nv, nu, grid.texels(45 * U, "v"), grid.texels(45 * U, "u"), 3)
    sand = noise(rng, nv, nu, grid.texels(4 * U, "v"), grid.texels(4 * U, "u"), 2)
    shade = _relief(sand * 0.6 + blotch * 2.0, grid, 0.05)
    pits = np.zeros((nv, nu), np.float32)
    count = int(nv * nu * grid.tu * grid.tv / U**2 * 6e-5)
    np.add.at(pits, (rng.integers(0, nv, count), rng.integers(0, nu, count)),
              rng.uniform(0.5, 1.0, count).astype(np.float32))
    sigma = max(0.7, 1.6 * U / min(grid.tu, grid.tv))
    pits = np.clip(_blur_wrap(pits, sigma) * np.float32(2 * np.pi * sigma**2), 0, 1)
    tone = (1 + 0.03 * cloud + 0.025 * blotch + (0.025 * _clamp(grid.texels(4 * U, "u"))) * sand) * shade
    return Material((tone * (1 - 0.35 * pits))[..., None], _colour(preset, 1)[None])


def linen(preset: ScenePreset, rng: np.random.Generator, grid: Grid) -> Material:
    """Plain-woven linen: warp (along v) and weft (along u) threads passing over one and under the
    next (Emery, "The Primary Structures of Fabrics", 1966: plain weave), uneven slubbed threads of
    slightly different shades of flax, soft creases in relief; threads 5 units apart, faded out
    where the tile cannot hold them. Palette: 1 flax. (nv, nu, 2)."""
    nv, nu, U = grid.nv, grid.nu, grid.unit
    period = 5.0 * U  # one thread, world px
    # Threads per tile must be even (over/under repeats every two) for the tile to wrap.
    n_u = max(2, 2 * round(nu * grid.tu / period / 2))
    n_v = max(2, 2 * round(nv * grid.tv / period / 2))
    a = (np.arange(nu, dtype=np.float32) + 0.5) * np.float32(n_u / nu)
    b = (np.arange(nv, dtype=np.float32) + 0.5) * np.float32(n_v / nv)
    i, j = a.astype(np.int32), b.astype(np.int32)
    bump_a, bump_b = np.sin(np.pi * (a - i)) ** 0.6, np.sin(np.pi * (b - j)) ** 0.6  # round threads
    over = ((i[None, :] + j[:, None]) & 1) == 0  # the warp thread is on top here
    height = np.where(over, bump_a[None, :] * (0.7 + 0.3 * bump_b[:, None]),
                      bump_b[:, None] * (0.7 + 0.3 * bump_a[None, :]))
    keep = _clamp(min(nu / n_u, nv / n_v), 4, 2.2)
    # Slubs: each thread thicker and lighter or darker along its length.
    slub = np.where(over, noise(rng, nv, nu, grid.texels(40 * U, "v"), nu / n_u, 3),
                    noise(rng, nv, nu, nv / n_v, grid.texels(40 * U, "u"), 3))
    crease = noise(rng, nv, nu, grid.texels(300 * U, "v"), grid.texels(500 * U, "u"), 3, 0.35)
    shade = _relief(crease * np.float32(grid.texels(12 * U, "u")), grid, 0.05)
    tone = (1 + (0.22 * keep) * (height - 0.55) + (0.04 * (0.5 + 0.5 * keep)) * slub) * shade
    mix = np.clip(0.5 + 0.5 * slub, 0, 1) * 0.6
    flax = _colour(preset, 1)
    return Material(np.dstack([tone * (1 - mix), tone * mix]),
                    np.stack([flax, flax * np.array([0.9, 0.88, 0.84], np.float32)]))


def paper(preset: ScenePreset, rng: np.random.Generator, grid: Grid) -> Material:
    """Textured paper: cloudy formation (fibre flocs), fine tooth in relief, faint fibres.
    Palette: 1 paper."""
    nv, nu, U = grid.nv, grid.nu, grid.unit
    formation = noise(rng, nv, nu, grid.texels(14 * U, "v"), grid.texels(14 * U, "u"), 4)
    tooth = noise(rng, nv, nu, grid.texels(2.4 * U, "v"), grid.texels(2.4 * U, "u"), 2)
    fibres = (noise(rng, nv, nu, grid.texels(1.5 * U, "v"), grid.texels(14 * U, "u"), 2)
              + noise(rng, nv, nu, grid.texels(14 * U, "v"), grid.texels(1.5 * U, "u"), 2))
    broad = noise(rng, nv, nu, grid.texels(400 * U, "v"), grid.texels(400 * U, "u"), 2)
    shade = _relief(tooth * 1.2 + formation * 0.3, grid, 0.04)
    tone = (1 + 0.01 * formation + (0.008 * _clamp(grid.texels(1.5 * U, "u"))) * fibres + 0.012 * broad) * shade
    return Material(tone[..., None], _colour(preset, 1)[None])


def plain(preset: ScenePreset, rng: np.random.Generator, grid: Grid) -> Material:
    """Seamless backdrop paper: one colour (palette 1), with the faintest formation."""
    formation = noise(rng, grid.nv, grid.nu, grid.texels(20 * grid.unit, "v"), grid.texels(20 * grid.unit, "u"), 3)
    return Material((1 + 0.007 * formation)[..., None], _colour(preset, 1)[None])


MATERIALS: dict[str, Callable[[ScenePreset, np.random.Generator, Grid], Material]] = {
    "marble": marble, "wood": wood, "concrete": concrete, "linen": linen, "paper": paper,
}


# --- a flat texture seen in perspective --------------------------------------------------------

def _prefix(a: np.ndarray) -> np.ndarray:
    """Prefix sums along axis 0 with a leading zero row, float32 (a loop over rows: several times
    faster than np.cumsum along the first axis)."""
    out = np.empty((a.shape[0] + 1,) + a.shape[1:], np.float32)
    out[0] = 0
    for i in range(a.shape[0]):
        np.add(out[i], a[i], out=out[i + 1])
    return out


def project(texture: np.ndarray, grid: Grid, frame: Frame, first_row: int, last_row: int, *,
            u0: float = 0.0, v0: float = 0.0, dof: float | None = None) -> np.ndarray:
    """The support's plane, textured with `texture` ((nv, nu, K) float32, periodic, laid on the
    plane with texel sizes grid.tv along the depth and grid.tu across), as the frame's camera sees
    it on canvas rows first_row..last_row-1 (all below the eye level): (rows, width, K) float32.

    Each pixel averages the texels its footprint covers, a box du = grid.tu*z/f texels wide and
    dv = z^2/(f h) deep at depth z: exactly, with prefix sums along each axis (summed-area
    filtering), so far rows average their texels instead of aliasing. `dof`: the circle of
    confusion (px) of a surface far out of focus (default: _DOF of the canvas' long side, a mild
    f/5.6 look), widening each box away from the product's depth. (u0, v0): the texel the
    product's base stands on. Raises ValueError if a row is not below the eye level."""
    if first_row + 0.5 <= frame.eye_level:
        raise ValueError(f"row {first_row} is not below the eye level {frame.eye_level:.1f}")
    nv, nu, k = texture.shape
    f, h = frame.focal, frame.camera_height
    rows = np.arange(first_row, last_row, dtype=np.float64)
    z = frame.depth(rows)
    coc = (_DOF * max(frame.width, frame.height) if dof is None else dof) * np.abs(1 - f / z)
    spread = np.sqrt(1 + coc**2)
    du = z / f / grid.tu  # texels per canvas column
    dv = f * h / (rows + 0.5 - frame.eye_level) ** 2 / grid.tv  # texels per canvas row
    wu, wv = np.maximum(du * spread, 1.0), np.maximum(dv * spread, 1.0)

    # Along the depth: each row's line of texels, averaged over wv texels. Each column is centred
    # first (its mean added back after), so whole tiles sum to nothing and the interpolated
    # prefix sums stay small and precise.
    column_mean = texture.mean(axis=0, dtype=np.float32)
    prefix = _prefix(texture - column_mean)
    v = v0 + (z - f) / grid.tv
    n = len(rows)
    cols_idx = np.ascontiguousarray(np.broadcast_to(np.arange(nu, dtype=np.float32), (n, nu)))

    def along_v(x: np.ndarray) -> np.ndarray:
        xm = (x - np.floor(x / nv) * nv).astype(np.float32)
        return cv2.remap(prefix, cols_idx, np.ascontiguousarray(np.broadcast_to(xm[:, None], (n, nu))),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(n, nu, k)

    lines = along_v(v + wv / 2)
    lines -= along_v(v - wv / 2)
    lines *= (1 / wv).astype(np.float32)[:, None, None]
    lines += column_mean

    # Across: each canvas column averages wu texels of its row's line. The lines are centred
    # first, so the interpolated prefix sums stay small and precise.
    mean = lines.mean(axis=1, keepdims=True)
    lines -= mean
    px = np.empty((n, nu + 1, k), np.float32)
    px[:, 0] = 0
    np.cumsum(lines, axis=1, dtype=np.float32, out=px[:, 1:])
    cols = np.arange(frame.width, dtype=np.float64) + 0.5 - frame.width / 2
    ridx = np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.float32)[:, None], (n, frame.width)))

    def along_u(x: np.ndarray) -> np.ndarray:
        xm = (x - np.floor(x / nu) * nu).astype(np.float32)  # whole tiles add nothing: centred lines sum to 0
        return cv2.remap(px, xm, ridx, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(n, frame.width, k)

    centre = u0 + cols[None, :] * du[:, None]
    out = along_u(centre + wu[:, None] / 2)
    out -= along_u(centre - wu[:, None] / 2)
    out *= (1 / wu).astype(np.float32)[:, None, None]
    out += mean
    return out


# --- light ------------------------------------------------------------------------------------

def _small(frame: Frame) -> tuple[int, int, float]:
    k = _PAINT / max(frame.width, frame.height)
    return max(2, round(frame.width * k)), max(2, round(frame.height * k)), k


def _light(preset: ScenePreset, frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """(H, W) multiplicative light: a soft key from the preset's side, and a gentle vignette."""
    w, h, _ = _small(frame)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= w - 1
    yy /= h - 1
    az = np.radians(preset.light_azimuth)
    if preset.view == "top":  # window light across the table: brighter on its side, falling off
        lx, ly = 0.5 + np.sin(az) * 0.55, 0.5 - np.cos(az) * 0.55
        radius = 0.55 + 0.35 * preset.light_softness
        key = np.exp(-(((xx - lx) * w / h) ** 2 + (yy - ly) ** 2) / (2 * radius**2))
        light = 0.84 + 0.2 * key
    else:
        lx = 0.5 + np.sin(az) * 0.4 + rng.uniform(-0.06, 0.06)
        ly = frame.horizon / frame.height - rng.uniform(0.1, 0.25)
        radius = 0.35 + 0.4 * preset.light_softness + rng.uniform(-0.05, 0.05)
        key = np.exp(-(((xx - lx) * w / h) ** 2 + (yy - ly) ** 2) / (2 * radius**2))
        light = 0.88 + rng.uniform(0.14, 0.2) * key
    light *= 1 - 0.12 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
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


def _light_uv(preset: ScenePreset) -> tuple[float, float]:
    """Where the key light comes from in a surface texture's (u, v): u runs right, v away from the
    camera (front view) or down the frame (top view)."""
    az = math.radians(preset.light_azimuth)
    return math.sin(az), -math.cos(az)


# --- geometry of supports ----------------------------------------------------------------------

@dataclass(frozen=True)
class Podium:
    """A cylinder whose top is the support: centred under the product at the product's depth, so
    the product's base row is the top's front-to-back centre. World px (px at the product's
    depth): radius; height from the top down to the floor it stands on."""

    cx: float  # canvas column of the axis
    radius: float
    height: float

    def top_rows(self, frame: Frame) -> tuple[float, float]:
        """(back, front) canvas rows of the top's rim on the axis."""
        f, h, e = frame.focal, frame.camera_height, frame.eye_level
        return e + f * h / (f + self.radius), e + f * h / (f - self.radius)


def podium_of(frame: Frame) -> Podium:
    """The podium under a product: a little wider than its footprint, as tall as fits above the
    canvas' bottom edge (else it runs out of the frame)."""
    f, h, e = frame.focal, frame.camera_height, frame.eye_level
    radius = float(np.clip(0.62 * (frame.right - frame.left), 0.16 * frame.width, 0.46 * frame.width))
    # Height whose front bottom rim lands 4% above the canvas' bottom edge.
    fits = (frame.height * 0.96 - e) * (f - radius) / f - h
    height = fits if fits >= 0.3 * radius else 6.0 * radius
    return Podium((frame.left + frame.right) / 2, radius, float(height))


def _podium_layers(frame: Frame, podium: Podium) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Coverage (0-1) of the podium's top and side, and the side's Lambert term (cosine of the
    surface's angle to the viewer's left), in the podium's bounding box (x0, y0, x1, y1)."""
    f, h, e = frame.focal, frame.camera_height, frame.eye_level
    R, P = podium.radius, podium.height
    half_w = f * R / math.sqrt(max(f * f - R * R, 1.0)) + 2
    x0, x1 = max(0, int(podium.cx - half_w) - 2), min(frame.width, int(podium.cx + half_w) + 3)
    back, _ = podium.top_rows(frame)
    y0 = max(0, int(back) - 3)
    y1 = frame.height
    rows = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    x = (cols - podium.cx) / f  # ray slope across
    y = (rows - e) / f  # ray slope down
    # Top disc: the plane h below the eye, hit at depth h / y.
    zt = h / np.maximum(y, 1e-6)
    g = (x * zt) ** 2 + (zt - f) ** 2 - R * R  # < 0 inside the rim
    gy, gx = np.gradient(g)
    top = np.clip(0.5 - g / np.maximum(np.hypot(gx, gy), 1e-6), 0, 1) * (y > 0)
    # Side: the nearest hit of the ray on the cylinder, between the top and the bottom rim.
    a = 1 + x * x
    disc = f * f - a * (f * f - R * R)
    t = (f - np.sqrt(np.maximum(disc, 0))) / a  # depth of the hit
    drop = y * t  # how far below the eye the hit is, world px
    edge = (f * R / math.sqrt(max(f * f - R * R, 1.0)) - np.abs(cols - podium.cx))  # px inside the outline
    inside = np.clip(edge + 0.5, 0, 1)
    dr = f / np.maximum(t, 1.0)  # px per world px at the hit
    below_top = np.clip((drop - h) * dr + 0.5, 0, 1)
    above_bottom = np.clip((h + P - drop) * dr + 0.5, 0, 1)
    side = inside * below_top * above_bottom
    nx = np.clip(x * t / R, -1, 1)  # the surface normal's component to the right
    return top.astype(np.float32), side.astype(np.float32), nx.astype(np.float32), (x0, y0, x1, y1)


def support_mask(preset: ScenePreset, frame: Frame) -> np.ndarray | None:
    """(H, W) bool: the pixels of the surface the product stands on (a floor or table top below
    the wall, a podium's top, a flat lay's whole frame); None for scenes without one (a gradient
    the product floats on, a flat colour)."""
    if not preset.has_support:
        return None
    mask = np.zeros((frame.height, frame.width), bool)
    if preset.view == "top":
        mask[:] = True
    elif preset.surface == "podium":
        top, _, _, (x0, y0, x1, y1) = _podium_layers(frame, podium_of(frame))
        mask[y0:y1, x0:x1] = top >= 0.5
    else:
        mask[frame.horizon:] = True
    return mask


def receiver(preset: ScenePreset, placement: Placement) -> np.ndarray:
    """(H, W) float32 0-1: where a shadow of the placed product can fall (its support: a podium's
    top ends it); 1 everywhere for scenes whose support is the whole floor."""
    frame = frame_of(placement)
    out = np.ones((frame.height, frame.width), np.float32)
    if preset.surface == "podium" and preset.view == "front":
        top, _, _, (x0, y0, x1, y1) = _podium_layers(frame, podium_of(frame))
        out[:] = 0
        out[y0:y1, x0:x1] = top
    return out


# --- scenes -----------------------------------------------------------------------------------

def _wall(preset: ScenePreset, frame: Frame) -> np.ndarray:
    w, h, _ = _small(frame)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    wall = _colour(preset, 0) * (0.94 + 0.06 * y)  # a little darker towards the top
    return cv2.resize(np.repeat(wall, 2, axis=1), (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)


def _sweep(preset: ScenePreset, frame: Frame, img: np.ndarray, horizon: float | None = None) -> None:
    """Curve the wall into a floor of the second colour with no visible seam, the curve ending
    before the product's base."""
    horizon = frame.horizon if horizon is None else horizon
    y = np.arange(frame.height, dtype=np.float32)[:, None, None]
    bend = min(frame.height * (0.15 + 0.1 * preset.light_softness), 1.6 * max(frame.base_y - horizon, 8))
    t = _smoothstep((y - horizon + bend / 2) / bend)
    img *= 1 - t
    img += _colour(preset, 1) * t


def _gradient(preset: ScenePreset, frame: Frame, img: np.ndarray) -> None:
    """A radial gradient from the first colour behind the product to the second at the edges."""
    w, h, k = _small(frame)
    xx = (np.arange(w, dtype=np.float32) / k - (frame.left + frame.right) / 2) / frame.width
    yy = (np.arange(h, dtype=np.float32) / k - frame.horizon) / frame.height
    t = _smoothstep(np.sqrt(xx[None, :] ** 2 + yy[:, None] ** 2) / 0.75)[..., None]
    small = _colour(preset, 0) * (1 - t) + _colour(preset, 1) * t
    img[:] = cv2.resize(small, (frame.width, frame.height), interpolation=cv2.INTER_CUBIC)


def _podium(preset: ScenePreset, frame: Frame, img: np.ndarray, rng: np.random.Generator) -> None:
    """A matte cylinder on a sweep; its top is where the product stands (its front-to-back centre
    on the product's base row). Lit from the preset's side; a soft shadow where it meets the floor."""
    f, h, e = frame.focal, frame.camera_height, frame.eye_level
    podium = podium_of(frame)
    floor_h = h + podium.height  # the camera's height above the sweep's floor
    _sweep(preset, frame, img, horizon=e + floor_h / _WALL_DEPTH)
    top, side, nx, (x0, y0, x1, y1) = _podium_layers(frame, podium)
    region = img[y0:y1, x0:x1]
    # Where the podium meets the floor: a soft, wide occlusion on the floor around its base.
    base_row = e + f * floor_h / f
    if base_row < frame.height + 0.2 * podium.radius:
        rows = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        cols = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        rx, ry = podium.radius * 1.15, podium.radius * 1.15 * floor_h / f + 6
        d = ((cols - podium.cx) / rx) ** 2 + ((rows - base_row) / ry) ** 2
        region *= (1 - 0.3 * np.exp(-d * 3.0))[..., None]
    body = _colour(preset, 2)
    lx = math.sin(math.radians(preset.light_azimuth))  # light from the left: lx < 0
    # The side: Lambert from the key (front and to its side) over a soft fill, darker low down
    # where the floor's bounce is all that reaches it.
    lambert = np.clip(np.sqrt(np.clip(1 - nx**2, 0, 1)) * 0.7 - nx * lx * 0.7, 0, 1)
    rows = np.arange(y0, y1, dtype=np.float32)[:, None]
    _, front = podium.top_rows(frame)
    low = np.clip((rows - front) / max(1.0, f * floor_h / (f - podium.radius) + e - front), 0, 1)
    shade = (0.8 + 0.17 * lambert) * (1 - 0.05 * low)
    region *= (1 - side)[..., None]
    region += (body * shade[..., None]) * side[..., None]
    # The top faces the light: brighter than the side, with a thin bevel highlight along the rim.
    rim = cv2.GaussianBlur(top, (0, 0), max(1.0, 0.0015 * frame.width))
    rim_light = np.clip((top - rim) * 2.0, 0, 1)
    region *= (1 - top)[..., None]
    region += (body * (1.07 + 0.05 * rim_light)[..., None]) * top[..., None]


def _flat_texture(preset: ScenePreset, frame: Frame, rng: np.random.Generator, texel: float,
                  rows: int | None = None, blur: float = 0.0) -> np.ndarray:
    """The preset's material seen flat and square on, filling `rows` (default: all) canvas rows at
    `texel` world px per canvas px, blurred by `blur` canvas px (out of focus), (rows, W, 3)
    float32: drawn at up to 1400 texels across (fewer when blurred) and enlarged to the canvas."""
    rows = frame.height if rows is None else rows
    step = max(1.0, frame.width / 1400, blur / 2)
    nu, nv = max(8, round(frame.width / step)), max(8, round(rows / step))
    make = MATERIALS.get(preset.surface, plain)
    if preset.surface == "wood" and preset.view == "top":
        # Seen from above, the planks run up the frame, away from the viewer: no edge spans it.
        lu, lv = _light_uv(preset)
        material = make(preset, rng, Grid(nu, nv, texel * step, texel * step, frame.unit, (lv, lu)))
        material = Material(np.ascontiguousarray(material.channels.transpose(1, 0, 2)), material.colours)
    else:
        material = make(preset, rng, Grid(nv, nu, texel * step, texel * step, frame.unit, _light_uv(preset)))
    channels = material.channels
    if blur / step > 0.3:
        channels = cv2.GaussianBlur(channels, (0, 0), blur / step)
    if (nv, nu) != (rows, frame.width):
        channels = cv2.resize(channels, (frame.width, rows), interpolation=cv2.INTER_CUBIC)
        channels = channels.reshape(rows, frame.width, -1)
    return material.rgb(channels)


def _table(preset: ScenePreset, frame: Frame, img: np.ndarray, rng: np.random.Generator) -> None:
    """A table top (or floor) of the preset's material seen by the frame's camera, up to a wall."""
    top = frame.horizon
    span = _FLOOR_SPAN * frame.width
    # Periodic: sides are powers of two; texels at most 1.7 world px (the product's base row
    # magnifies them at most 1.7 times).
    nu = int(2 ** np.clip(math.ceil(math.log2(span / 1.7)), 8, math.log2(_MAX_TEXELS)))
    nv = nu // 2  # square texels: the tile repeats twice as often in depth, where it is foreshortened
    grid = Grid(nv, nu, span / nu, span / nu, frame.unit, _light_uv(preset))
    material = MATERIALS[preset.surface](preset, rng, grid)
    floor = material.rgb(project(material.channels, grid, frame, top, frame.height,
                                 u0=rng.uniform(0, nu), v0=rng.uniform(0, nv)))
    if preset.surface in ("linen", "concrete"):
        # The same material on the wall behind (a hanging cloth, a cast wall), far (features a third
        # the size) and out of focus, with half the floor's contrast: drawn small, blurred there.
        coc = _DOF * max(frame.width, frame.height) * (1 - 1 / _WALL_DEPTH)
        step = max(1.0, frame.width / 1400, coc / 4)
        nu, nv = max(8, round(frame.width / step)), max(8, round(top / step))
        grid = Grid(nv, nu, _WALL_DEPTH * step, _WALL_DEPTH * step, frame.unit, _light_uv(preset))
        wall = MATERIALS[preset.surface](preset, rng, grid)
        rgb = wall.rgb(cv2.GaussianBlur(wall.channels, (0, 0), max(0.3, coc / 2 / step)).reshape(nv, nu, -1))
        tint = 0.97 if preset.surface == "linen" else 1.0
        mean = np.array(cv2.mean(rgb)[:3], np.float32)
        modulation = (0.5 * tint) + (0.5 * tint / np.maximum(mean, 1)) * rgb
        img[:top] *= cv2.resize(modulation, (frame.width, top), interpolation=cv2.INTER_LINEAR)
    # Where wall and table meet: the corner is a little darker, and the edge is anti-aliased.
    img[top:] = floor
    reach = max(2, int(0.03 * frame.height))
    lo, hi = max(0, top - reach), min(frame.height, top + reach)
    yy = np.arange(lo, hi, dtype=np.float32)
    img[lo:hi] *= (1 - 0.07 * np.exp(-np.abs(yy - top) / (0.006 * frame.height)))[:, None, None]


def render(preset: ScenePreset, frame: Frame, seed: int) -> np.ndarray:
    """The scene for `preset` around a product at `frame`, as (H, W, 3) uint8. Deterministic for a
    seed. Raises ValueError for a surface this backend does not draw."""
    rng = np.random.default_rng([seed, sum(map(ord, preset.name))])
    surface = preset.surface
    if preset.view == "top":
        if surface not in MATERIALS and surface not in ("sweep", "gradient", "window"):
            raise ValueError(f"scene {preset.name!r}: surface {surface!r} cannot be seen from above")
        img = _flat_texture(preset, frame, rng, 1.0)
    else:
        img = _wall(preset, frame)
        if surface in ("sweep", "window"):
            _sweep(preset, frame, img)
        elif surface == "gradient":
            _gradient(preset, frame, img)
        elif surface == "podium":
            _podium(preset, frame, img, rng)
        elif surface in MATERIALS:
            _table(preset, frame, img, rng)
        else:
            raise ValueError(f"scene {preset.name!r}: unknown surface {surface!r}")
    img *= _light(preset, frame, rng)[..., None]
    img += _grain(rng, frame.height, frame.width)[..., None]  # hides banding in smooth gradients
    return cv2.convertScaleAbs(img)  # rounded and saturated to 0-255 (every value here is >= 0 but grain)


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
