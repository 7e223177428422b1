"""The database: engine and sessions, migrations, and the job operations the doors and tasks call.

    db = Database("sqlite:///data/product-studio.db")   # or postgresql+psycopg://...
    db.upgrade()                                          # Alembic migrations to head
    with db.session() as s:                               # commits on success, rolls back on error
        job, created = create_job(s, origin="upload", params=params, assets=specs)

Every operation takes a session and leaves committing to the caller, so a task can record a
variant's result and finish its job in one transaction.

Concurrency, on both databases: duplicates are prevented by unique constraints, never by a read
alone; state changes that must happen once (a variant's result, a job's end) are
conditional UPDATEs whose row count says who made them. SQLite transactions take the write lock
at BEGIN (IMMEDIATE), so writers queue on busy_timeout rather than fail. PostgreSQL is expected
at its default READ COMMITTED isolation.

Processes that fork (Celery prefork) must create their Database in the child, or call
`db.engine.dispose(close=False)` there first: pooled connections must not cross a fork.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    URL,
    CursorResult,
    Engine,
    Update,
    and_,
    create_engine,
    event,
    func,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .errors import BadInput
from .models import (
    JOB_FINAL,
    STAGE_FINAL,
    Asset,
    CallbackAttempt,
    Delivery,
    DeliveryStatus,
    GeneratedSecret,
    Job,
    JobStatus,
    StageStatus,
    Variant,
    utcnow,
)

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration (tests/test_db.py checks it is Alembic's head). Knowing it lets every start
# check the schema with one query and load Alembic (~0.4 s of imports) only when there is work.
HEAD = "0010"
_MIGRATION_LOCK = 0x50535F4D  # PostgreSQL advisory lock key ("PS_M") held while migrating


class Database:
    """One engine and its session factory. Make one per process."""

    def __init__(self, url: str | URL, *, busy_timeout: float = 30.0, echo: bool = False) -> None:
        self.url = make_url(url)
        if self.url.drivername in ("postgresql", "postgres"):
            self.url = self.url.set(drivername="postgresql+psycopg")  # not SQLAlchemy's psycopg2 default
        # Both engines hide statement parameters in their errors: rows hold password hashes,
        # generated signing secrets and webhook bodies, and errors reach logs, `doctor` and pages.
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url, busy_timeout, echo)
        else:  # pre-ping: pooled connections survive a server restart
            self.engine = create_engine(self.url, pool_pre_ping=True, echo=echo, hide_parameters=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed when the block ends, rolled back if it raises.
        Objects stay readable after the block (expire_on_commit=False)."""
        with self._sessions.begin() as session:
            yield session

    def alembic_config(self) -> Config:
        """Alembic configuration built in code: no alembic.ini at run time."""
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("sqlalchemy.url", self.url.render_as_string(hide_password=False).replace("%", "%%"))
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to `revision`. Safe to run at every start, and from two processes
        starting at once: the whole upgrade is one transaction holding a lock (an advisory lock on
        PostgreSQL, the write lock on SQLite), so the second waits, then finds nothing to do."""
        if revision == "head" and self._stored_revision() == HEAD:
            return
        from alembic import command

        cfg = self.alembic_config()
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            if self.is_sqlite:
                # SQLite ALTERs recreate tables (batch mode); with foreign keys on, dropping the old
                # table would cascade-delete child rows. The pragma only works outside a transaction.
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    if self.is_sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise RuntimeError("migration left rows violating foreign keys; rolled back")
            finally:
                if self.is_sqlite:
                    raw.execute("PRAGMA foreign_keys=ON")

    def _stored_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no table yet: an empty database
            return None

    def current_revision(self) -> str | None:
        """The schema's migration revision; None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def dispose(self) -> None:
        self.engine.dispose()



_SERVER_COMING_BACK = ("starting up", "shutting down", "in recovery", "too many clients")


