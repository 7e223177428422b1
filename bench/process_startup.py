"""What a newcomer times first: one photo through `product-studio process`, from process start to
exit, against a plain rembg script cutting out the same photo with the same model (the anchor).

    (a) product-studio process PHOTO -t amazon-main -t shopify-square -t ebay -t lifestyle --out TMP
    (b) python -c "from rembg import remove, new_session; remove(Image.open(p), session=new_session(MODEL)).save(out)"

PHOTO is a 1944x2592 (rows x columns) JPEG made from scikit-image's coffee (cropped to 4:3 and
upscaled). Both run from the same interpreter, with the same cores (the bench's own affinity, or
--cores), the same model (--model; PRODUCT_STUDIO_CUTOUT_MODEL for (a)) read from the same folder
(U2NET_HOME for both; PRODUCT_STUDIO_MODEL_DIR too for (a)). One untimed round first (OS file
cache, numba caches), then N rounds alternating a and b.

    python bench/process_startup.py [--rounds 3] [--model u2netp+u2net] [--model-dir DIR] [--cores N]

Prints the median seconds of each and their ratio a/b (issue 11's goal: 1.5x or less), then where
(a)'s time goes: start-up imports (python -X importtime) and the stage timings of one in-process run.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("product-studio")
TARGETS = ["amazon-main", "shopify-square", "ebay", "lifestyle"]
SHAPE = (1944, 2592)  # rows, columns: a 5 MP photo
# With several models ("u2netp+u2net") plain rembg runs each, as the same models consulted.
PLAIN = ("import sys; from PIL import Image; from rembg import remove, new_session; img = Image.open(sys.argv[1]); "
         "cuts = [remove(img, session=new_session(m)) for m in sys.argv[2].split('+')]; cuts[-1].save(sys.argv[3])")

# One in-process run of what `process` does, its phases timed (imports, then process_photo's stages).
BREAKDOWN = r"""
import json, sys, time
t0 = time.perf_counter()
import product_studio.cli
t1 = time.perf_counter()
from product_studio.pipeline.ingest import load_path
from product_studio.pipeline.process import process_photo
from product_studio.config import get_settings
from product_studio.presets import get_target
t2 = time.perf_counter()
settings = get_settings()
settings.apply_environment()
import rembg
t3 = time.perf_counter()
result = process_photo(load_path(__import__("pathlib").Path(sys.argv[1]), settings),
                       [get_target(t) for t in sys.argv[3:]], __import__("pathlib").Path(sys.argv[2]),
                       settings=settings)
t4 = time.perf_counter()
heavy = sorted(m for m in ("torch", "controlnet_aux", "transformers", "diffusers", "skimage", "scipy", "numba",
                           "pymatting", "onnxruntime", "rembg") if m in sys.modules)
print(json.dumps({"cli import": t1 - t0, "pipeline imports": t2 - t1, "import rembg (onnxruntime, pymatting)": t3 - t2,
                  "process_photo": t4 - t3, "stages": result.timings, "loaded": heavy}))
