"""Real worker processes: the embedded broker and Redis, a killed worker, a restarted broker,
PostgreSQL as the database. Nothing lost, nothing stored twice, no temp files left."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from product_studio.callbacks import HEADER, verify
from product_studio.config import Settings
from product_studio.db import Database, job_progress
from product_studio.models import Asset, CallbackAttempt, Job, Variant

pytestmark = pytest.mark.service
CI = os.environ.get("CI") == "true"
EXE = Path(sys.executable).with_name("product-studio")


def unavailable(reason: str):
    if CI:
        pytest.fail(f"{reason} (a missing service is a failure in CI)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on a free port, so restarting it touches nobody else."""

    def __init__(self, tmp: Path):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            unavailable("redis-server is not installed")
        self.port, self.dir, self.proc = free_port(), tmp, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)], stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        unavailable("redis-server did not start")

    def run_to_completion(self, photos: int, targets: tuple[str, ...]) -> None:
        """Submit a batch, start a worker, and check every variant finished and was stored once."""
        job_id = self.submit(photos, targets=targets)
        self.start_worker()
        status, counts = self.finished(job_id)
        expected = photos * len(targets)
        assert status == "done" and counts["done"] == expected
        self.assert_stored_exactly_once(job_id, expected)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def photos(n: int) -> list[tuple[str, bytes]]:
    """n distinct small product photos (a real photo, each with its own tint)."""
    from skimage import data

    base = np.asarray(Image.fromarray(data.coffee()).resize((240, 160)))
    out = []
    for i in range(n):
        img = base.copy()
        img[:4, :4] = (i * 7 % 256, i * 13 % 256, 255 - i)  # different bytes, same kind of product
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append((f"photo{i:02d}.jpg", buf.getvalue()))
    return out