def unreachable(exc: BaseException) -> bool:
    """Whether a database error means the server could not be reached or is restarting (down, wrong
    host or port, a dropped connection): worth waiting for, unlike a refused role or password, a
    missing database, a schema or file problem. PostgreSQL SQLSTATE classes 08 (connection
    exception) and 57P (shutdown, cannot connect now); a connection that failed has no SQLSTATE
    in psycopg, so its message says whether the server answered ("FATAL:") and why."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", "")  # SQLite's errors have none: a file, never a server
    if state is None:
        message = str(exc.orig)
        return "FATAL:" not in message or any(reason in message for reason in _SERVER_COMING_BACK)
    return state.startswith(("08", "57P"))

def _sqlite_engine(url: URL, busy_timeout: float, echo: bool) -> Engine:
    memory = url.database in (None, "", ":memory:")
    if not memory and not url.query.get("uri"):
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        hide_parameters=True,  # see Database: errors never quote row values
        connect_args={"check_same_thread": False},  # sessions move between threads (web, tests)
        # A :memory: database lives in one connection: share it (tests only; no concurrency).
        poolclass=StaticPool if memory else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver's own BEGIN handling breaks SAVEPOINT; see below
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")  # first: the next may wait
        _enable_wal(dbapi_conn, busy_timeout)
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
        dbapi_conn.execute("PRAGMA foreign_keys=ON")  # off by default: no ON DELETE CASCADE without it

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock now. A deferred transaction that reads, then writes after
        # another connection committed, fails at once with "database is locked" (no busy wait).
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _enable_wal(dbapi_conn: Any, timeout: float) -> None:
    """WAL mode: readers never block the writer. Switching a new database to WAL needs an exclusive
    lock and fails at once (no busy wait) while another connection writes, e.g. a second process
    migrating it: retry until the timeout. Once in WAL (it persists in the file) this is a no-op."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class AssetSpec:
    """One ingested source photo, as a door hands it to create_job (fields as in Asset)."""

    name: str  # output file stem
    filename: str | None
    sha256: str
    source_key: str
    width: int
    height: int
    title: str | None = None
    category: str | None = None
    source_url: str | None = None  # set (sha256 and source_key ""): the worker fetches it first


def fingerprint(asset_sha256s: Sequence[str], params: dict[str, Any], *, store: str | None = None) -> str:
    """What makes two jobs the same: the ordered source digests, the parameters and the store
    (one store's job is never handed to another)."""
    doc = {"assets": list(asset_sha256s), "params": params, "store": store}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _live_job(session: Session, fp: str) -> Job | None:
    return session.scalar(select(Job).where(Job.fingerprint == fp, Job.status != JobStatus.FAILED))


def create_job(
    session: Session,
    *,
    origin: str,
    params: dict[str, Any],
    assets: Sequence[AssetSpec],
    store: str | None = None,
    callback_url: str | None = None,
) -> tuple[Job, bool]:
    """Record a job with its assets and one pending variant per (asset, target).

    A job for the same source bytes, parameters and store is found rather than redone: returns
    (that job, False). A failed one is redone: it keeps its rows but hands its fingerprint to the
    new job. Concurrent calls for the same fingerprint end with one job (the unique constraint
    decides; the loser reads the winner's job).
    """
    if not assets:
        raise BadInput("a job needs at least one photo")
    targets = list(dict.fromkeys(params.get("targets") or ()))  # a repeated target is one variant
    if not targets:
        raise BadInput("a job needs at least one target")
    fp = fingerprint([a.sha256 or f"url:{a.source_url}" for a in assets], params, store=store)
    if (job := _live_job(session, fp)) is not None:
        return job, False

    # A failed job keeps its rows for the record but hands its fingerprint to the redo.
    session.execute(
        update(Job).where(Job.fingerprint == fp, Job.status == JobStatus.FAILED).values(fingerprint=None)
    )
    scene, seed = params.get("scene") or "", int(params.get("seed") or 0)  # "": the worker picks the target's default
    job = Job(origin=origin, params=dict(params), store=store, callback_url=callback_url, fingerprint=fp)
    job.assets = [
        Asset(position=i, variants=[Variant(target=t, scene=scene, seed=seed) for t in targets], **asdict(spec))
        for i, spec in enumerate(assets)
    ]
    try:
        with session.begin_nested():  # a SAVEPOINT: losing the race must not undo the caller's work
            session.add(job)
    except IntegrityError:
        if (winner := _live_job(session, fp)) is None:
            raise  # some other constraint
        return winner, False
    return job, True


def job_progress(session: Session, job_id: str) -> dict[str, int]:
    """Variant counts per status (every status present, zeros included) and the total."""
    rows = session.execute(
        select(Variant.status, func.count()).join(Asset).where(Asset.job_id == job_id).group_by(Variant.status)
    )
    counts = {s.value: 0 for s in StageStatus} | {status: n for status, n in rows}
    return counts | {"total": sum(counts.values())}


