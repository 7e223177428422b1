"""Touch-up: an admin's keep/remove brush strokes (and optionally a box) refine a cut-out's mask.

On the photo, with the current mask overlaid, the admin paints *keep* strokes over product the
cut-out missed and *remove* strokes over what it wrongly took (a neighbour's product, a shelf),
or drags a box around the product. `refine` turns the strokes, the box and the current mask into
a new alpha matte; the preview and the JSON API (POST /api/v1/assets/{id}/mask/strokes) share it,
so the same edit always gives the same mask.

Coordinates are continuous source-image pixels: the photo spans [0, width] x [0, height] and pixel
(column i, row j) has its centre at (i + 0.5, j + 0.5). A brush covers the pixels whose centres
lie within `radius` of the polyline through its points.

How `refine` works (all the deciding happens on a small copy, long side TOUCHUP_SIDE):

1. hints      GrabCut's mask from the current alpha (>= 128: probably product, else probably
              background), the strokes (keep: surely product, remove: surely background) and
              the box (outside: surely background)
2. GrabCut    Rother, Kolmogorov & Blake 2004, "GrabCut: interactive foreground extraction using
              iterated graph cuts" (SIGGRAPH), as cv2.grabCut: colour GMMs for product and
              background re-estimated from the hints, then a min-cut with a contrast-sensitive
              smoothness term, a few times over. OpenCV's RNG is seeded, so it is deterministic.
3. locality   without a box, only the changes that touch a stroke are taken (additions touching
              a keep stroke, removals touching a remove stroke): a stroke on one spot must not
              make GrabCut re-decide the whole photo. With a box, GrabCut decides the whole box.
              A separate part of the mask that a remove stroke touches (not the product's body:
              the parts under keep strokes, else the largest) goes whole (_stray_parts).
4. full size  where the small mask did not change the current alpha is kept exactly (its soft
              edges too); the changed parts are upsampled with the guided filter of
              cutout.upsample_alpha. Last, the box and the strokes' own footprints are imposed at
              full resolution: a brush keeps (255) or removes (0) exactly what it touches
              (strokes last, so a keep stroke outside the box still keeps).

On three photos composed from scikit-image's pictures (tests/test_touchup.py: a neighbour or a
shelf taken, a part missed), one remove and one keep stroke lift the IoU from 0.82 / 0.67 / 0.71
to 0.98 / 1.00 / 1.00; a box alone around the product, on a mask that also took background outside
it, from 0.66 / 0.80 / 0.76 to 0.95 / 1.00 / 1.00. GrabCut learns colours from what the strokes
cover: a single dot on a wrongly taken region, or one whose colours the product shares, may leave
part of it; a stroke across the region removes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import BadInput
from .cutout import _disk, downscale, upsample_alpha

MODES = ("keep", "remove")
MAX_STROKES = 500  # strokes per edit
MAX_POINTS = 20000  # points over all strokes of an edit
MIN_RADIUS = 0.5  # px: the smallest brush paints one pixel
MIN_BOX = 4  # px each way
TOUCHUP_SIDE = 512  # long side (px) where GrabCut runs
ITERATIONS = 3  # GrabCut's estimate/cut rounds
REACH = 2  # small px: a change this close to a stroke counts as touching it
SEAM = 2  # small px: the changed parts grow this much before the full-size alpha is replaced there
EMPTY_BOX = 0.02  # a box whose inside the mask keeps less of than this is treated as holding nothing yet
MIN_SAMPLES = 20  # GrabCut's GMMs (5 components each) need pixels of both classes to learn from
SEED = 20040801  # OpenCV's RNG seed (k-means initialisation of the GMMs)

KEEP, REMOVE = 1, 2  # labels of a rasterised stroke map (0: no stroke)


# -- the edit ----------------------------------------------------------------------------------


def _number(value, what: str) -> float:
    """`value` as a finite float, or BadInput naming `what`. Booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise BadInput(f"{what} must be a number, got {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float
        number = math.inf
    if not math.isfinite(number):
        raise BadInput(f"{what} must be a finite number, got {number}")
    return number


@dataclass(frozen=True)
class Stroke:
    """One brush stroke of a touch-up.

    mode:   "keep" (this is product) or "remove" (this is not)
    radius: brush radius in source-image px (0.5 to a quarter of the photo's long side)
    points: (x, y) positions in source-image px, continuous coordinates ([0, width] x [0, height]);
            consecutive points are joined by the brush; a single point paints a dot
    """

    mode: str
    radius: float
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Edit:
    """An admin's touch-up of one cut-out: brush strokes, applied in order (a later stroke wins
    where strokes overlap), and/or a box (x0, y0, x1, y1) in source px that the product lies in.

    Build it from the API's JSON with `Edit.from_json`, then validate it against the photo's size
    with `check(width, height)` before `refine` uses it.
    """

    strokes: tuple[Stroke, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def check(self, width: int, height: int) -> None:
        """Raise BadInput, with a sentence naming the problem, unless this edit fits a photo of
        `width` x `height` px: at least one stroke or a box; at most MAX_STROKES strokes and
        MAX_POINTS points in all; each stroke's mode "keep" or "remove", its radius between
        MIN_RADIUS and max(width, height) / 4 px, its points (at least one) inside
        [0, width] x [0, height]; a box with x0 < x1 and y0 < y1, inside the photo, at least
        MIN_BOX px each way. Raises ValueError if width or height is not a positive integer.
        """
        if not all(isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1 for n in (width, height)):
            raise ValueError(f"a photo size is two positive integers, got {width!r} x {height!r}")
        if not isinstance(self.strokes, Sequence) or isinstance(self.strokes, str):
            raise BadInput("strokes must be a list of strokes")
        if not self.strokes and self.box is None:
            raise BadInput("a touch-up needs at least one stroke or a box")
        if len(self.strokes) > MAX_STROKES:
            raise BadInput(f"a touch-up has at most {MAX_STROKES} strokes, this one has {len(self.strokes)}")
        max_radius = max(width, height) / 4
        total = 0
        for n, stroke in enumerate(self.strokes, 1):
            if not isinstance(stroke, Stroke):
                raise BadInput(f"stroke {n} is not a stroke (mode, radius, points)")
            if stroke.mode not in MODES:
                raise BadInput(f'stroke {n}: the mode must be "keep" or "remove", got {stroke.mode!r}')
            radius = _number(stroke.radius, f"stroke {n}: the radius")
            if not MIN_RADIUS <= radius <= max_radius:
                raise BadInput(f"stroke {n}: the radius must be between {MIN_RADIUS:g} and {max_radius:g} px "
                               f"for a {width}x{height} photo, got {radius:g}")
            if not isinstance(stroke.points, Sequence) or isinstance(stroke.points, str) or not stroke.points:
                raise BadInput(f"stroke {n} needs at least one point")
            total += len(stroke.points)
            if total > MAX_POINTS:
                raise BadInput(f"a touch-up has at most {MAX_POINTS} points over all its strokes")
            for point in stroke.points:
                if not isinstance(point, Sequence) or isinstance(point, str) or len(point) != 2:
                    raise BadInput(f"stroke {n}: a point is a pair (x, y), got {point!r}")
                x, y = _number(point[0], f"stroke {n}: x"), _number(point[1], f"stroke {n}: y")
                if not (0 <= x <= width and 0 <= y <= height):
                    raise BadInput(f"stroke {n}: the point ({x:g}, {y:g}) is outside the {width}x{height} photo")
        if self.box is not None:
            if not isinstance(self.box, Sequence) or isinstance(self.box, str) or len(self.box) != 4:
                raise BadInput("the box must be four numbers [x0, y0, x1, y1]")
            x0, y0, x1, y1 = (_number(v, f"the box's {k}") for v, k in zip(self.box, ("x0", "y0", "x1", "y1")))
            if not (x0 < x1 and y0 < y1):
                raise BadInput(f"the box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] needs x0 < x1 and y0 < y1")
            if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
                raise BadInput(f"the box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is not inside the {width}x{height} photo")
            if x1 - x0 < MIN_BOX or y1 - y0 < MIN_BOX:
                raise BadInput(f"the box must be at least {MIN_BOX} px wide and high, "
                               f"got {x1 - x0:g} x {y1 - y0:g}")

    @classmethod
    def from_json(cls, doc) -> Edit:
        """An Edit from the API's parsed JSON:
        {"strokes": [{"mode": "keep", "radius": 12, "points": [[x, y], ...]}, ...], "box": [x0, y0, x1, y1] or null}.

        Both keys are optional (a missing or null one means none); other keys are refused, so a
        misspelt one does not silently do nothing. Numbers become floats. Raises BadInput, never
        KeyError/TypeError/ValueError, for a wrong shape or type or more than MAX_STROKES strokes
        or MAX_POINTS points. The values are checked against the photo by `check(width, height)`.
        """
        if not isinstance(doc, Mapping):
            raise BadInput('a touch-up is a JSON object {"strokes": [...], "box": [x0, y0, x1, y1] or null}, '
                           f"got {_json_type(doc)}")
        unknown = sorted(str(k) for k in doc if k not in ("strokes", "box"))
        if unknown:
            raise BadInput(f"unknown field {unknown[0]!r} in the touch-up (it takes \"strokes\" and \"box\")")
        raw_strokes = doc.get("strokes")
        if raw_strokes is None:
            raw_strokes = []
        if not isinstance(raw_strokes, list):
            raise BadInput(f"strokes must be a list, got {_json_type(raw_strokes)}")
        if len(raw_strokes) > MAX_STROKES:
            raise BadInput(f"a touch-up has at most {MAX_STROKES} strokes, this one has {len(raw_strokes)}")
        strokes, total = [], 0
        for n, raw in enumerate(raw_strokes, 1):
            if not isinstance(raw, Mapping):
                raise BadInput(f'stroke {n} must be an object {{"mode", "radius", "points"}}, got {_json_type(raw)}')
            unknown = sorted(str(k) for k in raw if k not in ("mode", "radius", "points"))
            if unknown:
                raise BadInput(f"stroke {n}: unknown field {unknown[0]!r} (a stroke has mode, radius and points)")
            missing = [k for k in ("mode", "radius", "points") if k not in raw]
            if missing:
                raise BadInput(f"stroke {n} has no {missing[0]!r}")
            mode = raw["mode"]
            if not isinstance(mode, str):
                raise BadInput(f'stroke {n}: the mode must be the string "keep" or "remove", got {_json_type(mode)}')
            radius = _number(raw["radius"], f"stroke {n}: the radius")
            points = raw["points"]
            if not isinstance(points, list):
                raise BadInput(f"stroke {n}: points must be a list of [x, y] pairs, got {_json_type(points)}")
            total += len(points)
            if total > MAX_POINTS:
                raise BadInput(f"a touch-up has at most {MAX_POINTS} points over all its strokes")
            pairs = []
            for point in points:
                if not isinstance(point, list) or len(point) != 2:
                    raise BadInput(f"stroke {n}: each point must be a pair [x, y], got {_short(point)}")
                pairs.append((_number(point[0], f"stroke {n}: x"), _number(point[1], f"stroke {n}: y")))
            strokes.append(Stroke(mode, radius, tuple(pairs)))
        box = doc.get("box")
        if box is not None:
            if not isinstance(box, list) or len(box) != 4:
                raise BadInput(f"the box must be [x0, y0, x1, y1] or null, got {_short(box)}")
            box = tuple(_number(v, f"the box's {k}") for v, k in zip(box, ("x0", "y0", "x1", "y1")))
        return cls(tuple(strokes), box)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- rasterising -------------------------------------------------------------------------------

_SHIFT = 8  # fixed-point bits of cv2's drawing functions: positions to 1/256 px
# cv2's filled shapes take in the pixels their outline touches, about half a pixel more than the
# pixels whose centres are inside: drawn this much smaller, a brush's footprint matches the exact
# one (centres within `radius` of the polyline) to ~1.5% of its area, all of it on the outline.
_CIRCLE_TRIM, _BODY_TRIM = 0.35, 0.5


def paint(shape: tuple[int, int], strokes: Sequence[Stroke], scale_x: float = 1.0, scale_y: float = 1.0,
          min_radius: float = 0.0) -> np.ndarray:
    """The strokes' footprints on a `shape` (rows, cols) grid: uint8 KEEP (1), REMOVE (2) or 0.

    Grid pixel (col i, row j) covers source px [i / scale_x, (i + 1) / scale_x) x [j / scale_y,
    (j + 1) / scale_y); a stroke covers the pixels whose centres lie within its radius (scaled by
    the mean scale, at least `min_radius` grid px) of the polyline through its points: a disc at
    each point and a rectangle along each segment, drawn with cv2 at 1/256 px precision.
    Strokes are painted in order: a later one wins where they overlap.
    """
    out = np.zeros(shape, np.uint8)
    one = 1 << _SHIFT
    scale = (scale_x + scale_y) / 2
    limit = 1 << 20  # cv2 wants coordinates in int32 after the shift; points are inside the photo anyway
    for stroke in strokes:
        value = KEEP if stroke.mode == "keep" else REMOVE
        radius = max(stroke.radius * scale, min_radius)
        pts = np.asarray(stroke.points, np.float64).reshape(-1, 2) * (scale_x, scale_y) - 0.5  # pixel indices
        r_fixed = max(0, round((radius - _CIRCLE_TRIM) * one))
        for x, y in np.clip(np.round(pts * one), -limit * one, limit * one).astype(np.int64):
            cv2.circle(out, (int(x), int(y)), r_fixed, value, -1, cv2.LINE_8, _SHIFT)
        half = max(0.0, radius - _BODY_TRIM)
        for a, b in zip(pts, pts[1:]):
            d = b - a
            length = math.hypot(d[0], d[1])
            if length == 0:
                continue
            n = np.array([-d[1], d[0]]) * (half / length)
            quad = np.round(np.array([a - n, b - n, b + n, a + n]) * one)
            cv2.fillConvexPoly(out, np.clip(quad, -limit * one, limit * one).astype(np.int32), value,
                               cv2.LINE_8, _SHIFT)
    return out


def _box_mask(shape: tuple[int, int], box: tuple[float, float, float, float], sx: float, sy: float) -> np.ndarray:
    """bool (rows, cols): the grid pixels whose centres lie inside `box` (source px), grid = source x (sx, sy)."""
    x0, y0, x1, y1 = box
    rows, cols = shape
    c0, c1 = max(0, math.ceil(x0 * sx - 0.5)), min(cols, math.floor(x1 * sx - 0.5) + 1)
    r0, r1 = max(0, math.ceil(y0 * sy - 0.5)), min(rows, math.floor(y1 * sy - 0.5) + 1)
    inside = np.zeros(shape, bool)
    inside[r0:max(r0, r1), c0:max(c0, c1)] = True
    return inside


# -- refining ----------------------------------------------------------------------------------


def _grabcut(rgb_small: np.ndarray, hints: np.ndarray) -> np.ndarray:
    """GrabCut (Rother et al. 2004, cv2.grabCut) from a GC_* hint mask; bool (h, w) product mask.

    When one class has too few pixels to learn a colour model from (a mask that is all product,
    say), GrabCut cannot run and the hints are the answer.
    """
    fg = (hints == cv2.GC_FGD) | (hints == cv2.GC_PR_FGD)
    undecided = (hints == cv2.GC_PR_FGD) | (hints == cv2.GC_PR_BGD)
    if fg.sum() < MIN_SAMPLES or (~fg).sum() < MIN_SAMPLES or not undecided.any():
        return fg
    mask = hints.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(SEED)  # k-means seeds the GMMs: same input, same mask (the preview and the save agree)
    try:
        cv2.grabCut(rgb_small, mask, None, bgd, fgd, ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models (e.g. a flat image): keep the hints
        return fg
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _touching(change: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 8-connected parts of `change` (bool) that contain a `seeds` pixel."""
    n, labels = cv2.connectedComponents(change.astype(np.uint8), connectivity=8)
    if n <= 1:
        return change
    hit = np.zeros(n, bool)
    hit[np.unique(labels[seeds & change])] = True
    hit[0] = False
    return hit[labels]


def refine_small(rgb_small: np.ndarray, old: np.ndarray, strokes_small: np.ndarray,
                 box_small: np.ndarray | None) -> np.ndarray:
    """The new product mask at the working size, bool (h, w).

    rgb_small: (h, w, 3) uint8; old: bool (h, w) current mask; strokes_small: uint8 (h, w) from
    `paint`; box_small: bool (h, w) inside the box, or None.
    """
    hints = np.where(old, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    if box_small is not None:
        hints[~box_small] = cv2.GC_BGD
        inside = int(box_small.sum())
        if inside and (old & box_small).sum() < EMPTY_BOX * inside:
            # The mask has (almost) none of the product (a failed cut-out, or one that took only
            # a neighbour): start like classic GrabCut, the whole box probably product.
            hints[box_small] = cv2.GC_PR_FGD
    keep, remove = strokes_small == KEEP, strokes_small == REMOVE
    near_remove = cv2.dilate(remove.astype(np.uint8), _disk(REACH)) > 0
    stray = _stray_parts(old, keep, near_remove) if box_small is None else np.zeros_like(old)
    hints[stray] = cv2.GC_BGD  # GrabCut learns their colours as background too
    hints[keep] = cv2.GC_FGD
    hints[remove] = cv2.GC_BGD
    new = _grabcut(rgb_small, hints)
    if box_small is not None:
        return new
    # Without a box, only what a stroke caused: additions touching a keep stroke, removals
    # touching a remove stroke.
    added = _touching(new & ~old, cv2.dilate(keep.astype(np.uint8), _disk(REACH)) > 0)
    removed = _touching(old & ~new, near_remove)
    return (old | added) & ~removed & ~stray


def _stray_parts(old: np.ndarray, keep: np.ndarray, near_remove: np.ndarray) -> np.ndarray:
    """The separate parts of the mask that a remove stroke marks as not the product, whole: bool (h, w).

    A part (8-connected) of the current mask `old` goes when a remove stroke touches it and it is
    not the product's body: the parts under keep strokes are the body, else the largest part. A
    neighbour's product or a shelf standing apart is then removed by one stroke across it, whatever
    its colours (GrabCut alone keeps what the product's colour model explains). Parts joined to
    the product are left to GrabCut.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(old.astype(np.uint8), connectivity=8)
    if n <= 2:  # one part (or none): the product itself
        return np.zeros_like(old)
    hit = np.zeros(n, bool)
    hit[np.unique(labels[near_remove & old])] = True
    body = np.zeros(n, bool)
    body[np.unique(labels[keep & old])] = True
    if not body[1:].any():
        body[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))] = True
    drop = hit & ~body
    drop[0] = False
    return drop[labels]


def refine(rgb: np.ndarray, alpha: np.ndarray, edit: Edit) -> np.ndarray:
    """A new alpha matte after an admin's touch-up: (H, W) uint8, 0 transparent to 255 opaque.

    rgb: the photo, (H, W, 3) uint8 RGB; alpha: the current matte, (H, W) uint8; edit: strokes
    and/or a box in source px, already validated with `edit.check(W, H)`. GrabCut (Rother,
    Kolmogorov & Blake 2004, via cv2.grabCut) runs on a copy with long side TOUCHUP_SIDE,
    initialised from the current mask and the strokes; see the module's docstring for the steps.
    Pixels far from any change keep their current alpha exactly; with a box everything outside
    it is 0; the strokes come last: their footprints end up exactly 255 (keep) or 0 (remove).
    Deterministic: the same input gives the same matte. About 0.4 s at 2000x1500 on 2 cores,
    most of it GrabCut's.
    Raises ValueError for arrays of the wrong shape or dtype.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"refine needs (H, W, 3) uint8 RGB, got {getattr(rgb, 'shape', None)} "
                         f"{getattr(rgb, 'dtype', type(rgb).__name__)}")
    if not isinstance(alpha, np.ndarray) or alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError(f"the alpha must be {rgb.shape[:2]} uint8, got {getattr(alpha, 'shape', None)} "
                         f"{getattr(alpha, 'dtype', type(alpha).__name__)}")
    h, w = alpha.shape
    rgb = np.ascontiguousarray(rgb)
    rgb_small = np.ascontiguousarray(downscale(rgb, TOUCHUP_SIDE))
    hs, ws = rgb_small.shape[:2]
    sx, sy = ws / w, hs / h
    small_alpha = alpha if (hs, ws) == (h, w) else cv2.resize(alpha, (ws, hs), interpolation=cv2.INTER_AREA)
    old = small_alpha >= 128
    box_small = None if edit.box is None else _box_mask((hs, ws), edit.box, sx, sy)
    new = refine_small(rgb_small, old, paint((hs, ws), edit.strokes, sx, sy, min_radius=1.0), box_small)

    out = alpha.copy()
    changed = new != old
    if changed.any():
        region = cv2.dilate(changed.astype(np.uint8), _disk(SEAM))
        if (hs, ws) != (h, w):
            region = cv2.resize(region, (w, h), interpolation=cv2.INTER_NEAREST)
        region = region > 0
        out[region] = upsample_alpha(rgb_small, new, rgb)[region]
    if edit.box is not None:
        out[~_box_mask((h, w), edit.box, 1.0, 1.0)] = 0
    if edit.strokes:
        footprint = paint((h, w), edit.strokes)
        out[footprint == KEEP] = 255
        out[footprint == REMOVE] = 0
    return out