class Stack:
    """Settings in the environment, a job submitted through the core, workers as subprocesses."""

    def __init__(self, tmp: Path, broker: str, database: str | None = None):
        self.env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp / "data"),
                    "PRODUCT_STUDIO_BROKER_URL": broker, "PRODUCT_STUDIO_REQUEUE_AFTER": "6",
                    "PRODUCT_STUDIO_SWEEP_INTERVAL": "1", "PRODUCT_STUDIO_BROKER_VISIBILITY_TIMEOUT": "20",
                    "PRODUCT_STUDIO_CALLBACK_SECRET": "s3cret", "PYTHONUNBUFFERED": "1",
                    "PRODUCT_STUDIO_FETCH_ALLOW": "127.0.0.1"}  # the callback receiver is on loopback
        if database:
            self.env["PRODUCT_STUDIO_DATABASE_URL"] = database
        self.settings = Settings(**{k.removeprefix("PRODUCT_STUDIO_").lower(): v for k, v in self.env.items()
                                    if k.startswith("PRODUCT_STUDIO_")})
        self.db = Database(self.settings.database)
        self.workers: list[subprocess.Popen] = []
        self.log = tmp / "worker.log"

    def submit(self, n: int, targets=("ebay",), callback_url: str | None = None) -> str:
        code = ("import json, sys\nfrom product_studio.jobs import submit, Upload\nfrom tasks.pipeline import enqueue\n"
                "items = json.load(sys.stdin)\n"
                "sub = submit([Upload(n, bytes.fromhex(d)) for n, d in items['photos']], targets=items['targets'],"
                " origin='test', callback_url=items['callback'])\nenqueue(sub.steps)\nprint(sub.job.id)\n")
        payload = json.dumps({"photos": [(n, d.hex()) for n, d in photos(n)], "targets": list(targets),
                              "callback": callback_url})
        out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, text=True,
                             env=self.env, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def start_worker(self) -> subprocess.Popen:
        w = subprocess.Popen([str(EXE), "worker", "--concurrency", "2", "--loglevel", "warning"], env=self.env,
                             stdout=open(self.log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(w)
        return w

    def kill(self, w: subprocess.Popen) -> None:
        os.killpg(w.pid, signal.SIGKILL)  # the whole worker: parent and children, no goodbye
        w.wait(10)

    def progress(self, job_id: str) -> tuple[str, dict]:
        with self.db.session() as s:
            return s.get_one(Job, job_id, populate_existing=True).status, job_progress(s, job_id)

    def wait(self, job_id: str, until, timeout: float = 240) -> tuple[str, dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, counts = self.progress(job_id)
            if until(status, counts):
                return status, counts
            time.sleep(0.5)
        pytest.fail(f"timed out: {self.progress(job_id)}\n{self.log.read_text()[-3000:]}")

    def finished(self, job_id: str) -> tuple[str, dict]:
        return self.wait(job_id, lambda status, _: status in ("done", "partial", "failed"))

    def run_to_completion(self, photos: int, targets: tuple[str, ...]) -> None:
        """Submit a batch, start a worker, and check every variant finished and was stored once."""
        job_id = self.submit(photos, targets=targets)
        self.start_worker()
        status, counts = self.finished(job_id)
        expected = photos * len(targets)
        assert status == "done" and counts["done"] == expected
        self.assert_stored_exactly_once(job_id, expected)

    def stop(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.terminate()  # the main process: it finishes running tasks and stops its pool
                try:
                    w.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(w.pid, signal.SIGKILL)
                    pytest.fail("the worker did not stop on SIGTERM")
        self.db.dispose()

    def assert_stored_exactly_once(self, job_id: str, expected: int) -> None:
        with self.db.session() as s:
            variants = s.scalars(select(Variant).join(Asset).where(Asset.job_id == job_id)).all()
        assert len(variants) == expected and all(v.status == "done" for v in variants)
        keys = [v.key for v in variants]
        assert len(set(keys)) == expected
        blobs = Path(self.settings.storage)
        stored = [p for p in (blobs / "variants").rglob("*") if p.is_file()]
        assert len(stored) == expected, "a variant was stored twice (or not at all)"
        assert not [p for p in blobs.rglob("*") if p.name.startswith(".")], "temp files left behind"


class CallbackReceiver(http.server.ThreadingHTTPServer):
    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), body))
                self.send_response(500 if len(outer.received) == 1 else 200)  # the first try fails
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/done"


def test_embedded_broker_runs_a_job_and_sends_a_signed_callback(tmp_path):
    stack = Stack(tmp_path, "filesystem://")
    receiver = CallbackReceiver()
    try:
        job_id = stack.submit(3, targets=("amazon-main", "lifestyle"), callback_url=receiver.url)
        stack.start_worker()
        status, counts = stack.finished(job_id)
        assert status == "done" and counts["done"] == 6
        stack.assert_stored_exactly_once(job_id, 6)
        deadline = time.time() + 30
        while len(receiver.received) < 2 and time.time() < deadline:  # first answered 500: retried
            time.sleep(0.2)
        headers, body = receiver.received[-1]
        assert verify(["s3cret"], body, headers.get(HEADER))
        doc = json.loads(body)
        assert doc["job"]["id"] == job_id and doc["job"]["status"] == "done"
        assert all(v["url"] for a in doc["job"]["assets"] for v in a["variants"])
        with stack.db.session() as s:
            attempts = s.scalars(select(CallbackAttempt).where(CallbackAttempt.job_id == job_id)).all()
        assert [(a.attempt, a.ok) for a in attempts] == [(1, False), (2, True)]
    finally:
        stack.stop()
        receiver.shutdown()


def test_killed_worker_mid_batch_loses_nothing_and_stores_nothing_twice(tmp_path, redis):
    stack = Stack(tmp_path, redis.url)
    try:
        job_id = stack.submit(20)
        first = stack.start_worker()
        stack.wait(job_id, lambda _, c: c["done"] >= 3)
        stack.kill(first)
        assert stack.progress(job_id)[1]["done"] < 20, "the batch finished before the kill: nothing was tested"
        stack.start_worker()
        status, counts = stack.finished(job_id)
        assert status == "done" and counts["done"] == 20
        stack.assert_stored_exactly_once(job_id, 20)
    finally:
        stack.stop()


def test_redis_restart_mid_batch_the_batch_finishes(tmp_path, redis):
    stack = Stack(tmp_path, redis.url)
    try:
        job_id = stack.submit(20)
        stack.start_worker()
        stack.wait(job_id, lambda _, c: c["done"] >= 3)
        redis.stop()  # no persistence: every queued message is gone
        time.sleep(1)
        redis.start()
        status, counts = stack.finished(job_id)
        assert status == "done" and counts["done"] == 20
        stack.assert_stored_exactly_once(job_id, 20)
    finally:
        stack.stop()


@pytest.fixture
def postgres_url():
    import psycopg

    admin = os.environ.get("PRODUCT_STUDIO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"ps_worker_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL unreachable: {exc}")
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgresql_as_the_database(tmp_path, redis, postgres_url):
    stack = Stack(tmp_path, redis.url, database=postgres_url)
    try:
        stack.run_to_completion(4, ("ebay", "lifestyle"))
    finally:
        stack.stop()


def test_rabbitmq_broker(tmp_path):
    url = os.environ.get("PRODUCT_STUDIO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        socket.create_connection(("127.0.0.1", 5672), 2).close()
    except OSError:
        unavailable("RabbitMQ is not reachable on 127.0.0.1:5672")
    stack = Stack(tmp_path, url)
    try:
        stack.run_to_completion(3, ("ebay", "lifestyle"))
    finally:
        stack.stop()
