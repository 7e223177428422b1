"""Cut-out throughput: plain rembg vs Product Studio's cut-out stage, same model, same run.

    python bench/cutout_throughput.py [--images DIR] [--count 30] [--size 2048] [--rounds 1]

Inputs: real photos shipped with scikit-image (or the files in DIR), resized so the long side is
--size, cycled to --count JPEG files in a temp folder. Both systems go file to file, with the same
models (--model, default the configured cut-out, e.g. "u2netp+u2net": both models for both):
  (a) plain rembg, sessions reused: PIL open, remove(img, session=s) with each model, save PNG;
  (b) ours: read bytes, ingest.load_bytes, cut_out, encode_png, atomic write, through
      cut_out_many (the same code a batch run uses).
With --rounds N the two alternate N times (a b a b ...) so a busy neighbour hurts both alike.
Prints images/s for each, the ratio (b / a), where (b)'s time goes, image by image, and the
per-stage time of a full `process` of one photo into four targets.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from product_studio.backends.registry import cutout_members
from product_studio.config import Settings
from product_studio.files import atomic_write_bytes
from product_studio.pipeline import cutout
from product_studio.pipeline.export import encode_png
from product_studio.pipeline.ingest import load_bytes

SKIMAGE_PHOTOS = ("coffee", "astronaut", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
                  "immunohistochemistry", "retina")


def photos(folder: Path | None) -> list[np.ndarray]:
    if folder:
        return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir()) if p.is_file()]
    from skimage import data

    found = []
    for name in SKIMAGE_PHOTOS:
        try:  # some need a download, impossible offline
            pixels = getattr(data, name)()
        except Exception:
            continue
        found.append(pixels[0] if isinstance(pixels, tuple) else pixels)  # stereo: the left view
    return found


def prepare(sources: list[np.ndarray], count: int, size: int, out: Path) -> list[Path]:
    """`count` JPEG files in `out`: the sources resized to long side `size`, cycled."""
    resized = []
    for p in sources:
        scale = size / max(p.shape[:2])
        resized.append(cv2.resize(p, (round(p.shape[1] * scale), round(p.shape[0] * scale)),
                                  interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC))
    files = []
    for i, rgb in zip(range(count), itertools.cycle(resized)):
        files.append(out / f"in{i:03d}.jpg")
        Image.fromarray(rgb).save(files[-1], quality=90)
    return files


def timed_run(fn, *args) -> np.ndarray:
    """(wall seconds, CPU seconds of all this process's threads) spent in fn(*args)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return np.array([time.perf_counter() - wall, time.process_time() - cpu])


def run_plain(files: list[Path], sessions: list, out: Path) -> None:
    from rembg import remove

    for f in files:
        with Image.open(f) as img:
            for session in sessions:  # plain rembg consulting the same models: one remove() each
                cut = remove(img, session=session)
            cut.save(out / f"{f.stem}.png")


def run_ours(files: list[Path], settings: Settings, out: Path, workers: int | None) -> None:
    def load(path: Path):
        return load_bytes(path.read_bytes(), path.name, settings)

    def save(path: Path, rgba: np.ndarray) -> Path:
        return atomic_write_bytes(out / f"{path.stem}.png", encode_png(rgba))

    for _ in cutout.cut_out_many(files, load=load, save=save, workers=workers, settings=settings):
        pass


def split(files: list[Path], settings: Settings, out: Path) -> dict[str, float]:
    """Seconds per image of each step of (b), one image at a time (no overlap between steps)."""
    from product_studio.backends.cutout_rembg import backends_for
    from product_studio.pipeline.confidence import assess

    backends, steps = backends_for(settings), {}
    threads = backends[0].session.inner_session.get_session_options().intra_op_num_threads

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - t0
        return result

    for f in files:
        src = timed("read + decode", lambda: load_bytes(f.read_bytes(), f.name, settings))
        small = timed("downscale", cutout.downscale, src.rgb)
        probs = [timed(f"model {b.model}{' x2 (flip)' if settings.cutout_flip_tta else ''}, {threads} thread(s)",
                       cutout.predict, b, small, settings.cutout_flip_tta) for b in backends]
        prob = timed("average", np.mean, probs, 0) if len(probs) > 1 else probs[0]
        mask = timed("refine_mask", cutout.refine_mask, small, prob)
        timed("confidence", assess, probs, mask)
        alpha = timed("upsample_alpha", cutout.upsample_alpha, small, mask, src.rgb)
        rgb = timed("decontaminate", cutout.decontaminate, src.rgb, alpha)
        rgba = timed("compose", cutout.compose, rgb, alpha)
        png = timed("encode_png", encode_png, rgba)
        timed("write", atomic_write_bytes, out / f"split_{f.stem}.png", png)
    return {k: v / len(files) for k, v in steps.items()}


PROCESS_TARGETS = ("amazon-main", "shopify-square", "ebay", "lifestyle")


def process_stages(photo: Path, settings: Settings, out: Path) -> dict[str, float]:
    """Per-stage seconds of a full `process` of one photo into four targets, and its wall time
    ("wall": the targets render in parallel, so the stages sum to more). The second run: the
    first pays one-off model loads and imports, which a long-running worker pays once."""
    from product_studio.pipeline.process import process_photo
    from product_studio.presets import get_target

    targets = [get_target(t) for t in PROCESS_TARGETS]
    process_photo(load_bytes(photo.read_bytes(), photo.name, settings), targets, out, settings=settings)
    t0 = time.perf_counter()
    source = load_bytes(photo.read_bytes(), photo.name, settings)
    decode = time.perf_counter() - t0
    result = process_photo(source, targets, out, settings=settings)
    return {"decode": decode, **result.timings, "wall": decode + result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, help="folder of photos (default: scikit-image's)")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--size", type=int, default=2048, help="long side of the inputs")
    parser.add_argument("--model", default=Settings().cutout_model, help="cut-out models, e.g. u2netp+u2net")
    parser.add_argument("--workers", type=int, help="threads for (b); default: usable cores")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--flip", action="store_true", help="turn on cutout_flip_tta for (b)")
    parser.add_argument("--baseline-model", default="u2netp",
                        help="also time the full process with this cut-out setting (the previous default)")
    args = parser.parse_args()

    settings = Settings(cutout_model=args.model, cutout_flip_tta=args.flip)
    settings.apply_environment()
    from rembg import new_session

    with tempfile.TemporaryDirectory(prefix="cutout-bench-") as tmp:
        tmp = Path(tmp)
        for sub in ("a", "b"):
            (tmp / sub).mkdir()
        sources = photos(args.images)
        files = prepare(sources, args.count, args.size, tmp)
        sessions = [new_session(m.name) for m in cutout_members(args.model)]
        # Warm both (session construction, first-run allocations) outside the timings.
        run_plain(files[:1], sessions, tmp / "a")
        run_ours(files[:1], settings, tmp / "b", args.workers)
        plain = ours = np.zeros(2)
        for _ in range(args.rounds):
            plain = plain + timed_run(run_plain, files, sessions, tmp / "a")
            ours = ours + timed_run(run_ours, files, settings, tmp / "b", args.workers)
        n = len(files) * args.rounds
        with Image.open(files[0]) as first:
            size = "x".join(map(str, first.size))
        print(f"{len(files)} files ({len(sources)} distinct photos, first {size}) x {args.rounds} round(s), "
              f"model {args.model}, flip {'on' if args.flip else 'off'}, "
              f"workers {args.workers or cutout.default_workers()}")
        for label, (wall, cpu) in (("(a) plain rembg", plain), ("(b) Product Studio", ours)):
            print(f"{label:19}: {n / wall:5.2f} images/s  ({wall / n:.3f} s/image, {cpu / n:.3f} CPU s/image)")
        print(f"ratio (b)/(a)      : {plain[0] / ours[0]:5.2f}x images/s, {plain[1] / ours[1]:.2f}x less CPU per image")
        steps = split(files[:5], settings, tmp / "b")
        print("(b) one image at a time, seconds per image:")
        for name, s in steps.items():
            print(f"  {name:28} {s:6.3f}")
        print(f"  {'total':28} {sum(steps.values()):6.3f}")
        runs = {args.model: settings}
        if args.baseline_model and args.baseline_model != args.model:
            runs[args.baseline_model] = settings.model_copy(update={"cutout_model": args.baseline_model})
        # As a fresh `process` would: sessions made anew, each with every core (cut_out_many's
        # two workers made theirs with one thread each).
        from product_studio.backends.cutout_rembg import clear_sessions

        clear_sessions()
        stages = {model: process_stages(files[0], s, tmp / "process") for model, s in runs.items()}
        print(f"full process of one {size} photo into {', '.join(PROCESS_TARGETS)}, seconds per stage:")
        print(f"  {'stage':28}" + "".join(f" {model:>14}" for model in stages))
        for name in dict.fromkeys(n for t in stages.values() for n in t if n != "wall"):
            print(f"  {name:28}" + "".join(f" {t.get(name, 0.0):14.3f}" for t in stages.values()))
        print(f"  {'stages summed':28}" + "".join(f" {sum(v for k, v in t.items() if k != 'wall'):14.3f}"
                                                  for t in stages.values()))
        print(f"  {'wall (targets in parallel)':28}" + "".join(f" {t['wall']:14.3f}" for t in stages.values()))


if __name__ == "__main__":
    main()
