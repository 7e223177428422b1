"""Test helpers for webhook intake: the real server and a real worker as processes, a loopback
server standing in for the image CDN, the BigCommerce API and a callback receiver, and requests
signed the way each platform signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from product_studio import callbacks
from product_studio.config import Settings
from product_studio.db import Database
from product_studio.models import Delivery
from product_studio.webhooks.deliveries import FINAL

EXE = Path(sys.executable).with_name("product-studio")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(i: int, size: int = 96) -> bytes:
    """A small real product photo (scikit-image's coffee cup), distinct for each i: its own tint in
    a corner, and i in a JPEG comment (at 64 px, JPEG can round two tints to the same bytes)."""
    from skimage import data

    img = np.asarray(Image.fromarray(data.coffee()).resize((size, size * 2 // 3))).copy()
    img[:8, :8] = (i * 7 % 256, i * 13 % 256, (255 - i) % 256)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, comment=f"photo {i}".encode())
    return buf.getvalue()


def wait_until_serving(base: str, log: Path, timeout: float = 60) -> None:
    """Wait for a started `serve` at `base` to answer /healthz; fail with its log's tail if not."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail(f"the server at {base} did not start: {log.read_text(errors='replace')[-3000:]}")


class Loopback(http.server.ThreadingHTTPServer):
    """Images at /img/<name>, BigCommerce products at /stores/<hash>/v3/catalog/products/<id>
    (X-Auth-Token checked), completion callbacks POSTed to /callback."""

    daemon_threads = True

    def __init__(self, api_token: str = "bc-token"):
        self.images: dict[str, bytes] = {}
        self.products: dict[str, dict] = {}
        self.fetches: Counter[str] = Counter()
        self.api_calls: list[tuple[str, str | None]] = []
        self.callbacks: list[tuple[dict, bytes]] = []
        self.api_token = api_token
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path.startswith("/img/"):
                    name = path[5:]
                    outer.fetches[name] += 1
                    if name in outer.images:
                        return self.reply(200, outer.images[name], "image/jpeg")
                    return self.reply(404, b"", "text/plain")
                if path.startswith("/stores/") and "/v3/catalog/products/" in path:
                    token = self.headers.get("X-Auth-Token")
                    outer.api_calls.append((self.path, token))
                    if token != outer.api_token:
                        return self.reply(401, b'{"title": "unauthorized"}', "application/json")
                    product = outer.products.get(path.rsplit("/", 1)[1])
                    if product is None:
                        return self.reply(404, b'{"title": "not found"}', "application/json")
                    return self.reply(200, json.dumps({"data": product, "meta": {}}).encode(), "application/json")
                self.reply(404, b"", "text/plain")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.callbacks.append((dict(self.headers), body))
                self.reply(200, b"", "text/plain")

            def reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request, client_address) -> None:
        pass

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def image(self, name: str, data: bytes) -> str:
        """Serve `data` at /img/<name>; returns its URL."""
        self.images[name] = data
        return self.url(f"/img/{name}")

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


SECRETS = {"shopify": "shp-new-secret,shp-old-secret", "woocommerce": "woo-secret", "bigcommerce": "bc-secret",
           "generic": "generic-secret"}