def maybe_finish_job(session: Session, job_id: str) -> Job | None:
    """Once every variant is done or failed, set the job done / partial / failed and finished_at,
    and, when it has a callback_url, record in the same transaction that its completion callback is
    owed (Job.callback_due_at, the outbox): a crash or a broker error after the commit cannot lose
    it, the sweeper sends what stays owed (due_callbacks).

    Happens exactly once: returns the job only to the caller that made the transition (the one
    that should send the completion callback), None to everyone else.
    """
    # Lock the job row before counting. Two workers finishing the last two variants would
    # otherwise each see the other's variant still running (not yet committed) and neither would
    # finish the job. After the lock, READ COMMITTED's next statement sees the other's commit.
    status = session.scalar(select(Job.status).where(Job.id == job_id).with_for_update())
    if status is None or status in JOB_FINAL:
        return None
    counts = job_progress(session, job_id)
    if counts[StageStatus.PENDING] or counts[StageStatus.RUNNING]:
        return None
    done, failed, total = counts[StageStatus.DONE], counts[StageStatus.FAILED], counts["total"]
    final = JobStatus.DONE if not failed else JobStatus.FAILED if not done else JobStatus.PARTIAL
    changed = _updated(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status.not_in(JOB_FINAL))  # the exactly-once guard
        .values(status=final, finished_at=utcnow(), error=f"{failed} of {total} variants failed" if failed else None),
    )
    if changed != 1:
        return None
    _updated(session, update(Job).where(Job.id == job_id, Job.callback_url.is_not(None))
             .values(callback_due_at=utcnow()))
    return session.get(Job, job_id, populate_existing=True)


# ---------------------------------------------------------------------------------------------
# Assets and variants (what the worker tasks call)


DEFAULT_LEASE = 900.0  # s; the workers lease for settings.requeue_after


def _lease_expired(now: datetime) -> Any:
    # NULL: a RUNNING row from before leases existed (migration 0007): nobody renews it.
    return or_(Variant.lease_until.is_(None), Variant.lease_until < now)


def claim_variant(session: Session, variant_id: str, *, lease: float = DEFAULT_LEASE) -> Variant | None:
    """Take a variant to render: mark it running, count the attempt and lease it to the caller
    for `lease` seconds (renew_lease extends it while the render runs). Also marks a queued job
    running.

    None, and nothing changed, when the variant is done, failed or unknown (a redelivered task
    finds its work done), or RUNNING under a live lease (a duplicated or redelivered message while
    another worker renders it: that worker finishes it, or dies and its lease expires, and then the
    sweeper takes it back, take_back_expired). An expired lease is taken over. The returned
    variant's `attempts` is this claim's token for renew_lease and release_variant.
    Workers' clocks are assumed to agree to well within `lease`.
    """
    now = utcnow()
    claimed = _updated(
        session,
        update(Variant)
        .where(Variant.id == variant_id,
               or_(Variant.status == StageStatus.PENDING,
                   and_(Variant.status == StageStatus.RUNNING, _lease_expired(now))))
        .values(status=StageStatus.RUNNING, attempts=Variant.attempts + 1, error=None,
                lease_until=now + timedelta(seconds=lease)),
    )
    if claimed != 1:
        return None
    variant = session.get_one(Variant, variant_id, populate_existing=True)
    _updated(
        session,
        update(Job)
        .where(Job.id == select(Asset.job_id).where(Asset.id == variant.asset_id).scalar_subquery())
        .where(Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING),
    )
    return variant


def renew_lease(session: Session, variant_id: str, attempt: int, *, lease: float = DEFAULT_LEASE) -> bool:
    """Extend the lease of claim number `attempt` (Variant.attempts as claim_variant returned it)
    to `lease` seconds from now. False when that claim no longer holds the variant (settled, taken
    back after its lease expired, or claimed again since): stop renewing."""
    return _updated(
        session,
        update(Variant)
        .where(Variant.id == variant_id, Variant.status == StageStatus.RUNNING, Variant.attempts == attempt)
        .values(lease_until=utcnow() + timedelta(seconds=lease)),
    ) == 1


