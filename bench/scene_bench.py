"""Seconds per studio scene at 2000 px, for every offline preset.

    python bench/scene_bench.py [--size 2000] [--repeat 3]

Target: at most 0.5 s per scene on a 2-core machine. The product is a synthetic cut-out so the
figure is the backend's own cost (layout and composite excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from product_studio.pipeline.layout import place
from product_studio.pipeline.scene import render_background
from product_studio.presets import TARGETS
from product_studio.scenes import SCENES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    target = TARGETS["lifestyle"].model_copy(update={"width": args.size, "height": args.size})
    cutout = np.zeros((600, 400, 4), np.uint8)
    cutout[100:550, 80:320] = (90, 60, 40, 255)
    placement = place(cutout, target)
    print(f"studio scenes at {args.size}x{args.size} px, median of {args.repeat}")
    worst = 0.0
    for preset in SCENES.values():
        if preset.backend not in ("studio", "solid"):
            continue
        times = []
        for seed in range(args.repeat):
            t0 = time.perf_counter()
            render_background(target, preset, placement, seed)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"  {preset.name:10s} {med:6.3f} s")
    print(f"slowest {worst:.3f} s per scene (target <= 0.5 s)")


if __name__ == "__main__":
    main()
