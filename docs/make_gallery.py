"""Render docs/gallery.jpg: every offline studio scene preset for three product shapes.

    python docs/make_gallery.py [--out docs/gallery.jpg] [--seed 1] [--png copy.png]

Rows: a tall bottle-like product, a wide one (both drawn here, shot level from the front, as
product photos are) and a top-down one (scikit-image's coffee photo, shot from above, cut out
with the project's own models). Columns: the front-view scenes, then the flat lays. Each tile is
the project's own pipeline (layout, scene, composite) for the `lifestyle` target.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from product_studio.pipeline.plan import render_variant
from product_studio.presets import TARGETS
from product_studio.scenes import SCENES

TILE = (216, 270)  # lifestyle is 4:5


def _shade_cylinder(width: int, height: int, base: np.ndarray, gloss: float, light_x: float = 0.3) -> np.ndarray:
    """(height, width, 3) float32: a vertical cylinder of colour `base` (0-255), lit from the left."""
    x = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1  # -1..1 across
    nz = np.sqrt(np.clip(1 - x * x, 0, 1))
    lambert = np.clip(nz * 0.8 - x * light_x + 0.25, 0.15, 1.2)
    spec = gloss * np.exp(-((x + 0.45) / 0.07) ** 2) + 0.5 * gloss * np.exp(-((x - 0.7) / 0.05) ** 2)
    row = base[None, :] * lambert[:, None] + 255 * spec[:, None]
    return np.repeat(row[None], height, axis=0)


def bottle(h: int = 1300) -> np.ndarray:
    """A tall amber glass bottle with a cream label and a black cap, RGBA uint8, shot level."""
    w = int(h * 0.34)
    rgba = np.zeros((h, w, 4), np.float32)
    body_top, shoulder, neck_top = int(h * 0.38), int(h * 0.24), int(h * 0.09)
    half = np.zeros(h, np.float32)  # half-width of the silhouette per row, px
    y = np.arange(h, dtype=np.float32)
    neck, body = w * 0.15, w * 0.48
    t = np.clip((y - shoulder) / (body_top - shoulder), 0, 1)
    half[:] = np.where(y < shoulder, neck, neck + (body - neck) * (t * t * (3 - 2 * t)))
    half[: neck_top] = neck * 1.12  # the cap
    foot = h - int(h * 0.015)
    half[foot:] = body * np.sqrt(np.clip(1 - ((y[foot:] - foot) / (h - foot)) ** 2, 0, 1))  # rounded foot
    cx = w / 2
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    alpha = np.clip(half[:, None] - np.abs(xx - cx) + 0.5, 0, 1)
    amber = np.array([120, 58, 18], np.float32)
    glass = _shade_cylinder(w, h, amber, 0.55)
    # Each row is shaded across its own width.
    u = np.clip((xx - cx) / np.maximum(half[:, None], 1), -1, 1)
    idx = np.clip(((u + 1) / 2 * (w - 1)).round().astype(int), 0, w - 1)
    glass = np.take_along_axis(glass, np.repeat(idx[..., None], 3, axis=2), axis=1)
    label = (y > h * 0.5) & (y < h * 0.82)
    cream = _shade_cylinder(w, h, np.array([236, 228, 210], np.float32), 0.05)
    cream = np.take_along_axis(cream, np.repeat(idx[..., None], 3, axis=2), axis=1)
    rgb = np.where(label[:, None, None], cream, glass)
    for k, (y0, thick, span) in enumerate(((0.58, 0.03, 0.55), (0.66, 0.012, 0.7), (0.7, 0.012, 0.5), (0.76, 0.01, 0.6))):
        band = (y > h * y0) & (y < h * (y0 + thick))
        cols = np.abs(u) < span * 0.8
        ink = np.array([40, 40, 38] if k == 0 else [120, 110, 95], np.float32)
        rgb = np.where((band[:, None] & cols)[..., None], rgb * 0.2 + ink * 0.8, rgb)
    cap = y < neck_top
    black = _shade_cylinder(w, h, np.array([28, 28, 30], np.float32), 0.25)
    black = np.take_along_axis(black, np.repeat(idx[..., None], 3, axis=2), axis=1)
    rgb = np.where(cap[:, None, None], black, rgb)
    rgba[..., :3] = np.clip(rgb, 0, 255)
    rgba[..., 3] = alpha * 255
    return rgba.round().astype(np.uint8)


def bowl(w: int = 1400) -> np.ndarray:
    """A wide glazed ceramic bowl, seen from slightly above (its rim an ellipse), RGBA uint8."""
    h = int(w * 0.46)
    rim_h = h * 0.16  # half-height of the rim's ellipse
    cy = rim_h + 2
    a = w / 2 - 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx = (xx - w / 2) / a
    # Outside of the bowl: below the rim's ellipse, above a curved bottom.
    depth = h - cy - 2
    bottom = cy + depth * np.sqrt(np.clip(1 - dx**2, 0, 1)) ** 0.8
    rim = cy + rim_h * np.sqrt(np.clip(1 - dx**2, 0, 1))
    inside_ellipse = ((xx - w / 2) / a) ** 2 + ((yy - cy) / rim_h) ** 2 <= 1
    body = (np.abs(dx) <= 1) & (yy >= cy) & (yy <= bottom)
    alpha = (inside_ellipse | body).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.7)
    glaze = np.array([70, 104, 128], np.float32)  # a blue-grey glaze
    outside = _shade_cylinder(w, h, glaze, 0.35)
    shade_down = 1 - 0.35 * np.clip((yy - rim) / np.maximum(bottom - rim, 1), 0, 1)
    rgb = outside * shade_down[..., None]
    inner = np.array([232, 226, 214], np.float32) * (0.82 + 0.18 * np.clip((yy - (cy - rim_h)) / (2 * rim_h), 0, 1))[..., None]
    inner *= (1 - 0.2 * np.clip(-dx, 0, 1) ** 2)[..., None]
    rgb = np.where((inside_ellipse & (yy < rim))[..., None], inner, rgb)
    lip = np.abs(((xx - w / 2) / a) ** 2 + ((yy - cy) / rim_h) ** 2 - 1) < 0.035
    rgb = np.where(lip[..., None], rgb * 0.6 + 250 * 0.4, rgb)
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = np.clip(rgb, 0, 255).round()
    out[..., 3] = np.clip(alpha * 255, 0, 255).round()
    return out


def coffee() -> np.ndarray:
    """scikit-image's coffee photo (a cup on a saucer, shot from above), cut out by the project."""
    from skimage import data

    from product_studio.pipeline.cutout import cut_out

    return cut_out(data.coffee())


