"""Webhook receivers under load: real HTTP on loopback, 100 deliveries in flight.

    python bench/webhook_load.py [--requests 6000] [--concurrency 100] [--platform all]
                                 [--server serve|uvicorn] [--workers 1]

Starts the real server on the embedded defaults in a temp data folder (SQLite, filesystem broker,
no worker): `product-studio serve --no-worker`, or with --server uvicorn the same app under plain
uvicorn without its access log. A secret is set for each platform. Then, on --concurrency
keep-alive connections that each send their next request as soon as the last is answered:
  1. GET /healthz: the anchor, the same server doing nothing;
  2. signed product deliveries, each with its own id (Shopify, WooCommerce, BigCommerce and
     generic in turn, ~2 kB bodies), every one recorded and enqueued before it is answered.
Prints p50/p95/p99/max latency, requests/s and CPU per request (server process tree, and this
client) for both, their ratios, and checks the database: every delivery recorded `accepted`, and
how many transactions (= broker messages) held them.

Target: p99 under 50 ms. Little's law: 100 in flight at a mean of L seconds is 100/L requests/s,
so the target needs about 2000/s from one Python process. The load generator is a bare HTTP/1.1
client on asyncio streams in this process (little CPU per request; both share the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EXE = Path(sys.executable).with_name("product-studio")
SECRET = "bench-secret"
PLATFORMS = ("shopify", "woocommerce", "bigcommerce", "generic")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def product(i: int) -> dict:
    """A realistic product body: a few images, variants and text (~2 kB)."""
    return {"id": 7000000 + i, "title": f"Ceramic mug {i}", "product_type": "Kitchen", "vendor": "Acme",
            "body_html": "<p>Stoneware, 350 ml, dishwasher safe.</p>" * 3, "handle": f"mug-{i}",
            "updated_at": "2026-11-20T10:00:00+00:00",
            "variants": [{"id": 9000 + k, "sku": f"MUG-{i}-{k}", "price": "18.00", "title": c}
                         for k, c in enumerate(("white", "blue", "green"))],
            "images": [{"id": 5000 + k, "src": f"https://cdn.example.com/mug-{i}-{k}.jpg?v=1",
                        "updated_at": "2026-11-20T10:00:00+00:00"} for k in range(3)]}


def delivery(platform: str, i: int) -> tuple[str, dict[str, str], bytes]:
    """(path, headers, body) of one signed delivery with a unique id."""
    if platform == "bigcommerce":
        body = json.dumps({"store_id": "1", "producer": "stores/abc123", "scope": "store/product/updated",
                           "data": {"type": "product", "id": i}, "hash": hashlib.sha1(b"%d" % i).hexdigest(),
                           "created_at": 1763632800}).encode()
        return "/webhooks/bigcommerce", {"X-Product-Studio-Token": SECRET}, body
    if platform == "generic":
        body = json.dumps({"id": f"bench-{i}", "images": [f"https://cdn.example.com/g-{i}.jpg"],
                           "title": f"Mug {i}", "category": "Kitchen", "targets": ["ebay"]}).encode()
        t = int(time.time())
        mac = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return "/webhooks/generic", {"X-Product-Studio-Signature": f"t={t},v1={mac}"}, body
    body = json.dumps(product(i)).encode()
    sig = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    if platform == "shopify":
        return "/webhooks/shopify", {"X-Shopify-Topic": "products/update", "X-Shopify-Hmac-Sha256": sig,
                                     "X-Shopify-Shop-Domain": "acme.myshopify.com",
                                     "X-Shopify-Webhook-Id": f"wh-{i}"}, body
    return "/webhooks/woocommerce", {"X-WC-Webhook-Topic": "product.updated", "X-WC-Webhook-Signature": sig,
                                     "X-WC-Webhook-Source": "https://shop.example.com/",
                                     "X-WC-Webhook-Delivery-ID": str(i)}, body


def raw_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _drive(port: int, requests: list[bytes], concurrency: int) -> tuple[np.ndarray, float, dict[int, int]]:
    """Send every request, `concurrency` at a time on keep-alive connections (a closed loop).
    Returns the latencies (s), the wall time and the count of each status code."""
    latencies = np.zeros(len(requests))
    statuses: dict[int, int] = {}
    jobs = iter(enumerate(requests))
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i, req in jobs:
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies[i] = time.perf_counter() - t0
            code = int(head[9:12])
            statuses[code] = statuses.get(code, 0) + 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in conns))
    return latencies, time.perf_counter() - t0, statuses


def drive(port: int, requests: list[bytes], concurrency: int) -> tuple[np.ndarray, float, dict[int, int]]:
    return asyncio.run(_drive(port, requests, concurrency))


def start_server(kind: str, data: Path, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(data), "PRODUCT_STUDIO_SHOPIFY_WEBHOOK_SECRET": SECRET,
           "PRODUCT_STUDIO_WOOCOMMERCE_WEBHOOK_SECRET": SECRET, "PRODUCT_STUDIO_BIGCOMMERCE_WEBHOOK_SECRET": SECRET,
           "PRODUCT_STUDIO_GENERIC_WEBHOOK_SECRET": SECRET, "PRODUCT_STUDIO_WEBHOOK_TARGETS": "ebay"}
    for name in ("PRODUCT_STUDIO_DATABASE_URL", "PRODUCT_STUDIO_BROKER_URL", "PRODUCT_STUDIO_STORAGE_URL"):
        env.pop(name, None)
    if kind == "serve":
        argv = [str(EXE), "serve", "--no-worker", "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "uvicorn", "--factory", "product_studio.web.app:create_app", "--port", str(port),
                "--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(data / "server.log", "w"),
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(raw_request("GET", "/healthz"))
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server did not start:\n{(data / 'server.log').read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process, its threads and its child processes (uvicorn
    --workers forks them)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def stop_server(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def summary(label: str, lat: np.ndarray, wall: float, cpu: float, client_cpu: float) -> tuple[float, float]:
    ms = lat * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    rate = len(lat) / wall
    print(f"  {label:<22} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  max {ms.max():6.1f} ms  "
          f"{rate:5.0f} req/s  CPU per request: server {cpu / len(lat) * 1000:.2f} ms, "
          f"client {client_cpu / len(lat) * 1000:.2f} ms")
    return p99, rate


def recorded(data: Path) -> tuple[dict[str, int], int]:
    """Deliveries per status in the database, and intake messages in the broker's folder."""
    from sqlalchemy import func, select

    from product_studio.db import Database
    from product_studio.models import Delivery

    db = Database(f"sqlite:///{data / 'product-studio.db'}")
    try:
        with db.session() as s:
            counts = dict(s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    finally:
        db.dispose()
    messages = sum(1 for p in (data / "broker" / "queue").glob("*") if p.is_file())
    return counts, messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000, help="deliveries measured (and as many GET /healthz)")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--platform", choices=("all",) + PLATFORMS, default="all")
    ap.add_argument("--server", choices=("serve", "uvicorn"), default="serve")
    ap.add_argument("--workers", type=int, default=1, help="--server uvicorn: server processes")
    args = ap.parse_args()
    platforms = PLATFORMS if args.platform == "all" else (args.platform,)
    warm = max(args.concurrency * 3, 300)

    posts = []
    for i in range(warm + args.requests):
        path, headers, body = delivery(platforms[i % len(platforms)], i)
        posts.append(raw_request("POST", path, headers, body))
    gets = [raw_request("GET", "/healthz")] * (warm + args.requests)

    with tempfile.TemporaryDirectory(prefix="ps-webhook-load-") as tmp:
        data = Path(tmp)
        port = free_port()
        server = start_server(args.server, data, port, args.workers)
        try:
            drive(port, gets[:warm], args.concurrency)
            drive(port, posts[:warm], args.concurrency)
            c0, k0 = cpu_seconds(server.pid), time.process_time()
            h_lat, h_wall, h_codes = drive(port, gets[warm:], args.concurrency)
            c1, k1 = cpu_seconds(server.pid), time.process_time()
            w_lat, w_wall, w_codes = drive(port, posts[warm:], args.concurrency)
            c2, k2 = cpu_seconds(server.pid), time.process_time()
        finally:
            stop_server(server)
        counts, messages = recorded(data)

    label = ("product-studio serve --no-worker" if args.server == "serve"
             else f"uvicorn, no access log, {args.workers} process(es)")
    print(f"{args.requests} requests each, {args.concurrency} in flight, {label}, {os.cpu_count()} cores, "
          f"platforms: {', '.join(platforms)}")
    h_p99, h_rate = summary("GET /healthz (anchor)", h_lat, h_wall, c1 - c0, k1 - k0)
    w_p99, w_rate = summary("POST /webhooks/*", w_lat, w_wall, c2 - c1, k2 - k1)
    print(f"  ratio webhook/healthz: p99 {w_p99 / h_p99:.2f}x, throughput {w_rate / h_rate:.2f}x")
    print(f"  target p99 < 50 ms: {'met' if w_p99 < 50 else 'NOT met'} (Little's law: {args.concurrency} in flight "
          f"at {w_rate:.0f}/s is a mean of {1000 * args.concurrency / w_rate:.0f} ms)")
    total = warm + args.requests
    ok = w_codes.get(200, 0) + h_codes.get(200, 0) == 2 * args.requests and counts.get("accepted", 0) == total
    print(f"  recorded: {counts} of {total} sent; {messages} intake messages "
          f"(mean {total / max(messages, 1):.1f} deliveries per transaction); {'all accepted' if ok else 'LOSS!'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
