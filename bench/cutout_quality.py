"""Cut-out quality: plain rembg vs Product Studio's cut_out, same model, on a matting data set.

    python bench/cutout_quality.py /path/to/alphamatting [--model u2netp] [--flip] [--no-refine]

DATA_DIR holds index.csv (name, image, mask, ...) and the files it names; mask is 8-bit alpha.
Prints, per image and in mean: IoU (alpha >= 128 vs mask >= 128), mean absolute alpha error
and seconds, for `remove(img, session=new_session(model))` and for cut_out.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image

from product_studio.config import Settings
from product_studio.pipeline.cutout import cut_out


def scores(alpha: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    a, t = alpha >= 128, truth >= 128
    union = (a | t).sum()
    iou = (a & t).sum() / union if union else 1.0
    return float(iou), float(np.abs(alpha / 255 - truth / 255).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--flip", action="store_true", help="ours with cutout_flip_tta on")
    parser.add_argument("--no-refine", action="store_true", help="ours with cutout_refine off")
    args = parser.parse_args()

    settings = Settings(cutout_model=args.model, cutout_flip_tta=args.flip, cutout_refine=not args.no_refine)
    settings.apply_environment()  # U2NET_HOME for rembg, before importing it
    from rembg import new_session, remove

    session = new_session(args.model)
    rows = list(csv.DictReader(open(args.data_dir / "index.csv", newline="")))
    cut_out(np.zeros((64, 64, 3), np.uint8), settings=settings)  # build our session outside the timings

    print(f"{'image':8} {'rembg IoU':>9} {'MAE':>6} {'s':>5}   {'ours IoU':>9} {'MAE':>6} {'s':>5}")
    results = []
    for row in rows:
        img = Image.open(args.data_dir / row["image"]).convert("RGB")
        truth = np.asarray(Image.open(args.data_dir / row["mask"]).convert("L"))
        t0 = time.perf_counter()
        plain = np.asarray(remove(img, session=session))[..., 3]
        t1 = time.perf_counter()
        ours = cut_out(np.asarray(img), settings=settings)[..., 3]
        t2 = time.perf_counter()
        r = (*scores(plain, truth), t1 - t0, *scores(ours, truth), t2 - t1)
        results.append(r)
        print(f"{row['name']:8} {r[0]:9.3f} {r[1]:6.3f} {r[2]:5.2f}   {r[3]:9.3f} {r[4]:6.3f} {r[5]:5.2f}")
    m = np.mean(results, axis=0)
    print(f"{'mean':8} {m[0]:9.3f} {m[1]:6.3f} {m[2]:5.2f}   {m[3]:9.3f} {m[4]:6.3f} {m[5]:5.2f}")
    print(f"model {args.model}, {len(rows)} images: IoU {m[0]:.3f} -> {m[3]:.3f} ({m[3] - m[0]:+.3f}), "
          f"alpha error {m[1]:.3f} -> {m[4]:.3f} ({m[4] - m[1]:+.3f})")


if __name__ == "__main__":
    main()