"""


def make_photo(path: Path) -> Path:
    import cv2
    import numpy as np
    from PIL import Image
    from skimage import data

    rgb = data.coffee()  # 400x600
    h, w = rgb.shape[:2]
    cw = h * SHAPE[1] // SHAPE[0]  # 4:3 centre crop
    rgb = rgb[:, (w - cw) // 2:(w - cw) // 2 + cw]
    rgb = cv2.resize(np.ascontiguousarray(rgb), SHAPE[::-1], interpolation=cv2.INTER_CUBIC)
    Image.fromarray(rgb).save(path, quality=92)
    return path


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds from spawn to exit, and the CPU seconds (user + system) the process used:
    less swayed than wall time by whatever else the machine is running."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run(argv, check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode:
        raise SystemExit(f"{argv[:3]}... exited with {run.returncode}:\n{run.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_summary(stderr: str, top: int = 8) -> list[tuple[str, float]]:
    """Top-level imports (not nested in another) by cumulative seconds, from -X importtime's lines."""
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m and not m.group(3):  # not indented: imported by the command itself
            rows.append((m.group(4), int(m.group(2)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None, help="rembg model(s) for both sides, e.g. u2netp or u2netp+u2net "
                                                     "(default: the configured cut-out)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="folder holding MODEL.onnx (default: the settings' model_dir)")
    parser.add_argument("--cores", type=int, default=0, help="pin the bench (and so both sides) to the first N "
                                                              "cores it may use (0: as it is)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip where (a)'s time goes")
    args = parser.parse_args()

    if args.cores:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    from product_studio.config import Settings

    if args.model_dir is None:
        args.model_dir = Settings().model_dir
    model_dir = args.model_dir.resolve()
    args.model = args.model or Settings().cutout_model
    for name in args.model.split("+"):
        if not (model_dir / f"{name}.onnx").is_file():
            raise SystemExit(f"{model_dir / (name + '.onnx')} not found; pass --model-dir")

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the same threads for both
    env.update(U2NET_HOME=str(model_dir), COLUMNS="200")
    env_a = {**env, "PRODUCT_STUDIO_CUTOUT_MODEL": args.model, "PRODUCT_STUDIO_MODEL_DIR": str(model_dir)}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = make_photo(tmp / "photo.jpg")
        a = [str(EXE), "process", str(photo), *(x for t in TARGETS for x in ("-t", t)), "--out", str(tmp / "out")]
        b = [sys.executable, "-c", PLAIN, str(photo), args.model, str(tmp / "plain.png")]
        load = os.getloadavg()[0]  # others' work on the machine sways wall times; CPU times less
        timed(a, env_a), timed(b, env)  # untimed: file cache, numba caches
        ours, plain = [], []
        for _ in range(args.rounds):
            ours.append(timed(a, env_a))
            plain.append(timed(b, env))

        cores = len(os.sched_getaffinity(0))
        o, p = (statistics.median(w for w, _ in ours)), statistics.median(w for w, _ in plain)
        oc, pc = (statistics.median(c for _, c in ours)), statistics.median(c for _, c in plain)
        print(f"one {SHAPE[0]}x{SHAPE[1]} photo, model {args.model}, {cores} core(s), median of {args.rounds} "
              f"(process start -> exit; load average at start {load:.1f}):")
        print(f"  (b) plain rembg script (anchor):          {p:.2f} s  (CPU {pc:.2f} s)   "
              f"{' '.join(f'{w:.2f}' for w, _ in plain)}")
        print(f"  (a) product-studio process, {len(TARGETS)} targets:  {o:.2f} s  (CPU {oc:.2f} s)   "
              f"{' '.join(f'{w:.2f}' for w, _ in ours)}")
        print(f"  ratio a/b: {o / p:.2f}x (goal: 1.5x or less); CPU seconds {oc / pc:.2f}x")
        if args.no_breakdown:
            return

        import json

        bare = timed([sys.executable, "-c", "pass"], env)[0]
        imp = subprocess.run([sys.executable, "-X", "importtime", "-m", "product_studio.cli", *a[1:]], env=env_a,
                             check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run = subprocess.run([sys.executable, "-c", BREAKDOWN, str(photo), str(tmp / "out2"), *TARGETS], env=env_a,
                             check=False, capture_output=True, text=True)
        print(f"where (a)'s time goes (one run each; bare interpreter start {bare:.2f} s):")
        print("  biggest top-level imports of the whole command (-X importtime, cumulative): "
              + ", ".join(f"{name} {s:.2f} s" for name, s in import_summary(imp.stderr)))
        if run.returncode:
            print(f"  in-process breakdown failed: {run.stderr.strip().splitlines()[-1:]}")
            return
        parts = json.loads(run.stdout.strip().splitlines()[-1])
        stages = parts.pop("stages")
        loaded = parts.pop("loaded")
        print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
        print("  process_photo's stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                       sorted(stages.items(), key=lambda kv: -kv[1])))
        print(f"  heavy modules loaded: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