def release_variant(session: Session, variant_id: str, attempt: int) -> bool:
    """Give claim number `attempt` back (the render failed and its task will retry): the variant
    is pending again, so the retry, or any other delivery, can claim it at once. False when that
    claim no longer holds it."""
    return _updated(
        session,
        update(Variant)
        .where(Variant.id == variant_id, Variant.status == StageStatus.RUNNING, Variant.attempts == attempt)
        .values(status=StageStatus.PENDING, lease_until=None),
    ) == 1


def take_back_expired(session: Session, *, now: datetime | None = None) -> list[str]:
    """The sweeper's half of the lease: RUNNING variants whose lease expired (their worker died or
    hangs without renewing) go back to pending. Returns their ids, for the caller to enqueue; a
    concurrent sweeper, or a claim in between, takes each at most once (conditional on the row as
    read). Live leases are never touched."""
    now = now or utcnow()
    rows = session.execute(select(Variant.id, Variant.attempts)
                           .where(Variant.status == StageStatus.RUNNING, _lease_expired(now))).all()
    return [vid for vid, attempts in rows if _updated(
        session,
        update(Variant)
        .where(Variant.id == vid, Variant.status == StageStatus.RUNNING, Variant.attempts == attempts,
               _lease_expired(now))
        .values(status=StageStatus.PENDING, lease_until=None),
    ) == 1]


def _updated(session: Session, stmt: Update) -> int:
    """Run an UPDATE; the number of rows it changed says whether a conditional one won.
    Objects already in the session are not touched: callers reload what they return."""
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount


def _settle(session: Session, variant_id: str, **values: Any) -> Variant | None:
    # Conditional, so a duplicate delivery finishing second changes nothing and learns so.
    changed = _updated(
        session,
        update(Variant).where(Variant.id == variant_id, Variant.status.not_in(STAGE_FINAL))
        .values(**values, lease_until=None),
    )
    return session.get(Variant, variant_id, populate_existing=True) if changed == 1 else None


def finish_variant(
    session: Session,
    variant_id: str,
    *,
    key: str,
    content_type: str,
    bytes: int,  # noqa: A002 (the column's name)
    width: int,
    height: int,
    check_ok: bool | None = None,
    check_summary: str | None = None,
    check_warnings: str | None = None,
    ai_generated: bool = False,
    seconds: float | None = None,
) -> Variant | None:
    """Record a variant's output. None if it was already done or failed (nothing changed)."""
    return _settle(
        session, variant_id, status=StageStatus.DONE, key=key, content_type=content_type, bytes=bytes,
        width=width, height=height, check_ok=check_ok, check_summary=check_summary, check_warnings=check_warnings,
        ai_generated=ai_generated, seconds=seconds, error=None,
    )


def fail_variant(session: Session, variant_id: str, error: str, *, seconds: float | None = None) -> Variant | None:
    """Record that a variant failed for good (retries exhausted). None if it was already settled."""
    return _settle(session, variant_id, status=StageStatus.FAILED, error=error, seconds=seconds)


def fail_asset(session: Session, asset_id: str, error: str) -> int:
    """An asset-level stage failed (cut-out, edges): fail every unsettled variant of the asset.
    Returns how many variants this call failed."""
    _updated(session, update(Asset).where(Asset.id == asset_id).values(error=error))
    return _updated(
        session,
        update(Variant)
        .where(Variant.asset_id == asset_id, Variant.status.not_in(STAGE_FINAL))
        .values(status=StageStatus.FAILED, error=error, lease_until=None),
    )


def review_variant(session: Session, variant_id: str, approved: bool | None) -> Variant:
    """Approve (True), reject (False) or un-review (None) a finished variant."""
    variant = session.get(Variant, variant_id)
    if variant is None:
        raise BadInput(f"no variant {variant_id}")
    if variant.status != StageStatus.DONE:
        raise BadInput(f"variant {variant_id} is {variant.status}: only finished variants can be reviewed")
    variant.approved = approved
    return variant


