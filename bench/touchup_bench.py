"""Touch-up: IoU before and after an admin's strokes (or a box) on the composed test photos, and
the seconds one refinement takes at 2000 px, as the touch-up page's preview does it (refine at
full size, then the mask shrunk to the canvas and encoded as PNG).

    .venv/bin/python bench/touchup_bench.py [--runs 5]

The photos are tests/test_touchup.py's: a product composed from scikit-image's pictures over
another picture, so the true mask is known, with a cut-out that went wrong the usual ways (a
neighbour or a shelf taken, a part missed) and the few strokes an admin paints. Times are wall
seconds on this machine, median of --runs; no anchor applies (plain rembg has no touch-up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from product_studio.jobs.masks import encode_mask  # noqa: E402
from product_studio.pipeline.touchup import Edit, Stroke, refine  # noqa: E402
from tests.test_touchup import _alpha, _scenes, iou  # noqa: E402

DISPLAY_SIDE = 1024  # the touch-up canvas (web/touchup.py)


def scaled(edit: Edit, s: float) -> Edit:
    strokes = tuple(Stroke(k.mode, k.radius * s, tuple((x * s, y * s) for x, y in k.points)) for k in edit.strokes)
    return Edit(strokes, None if edit.box is None else tuple(v * s for v in edit.box))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'photo':8} {'IoU before':>10} {'after strokes':>13}   {'2000 px: refine + preview PNG (s)':>33}")
    for name, (rgb, truth, wrong, strokes) in _scenes().items():
        alpha = _alpha(wrong)
        after = iou(refine(rgb, alpha, Edit(strokes)), truth)
        h, w = truth.shape
        s = 2000 / w
        big = cv2.resize(rgb, (2000, round(h * s)), interpolation=cv2.INTER_CUBIC)
        big_alpha = cv2.resize(alpha, (2000, round(h * s)), interpolation=cv2.INTER_LINEAR)
        edit = scaled(Edit(strokes), s)
        edit.check(2000, round(h * s))
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = refine(big, big_alpha, edit)
            k = DISPLAY_SIDE / 2000
            encode_mask(cv2.resize(out, (DISPLAY_SIDE, round(h * s * k)), interpolation=cv2.INTER_AREA))
            times.append(time.perf_counter() - t0)
        print(f"{name:8} {iou(alpha, truth):10.3f} {after:13.3f}   {statistics.median(times):33.3f}")

    # The browser test's photo, with the models' own (wrong) cut-out of it, through JPEG as uploaded.
    import io

    import numpy as np
    from PIL import Image

    from product_studio.pipeline.cutout import cut_out
    from tests.test_browser import BROWSER_STROKES, neighbour_photo
    from tests.test_serve import jpeg

    rgb, truth = neighbour_photo()
    rgb = np.asarray(Image.open(io.BytesIO(jpeg(rgb))).convert("RGB"))
    alpha = cut_out(rgb)[..., 3]
    edit = Edit(tuple(Stroke("remove", 24, tuple(points)) for points in BROWSER_STROKES))
    print(f"{'browser':8} {iou(alpha, truth):10.3f} {iou(refine(rgb, alpha, edit), truth):13.3f}   "
          "(the models' cut-out of tests/test_browser.py's photo)")


if __name__ == "__main__":
    main()
