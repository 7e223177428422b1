"""The persistence layer on real databases: SQLite (a temporary file) and PostgreSQL (a fresh
schema per test; marked `service`: skipped when unreachable, a failure when CI=true)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, create_engine, delete, func, inspect, make_url, select
from sqlalchemy.exc import IntegrityError, OperationalError

from product_studio.db import (
    HEAD,
    AssetSpec,
    Database,
    claim_variant,
    create_job,
    fail_asset,
    fail_variant,
    fingerprint,
    finish_variant,
    job_progress,
    log_callback,
    maybe_finish_job,
    record_delivery,
    update_stage,
)
from product_studio.errors import BadInput
from product_studio.models import Asset, Base, CallbackAttempt, Delivery, Job, Variant

PG_URL = os.environ.get("PRODUCT_STUDIO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLES = {"jobs", "assets", "variants", "deliveries", "callback_attempts", "alembic_version"}
PARAMS = {"targets": ["amazon-main", "shopify-square"], "scene": None, "seed": 7, "title": "Mug", "category": "kitchen"}


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        engine.connect().close()
    except OperationalError as exc:
        reason = f"PostgreSQL unreachable at {PG_URL}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str | URL]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/data/studio.db"  # the folder does not exist yet
        return
    admin = request.getfixturevalue("postgres_admin")
    schema = f"test_db_{uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def empty_db(database_url: str | URL) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def db(empty_db: Database) -> Database:
    empty_db.upgrade()
    return empty_db


def specs(*tags: str) -> list[AssetSpec]:
    return [
        AssetSpec(name=tag, filename=f"{tag}.jpg", sha256=hashlib.sha256(tag.encode()).hexdigest(),
                  source_key=f"src/{tag}", width=640, height=480)
        for tag in tags
    ]


def new_job(db: Database, tags: tuple[str, ...] = ("mug",), **params: Any) -> Job:
    with db.session() as s:
        job, created = create_job(s, origin="cli", params=PARAMS | params, assets=specs(*tags))
    assert created
    return job


def variant_ids(db: Database, job_id: str) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(Variant.id).join(Asset).where(Asset.job_id == job_id).order_by(Variant.target)))


def in_threads(n: int, fn: Callable[[int, threading.Barrier], Any]) -> list[Any]:
    barrier = threading.Barrier(n, timeout=30)
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn, i, barrier) for i in range(n)]
        return [f.result(timeout=60) for f in futures]


def finish(s: Any, variant_id: str) -> Variant | None:
    return finish_variant(
        s, variant_id, key="out/x.jpg", content_type="image/jpeg", bytes=1234, width=2000, height=2000
    )


# --- schema ---------------------------------------------------------------------------------


def test_upgrade_creates_schema_from_nothing_and_is_idempotent(empty_db: Database) -> None:
    assert empty_db.current_revision() is None
    empty_db.upgrade()
    empty_db.upgrade()
    assert empty_db.current_revision() == empty_db.head_revision() == HEAD
    with empty_db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
        # The migration matches the models exactly: nothing left to autogenerate.
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_two_processes_upgrading_at_once_both_succeed(database_url: str | URL) -> None:
    databases = [Database(database_url), Database(database_url)]  # separate engines, as in two processes

    def upgrade(i: int, barrier: threading.Barrier) -> str | None:
        barrier.wait()
        databases[i].upgrade()
        return databases[i].current_revision()

    assert in_threads(2, upgrade) == [HEAD, HEAD]
    for database in databases:
        database.dispose()


# --- create_job -----------------------------------------------------------------------------


def test_fingerprint_covers_order_params_and_store() -> None:
    a, b = "a" * 64, "b" * 64
    assert fingerprint([a, b], {"x": 1, "y": 2}) == fingerprint([a, b], {"y": 2, "x": 1})
    assert fingerprint([a, b], PARAMS) != fingerprint([b, a], PARAMS)
    assert fingerprint([a], PARAMS) != fingerprint([a], PARAMS | {"seed": 8})
    assert fingerprint([a], PARAMS) != fingerprint([a], PARAMS, store="shop.example")


def test_create_job_records_assets_and_one_variant_per_target(db: Database) -> None:
    job = new_job(db, ("mug", "cup"), targets=["amazon-main", "shopify-square", "amazon-main"])
    with db.session() as s:
        job = s.get_one(Job, job.id)
        assert (job.status, job.origin) == ("queued", "cli")
        assert [a.name for a in job.assets] == ["mug", "cup"]
        assert [a.position for a in job.assets] == [0, 1]
        for asset in job.assets:
            assert asset.cutout_status == asset.edges_status == "pending"
            assert sorted((v.target, v.scene, v.seed, v.status) for v in asset.variants) == [
                ("amazon-main", "", 7, "pending"),
                ("shopify-square", "", 7, "pending"),
            ]
    assert job_progress_of(db, job.id) == {"pending": 4, "running": 0, "done": 0, "failed": 0, "total": 4}


def job_progress_of(db: Database, job_id: str) -> dict[str, int]:
    with db.session() as s:
        return job_progress(s, job_id)


def test_create_job_finds_the_same_job_and_redoes_a_failed_one(db: Database) -> None:
    first = new_job(db)
    with db.session() as s:
        again, created = create_job(s, origin="upload", params=dict(PARAMS), assets=specs("mug"))
        assert (again.id, created) == (first.id, False)
        other, created = create_job(s, origin="cli", params=PARAMS | {"seed": 8}, assets=specs("mug"))
        assert created and other.id != first.id
        elsewhere, created = create_job(
            s, origin="webhook:shopify", params=PARAMS, assets=specs("mug"), store="a.example"
        )
        assert created and elsewhere.id not in (first.id, other.id)

    with db.session() as s:
        for vid in variant_ids(db, first.id):
            fail_variant(s, vid, "boom")
        assert maybe_finish_job(s, first.id).status == "failed"
    with db.session() as s:
        redo, created = create_job(s, origin="cli", params=PARAMS, assets=specs("mug"))
        assert created and redo.id != first.id
    with db.session() as s:
        old = s.get_one(Job, first.id)
        assert (old.status, old.fingerprint) == ("failed", None)  # kept for the record
        assert s.get_one(Job, redo.id).fingerprint == fingerprint([specs("mug")[0].sha256], PARAMS)


@pytest.mark.parametrize("params", [PARAMS | {"targets": []}, {"seed": 1}])
def test_create_job_needs_targets_and_photos(db: Database, params: dict[str, Any]) -> None:
    with db.session() as s, pytest.raises(BadInput):
        create_job(s, origin="cli", params=params, assets=specs("mug"))
    with db.session() as s, pytest.raises(BadInput):
        create_job(s, origin="cli", params=PARAMS, assets=[])


def test_concurrent_create_job_yields_one_job(db: Database) -> None:
    def create(i: int, barrier: threading.Barrier) -> tuple[str, bool]:
        barrier.wait()
        with db.session() as s:
            job, created = create_job(s, origin="upload", params=PARAMS, assets=specs("mug", "cup"))
        return job.id, created

    results = in_threads(4, create)
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1
        assert s.scalar(select(func.count()).select_from(Variant)) == 4


def test_create_job_racing_an_open_transaction_reads_the_winner(db: Database) -> None:
    # The second call runs while the first's transaction is still open: on PostgreSQL its insert
    # waits on the unique index, then fails and it reads the winner; SQLite queues it at BEGIN.
    inside = threading.Event()

    def first() -> tuple[str, bool]:
        with db.session() as s:
            job, created = create_job(s, origin="upload", params=PARAMS, assets=specs("mug"))
            inside.set()
            time.sleep(0.5)
        return job.id, created

    def second() -> tuple[str, bool]:
        inside.wait(10)
        with db.session() as s:
            job, created = create_job(s, origin="batch", params=PARAMS, assets=specs("mug"))
        return job.id, created

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(first), pool.submit(second)
        (id_a, created_a), (id_b, created_b) = a.result(30), b.result(30)
    assert (created_a, created_b) == (True, False) and id_a == id_b


# --- variants and job completion -------------------------------------------------------------


def test_claim_variant_is_the_idempotency_check(db: Database) -> None:
    job = new_job(db)
    first, second = variant_ids(db, job.id)
    with db.session() as s:
        variant = claim_variant(s, first)
        assert (variant.status, variant.attempts) == ("running", 1)
        assert s.get_one(Job, job.id).status == "running"
    with db.session() as s:
        assert claim_variant(s, first) is None  # redelivered while its lease is live: refused (test_leases.py)
        assert finish(s, first).status == "done"
        assert claim_variant(s, first) is None  # done: nothing to redo
        assert finish(s, first) is None  # a duplicate finishing second changes nothing
        assert fail_variant(s, first, "late") is None
        assert fail_variant(s, second, "boom").error == "boom"
        assert claim_variant(s, second) is None
        assert claim_variant(s, uuid4().hex) is None
    with db.session() as s:
        done = s.get_one(Variant, first)
        assert (done.key, done.bytes, done.width, done.error, done.attempts) == ("out/x.jpg", 1234, 2000, None, 1)


@pytest.mark.parametrize(
    ("outcomes", "status", "error"),
    [("dd", "done", None), ("df", "partial", "1 of 2 variants failed"), ("ff", "failed", "2 of 2 variants failed")],
)
def test_job_final_status(db: Database, outcomes: str, status: str, error: str | None) -> None:
    job = new_job(db)
    ids = variant_ids(db, job.id)
    with db.session() as s:
        assert maybe_finish_job(s, job.id) is None  # nothing settled yet
        for vid, outcome in zip(ids, outcomes, strict=True):
            finish(s, vid) if outcome == "d" else fail_variant(s, vid, "boom")
            if vid != ids[-1]:
                assert maybe_finish_job(s, job.id) is None
        finished = maybe_finish_job(s, job.id)
        assert (finished.status, finished.error) == (status, error)
        assert finished.finished_at is not None
        assert maybe_finish_job(s, job.id) is None  # only once


def test_maybe_finish_job_transitions_once_under_concurrency(db: Database) -> None:
    job = new_job(db)
    with db.session() as s:
        for vid in variant_ids(db, job.id):
            finish(s, vid)

    def try_finish(i: int, barrier: threading.Barrier) -> str | None:
        barrier.wait()
        with db.session() as s:
            finished = maybe_finish_job(s, job.id)
            return finished.status if finished else None

    results = in_threads(6, try_finish)
    assert [r for r in results if r] == ["done"] and results.count(None) == 5


def test_last_variants_finished_at_once_finish_the_job_exactly_once(db: Database) -> None:
    # Each worker records its own variant and asks to finish the job in ONE transaction. On
    # PostgreSQL they all wait at the barrier with their variant written but not committed: each
    # sees the others' variants still running, unless maybe_finish_job serialises on the job row.
    # (SQLite serialises whole transactions, so the barrier must stay outside them.)
    n = 4
    job = new_job(db, targets=[f"t{i}" for i in range(n)])
    ids = variant_ids(db, job.id)
    with db.session() as s:
        for vid in ids:
            claim_variant(s, vid)
    inside = not db.is_sqlite

    def work(i: int, barrier: threading.Barrier) -> str | None:
        if not inside:
            barrier.wait()
        with db.session() as s:
            finish(s, ids[i]) if i else fail_variant(s, ids[i], "boom")
            if inside:
                barrier.wait()
            finished = maybe_finish_job(s, job.id)
            return finished.status if finished else None

    results = in_threads(n, work)
    assert [r for r in results if r] == ["partial"] and results.count(None) == n - 1
    with db.session() as s:
        assert s.get_one(Job, job.id).status == "partial"


def test_asset_stages_and_asset_failure(db: Database) -> None:
    job = new_job(db)
    with db.session() as s:
        asset_id = s.scalar(select(Asset.id).where(Asset.job_id == job.id))
        update_stage(s, asset_id, "cutout", "done", key="cut/1.png", seconds=0.123456)
    with db.session() as s:
        asset = update_stage(s, asset_id, "edges", "failed", seconds=0.5, error="no weights")
        assert (asset.cutout_status, asset.cutout_key, asset.edges_status) == ("done", "cut/1.png", "failed")
        assert asset.timings == {"cutout": 0.1235, "edges": 0.5}
        with pytest.raises(ValueError):
            update_stage(s, asset_id, "scene", "done")
    first = variant_ids(db, job.id)[0]
    with db.session() as s:
        finish(s, first)
        assert fail_asset(s, asset_id, "no weights") == 1  # the done variant stays done
        assert maybe_finish_job(s, job.id).status == "partial"


# --- constraints, cascades, types --------------------------------------------------------------


def test_unique_constraints_hold(db: Database) -> None:
    job = new_job(db)
    with db.session() as s:
        asset_id = s.scalar(select(Asset.id).where(Asset.job_id == job.id))
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Variant(asset_id=asset_id, target="amazon-main", scene="", seed=7))
    with db.session() as s:
        s.add(Variant(asset_id=asset_id, target="amazon-main", scene="", seed=2**32 - 1))  # a new seed is fine

    with db.session() as s:
        delivery, created = record_delivery(s, platform="shopify", delivery_id="d-1", topic="products/create")
        assert created
        again, created = record_delivery(s, platform="shopify", delivery_id="d-1", topic="products/create")
        assert (again.id, created) == (delivery.id, False)
        assert record_delivery(s, platform="woocommerce", delivery_id="d-1")[1]
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Delivery(platform="shopify", delivery_id="d-1"))
    with pytest.raises(IntegrityError), db.session() as s:
        s.add(Job(origin="cli", params={}, fingerprint=job.fingerprint))


def test_deleting_a_job_cascades_in_the_database(db: Database) -> None:
    job, kept = new_job(db), new_job(db, ("cup",))
    with db.session() as s:
        record_delivery(s, platform="shopify", delivery_id="d-2", job_id=job.id)
        log_callback(s, job.id, url="https://shop.example/cb", attempt=1, status_code=500)
    with db.session() as s:
        s.execute(delete(Job).where(Job.id == job.id))  # plain SQL: the foreign keys do the work
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Asset)) == 1
        assert s.scalar(select(func.count()).select_from(Variant)) == 2
        assert s.scalar(select(func.count()).select_from(CallbackAttempt)) == 0
        assert s.scalar(select(Delivery.job_id)) is None  # the delivery record stays
        s.delete(s.get_one(Job, kept.id))  # and through the ORM
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Variant)) == 0


def test_callback_log_and_utc_datetimes(db: Database) -> None:
    job = new_job(db)
    with db.session() as s:
        log_callback(s, job.id, url="https://shop.example/cb", attempt=1, error="timeout")
        log_callback(s, job.id, url="https://shop.example/cb", attempt=2, status_code=204)
    with db.session() as s:
        job = s.get_one(Job, job.id)
        assert [(c.attempt, c.ok) for c in job.callbacks] == [(1, False), (2, True)]
        for value in (job.created_at, job.updated_at, job.callbacks[0].at):
            assert value.tzinfo == dt.UTC
        assert abs(dt.datetime.now(dt.UTC) - job.created_at) < dt.timedelta(minutes=1)
        job.finished_at = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.session() as s:
        assert s.get_one(Job, job.id).finished_at == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
        s.get_one(Job, job.id).finished_at = dt.datetime(2026, 1, 1)  # naive: refused
        with pytest.raises(Exception, match="naive datetime"):
            s.flush()


def test_session_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        create_job(s, origin="cli", params=PARAMS, assets=specs("mug"))
        raise RuntimeError("door crashed")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
