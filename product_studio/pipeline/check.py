"""Validate an image file against a target's rules and say precisely what fails."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageCms

from ..presets import Target
from .export import AI_SOURCE_TYPE
from .ingest import load_bytes

# "Clearly white" for finding the background; the background itself must then be exactly 255.
_NEAR_WHITE = 230
# The product's edge zone: its faint anti-aliased rim plus the 8x8 block a lossy codec rings
# in. Background pixels further out than this must be exactly 255.
_EDGE_RING = 16
_CODEC_BLOCK = 8  # a JPEG block: ringing from an edge stays inside the block that holds it
_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


@dataclass(frozen=True)
class Rule:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    target: str
    rules: list[Rule] = field(default_factory=list)
    fill: float | None = None
    ai_labelled: bool = False

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules)

    @property
    def failures(self) -> list[Rule]:
        return [r for r in self.rules if not r.ok]

    def summary(self) -> str:
        return "pass" if self.ok else "; ".join(f"{r.name}: {r.detail}" for r in self.failures)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.rules.append(Rule(name, bool(ok), detail))


def white_background(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(background, product) masks: background is the near-white region touching the frame,
    less a ring of `_EDGE_RING` px around everything else (the product and its edge)."""
    near = (rgb.min(axis=2) >= _NEAR_WHITE).astype(np.uint8)
    n, labels = cv2.connectedComponents(near, connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, border[border > 0])  # label 0 is everything not near-white
    product = ~outside
    k = 2 * _EDGE_RING + 1
    ring = cv2.dilate(product.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    return outside & ~ring, product


def is_srgb(icc: bytes | None) -> bool:
    """No profile means sRGB by convention; otherwise the profile must say so."""
    if not icc:
        return True
    try:
        return "srgb" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).lower()
    except (OSError, ImageCms.PyCMSError):
        return False


def product_fill(product: np.ndarray) -> float:
    """Share of the frame the product spans: its bounding box's longer relative side."""
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    if not rows.size:
        return 0.0
    h, w = product.shape
    return max((cols[-1] - cols[0] + 1) / w, (rows[-1] - rows[0] + 1) / h)


def known_background(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(background, product) from the product's own canvas alpha, when the caller knows it: the
    background is everything further than one codec block from any product pixel."""
    k = 2 * _CODEC_BLOCK + 1
    near = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    return ~near, alpha >= 0.5


def check_bytes(data: bytes, target: Target, name: str = "image", product_alpha: np.ndarray | None = None
                ) -> CheckReport:
    """Check an encoded image against `target`. Raises BadInput only if it is not an image at all.

    Without `product_alpha` the product is found from the pixels (a white product on white cannot
    be told from its background: it is judged strictly). The pipeline passes the alpha it placed,
    so its own variants are judged on exactly the pixels outside the product."""
    source = load_bytes(data, name)  # same guards as any input: type sniffing, bombs, corruption
    report = CheckReport(target.name)
    with Image.open(io.BytesIO(data)) as im:
        fmt = _FORMATS.get(im.format or "", (im.format or "?").lower())
        mode, icc = im.mode, im.info.get("icc_profile")
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
    w, h = source.width, source.height
    long_side = max(w, h)

    report.add("format", fmt in target.formats, f"{fmt} (allowed: {', '.join(target.formats)})")
    srgb = is_srgb(icc)
    report.add("colour", mode in ("RGB", "L", "P", "RGBA") and srgb,
               f"mode {mode}, {'sRGB' if srgb else 'non-sRGB ICC profile'}")
    if target.square:
        report.add("aspect", abs(w - h) <= max(1, 0.01 * long_side), f"{w}x{h}, must be 1:1")
    if target.min_long_side:
        report.add("min size", long_side >= target.min_long_side, f"long side {long_side} px, needs >= {target.min_long_side}")
    if target.max_long_side:
        report.add("max size", long_side <= target.max_long_side, f"long side {long_side} px, allowed <= {target.max_long_side}")
    if target.max_pixels:
        report.add("pixels", w * h <= target.max_pixels, f"{w * h / 1e6:.1f} MP, allowed <= {target.max_pixels / 1e6:g} MP")
    if target.max_bytes:
        report.add("file size", len(data) <= target.max_bytes, f"{len(data)} bytes, allowed <= {target.max_bytes}")

    if target.pure_white:
        if source.alpha is not None:
            report.add("white background", False, "image has transparent pixels; an opaque white background is required")
        else:
            if product_alpha is not None and product_alpha.shape == source.rgb.shape[:2]:
                background, product = known_background(product_alpha)
            else:
                background, product = white_background(source.rgb)
            off = background & (source.rgb != 255).any(axis=2)
            if not background.any():
                report.add("white background", False, "no white background found around the product")
            elif off.any():
                y, x = np.argwhere(off)[0]
                r, g, b = source.rgb[y, x]
                report.add("white background", False,
                           f"{int(off.sum())} background px are not pure white (e.g. ({x},{y}) = {r},{g},{b})")
            else:
                report.add("white background", True, "255,255,255")
            report.fill = product_fill(product)
            if target.min_fill:
                report.add("fill", report.fill >= target.min_fill,
                           f"product spans {report.fill:.1%} of the frame, needs >= {target.min_fill:.0%}")

    report.ai_labelled = AI_SOURCE_TYPE.encode() in (xmp if isinstance(xmp, bytes) else xmp.encode())
    return report
