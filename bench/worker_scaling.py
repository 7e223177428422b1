"""Worker scaling and memory: real Celery workers on the embedded broker (or --broker URL).

    python bench/worker_scaling.py [--photos 40] [--rss-photos 300] [--broker filesystem://]

1. The same batch of --photos photos (one target each), run by a worker with 1 process and then
   with 2: photos per minute for each and their ratio (2 cores here: ideal is 2x).
2. One worker process through --rss-photos photos: its resident memory after the first tenth
   (models loaded, warm) and at the end; the growth must stay under 10%.
Each measurement gets a fresh data folder, so no output is found "already done".
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

EXE = Path(sys.executable).with_name("product-studio")


def photos(n: int, size: int) -> list[tuple[str, bytes]]:
    """n distinct photos: scikit-image's real ones, resized, each with a unique corner."""
    from skimage import data

    bases = [np.asarray(Image.fromarray(f()).convert("RGB").resize((size, size * 2 // 3)))
             for f in (data.coffee, data.chelsea, data.astronaut, data.rocket)]
    out = []
    for i in range(n):
        img = bases[i % len(bases)].copy()
        img[:3, :3] = (i % 256, i // 256 % 256, 77)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append((f"p{i:04d}.jpg", buf.getvalue()))
    return out


def submit(env: dict, items: list[tuple[str, bytes]], target: str) -> str:
    code = ("import sys, pickle\nfrom product_studio.jobs import submit, Upload\nfrom tasks.pipeline import enqueue\n"
            "items, target = pickle.load(sys.stdin.buffer)\n"
            "sub = submit([Upload(n, d) for n, d in items], targets=[target], origin='bench')\nenqueue(sub.steps)\n"
            "print(sub.job.id)\n")
    import pickle

    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((items, target)), capture_output=True,
                         env=env, timeout=600)
    if out.returncode:
        sys.exit(out.stderr.decode())
    return out.stdout.decode().split()[-1]


def progress(env: dict, job_id: str) -> tuple[str, int]:
    from product_studio.db import Database, job_progress
    from product_studio.models import Job

    db = Database(env["PRODUCT_STUDIO_DATABASE_URL"])
    try:
        with db.session() as s:
            return s.get_one(Job, job_id).status, job_progress(s, job_id)["done"]
    finally:
        db.dispose()


def children_rss(pid: int) -> int:
    """Resident memory (bytes) of the worker's pool processes."""
    total = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def run_batch(n_photos: int, size: int, processes: int, broker: str, target: str, on_progress=None) -> float:
    """Seconds for a fresh worker with `processes` pool processes to finish the batch (measured
    from the first finished photo, so worker start-up and model loading are left out)."""
    with tempfile.TemporaryDirectory(prefix="ps-scale-") as tmp:
        env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": tmp, "PRODUCT_STUDIO_BROKER_URL": broker,
               "PRODUCT_STUDIO_DATABASE_URL": f"sqlite:///{tmp}/db.sqlite", "PRODUCT_STUDIO_CUTOUT_THREADS": "1"}
        job = submit(env, photos(n_photos + processes, size), target)
        worker = subprocess.Popen([str(EXE), "worker", f"--concurrency={processes}", "--loglevel=error"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            t0, start_done = None, 0
            while True:
                status, done = progress(env, job)
                if t0 is None and done >= processes:
                    t0, start_done = time.perf_counter(), done
                if on_progress:
                    on_progress(worker.pid, done)
                if status in ("done", "partial", "failed"):
                    return (time.perf_counter() - t0) * n_photos / max(1, done - start_done)
                time.sleep(0.25)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--rss-photos", type=int, default=300)
    ap.add_argument("--size", type=int, default=768, help="long side of the photos")
    ap.add_argument("--target", default="ebay")
    ap.add_argument("--broker", default="filesystem://")
    args = ap.parse_args()

    one = run_batch(args.photos, args.size, 1, args.broker, args.target)
    two = run_batch(args.photos, args.size, 2, args.broker, args.target)
    print(f"{args.photos} photos of {args.size} px -> {args.target}, broker {args.broker}")
    print(f"  1 worker process : {60 * args.photos / one:6.1f} photos/min")
    print(f"  2 worker processes: {60 * args.photos / two:6.1f} photos/min")
    print(f"  ratio            : {one / two:.2f}x")

    samples: list[tuple[int, int]] = []
    warm_at = max(1, args.rss_photos // 10)

    def sample(pid: int, done: int) -> None:
        if not samples or done >= samples[-1][0] + 10:
            samples.append((done, children_rss(pid)))

    run_batch(args.rss_photos, args.size, 1, args.broker, args.target, sample)
    warm = next(rss for done, rss in samples if done >= warm_at)
    end = samples[-1][1]
    growth = (end - warm) / warm
    print(f"worker RSS over {args.rss_photos} photos: {warm / 2**20:.0f} MiB after {warm_at}, "
          f"{end / 2**20:.0f} MiB at {samples[-1][0]}: growth {growth:+.1%} (limit +10%)")


if __name__ == "__main__":
    main()