def add_variant(session: Session, variant_id: str, *, seed: int, scene: str | None = None) -> tuple[Variant, bool]:
    """A new variant beside a settled one: same photo and target, another seed and/or scene.
    Reopens the job so its end (and completion callback) comes again. Returns (variant, created):
    asking for an output that exists already gives that one back."""
    old = session.get(Variant, variant_id)
    if old is None:
        raise BadInput(f"no variant {variant_id}")
    if old.status not in STAGE_FINAL:
        raise BadInput(f"variant {variant_id} is still {old.status}: wait until it is finished")
    scene = old.scene if scene is None else scene
    existing = session.scalar(select(Variant).where(Variant.asset_id == old.asset_id, Variant.target == old.target,
                                                    Variant.scene == scene, Variant.seed == seed))
    if existing is not None:
        return existing, False
    variant = Variant(asset_id=old.asset_id, target=old.target, scene=scene, seed=seed)
    try:
        with session.begin_nested():
            session.add(variant)
    except IntegrityError:  # the same request twice at once: one row
        return session.scalar(select(Variant).where(Variant.asset_id == old.asset_id, Variant.target == old.target,
                                                    Variant.scene == scene, Variant.seed == seed)), False
    _updated(session, update(Job).where(Job.id == old.asset.job_id)
             .values(status=JobStatus.RUNNING, finished_at=None, error=None))
    return variant, True


def reopen_asset(session: Session, asset_id: str) -> list[str]:
    """Render an asset again from its cut-out stage (a new mask was chosen): its stages and every
    variant back to pending, outputs and approvals cleared (the admin approves the new render),
    and its job running again so its end (and completion callback) comes again. The caller has
    checked that nothing of the asset is still running. Returns the variants' ids."""
    _updated(session, update(Asset).where(Asset.id == asset_id).values(
        cutout_status=StageStatus.PENDING, cutout_key=None, edges_status=StageStatus.PENDING, control_key=None,
        error=None))
    _updated(session, update(Variant).where(Variant.asset_id == asset_id).values(
        status=StageStatus.PENDING, key=None, content_type=None, bytes=None, width=None, height=None,
        check_ok=None, check_summary=None, check_warnings=None, approved=None, error=None, seconds=None,
        attempts=0, lease_until=None))
    _updated(session, update(Job).where(Job.id == select(Asset.job_id).where(Asset.id == asset_id).scalar_subquery())
             .values(status=JobStatus.RUNNING, finished_at=None, error=None))
    return list(session.scalars(select(Variant.id).where(Variant.asset_id == asset_id).order_by(Variant.created_at)))


def list_jobs(session: Session, *, limit: int = 50, offset: int = 0) -> list[tuple[Job, dict[str, int]]]:
    """Newest jobs first, each with its variant counts per status."""
    jobs = session.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit).offset(offset)).all()
    return [(job, job_progress(session, job.id)) for job in jobs]


_STAGE_KEYS = {"cutout": "cutout_key", "edges": "control_key"}


def update_stage(session: Session, asset_id: str, stage: str, status: str, *, key: str | None = None,
                 seconds: float | None = None, error: str | None = None) -> Asset:
    """Record an asset stage ("cutout" or "edges"): its status, output key and time. A stage
    starting (RUNNING) touches the asset's pending variants, so the sweeper, which reads their
    updated_at, leaves the photo alone for requeue_after seconds while the stage runs."""
    if stage not in _STAGE_KEYS:
        raise ValueError(f"unknown asset stage {stage!r}")
    asset = session.get_one(Asset, asset_id, populate_existing=True, with_for_update=True)  # first: lock order
    if status == StageStatus.RUNNING:
        _updated(session, update(Variant).where(Variant.asset_id == asset_id, Variant.status == StageStatus.PENDING)
                 .values(updated_at=utcnow()))
    setattr(asset, f"{stage}_status", StageStatus(status))
    if key is not None:
        setattr(asset, _STAGE_KEYS[stage], key)
    if seconds is not None:
        asset.timings[stage] = round(seconds, 4)
    if error is not None:
        asset.error = error
    return asset


# ---------------------------------------------------------------------------------------------
# Webhook deliveries and completion callbacks


def record_delivery(
    session: Session,
    *,
    platform: str,
    delivery_id: str,
    topic: str | None = None,
    store: str | None = None,
    payload_sha256: str | None = None,
    status: str = DeliveryStatus.ACCEPTED,
    reason: str | None = None,
    job_id: str | None = None,
) -> tuple[Delivery, bool]:
    """Record an incoming webhook delivery: (delivery, True), or (the earlier record, False) when
    the platform redelivers the same delivery id (race-safe, like create_job)."""
    delivery = Delivery(
        platform=platform, delivery_id=delivery_id, topic=topic, store=store,
        payload_sha256=payload_sha256, status=status, reason=reason, job_id=job_id,
    )
    try:
        with session.begin_nested():
            session.add(delivery)
    except IntegrityError:
        earlier = session.scalar(
            select(Delivery).where(Delivery.platform == platform, Delivery.delivery_id == delivery_id)
        )
        if earlier is None:
            raise
        return earlier, False
    return delivery, True


