"""Validate an image file against a target's rules and say precisely what fails."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageCms

from ..presets import Target
from .export import AI_SOURCE_TYPE
from .ingest import load_bytes
from .layout import product_pixels

# "Clearly white" for finding the background; the background itself must then be exactly 255.
_NEAR_WHITE = 230
# The product's edge zone: its faint anti-aliased rim plus the 8x8 block a lossy codec rings
# in. Background pixels further out than this must be exactly 255.
_EDGE_RING = 16
_CODEC_BLOCK = 8  # a JPEG block: ringing from an edge stays inside the block that holds it
# A soft edge (fur, hair, blur) fades into white through near-white pixels that can reach past
# the ring, far when enlarged (one source pixel of edge is 40 px at 40x): counted as the product's
# edge up to this share of the long side from it.
_FADE = 0.05  # 100 px on a 2000 px canvas: a soft edge (even enlarged 40x), not a backdrop band
_FADE_LEVEL = 245  # darkest channel (0-255): beyond the ring a fade is lighter than this, mostly
# A photo enlarged more than this to fill a target gets a warning naming the factor (a target's
# min_source_long_side can forbid it outright).
ENLARGEMENT_WARNING = 1.5
# Pixels alone: a product seen as several separate marks that cover less than this share of the
# box they span may be printed on a white product that cannot be told from a white background.
_MARKS_COVER = 0.5
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
    fill: float | None = None  # None: not measured (not a white target, or not measurable)
    ai_labelled: bool = False
    # What the check noticed without failing (an enlargement, a rule it could not judge). Never
    # part of `ok` or `summary()`.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules)

    @property
    def failures(self) -> list[Rule]:
        return [r for r in self.rules if not r.ok]

    def summary(self) -> str:
        return "pass" if self.ok else "; ".join(f"{r.name}: {r.detail}" for r in self.failures)

    def warnings_line(self) -> str | None:
        """The warnings as one line (a table cell, a database column), or None when there are none."""
        return "; ".join(self.warnings) or None

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.rules.append(Rule(name, bool(ok), detail))

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _darkest(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8: each pixel's darkest channel (255 only where the pixel is pure white)."""
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _labelled(labels: np.ndarray, n: int, chosen: np.ndarray) -> np.ndarray:
    """Mask of the pixels whose label is among `chosen` (label 0, the unlabelled, never is)."""
    lut = np.zeros(n, bool)
    lut[chosen] = True
    lut[0] = False
    return lut[labels]


def _white_regions(rgb: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background, product, ring) from `rgb` and its darkest channel `low`: the near-white region
    touching the frame less the product's edge zone, everything else, and everything else grown
    by `_EDGE_RING` px.

    The edge zone is the ring plus a soft edge's fade: near-white pixels that are not white and
    reach the ring through other such pixels (gaps up to a codec block), up to `_FADE` of the
    long side from the product. Further out, off-white is background: an off-white backdrop
    still fails, wherever it meets the product."""
    n, labels = cv2.connectedComponents((low >= _NEAR_WHITE).astype(np.uint8), connectivity=4)
    outside = _labelled(labels, n, np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    product = ~outside
    k = 2 * _EDGE_RING + 1
    ring = cv2.dilate(product.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    edge = ring
    faint = outside & (low != 255)
    if product.any() and (faint & ~ring).any() and _fades(low, product, faint & ~ring):
        # Grown by a codec block: a lossy codec rounds some of a fade's 254s to 255 and rings
        # past its end.
        k = 2 * _CODEC_BLOCK + 1
        fade = cv2.dilate(faint.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        reach = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, 3) <= _FADE * max(rgb.shape[:2])
        n, labels = cv2.connectedComponents(((fade | ring) & reach).astype(np.uint8), connectivity=8)
        edge = _labelled(labels, n, labels[ring])
    return outside & ~edge, product, ring


def _fades(low: np.ndarray, product: np.ndarray, faint: np.ndarray) -> bool:
    """Whether the off-white pixels beyond the ring look like a soft edge's last fade (mostly
    barely off white) rather than a band of leftover backdrop (a visible grey, which stays
    background and fails). `low` is the darkest channel (H, W) uint8; masks are (H, W) bool."""
    return float(np.mean(low[faint] < _FADE_LEVEL)) < 0.5


def white_background(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(background, product) masks: background is the near-white region touching the frame,
    less the product's edge zone (a ring of `_EDGE_RING` px around everything else, and a soft
    edge's fade)."""
    background, product, _ = _white_regions(rgb, _darkest(rgb))
    return background, product


def unmeasurable(product: np.ndarray, ring: np.ndarray) -> str | None:
    """Why the product's extent cannot be measured from pixels, or None when it can.

    Pixels show only what differs from the white background. When that is several separate
    marks with white between them (print on a white card, a logo on a white box), the white they
    sit on may be product too, and nothing in the pixels says where it ends."""
    n, _ = cv2.connectedComponents(ring.astype(np.uint8), connectivity=8)
    parts = n - 1
    if parts < 2:
        return None
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    cover = np.count_nonzero(product) / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
    if cover >= _MARKS_COVER:
        return None
    return (f"what shows against the white is {parts} separate marks covering {cover:.0%} of the box they span: "
            "they may be printed on a white product, white on white, whose edges pixels cannot show")


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
    return ~near, product_pixels(alpha)


