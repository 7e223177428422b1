"""The web process's peak memory (VmHWM, its resident high-water mark) while it serves big
requests: a 2 GiB approved.zip, one 256 MiB variant download, and a 50-photo upload, each
measured in the same run against the same process's peak after start-up (the anchor). Streamed
answers keep it flat: the zip and the download hold one 1 MiB chunk, whatever their size.

    python bench/web_memory.py [--zip-gib 2] [--photos 50] [--side 2000]

Makes a data folder in a temp directory (SQLite, local blobs), a job whose eight approved
variants share one 256 MiB blob (so the zip is 2 GiB without writing 2 GiB), then starts
`product-studio serve --no-worker` and reads /proc/<pid>/status around each request.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

EXE = Path(sys.executable).with_name("product-studio")
MIB = 1024 * 1024
BLOB_MIB = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_mib(pid: int) -> float:
    """The process's resident high-water mark so far."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmHWM"))) / 1024


def prepare(variants: int) -> tuple[str, str, str]:
    """An API key, and a job with `variants` approved variants of one BLOB_MIB blob."""
    from product_studio import runtime
    from product_studio.auth import create_key
    from product_studio.models import Asset, Job, Variant

    blobs = runtime.store()
    rng = np.random.default_rng(0)
    blobs.put("variants/big.jpg", rng.integers(0, 256, BLOB_MIB * MIB, dtype=np.uint8).tobytes())
    with runtime.database().session() as s:
        key = create_key(s, "bench").key
        job = Job(origin="api", params={})
        asset = Asset(job=job, position=0, name="big", sha256="0" * 64, source_key="sources/x.jpg", width=1,
                      height=1)
        s.add(job)
        for seed in range(variants):
            s.add(Variant(asset=asset, target="ebay", scene="", seed=seed, status="done", key="variants/big.jpg",
                          content_type="image/jpeg", bytes=BLOB_MIB * MIB, approved=True))
        s.flush()
        variant_id = s.query(Variant).filter_by(seed=0).one().id
        s.commit()
        return key, job.id, variant_id


def photos(n: int, side: int) -> list[bytes]:
    """`n` different JPEG photos of side x side px (a gradient with noise: about 1 MB each)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    out = []
    for i in range(n):
        rgb = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1),
                        np.full((side, side), (i * 5) % 256, np.float32)], -1)
        rgb += rng.normal(0, 6, rgb.shape).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip-gib", type=int, default=2)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--side", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRODUCT_STUDIO_DATA_DIR"] = f"{tmp}/data"
        key, job_id, variant_id = prepare(args.zip_gib * 1024 // BLOB_MIB)
        uploads = photos(args.photos, args.side)
        port = free_port()
        proc = subprocess.Popen([str(EXE), "serve", "--no-worker", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the web process did not start") from None
                    time.sleep(0.05)
            httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=auth, timeout=30)  # warm the routes
            rows = [("after start-up (anchor)", peak_mib(proc.pid), "")]
            with httpx.Client(timeout=600) as client:
                t0, size = time.perf_counter(), 0
                with client.stream("GET", f"{base}/api/v1/variants/{variant_id}/download", headers=auth) as r:
                    r.raise_for_status()
                    for chunk in r.iter_raw():
                        size += len(chunk)
                rows.append((f"one variant download, {size / MIB:.0f} MiB", peak_mib(proc.pid),
                             f"{time.perf_counter() - t0:.1f} s"))
                t0, size = time.perf_counter(), 0
                with client.stream("GET", f"{base}/api/v1/jobs/{job_id}/approved.zip", headers=auth) as r:
                    r.raise_for_status()
                    for chunk in r.iter_raw():
                        size += len(chunk)
                rows.append((f"approved.zip, {size / MIB / 1024:.2f} GiB", peak_mib(proc.pid),
                             f"{time.perf_counter() - t0:.1f} s"))
                t0 = time.perf_counter()
                files = [("files", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(uploads)]
                r = client.post(f"{base}/api/v1/jobs", headers=auth, data={"targets": "ebay"}, files=files)
                r.raise_for_status()
                total = sum(map(len, uploads)) / MIB
                rows.append((f"upload of {len(uploads)} photos, {args.side}x{args.side} px, {total:.0f} MiB",
                             peak_mib(proc.pid), f"{time.perf_counter() - t0:.1f} s"))
        finally:
            proc.terminate()
            proc.wait(30)
    anchor = rows[0][1]
    print("web process peak resident memory (VmHWM), one process, in this order:")
    for what, peak, took in rows:
        grew = f"+{peak - anchor:.0f} MiB over the anchor" if peak is not rows[0][1] else ""
        print(f"  {what:<52} {peak:7.0f} MiB  {grew:<28} {took}")


if __name__ == "__main__":
    main()
