"""Catalog batch throughput: products per minute for one CSV batch, in-process and through Celery.

    python bench/batch_bench.py [--photos 200] [--duplicates 10] [--size 640] [--target amazon-main]

One catalogue (image,sku,title,category) of --photos rows is made from scikit-image's real photos,
each cropped, flipped and tinted its own way; --duplicates of the rows repeat an earlier photo
byte for byte, so the dedupe shows. The same `product-studio batch` command then runs it three
times, each into a fresh output folder and data folder, timed from start to exit (start-up and
model loading included, as a user waits for them):

1. in-process, --jobs 1;
2. in-process, --jobs 2 (two worker processes; 2 cores here: ideal is 2x);
3. --via-celery with a real worker (`product-studio worker --concurrency 2`) on the embedded
   filesystem:// broker, SQLite and local blobs in a temp data folder.

ONNX Runtime gets one thread per worker process in 2 and 3 (batch does that by itself for --jobs;
the Celery worker is given PRODUCT_STUDIO_CUTOUT_THREADS=1), so no mode oversubscribes the cores.
Each mode's CPU seconds per product (all its processes, the Celery worker's included) are printed
too, with the load average: on a machine shared with other work, wall-clock ratios say little.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

EXE = Path(sys.executable).with_name("product-studio")


def variation(base: np.ndarray, i: int, size: int) -> bytes:
    """Photo i: `base` cropped, maybe mirrored and tinted, as a JPEG of `size` px on the long side."""
    h, w = base.shape[:2]
    dy, dx = i % (h // 10), i // (h // 10) % (w // 10)  # a crop of its own for each i < (h // 10) * (w // 10)
    img = base[dy:h - (i % 5) * h // 50, dx:w - (i % 3) * w // 40]
    if i // 4 % 2:
        img = img[:, ::-1]
    tint = 1 + 0.02 * np.array([(i % 4) - 1.5, (i % 3) - 1, (i % 5) - 2])
    im = Image.fromarray(np.clip(img * tint, 0, 255).astype(np.uint8))
    im = im.resize((size, round(size * im.height / im.width)) if im.width >= im.height else
                   (round(size * im.width / im.height), size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def catalogue(folder: Path, n: int, duplicates: int, size: int) -> Path:
    """folder/catalog.csv and its photos: n rows, the last `duplicates` repeating earlier photos."""
    from skimage import data

    bases = [np.ascontiguousarray(f()) for f in (data.coffee, data.rocket)]
    unique = n - duplicates
    rows = []
    for i in range(n):
        k = i if i < unique else (i * 37) % unique
        name = f"img/{i:04d}.jpg"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(variation(bases[k % len(bases)], k, size))
        rows.append([name, f"SKU-{i:04d}", f"Product {i}", "Bench"])
    source = folder / "catalog.csv"
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([["image", "sku", "title", "category"], *rows])
    return source


def run_batch(source: Path, out: Path, env: dict, args: list[str]) -> tuple[float, dict]:
    """Wall seconds of one `product-studio batch` run, and its summary.json."""
    t0 = time.perf_counter()
    done = subprocess.run([str(EXE), "batch", str(source), "--out", str(out), *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    if not summary or summary["failed"] or summary["done"] != summary["items"]:  # a check failure is a result
        sys.exit(f"batch {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, summary


def in_process(source: Path, tmp: Path, target: str, jobs: int) -> tuple[float, dict]:
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp / f"data-j{jobs}")}
    return run_batch(source, tmp / f"out-j{jobs}", env, ["-t", target, "--jobs", str(jobs)])


def via_celery(source: Path, tmp: Path, target: str) -> tuple[float, dict]:
    data = tmp / "data-celery"
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(data), "PRODUCT_STUDIO_BROKER_URL": "filesystem://",
           "PRODUCT_STUDIO_DATABASE_URL": f"sqlite:///{data}/db.sqlite", "PRODUCT_STUDIO_CUTOUT_THREADS": "1"}
    worker = subprocess.Popen([str(EXE), "worker", "--concurrency=2", "--loglevel=error"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return run_batch(source, tmp / "out-celery", env, ["-t", target, "--via-celery"])
    finally:
        worker.send_signal(signal.SIGTERM)  # the main process: it stops its pool
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def timed(run, *args) -> tuple[float, dict, float]:
    """run(*args)'s (seconds, summary) and the CPU seconds its child processes used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, summary = run(*args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, summary, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--duplicates", type=int, default=10, help="rows repeating an earlier photo byte for byte")
    ap.add_argument("--size", type=int, default=640, help="long side of the photos")
    ap.add_argument("--target", default="amazon-main")
    args = ap.parse_args()
    if not 0 <= args.duplicates < args.photos:
        ap.error("--duplicates must be at least 0 and less than --photos")

    with tempfile.TemporaryDirectory(prefix="ps-batch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = catalogue(tmp, args.photos, args.duplicates, args.size)
        load = os.getloadavg()[0]
        runs = [("in-process --jobs 1", timed(in_process, source, tmp, args.target, 1)),
                ("in-process --jobs 2", timed(in_process, source, tmp, args.target, 2)),
                ("--via-celery, 1 worker x 2 processes", timed(via_celery, source, tmp, args.target))]

    print(f"{args.photos} products ({args.duplicates} duplicate photos), {args.size} px JPEGs -> {args.target}, "
          f"{os.cpu_count()} cores, load average {load:.1f} before and {os.getloadavg()[0]:.1f} after; "
          "wall time from command start to exit")
    for name, (seconds, summary, cpu) in runs:
        print(f"  {name:38s}: {60 * summary['done'] / seconds:6.1f} products/min  ({seconds:6.1f} s, "
              f"{cpu / summary['done']:.2f} CPU s/product; {summary['processed']} made, {summary['deduped']} "
              f"copied from identical photos, {summary['check_failed']} failing a check)")
    base = runs[0][1][0]
    for name, (seconds, _, _) in runs[1:]:
        print(f"  {name} vs --jobs 1: {base / seconds:.2f}x")


if __name__ == "__main__":
    main()