def log_callback(
    session: Session,
    job_id: str,
    *,
    url: str,
    attempt: int,
    status_code: int | None = None,
    error: str | None = None,
) -> CallbackAttempt:
    """Log one try at a job's completion callback; ok means a 2xx answer."""
    ok = error is None and status_code is not None and 200 <= status_code < 300
    entry = CallbackAttempt(job_id=job_id, url=url, attempt=attempt, status_code=status_code, error=error, ok=ok)
    session.add(entry)
    return entry


# The completion-callback outbox (Job.callback_due_at): maybe_finish_job records the callback as
# owed in the transaction that finishes the job; the callback task holds it while it tries and
# settles it; the sweeper sends what stays due (a publish that failed or a worker killed after the
# commit, a retry message lost).


def hold_callback(session: Session, job_id: str, until: datetime) -> bool:
    """An attempt at a job's owed callback is under way, and the next (if it fails) is due at
    `until`: the sweeper leaves it alone until then plus its grace. False, changing nothing, when
    nothing is owed (settled meanwhile, or never recorded)."""
    return _updated(session, update(Job).where(Job.id == job_id, Job.callback_due_at.is_not(None))
                    .values(callback_due_at=until)) == 1


def settle_callback(session: Session, job_id: str, finished_at: datetime | None) -> bool:
    """The callback for the job's end at `finished_at` is settled (delivered with a 2xx, refused,
    or given up): nothing is owed any more. A job reopened and finished again since owes its new
    callback: then nothing changes and the answer is False."""
    end = Job.finished_at.is_(None) if finished_at is None else Job.finished_at == finished_at
    return _updated(session, update(Job).where(Job.id == job_id, end).values(callback_due_at=None)) == 1


def due_callbacks(session: Session, older_than: float, *, now: datetime | None = None) -> list[str]:
    """Jobs whose callback has been owed, untried, for more than `older_than` seconds (the
    callback task's message was never published, or was lost, or its retry was). Each is marked as
    just sent (due now), so a concurrent sweeper does not send it too; returns their ids."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than)
    rows = session.execute(select(Job.id, Job.callback_due_at).where(Job.callback_due_at < cutoff)).all()
    return [job_id for job_id, due in rows if _updated(
        session, update(Job).where(Job.id == job_id, Job.callback_due_at == due).values(callback_due_at=now)) == 1]


_log = logging.getLogger(__name__)


@contextmanager
def held(db: Database, what: str, renew: Callable[[Session], bool], release: Callable[[Session], None],
         lease: float) -> Iterator[None]:
    """Hold a claim under a lease of `lease` seconds (a variant's render, a publication): a thread
    calls renew(session) every lease/3 s while the block runs, and stops once it returns False (the
    claim was lost: taken back after it expired). If the block raises, release(session) gives the
    claim back (so the task's retry can take it at once) and the error propagates. A renewal or a
    release that fails (the database restarting) is logged: the next beat tries again, or the lease
    expires and the sweeper takes the claim back. `what` names the claim in logs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease / 3):
            try:
                with db.session() as s:
                    if not renew(s):
                        _log.warning("%s: lease lost (taken back after it expired); not renewed", what)
                        return
            except Exception:
                _log.warning("%s: lease renewal failed", what, exc_info=True)

    thread = threading.Thread(target=beat, daemon=True, name=f"lease {what}")
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        thread.join()
        try:
            with db.session() as s:
                release(s)
        except Exception:
            _log.warning("%s: could not give the claim back", what, exc_info=True)
        raise
    finally:
        stop.set()
        thread.join()


def generated_secret(session: Session, name: str, propose: Callable[[], str]) -> str:
    """The installation's generated secret `name` (storage, callback, session): the stored one, or
    else `propose()` stored now. Processes proposing at once agree on one: the name is the primary
    key, so the losers' inserts fail and they read the winner's (the caller commits)."""
    found = session.get(GeneratedSecret, name)
    if found is not None:
        return found.value
    try:
        with session.begin_nested():  # a SAVEPOINT: losing the race must not undo the caller's work
            session.add(GeneratedSecret(name=name, value=propose()))
    except IntegrityError:
        pass
    return session.scalars(select(GeneratedSecret.value).where(GeneratedSecret.name == name)).one()
