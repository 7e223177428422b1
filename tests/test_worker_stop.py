"""A busy worker stops on SIGTERM whichever of its processes get it (issue 17, item 7).

systemd's default stop signals every process of a service; a terminal or `kill -- -PGID` the
whole process group; Docker and `kill PID` the main process only. Each way, ten times, a
2-process worker that is running two tasks must exit within its warm shutdown (the tasks' own
time, plus the pool's few seconds of closing), leave no process behind, and finish the tasks it
was running. Before the fix, a SIGTERM that reached the pool children could leave the main process
waiting forever on a queue lock a dead child held.

The tasks are real webhook intake tasks on the embedded broker, each kept busy by an image host
(a loopback server) that takes BUSY seconds to answer 404: the delivery then fails with the reason.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from product_studio.db import Database
from product_studio.models import Delivery

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("product-studio")
TIMES = 10  # stops each way
LANES = 2  # independent workers (own data folder and embedded broker) stopping side by side, per way
BUSY = 1.0  # seconds each task takes
STOP_WITHIN = BUSY + 15  # the task, then the pool's closing (about 6 s on two busy cores)


class SlowImages(http.server.ThreadingHTTPServer):
    """Answers every image request with 404 after BUSY seconds; counts requests per path."""

    daemon_threads = True

    def __init__(self):
        self.started: Counter[str] = Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.started[self.path] += 1
                time.sleep(BUSY)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


# Records and enqueues one delivery per line of stdin (a product's JSON body), printing its id.
ENQUEUE = """
import hashlib, sys
from product_studio import runtime
from product_studio.webhooks.deliveries import Incoming, record_deliveries
from tasks.intake import enqueue_deliveries
for n, body in enumerate(sys.stdin):
    body = body.strip()
    with runtime.database().session() as s:
        (r,) = record_deliveries(s, [Incoming("shopify", f"d{n}", "products/update", "default",
                                              hashlib.sha256(body.encode()).hexdigest(), "accepted", None, body)])
    enqueue_deliveries([r.id])
    print(r.id, flush=True)
"""


def group_alive(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


def stop_busy_workers(tmp: Path, images: SlowImages, how: str, times: int) -> list[float]:
    """`times` times: queue one task, start a worker, wait until one of its two processes runs it (the
    other waits for work: the moment a SIGTERM to the group could hang it), SIGTERM it `how`
    ("group" or "main"); returns the seconds each stop took. Checks each task was finished."""
    tmp.mkdir()
    host = f"http://127.0.0.1:{images.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}
    env |= {"PRODUCT_STUDIO_DATA_DIR": str(tmp / "data"), "PRODUCT_STUDIO_SHOPIFY_WEBHOOK_SECRET": "s",
            "PRODUCT_STUDIO_FETCH_ALLOW": "127.0.0.1", "PRODUCT_STUDIO_FETCH_TIMEOUT": "30",
            "PRODUCT_STUDIO_REQUEUE_AFTER": "3600", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    log = tmp / "worker.log"
    feeder = subprocess.Popen([sys.executable, "-c", ENQUEUE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=tmp)
    took, ids, paths = [], [], []
    try:
        for i in range(times):
            path = f"/img/{tmp.name}/{i}.jpg"
            feeder.stdin.write(json.dumps({"id": i, "title": "Cup", "updated_at": "2026-01-01T00:00:00Z",
                                           "images": [{"id": i, "src": host + path}]}) + "\n")
            feeder.stdin.flush()
            ids.append(feeder.stdout.readline().strip())
            paths.append(path)
            assert ids[-1], "the delivery could not be recorded"
            worker = subprocess.Popen([str(EXE), "worker", "--queues", "cpu-intake", "--concurrency", "2",
                                       "--loglevel", "warning"], env=env, stdout=open(log, "a"),
                                      stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.time() + 60
            while not images.started[path]:
                if time.time() > deadline or worker.poll() is not None:
                    os.killpg(worker.pid, signal.SIGKILL)
                    pytest.fail(f"{how} {i + 1}: the worker did not start its task\n{log.read_text()[-3000:]}")
                time.sleep(0.02)
            t0 = time.monotonic()
            if how == "group":
                os.killpg(worker.pid, signal.SIGTERM)
            else:
                worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                left = group_alive(worker.pid)
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
                pytest.fail(f"stop {i + 1} ({how}): the worker did not stop within {STOP_WITHIN} s; processes "
                            f"left {left}\n{log.read_text()[-3000:]}")
            took.append(time.monotonic() - t0)
            assert worker.returncode == 0, (how, i + 1, worker.returncode, log.read_text()[-3000:])
            for _ in range(50):  # its children are gone with it
                if not group_alive(worker.pid):
                    break
                time.sleep(0.1)
            assert not group_alive(worker.pid), f"stop {i + 1} ({how}) left processes behind"
    finally:
        feeder.stdin.close()
        feeder.wait(30)
    # Each task that was running when its worker was stopped was finished: its delivery failed with
    # the image's 404, neither cut off midway nor left for the sweeper.
    db = Database(f"sqlite:///{tmp / 'data' / 'product-studio.db'}")
    with db.session() as s:
        rows = {d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_(ids)))}
    db.dispose()
    for path, rid in zip(paths, ids):
        d = rows[rid]
        assert d.status == "failed" and "404" in (d.reason or ""), (how, path, d.status, d.reason)
    return took


def test_a_busy_worker_stops_on_sigterm_to_its_group_or_its_main_process(tmp_path):
    images = SlowImages()
    try:
        with ThreadPoolExecutor(2 * LANES) as pool:
            runs = {(how, lane): pool.submit(stop_busy_workers, tmp_path / f"{how}-{lane}", images, how,
                                             TIMES // LANES)
                    for how in ("group", "main") for lane in range(LANES)}
            took = {key: run.result() for key, run in runs.items()}
    finally:
        images.shutdown()
        images.server_close()
    for how in ("group", "main"):
        assert sum(len(ts) for (h, _), ts in took.items() if h == how) == TIMES
    print("stop times (s):", {f"{h}-{lane}": [round(t, 1) for t in ts] for (h, lane), ts in took.items()})
