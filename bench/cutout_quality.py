"""Cut-out quality: plain rembg (each model on its own) vs Product Studio's cut-out, and how well
its confidence score ranks the photos, on one or more data sets.

    python bench/cutout_quality.py DATA_DIR [DATA_DIR ...] [--model u2netp+u2net] [--flip] [--no-refine] [-v]

Each DATA_DIR holds index.csv (name, image, mask, ...) and the files it names; mask is 8-bit alpha
(../shared/eval/alphamatting and ../shared/eval/ecssd_objects; never part of the repository).
Prints per set: mean IoU (alpha >= 128 vs mask >= 128), mean absolute alpha error and seconds per
image for `remove(img, session=new_session(m))` with each model m the setting names, and for
cut_out_scored; then the confidence's AUROC for telling cut-outs with IoU < 0.8 from the rest,
and the share of photos below the review threshold with their mean IoU against the others'.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image

from product_studio.backends.registry import cutout_members
from product_studio.config import Settings
from product_studio.pipeline.cutout import cut_out_scored

FAIL_IOU = 0.8  # a cut-out below this IoU is one a store should not publish unchecked


def scores(alpha: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    a, t = alpha >= 128, truth >= 128
    union = (a | t).sum()
    iou = (a & t).sum() / union if union else 1.0
    return float(iou), float(np.abs(alpha / 255 - truth / 255).mean())


def auroc(suspicion: np.ndarray, bad: np.ndarray) -> float:
    """P(a bad photo is more suspicious than a good one), ties half (Mann-Whitney U)."""
    pos, neg = suspicion[bad], suspicion[~bad]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def run_set(data_dir: Path, settings: Settings, sessions: dict, verbose: bool) -> None:
    from rembg import remove

    rows = list(csv.DictReader(open(data_dir / "index.csv", newline="")))
    plain: dict[str, list] = {m: [] for m in sessions}
    ours, confidence = [], []
    for row in rows:
        img = Image.open(data_dir / row["image"]).convert("RGB")
        truth = np.asarray(Image.open(data_dir / row["mask"]).convert("L"))
        line = [f"{row['name']:12}"]
        for model, session in sessions.items():
            t0 = time.perf_counter()
            alpha = np.asarray(remove(img, session=session))[..., 3]
            plain[model].append((*scores(alpha, truth), time.perf_counter() - t0))
            line.append(f"{model} {plain[model][-1][0]:.3f}")
        t0 = time.perf_counter()
        cut = cut_out_scored(np.asarray(img), settings=settings)
        ours.append((*scores(cut.rgba[..., 3], truth), time.perf_counter() - t0))
        confidence.append(cut.quality.score)
        if verbose:
            print(*line, f"ours {ours[-1][0]:.3f}", f"confidence {cut.quality.score:.2f}",
                  "; ".join(cut.quality.reasons))

    print(f"\n{data_dir} ({len(rows)} images)")
    print(f"  {'system':32} {'IoU':>6} {'alpha error':>11} {'s/image':>8}")
    for model, results in plain.items():
        m = np.mean(results, axis=0)
        print(f"  {'plain rembg ' + model:32} {m[0]:6.3f} {m[1]:11.4f} {m[2]:8.2f}")
    m = np.mean(ours, axis=0)
    print(f"  {'Product Studio ' + settings.cutout_model:32} {m[0]:6.3f} {m[1]:11.4f} {m[2]:8.2f}")
    iou, conf = np.array([r[0] for r in ours]), np.array(confidence)
    bad, flagged = iou < FAIL_IOU, conf < settings.cutout_review_below
    print(f"  confidence: AUROC {auroc(-conf, bad):.3f} for IoU < {FAIL_IOU} ({int(bad.sum())} such photos); "
          f"{flagged.mean():.0%} below {settings.cutout_review_below} (needs review), catching "
          f"{int((flagged & bad).sum())} of {int(bad.sum())}; mean IoU flagged "
          f"{iou[flagged].mean() if flagged.any() else float('nan'):.3f} vs rest "
          f"{iou[~flagged].mean() if (~flagged).any() else float('nan'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dirs", type=Path, nargs="+")
    parser.add_argument("--model", default=Settings().cutout_model, help="the cut-out setting (default: ours)")
    parser.add_argument("--flip", action="store_true", help="ours with cutout_flip_tta on")
    parser.add_argument("--no-refine", action="store_true", help="ours with cutout_refine off")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per image")
    args = parser.parse_args()

    settings = Settings(cutout_model=args.model, cutout_flip_tta=args.flip, cutout_refine=not args.no_refine)
    settings.apply_environment()  # U2NET_HOME for rembg, before importing it
    from rembg import new_session

    sessions = {m.name: new_session(m.name) for m in cutout_members(args.model) if m.loader == "rembg"}
    cut_out_scored(np.zeros((64, 64, 3), np.uint8), settings=settings)  # our sessions, outside the timings
    for data_dir in args.data_dirs:
        run_set(data_dir, settings, sessions, args.verbose)


if __name__ == "__main__":
    main()