def _white_rules(rgb: np.ndarray, low: np.ndarray, target: Target, background: np.ndarray, product: np.ndarray,
                 why_unmeasurable: Callable[[], str | None] | None = None) -> CheckReport:
    """The white-background and fill rules (and warnings) for these masks, in a CheckReport of
    their own. `why_unmeasurable()`: why the product's extent cannot be measured, if it cannot
    (asked only when what can be seen falls short of min_fill; it is a lower bound, and then
    fill is not judged)."""
    out = CheckReport(target.name)
    off = background & (low != 255)
    if not background.any():
        out.add("white background", False, "no white background found around the product")
    elif off.any():
        y, x = np.argwhere(off)[0]
        r, g, b = rgb[y, x]
        out.add("white background", False,
                f"{int(off.sum())} background px are not pure white (e.g. ({x},{y}) = {r},{g},{b})")
    else:
        out.add("white background", True, "255,255,255")
    fill = product_fill(product)
    if target.min_fill and fill < target.min_fill and why_unmeasurable and (why := why_unmeasurable()):
        out.warn(f"fill not judged: the product's extent cannot be measured from pixels ({why}). "
                 f"What shows spans {fill:.1%} of the frame, the rule needs >= {target.min_fill:.0%}")
        return out
    out.fill = fill
    if target.min_fill:
        out.add("fill", fill >= target.min_fill,
                f"product spans {fill:.1%} of the frame, needs >= {target.min_fill:.0%}")
    return out


def judge_pixels(rgb: np.ndarray, target: Target, low: np.ndarray | None = None) -> CheckReport:
    """The white-background and fill rules judged from pixels alone, as for any file (`low`:
    rgb's darkest channel, when the caller has it)."""
    low = _darkest(rgb) if low is None else low
    background, product, ring = _white_regions(rgb, low)
    return _white_rules(rgb, low, target, background, product, lambda: unmeasurable(product, ring))


def judge_alpha(rgb: np.ndarray, target: Target, alpha: np.ndarray) -> CheckReport:
    """The same rules judged with the product's own canvas alpha (the pipeline's variants), plus a
    warning for each place where a check of the file's pixels alone (`product-studio check`, or a
    store's) would come to another verdict: a white product on white, mostly."""
    low = _darkest(rgb)
    own = _white_rules(rgb, low, target, *known_background(alpha))
    seen = judge_pixels(rgb, target, low)
    theirs = {r.name: r for r in seen.rules}
    for rule in own.rules:
        other = theirs.get(rule.name)
        if other is not None and other.ok != rule.ok:
            own.warn(f"judged from its pixels alone (as product-studio check judges the file), {rule.name} "
                     f"{'passes' if other.ok else 'fails'}: {other.detail}")
    own.warnings += [f"judged from its pixels alone (as product-studio check judges the file), {w}" for w in seen.warnings]
    return own


def check_bytes(data: bytes, target: Target, name: str = "image", product_alpha: np.ndarray | None = None,
                enlargement: float | None = None) -> CheckReport:
    """Check an encoded image against `target`. Raises BadInput only if it is not an image at all.

    Without `product_alpha` the product is found from the pixels: a white product on white cannot
    be told from its background, so the background is judged strictly, and where the product's
    extent cannot be measured fill is not judged (a warning says so). The pipeline passes the
    alpha it placed (Placement.canvas_alpha), so its own variants are judged on exactly the
    pixels outside the product and measured like layout placed them; a warning then says where
    a check of the file alone would differ. `enlargement` (Placement.scale, source px -> image px)
    adds a warning above ENLARGEMENT_WARNING and the target's min_source_long_side rule; a plain
    file cannot tell, and is not judged on it."""
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
    if enlargement is not None:
        _judge_enlargement(report, target, long_side, enlargement)

    if target.pure_white:
        if source.alpha is not None:
            report.add("white background", False, "image has transparent pixels; an opaque white background is required")
        else:
            if product_alpha is not None and product_alpha.shape == source.rgb.shape[:2]:
                white = judge_alpha(source.rgb, target, product_alpha)
            else:
                white = judge_pixels(source.rgb, target)
            report.rules += white.rules
            report.warnings += white.warnings
            report.fill = white.fill

    report.ai_labelled = AI_SOURCE_TYPE.encode() in (xmp if isinstance(xmp, bytes) else xmp.encode())
    return report


def _judge_enlargement(report: CheckReport, target: Target, long_side: int, enlargement: float) -> None:
    """Upscaling adds pixels, not detail: at the photo's own resolution this image's long side
    would be long_side / enlargement px."""
    native = long_side / enlargement
    if enlargement > ENLARGEMENT_WARNING:
        report.warn(f"enlarged {enlargement:.1f}x: the source is too small for a sharp {long_side} px image "
                    f"(it has the detail of a {native:.0f} px one)")
    if target.min_source_long_side:
        how = f"enlarged {enlargement:.1f}x" if enlargement > 1 else "not enlarged"
        report.add("source resolution", native >= target.min_source_long_side,
                   f"{how}: at the photo's own resolution the long side is {native:.0f} px, "
                   f"needs >= {target.min_source_long_side}")
