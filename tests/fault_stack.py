"""Real worker and submitter processes for the lease and callback-outbox tests, with what those
tests need put in at true boundaries, never inside the core:

- export targets added to the target registry (presets.TARGETS): tiny ones, so a 1000-variant
  backlog renders in seconds (PS_TEST_TINY_TARGETS=N registers tiny-000 ... tiny-N-1), and slow
  ones, a 12 MP PNG whose render, export and check take seconds (PS_TEST_SLOW_TARGETS=N: slow-000...);
- a line per task started, from Celery's task_prerun signal (PS_TEST_TASK_LOG=file);
- a fault at the broker publish of a completion callback (kombu's Producer.publish, the broker
  client's call), once (PS_TEST_CALLBACK_FAULT=kill|fail, PS_TEST_FAULT_MARK=file): `kill`
  SIGKILLs the whole worker (its process group) at that moment, after the transaction that
  finished the job committed; `fail` makes that publish raise, and every callback publish for
  the next PS_TEST_FAULT_SECONDS (5) seconds, as a broker that went away for that long would
  (longer than Celery's own publish retries).

Run as a script: `python tests/fault_stack.py submit` (JSON on stdin: photos as hex, targets,
callback) prints the job id; `python tests/fault_stack.py worker ARGS...` runs a Celery worker.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def tiny_targets(n: int) -> list[str]:
    return [f"tiny-{i:03d}" for i in range(n)]


def slow_targets(n: int) -> list[str]:
    return [f"slow-{i:03d}" for i in range(n)]


def register_targets(tiny: int = 0, slow: int = 0) -> None:
    """Add the test's targets to the registry of this process (its pool children inherit them)."""
    from product_studio.presets import TARGETS, Target

    for name in tiny_targets(tiny):
        TARGETS[name] = Target(name=name, title=name, width=64, height=64, fill=0.9, formats=("jpeg",))
    for name in slow_targets(slow):
        TARGETS[name] = Target(name=name, title=name, width=4000, height=3000, format="png", formats=("png",))


def tiny_photos(n: int, size: int = 48) -> list[tuple[str, bytes]]:
    """n distinct tiny product photos (scikit-image's coffee cup, its own tint in a corner each)."""
    from skimage import data

    base = np.asarray(Image.fromarray(data.coffee()).resize((size, size * 2 // 3)))
    out = []
    for i in range(n):
        img = base.copy()
        img[:3, :3] = (i * 7 % 256, i * 13 % 256, (255 - i) % 256)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90, comment=f"photo {i}".encode())
        out.append((f"photo{i:03d}.jpg", buf.getvalue()))
    return out


class Processes:
    """The environment of one test's stack, and its worker processes (each its own session, so a
    kill of its process group takes the worker and its pool children and nothing else)."""

    def __init__(self, tmp: Path, **env: str):
        self.tmp = tmp
        self.env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": str(ROOT), **env}
        self.log = tmp / "worker.log"
        self.workers: list[subprocess.Popen] = []

    def submit(self, photos: list[tuple[str, bytes]], targets: list[str], callback: str | None = None) -> str:
        payload = json.dumps({"photos": [(n, d.hex()) for n, d in photos], "targets": targets, "callback": callback})
        out = subprocess.run([sys.executable, str(HERE), "submit"], input=payload, capture_output=True, text=True,
                             env=self.env, timeout=180, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def start_worker(self, concurrency: int = 2, **env: str) -> subprocess.Popen:
        w = subprocess.Popen([sys.executable, str(HERE), "worker", f"--concurrency={concurrency}"],
                             env={**self.env, **env}, cwd=ROOT, stdout=open(self.log, "a"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(w)
        return w

    def stop(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.terminate()
        for w in self.workers:
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait(10)

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


# --- in the child processes ---------------------------------------------------------------------


def _install() -> None:
    from celery.signals import task_prerun

    register_targets(int(os.environ.get("PS_TEST_TINY_TARGETS", "0")), int(os.environ.get("PS_TEST_SLOW_TARGETS", "0")))

    if log := os.environ.get("PS_TEST_TASK_LOG"):
        def count(sender=None, args=None, **_):
            with open(log, "a") as f:  # one short line per write, O_APPEND: lines never interleave
                f.write(f"{sender.name} {args[0] if args else ''}\n")

        task_prerun.connect(count, weak=False)

    if fault := os.environ.get("PS_TEST_CALLBACK_FAULT"):
        mark = os.environ["PS_TEST_FAULT_MARK"]

        from kombu.exceptions import OperationalError
        from kombu.messaging import Producer

        publish = Producer.publish

        outage = float(os.environ.get("PS_TEST_FAULT_SECONDS", "5"))

        def faulty_publish(self, body, *args, **kwargs):
            if (kwargs.get("headers") or {}).get("task") == "callback":
                try:
                    fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # the first, whichever process
                except FileExistsError:
                    if fault == "fail" and time.time() < os.stat(mark).st_mtime + outage:
                        raise OperationalError("injected: the broker is away") from None
                    return publish(self, body, *args, **kwargs)
                os.close(fd)
                if fault == "kill":
                    os.killpg(os.getpgid(0), signal.SIGKILL)  # the whole worker, at exactly this point
                    time.sleep(60)
                raise OperationalError("injected: the broker refused the callback's publish")
            return publish(self, body, *args, **kwargs)

        Producer.publish = faulty_publish


def _submit() -> None:
    from product_studio.jobs import Upload, submit
    from tasks.pipeline import enqueue

    items = json.load(sys.stdin)
    sub = submit([Upload(n, bytes.fromhex(d)) for n, d in items["photos"]], targets=items["targets"],
                 origin="test", callback_url=items["callback"])
    enqueue(sub.steps)
    print(sub.job.id)


def _worker(args: list[str]) -> None:
    from tasks import app

    app.worker_main(["worker", "--queues=cpu-intake,cpu,gpu", "--pool=prefork", "--loglevel=warning",
                     "--without-gossip", "--without-mingle", *args])


if __name__ == "__main__":
    _install()
    if sys.argv[1] == "submit":
        _submit()
    else:
        _worker(sys.argv[2:])
