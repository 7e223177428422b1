"""Place the cut-out product on a target's canvas.

Everything downstream (control image, inpaint mask, shadows, composite) works in the canvas
coordinates this stage fixes. The product is resampled once, premultiplied by its alpha so
transparent neighbours never bleed dark fringes into the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from ..errors import BadInput
from ..presets import Target

# Alpha below this is matting noise, not product: it must not stretch the bounding box.
_BOX_ALPHA = 8
# Scene targets stand the product on a floor this share of the canvas above the bottom edge.
_FLOOR_MARGIN = 0.1


@dataclass(frozen=True)
class Placement:
    width: int  # canvas
    height: int
    x: int  # top-left of the product box on the canvas
    y: int
    premul: np.ndarray  # (h, w, 3) float32: colour * alpha, 0..255
    alpha: np.ndarray  # (h, w) float32, 0..1
    scale: float  # source px -> canvas px

    @property
    def box(self) -> tuple[int, int, int, int]:
        h, w = self.alpha.shape
        return self.x, self.y, self.x + w, self.y + h

    @property
    def base_y(self) -> int:
        """Canvas row where the product meets the floor (its lowest visible row)."""
        rows = np.flatnonzero(self.alpha.max(axis=1) * 255 >= _BOX_ALPHA)
        return self.y + int(rows[-1]) + 1 if rows.size else self.y + self.alpha.shape[0]

    @cached_property
    def canvas_alpha(self) -> np.ndarray:
        """(H, W) float32 alpha of the product over the whole canvas."""
        out = np.zeros((self.height, self.width), np.float32)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.alpha
        return out

    def over(self, grey: int) -> np.ndarray:
        """The product alone over a flat grey canvas, (H, W, 3) uint8: what edge detectors see."""
        out = np.full((self.height, self.width, 3), grey, np.uint8)
        x0, y0, x1, y1 = self.box
        pixels = self.premul + grey * (1.0 - self.alpha[..., None])
        out[y0:y1, x0:x1] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        return out


def alpha_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels that are product, or None if there are none."""
    solid = alpha >= _BOX_ALPHA
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if not rows.size:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def place(cutout: np.ndarray, target: Target, name: str = "image") -> Placement:
    """Scale and position an RGBA cut-out (uint8, source resolution) on the target canvas."""
    box = alpha_box(cutout[..., 3])
    if box is None:
        raise BadInput(f"{name}: no product found (the cut-out is empty)")
    x0, y0, x1, y1 = box
    crop = cutout[y0:y1, x0:x1]
    bw, bh = x1 - x0, y1 - y0

    scale = target.fill * min(target.width / bw, target.height / bh)
    w, h = max(1, round(bw * scale)), max(1, round(bh * scale))
    alpha = crop[..., 3].astype(np.float32) * (1 / 255)
    premul = crop[..., :3].astype(np.float32) * alpha[..., None]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    premul = cv2.resize(premul, (w, h), interpolation=interp)
    alpha = cv2.resize(alpha, (w, h), interpolation=interp)
    # Matting noise (and the faint tail an upscale smears it into) is not product: a pure-white
    # background must stay exactly 255 there. Cubic also overshoots at hard edges: clip.
    alpha[alpha < _BOX_ALPHA / 255] = 0
    np.clip(alpha, 0, 1, out=alpha)
    np.clip(premul, 0, 255 * alpha[..., None], out=premul)

    x = (target.width - w) // 2
    if target.align == "bottom":
        y = max(0, target.height - round(target.height * _FLOOR_MARGIN) - h)
    else:
        y = (target.height - h) // 2
    return Placement(target.width, target.height, x, y, premul, alpha, scale)