def products() -> list[tuple[str, np.ndarray]]:
    return [("tall", bottle()), ("wide", bowl()), ("top-down", coffee())]


def studio_presets() -> list:
    """Every offline studio preset: front-view scenes first, then flat lays."""
    studio = [p for p in SCENES.values() if p.backend == "studio"]
    return [p for p in studio if p.view == "front"] + [p for p in studio if p.view == "top"]


def tile(cutout: np.ndarray, preset, seed: int, size: tuple[int, int] = TILE) -> np.ndarray:
    """One lifestyle variant, reduced to `size` (w, h), RGB uint8."""
    pixels = render_variant(cutout, TARGETS["lifestyle"], preset, seed).pixels
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((26, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def contact_sheet(seed: int = 1) -> np.ndarray:
    """(H, W, 3) uint8: a block of front-view scenes above a block of flat lays, one row per
    product, one column per preset, each column labelled with its preset's name."""
    items = products()
    presets = studio_presets()
    blocks = []
    for view in ("front", "top"):
        chosen = [p for p in presets if p.view == view]
        columns = []
        for preset in chosen:
            column = np.vstack([tile(cutout, preset, seed) for _, cutout in items])
            columns.append(_label(column, preset.name))
        blocks.append(np.hstack(columns))
    width = max(b.shape[1] for b in blocks)
    pad = [np.pad(b, ((0, 8), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return np.vstack(pad)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("gallery.jpg"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--png", type=Path, help="also save a PNG copy here")
    args = ap.parse_args()
    sheet = contact_sheet(args.seed)
    bgr = cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(args.out), bgr, [cv2.IMWRITE_JPEG_QUALITY, 86])
    if args.png:
        cv2.imwrite(str(args.png), bgr)
    print(args.out, f"{sheet.shape[1]}x{sheet.shape[0]} px, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
