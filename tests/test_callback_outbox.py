"""Completion callbacks cannot be lost (issue 17, item 4): the transaction that finishes a job
records the callback it owes (an outbox on the job), the callback task settles it, and the sweeper
sends what stays owed. A worker killed, or a publish failing, right after that commit still ends
with the callback delivered, exactly once."""

from __future__ import annotations

import http.server
import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from product_studio import config, runtime
from product_studio.callbacks import HEADER, verify
from product_studio.db import Database, due_callbacks, maybe_finish_job
from product_studio.jobs import Upload, submit, units
from product_studio.jobs.completion import deliver_callback
from product_studio.models import CallbackAttempt, Job, utcnow
from product_studio.presets import TARGETS, Target
from tests.fault_stack import Processes, tiny_photos, tiny_targets


class Receiver(http.server.ThreadingHTTPServer):
    """A local callback receiver: records every POST and answers `status`."""

    daemon_threads = True

    def __init__(self, status: int = 200):
        self.posts: list[tuple[dict, bytes]] = []
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/done"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def studio(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_CUTOUT_MODEL", "u2netp")
    monkeypatch.setenv("PRODUCT_STUDIO_FETCH_ALLOW", "127.0.0.1")  # the receiver is on loopback
    monkeypatch.setenv("PRODUCT_STUDIO_CALLBACK_SECRET", "s3cret")
    for name in tiny_targets(1):
        monkeypatch.setitem(TARGETS, name, Target(name=name, title=name, width=64, height=64, formats=("jpeg",)))
    config.get_settings.cache_clear()
    runtime.reset()
    yield config.get_settings()
    runtime.reset()
    config.get_settings.cache_clear()


def _finished_job(callback_url: str) -> str:
    """A one-photo job run here to its end, its callback not sent (as if the publish was lost)."""
    job = submit([Upload(n, d) for n, d in tiny_photos(1)], targets=tiny_targets(1), origin="test",
                 callback_url=callback_url).job
    with runtime.database().session() as s:
        asset_id = s.get_one(Job, job.id).assets[0].id
    units.run_cutout(asset_id)
    steps = [st for step in units.run_edges(asset_id) for st in units.run_variant(step.id)]
    assert steps == [("callback", job.id, False)]  # the step the worker would publish, dropped here
    return job.id


def _due(job_id: str):
    with runtime.database().session() as s:
        return s.get_one(Job, job_id, populate_existing=True).callback_due_at


def test_the_finish_records_the_callback_and_delivering_settles_it_once(studio, receiver):
    job_id = _finished_job(receiver.url)
    assert _due(job_id) is not None  # recorded in the transaction that finished the job
    with runtime.database().session() as s:
        assert due_callbacks(s, 3600.0) == []  # within its grace: left to the callback task
        later = utcnow() + timedelta(seconds=5)
        assert due_callbacks(s, 1.0, now=later) == [job_id]  # past its grace: the sweeper's to send
        assert due_callbacks(s, 1.0, now=later) == []  # taken once (due again 1 s from then)
    assert deliver_callback(job_id, attempt=1, retry_in=2.0) is True
    assert _due(job_id) is None and len(receiver.posts) == 1
    assert deliver_callback(job_id, attempt=1, retry_in=2.0) is True  # a duplicated message
    assert len(receiver.posts) == 1  # not sent twice
    headers, body = receiver.posts[0]
    assert verify(["s3cret"], body, headers.get(HEADER)) and json.loads(body)["job"]["status"] == "done"


def test_a_failing_receiver_holds_the_callback_until_its_retry_then_gives_up(studio, receiver):
    receiver.status = 503
    job_id = _finished_job(receiver.url)
    assert deliver_callback(job_id, attempt=1, retry_in=60.0) is False  # to be retried in 60 s
    assert _due(job_id) > utcnow() + timedelta(seconds=50)  # held: the sweeper leaves the live chain alone
    with runtime.database().session() as s:
        assert due_callbacks(s, 1.0) == []
    assert deliver_callback(job_id, attempt=2, retry_in=None) is True  # the last attempt: given up
    assert _due(job_id) is None and len(receiver.posts) == 2
    with runtime.database().session() as s:
        attempts = s.scalars(select(CallbackAttempt.status_code).where(CallbackAttempt.job_id == job_id)).all()
    assert attempts == [503, 503]


def test_a_job_reopened_and_finished_again_owes_its_new_callback(studio, receiver):
    job_id = _finished_job(receiver.url)
    with runtime.database().session() as s:  # reopened (a regenerate) and finished again meanwhile
        s.execute(update(Job).where(Job.id == job_id).values(status="running", finished_at=None))
        assert maybe_finish_job(s, job_id) is not None
    assert _due(job_id) is not None
    assert deliver_callback(job_id, attempt=1, retry_in=2.0) is True and _due(job_id) is None
    assert len(receiver.posts) == 1


@pytest.mark.parametrize("fault", ["kill", "fail"])
def test_a_fault_right_after_the_job_is_finished_still_delivers_its_callback_exactly_once(tmp_path, receiver, fault):
    """`kill`: the whole worker is SIGKILLed at the callback's publish, after the job's end was
    committed; a second worker comes up. `fail`: that publish raises (the broker went away) and the
    worker lives on. Either way the sweeper finds the callback owed after requeue_after (2 s) and
    sends it; nothing sends it a second time."""
    mark = tmp_path / "fault-fired"
    stack = Processes(tmp_path, PRODUCT_STUDIO_REQUEUE_AFTER="2", PRODUCT_STUDIO_SWEEP_INTERVAL="0.5",
                      PRODUCT_STUDIO_CUTOUT_MODEL="u2netp", PRODUCT_STUDIO_FETCH_ALLOW="127.0.0.1",
                      PRODUCT_STUDIO_CALLBACK_SECRET="s3cret", PS_TEST_TINY_TARGETS="2",
                      PS_TEST_CALLBACK_FAULT=fault, PS_TEST_FAULT_MARK=str(mark))
    db = Database(config.Settings(data_dir=tmp_path / "data").database)
    try:
        job_id = stack.submit(tiny_photos(2), tiny_targets(2), callback=receiver.url)
        first = stack.start_worker()
        deadline = time.monotonic() + 120
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mark.exists(), f"the job never reached its callback's publish\n{stack.log_tail()}"
        faulted = time.monotonic()
        with db.session() as s:
            job = s.get_one(Job, job_id)
            assert job.status == "done" and not receiver.posts  # finished, its callback not sent
        if fault == "kill":
            first.wait(30)  # the whole worker died at that point
            stack.start_worker()
        while not receiver.posts and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receiver.posts, f"the callback never arrived\n{stack.log_tail()}"
        arrived = time.monotonic() - faulted
        time.sleep(6)  # three times requeue_after more: nothing else may come
        assert len(receiver.posts) == 1, f"{len(receiver.posts)} callbacks for one job"
        headers, body = receiver.posts[0]
        assert verify(["s3cret"], body, headers.get(HEADER))
        doc = json.loads(body)["job"]
        assert doc["id"] == job_id and doc["status"] == "done"
        with db.session() as s:
            job = s.get_one(Job, job_id)
            assert job.callback_due_at is None and [a.ok for a in job.callbacks] == [True]
        print(f"{fault}: the callback arrived {arrived:.1f} s after the fault, once")
    finally:
        stack.stop()
        db.dispose()
