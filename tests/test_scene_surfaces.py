"""Surfaces that read as their material at any angle, without moire.

The anti-moire guard measures high-frequency energy (what a 1 px Gaussian removes) in the rows of
a rendered floor nearest the horizon against the rows nearest the camera. How far that ratio may
go depends on the material (veins squeezed together near the horizon legitimately add detail per
pixel), so its bound comes from the same floor rendered the slow, correct way: each pixel the
average of 4 x 32 point samples spread over its area (supersampling; 32 in depth, where the
footprint is longest). A render that aliases (sampling the texture once per pixel, as the previous
renderer did) folds texture detail into false patterns and exceeds the bound several times over.
"""

import math

import cv2
import numpy as np
import pytest

from product_studio.backends import scene_studio as ss
from product_studio.scenes import SCENES

FRAME = ss.Frame(400, 500, 410, 150, 120, 280)  # a product 260 px high standing on row 410
LIFESTYLE = ss.Frame(1080, 1350, 1107, 270, 300, 780)  # the lifestyle canvas, for the materials' detail
MATERIALS = ["wood", "marble", "concrete", "linen", "paper"]
BOUND = 1.5  # the render's far/near ratio may exceed the supersampled reference's by half at most


def floor_texture(name: str, seed: int = 0, frame: ss.Frame = FRAME):
    """A material's floor tile as the renderer makes it for `frame`, and its Grid."""
    preset = SCENES[name] if name in SCENES else SCENES["flatlay-paper"]
    span = ss._FLOOR_SPAN * frame.width
    nu = int(2 ** math.ceil(math.log2(span / 1.7)))
    grid = ss.Grid(nu // 2, nu, span / nu, span / nu, frame.unit, ss._light_uv(preset))
    return ss.MATERIALS[name](preset, np.random.default_rng(seed), grid), grid


def sampled(channels: np.ndarray, grid: ss.Grid, frame: ss.Frame, top: int, n_u: int = 1, n_v: int = 1) -> np.ndarray:
    """The floor by point sampling (bilinear) n_u x n_v times per pixel, averaged."""
    f, h = frame.focal, frame.camera_height
    out = 0.0
    for jv in range(n_v):
        rows = np.arange(top, frame.height, dtype=np.float64) + (jv + 0.5) / n_v
        z = f * h / (rows - frame.eye_level)
        v = ((z - f) / grid.tv) % channels.shape[0]
        for ju in range(n_u):
            cols = np.arange(frame.width, dtype=np.float64) + (ju + 0.5) / n_u - frame.width / 2
            u = (cols[None, :] * (z / f / grid.tu)[:, None]) % channels.shape[1]
            vv = np.broadcast_to(v[:, None], u.shape)
            out = out + cv2.remap(channels, u.astype(np.float32), vv.astype(np.float32), cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_WRAP).reshape(u.shape + (-1,))
    return out / (n_u * n_v)


def far_near_ratio(rgb: np.ndarray) -> float:
    """High-frequency energy per pixel in the farthest tenth of the floor's rows over that in the
    nearest fifth."""
    grey = rgb.astype(np.float32).mean(axis=2)
    energy = ((grey - cv2.GaussianBlur(grey, (0, 0), 1.0)) ** 2).mean(axis=1)
    n = len(energy)
    return float(energy[: max(3, n // 10)].mean() / energy[-(n // 5):].mean())


@pytest.mark.parametrize("name", MATERIALS)
def test_anti_moire_guard_far_rows_hold_no_more_detail_than_the_supersampled_truth(name):
    material, grid = floor_texture(name)
    top = FRAME.horizon
    fast = material.rgb(ss.project(material.channels, grid, FRAME, top, FRAME.height, dof=0.0))
    truth = material.rgb(sampled(material.channels, grid, FRAME, top, n_u=4, n_v=32))
    aliased = material.rgb(sampled(material.channels, grid, FRAME, top))
    bound = BOUND * far_near_ratio(truth)
    assert far_near_ratio(fast) <= bound, f"{name}: {far_near_ratio(fast):.2f} > {bound:.2f}: moire near the horizon"
    # The guard catches aliasing: sampling once per pixel breaks it.
    assert far_near_ratio(aliased) > bound, f"{name}: the guard did not catch an aliased floor"
    # And the filtered floor is close to the truth near the horizon.
    k = max(3, (FRAME.height - top) // 10)
    err = np.abs(fast[:k] - truth[:k]).mean()
    assert err < 0.4 * np.abs(aliased[:k] - truth[:k]).mean()


def test_the_rendered_scene_has_no_moire_either():
    """The same guard on the whole rendered wood scene (light, depth of field and grain included),
    against its own floor point-sampled: the scene's far rows stay calm."""
    placement_frame = FRAME
    img = ss.render(SCENES["wood"], placement_frame, 0)[FRAME.horizon + 1:]
    material, grid = floor_texture("wood")
    aliased = material.rgb(sampled(material.channels, grid, FRAME, FRAME.horizon + 1))
    assert far_near_ratio(img) < 0.5 * far_near_ratio(aliased)


@pytest.mark.parametrize("name", MATERIALS)
def test_floor_textures_tile_seamlessly(name):
    material, _ = floor_texture(name)
    ch = material.channels.astype(np.float32)
    inner_u = np.abs(np.diff(ch, axis=1)).mean()
    inner_v = np.abs(np.diff(ch, axis=0)).mean()
    assert np.abs(ch[:, 0] - ch[:, -1]).mean() < 2.5 * inner_u + 1e-3
    assert np.abs(ch[0] - ch[-1]).mean() < 2.5 * inner_v + 1e-3


def test_wood_is_planks_with_grain_along_them():
    """Dark gaps between planks at the plank width, and grain: detail across each plank far above
    the detail along it."""
    material, grid = floor_texture("wood", frame=LIFESTYLE)
    rgb = material.rgb().mean(axis=2)
    rows = rgb.mean(axis=1)
    plank = 115 * LIFESTYLE.unit / grid.tv  # texels
    gaps = np.flatnonzero(rows < np.median(rows) - 0.5 * (np.median(rows) - rows.min()))
    starts = gaps[np.r_[True, np.diff(gaps) > 2]]
    spacing = np.diff(starts)
    assert len(starts) >= 3 and np.all(np.abs(spacing / plank - np.round(spacing / plank)) < 0.15)
    across = np.abs(np.diff(rgb, axis=0)).mean()
    along = np.abs(np.diff(rgb, axis=1)).mean()
    assert across > 2 * along


def test_linen_is_woven_threads_both_ways():
    """Plain weave: the spectrum peaks where the threads repeat, across and along."""
    material, grid = floor_texture("linen", frame=LIFESTYLE)
    grey = material.rgb().mean(axis=2)
    grey = grey - grey.mean()
    for axis, texel in ((0, grid.tv), (1, grid.tu)):
        n = grey.shape[axis]
        threads = 2 * round(n * texel / (5.0 * LIFESTYLE.unit) / 2)  # per tile, as linen() lays them
        spectrum = np.abs(np.fft.rfft(grey, axis=axis)).mean(axis=1 - axis)
        neighbours = np.r_[spectrum[threads - 40:threads - 5], spectrum[threads + 5:threads + 40]]
        assert spectrum[threads - 1:threads + 2].max() > 4 * np.median(neighbours), f"axis {axis}"