class Stack:
    """`product-studio serve --no-worker` and `product-studio worker` on a fresh data folder."""

    def __init__(self, tmp: Path, loopback: Loopback, *, queues: str = "cpu-intake,cpu", stores_file: Path | None = None,
                 extra_env: dict[str, str] | None = None):
        self.tmp, self.port = tmp, free_port()
        self.env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1",
                    "PRODUCT_STUDIO_FETCH_ALLOW": "127.0.0.1", "PRODUCT_STUDIO_FETCH_TIMEOUT": "10",
                    "PRODUCT_STUDIO_WEBHOOK_TARGETS": "ebay", "PRODUCT_STUDIO_CALLBACK_SECRET": "cb-secret",
                    "PRODUCT_STUDIO_BIGCOMMERCE_API_URL": loopback.url(""),
                    "PRODUCT_STUDIO_BIGCOMMERCE_API_TOKEN": loopback.api_token,
                    # The tests send their forgeries from one address, more than a minute's worth.
                    "PRODUCT_STUDIO_WEBHOOK_REJECTED_RATE_LIMIT": "1000000/minute",
                    **{f"PRODUCT_STUDIO_{p.upper()}_WEBHOOK_SECRET": s for p, s in SECRETS.items()},
                    **(extra_env or {})}
        for name in ("PRODUCT_STUDIO_DATABASE_URL", "PRODUCT_STUDIO_BROKER_URL", "PRODUCT_STUDIO_STORAGE_URL"):
            self.env.pop(name, None)
        if stores_file is not None:
            self.env["PRODUCT_STUDIO_STORES_FILE"] = str(stores_file)
        self.settings = Settings(data_dir=tmp / "data")
        self.queues = queues
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.db: Database | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Stack:
        log = open(self.tmp / "server.log", "w")
        self.server = subprocess.Popen([str(EXE), "serve", "--no-worker", "--port", str(self.port)], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_serving(self.base, self.tmp / "server.log")
        self.worker = subprocess.Popen([str(EXE), "worker", "--queues", self.queues, "--concurrency", "2",
                                        "--loglevel", "warning"], env=self.env,
                                       stdout=open(self.tmp / "worker.log", "w"), stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.db = Database(self.settings.database)
        return self

    def stop(self) -> None:
        for proc in (self.server, self.worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()  # the main process only: a worker stops its own pool
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    pytest.fail(f"{proc.args[1]} did not stop on SIGTERM")
        if self.db is not None:
            self.db.dispose()

    def logs(self) -> str:
        return "".join((self.tmp / n).read_text() for n in ("server.log", "worker.log") if (self.tmp / n).exists())

    # --- sending -------------------------------------------------------------------------------

    def post(self, platform: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        return httpx.post(f"{self.base}/webhooks/{platform}", content=body, timeout=30,
                          headers={"Content-Type": "application/json", **headers})

    # --- waiting and reading -------------------------------------------------------------------

    def delivery(self, row_id: str) -> Delivery:
        with self.db.session() as s:
            return s.get_one(Delivery, row_id, populate_existing=True)

    def settled(self, row_ids: list[str], timeout: float = 180) -> dict[str, Delivery]:
        """Wait until every delivery has its final status; returns them by id."""
        deadline = time.time() + timeout
        while True:
            with self.db.session() as s:
                rows = {d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_(row_ids))
                                                   .execution_options(populate_existing=True))}
            if len(rows) == len(set(row_ids)) and all(d.status in FINAL for d in rows.values()):
                return rows
            if time.time() > deadline:
                waiting = [(d.id, d.status) for d in rows.values() if d.status not in FINAL][:10]
                pytest.fail(f"deliveries not settled: {waiting}\n{self.logs()[-4000:]}")
            time.sleep(0.2)


# --- signing, as the platforms do it --------------------------------------------------------------

def b64_hmac(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_headers(body: bytes, webhook_id: str, *, secret: str = "shp-new-secret",
                    topic: str = "products/update", shop: str = "acme.myshopify.com") -> dict[str, str]:
    return {"X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": b64_hmac(secret, body),
            "X-Shopify-Shop-Domain": shop, "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Event-Id": f"evt-{webhook_id}", "X-Shopify-Triggered-At": "2026-11-20T10:00:00Z"}


def shopify_product(pid: int, updated_at: str, images: list[tuple[int, str]], title: str = "Coffee cup") -> bytes:
    return json.dumps({"id": pid, "title": title, "product_type": "Kitchen", "updated_at": updated_at,
                       "images": [{"id": iid, "src": src, "position": n + 1, "updated_at": "2026-11-01T00:00:00Z"}
                                  for n, (iid, src) in enumerate(images)]}).encode()


def woo_headers(body: bytes, delivery_id: str, *, secret: str = "woo-secret",
                topic: str = "product.created") -> dict[str, str]:
    resource, event = topic.split(".")
    return {"X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
            "X-WC-Webhook-Signature": b64_hmac(secret, body), "X-WC-Webhook-ID": "12",
            "X-WC-Webhook-Delivery-ID": delivery_id, "X-WC-Webhook-Source": "https://shop.example.com/"}


def woo_product(pid: int, modified_gmt: str, images: list[tuple[int, str]], category: str = "Mugs") -> bytes:
    return json.dumps({"id": pid, "name": "Coffee cup", "date_modified_gmt": modified_gmt,
                       "categories": [{"id": 9, "name": category, "slug": category.lower()}],
                       "images": [{"id": iid, "src": src, "date_modified_gmt": modified_gmt}
                                  for iid, src in images]}).encode()


def bigcommerce_payload(product_id: int, event_hash: str, store_hash: str = "abc123",
                        scope: str = "store/product/updated") -> bytes:
    return json.dumps({"store_id": "1001", "producer": f"stores/{store_hash}", "scope": scope,
                       "data": {"type": "product", "id": product_id}, "hash": event_hash,
                       "created_at": 1763632800}).encode()


def generic_headers(body: bytes, *, secret: str = "generic-secret", at: int | None = None) -> dict[str, str]:
    return {callbacks.HEADER: callbacks.sign(secret, body, at)}
