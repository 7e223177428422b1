"""How fast the web process starts, and what it weighs: `product-studio serve --no-worker`, from
spawn until /healthz answers, against a bare FastAPI app under uvicorn (the anchor) measured in
the same run. The first start on an empty data folder also migrates the database and makes the
first admin; later starts (the usual case: a restart or a deploy) find both done.

    python bench/web_start.py [--rounds 5]

Prints the median start time of each, their ratio, and the web process's resident memory.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

EXE = Path(sys.executable).with_name("product-studio")
BARE = "from fastapi import FastAPI; app = FastAPI(); app.get('/healthz')(lambda: {'ok': True})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_start(argv: list[str], port: int, env: dict | None = None) -> tuple[float, int]:
    """Seconds from spawn to the first 200 from /healthz, and the process's RSS in KiB then."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise SystemExit(f"{argv} exited with {proc.returncode}") from None
                time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        rss = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS")))
        return elapsed, rss
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import os

    ours, bare, rss = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "bare_app.py", "w") as f:
            f.write(BARE)
        env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": f"{tmp}/data"}
        port = free_port()
        first, _ = time_start([str(EXE), "serve", "--no-worker", "--port", str(port)], port, env)
        for _ in range(args.rounds):
            port = free_port()
            seconds, rss = time_start([str(EXE), "serve", "--no-worker", "--port", str(port)], port, env)
            ours.append(seconds)
            port = free_port()
            bare.append(time_start([sys.executable, "-m", "uvicorn", "--app-dir", tmp, "bare_app:app",
                                    "--port", str(port)], port)[0])
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"web start, median of {args.rounds} (spawn -> /healthz 200):")
    print(f"  bare FastAPI + uvicorn (anchor): {b:.2f} s")
    print(f"  product-studio serve --no-worker: {o:.2f} s  ({o / b:.2f}x the anchor; target < 2 s)")
    print(f"  its first start on an empty data folder (migrations, first admin): {first:.2f} s")
    print(f"  web process memory at start: {rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
