"""A backlog is not lost work (issue 17, item 2): a claim is a lease the rendering worker renews;
only an expired lease is claimed again or taken back by the sweeper, and pending work is taken
back only when its queue in the broker is empty. Each variant is rendered exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from product_studio import config, runtime
from product_studio.db import (
    Database,
    claim_variant,
    job_progress,
    release_variant,
    renew_lease,
    take_back_expired,
)
from product_studio.jobs import Upload, submit, units
from product_studio.jobs.recovery import lost_work
from product_studio.models import Asset, Job, Variant, utcnow
from product_studio.presets import TARGETS, Target
from tests.fault_stack import Processes, slow_targets, tiny_photos, tiny_targets


@pytest.fixture
def studio(tmp_path, monkeypatch):
    """The core in this process on a fresh data folder (SQLite, local blobs)."""
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_CUTOUT_MODEL", "u2netp")
    config.get_settings.cache_clear()
    runtime.reset()
    yield config.get_settings()
    runtime.reset()
    config.get_settings.cache_clear()


def _variants(job_id: str) -> list[Variant]:
    with runtime.database().session() as s:
        return list(s.scalars(select(Variant).join(Asset).where(Asset.job_id == job_id).order_by(Variant.target)))


def _job_with_cutout(targets: list[str]) -> tuple[str, str]:
    """A one-photo job, cut out and with its edges: (job id, asset id)."""
    job = submit([Upload(n, d) for n, d in tiny_photos(1)], targets=targets, origin="test").job
    with runtime.database().session() as s:
        asset_id = s.get_one(Job, job.id).assets[0].id
    units.run_cutout(asset_id)
    units.run_edges(asset_id)
    return job.id, asset_id


def test_a_live_lease_refuses_a_second_claim_and_only_an_expired_one_is_taken_back(studio, monkeypatch):
    for name in tiny_targets(2):
        monkeypatch.setitem(TARGETS, name, Target(name=name, title=name, width=64, height=64, formats=("jpeg",)))
    job_id, _ = _job_with_cutout(tiny_targets(2))
    first, second = (v.id for v in _variants(job_id))
    db = runtime.database()
    with db.session() as s:
        held = claim_variant(s, first, lease=30)
        assert (held.status, held.attempts) == ("running", 1)
    with db.session() as s:
        assert claim_variant(s, first, lease=30) is None  # a duplicated message: refused
        assert take_back_expired(s) == []  # live: the sweeper leaves it
        assert renew_lease(s, first, 1, lease=30) and not renew_lease(s, first, 7, lease=30)  # only its holder
    assert not [st for st in lost_work(0.0, lambda step: False) if st.id == first]
    with db.session() as s:  # the holder died: nobody renews, the lease runs out
        s.execute(update(Variant).where(Variant.id == first).values(lease_until=utcnow() - timedelta(seconds=1)))
    steps = lost_work(3600.0, lambda step: True)  # the queue is busy: only the expired lease comes back
    assert [(st.stage, st.id) for st in steps] == [("variant", first)]
    assert lost_work(3600.0, lambda step: True) == []  # taken once
    with db.session() as s:
        assert s.get_one(Variant, first).status == "pending"
        again = claim_variant(s, first, lease=30)
        assert again.attempts == 2
        assert not renew_lease(s, first, 1, lease=30)  # the dead holder's token no longer renews
        assert release_variant(s, first, 2) and s.get_one(Variant, first, populate_existing=True).status == "pending"


def test_pending_work_is_taken_back_only_when_its_queue_is_empty(studio, monkeypatch):
    for name in tiny_targets(2):
        monkeypatch.setitem(TARGETS, name, Target(name=name, title=name, width=64, height=64, formats=("jpeg",)))
    job = submit([Upload(n, d) for n, d in tiny_photos(1)], targets=tiny_targets(2), origin="test").job
    asked = []

    def busy(step):
        asked.append(step)
        return True

    assert lost_work(0.0, busy) == [] and [s.stage for s in asked] == ["cutout"]  # still in line: left alone
    with runtime.database().session() as s:
        asset_id = s.get_one(Job, job.id).assets[0].id
    assert lost_work(3600.0, lambda step: False) == []  # touched recently: left alone
    assert lost_work(0.0, lambda step: False) == [("cutout", asset_id, False)]  # its queue is empty: lost
    assert lost_work(0.5, lambda step: False) == []  # taken once, then given requeue_after again
    units.run_cutout(asset_id)
    units.run_edges(asset_id)
    steps = lost_work(0.0, lambda step: False)  # each pending variant is its own step now
    assert sorted(s.stage for s in steps) == ["variant", "variant"]


def test_a_render_longer_than_its_lease_is_renewed_and_never_taken_twice(studio, monkeypatch):
    """A real render that takes several lease periods (a 24 MP PNG, encoded and checked): a
    concurrent duplicate claim and the sweeper both find the lease alive the whole time."""
    big = Target(name="big-png", title="big", width=6000, height=4000, format="png", formats=("png",))
    monkeypatch.setitem(TARGETS, "big-png", big)
    job_id, _ = _job_with_cutout(["big-png"])
    (variant,) = _variants(job_id)
    lease = 0.6
    settings = studio.model_copy(update={"requeue_after": lease})
    done = threading.Event()
    errors = []

    def render():
        try:
            units.run_variant(variant.id, settings)
        except Exception as exc:  # reported below
            errors.append(exc)
        done.set()

    started = time.monotonic()
    threading.Thread(target=render).start()
    db, checks = runtime.database(), 0
    while not done.wait(0.1):
        with db.session() as s:
            assert claim_variant(s, variant.id, lease=lease) is None
        assert lost_work(lease, lambda step: False) == []
        checks += 1
    took = time.monotonic() - started
    assert not errors
    assert took > 3 * lease, f"the render took {took:.2f} s: too short to need renewals"
    (after,) = _variants(job_id)
    assert (after.status, after.attempts, after.lease_until) == ("done", 1, None)
    print(f"render {took:.2f} s = {took / lease:.1f} leases; {checks} duplicate claims and sweeps refused")


def test_a_1000_variant_backlog_renders_each_variant_exactly_once(tmp_path):
    """10 tiny photos x 100 targets (99 tiny ones, and one 12 MP PNG whose render takes longer than
    a lease) queued at once on the embedded broker, then one worker (2 processes) with
    requeue_after 1 s and a sweep every 0.25 s: the backlog waits far longer than requeue_after and
    the slow renders outlast their lease several times over (renewed), yet nothing is taken back
    or rendered twice, and no flood of duplicate messages comes."""
    photos, targets = tiny_photos(10), tiny_targets(99) + slow_targets(1)
    tasks = tmp_path / "tasks.log"
    stack = Processes(tmp_path, PRODUCT_STUDIO_REQUEUE_AFTER="1", PRODUCT_STUDIO_SWEEP_INTERVAL="0.25",
                      PRODUCT_STUDIO_CUTOUT_MODEL="u2netp", PS_TEST_TINY_TARGETS="99", PS_TEST_SLOW_TARGETS="1",
                      PS_TEST_TASK_LOG=str(tasks))
    db = Database(config.Settings(data_dir=tmp_path / "data").database)
    try:
        job_id = stack.submit(photos, targets)
        started = time.monotonic()
        stack.start_worker(concurrency=2)
        deadline = started + 150
        while time.monotonic() < deadline:
            with db.session() as s:
                status, counts = s.get_one(Job, job_id, populate_existing=True).status, job_progress(s, job_id)
            if status in ("done", "partial", "failed"):
                break
            time.sleep(0.5)
        took = time.monotonic() - started
        with db.session() as s:
            rows = s.execute(select(Variant.key, Variant.attempts, Variant.target, Variant.seconds)
                             .join(Asset).where(Asset.job_id == job_id)).all()
        claims = Counter(row.attempts for row in rows)  # a claim starts a render
        runs = Counter(line.split()[0] for line in tasks.read_text().splitlines())
        slow = sorted(round(row.seconds, 1) for row in rows if row.target.startswith("slow") and row.seconds)
        figures = (f"after {took:.1f} s: {counts}; claims per variant {dict(claims)}; task runs {dict(runs)}; "
                   f"the slow renders took {slow} s (lease 1 s)")
        print(figures)
        assert claims == {1: 1000}, figures  # each variant rendered exactly once...
        assert status == "done" and counts["done"] == 1000, f"{figures}\n{stack.log_tail()}"
        stored = [p for p in Path(tmp_path / "data" / "blobs" / "variants").rglob("*") if p.is_file()]
        assert len(stored) == len({row.key for row in rows}) == 1000  # ...and stored once
        # No flood of duplicate messages either (before leases: 724 cut-out runs for 10 photos): the
        # sweeper left the queued backlog alone. A few may come for messages a worker had reserved
        # but not started when a sweep found the queue empty; on a loaded machine up to ~6% (a
        # duplicate is refused by the claim: it renders nothing).
        assert runs["variant"] <= 1100 and runs["cutout"] <= 15, figures
    finally:
        stack.stop()
        db.dispose()
