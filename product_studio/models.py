"""The database tables: jobs, their assets (source photos) and variants (outputs), webhook
deliveries and the log of completion callbacks.

Portable across SQLite and PostgreSQL: string UUID keys, sqlalchemy.JSON, UTC-aware datetimes,
statuses as short strings (the StrEnums below name the allowed values). The schema itself is
created by Alembic migrations (product_studio/migrations), never by `create_all`.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    PARTIAL = "partial"


JOB_FINAL = (JobStatus.DONE, JobStatus.FAILED, JobStatus.PARTIAL)


class StageStatus(StrEnum):
    """Status of one asset stage (cutout, edges) or of one variant."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


STAGE_FINAL = (StageStatus.DONE, StageStatus.FAILED)


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    STALE = "stale"
    PROCESSED = "processed"
    FAILED = "failed"  # verified, but its images could not be had (refused URL, broken image)
    IGNORED = "ignored"  # verified, but nothing to do (a topic we do not handle)


def new_id() -> str:
    return uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC, always returns aware UTC datetimes (SQLite keeps no zone; PostgreSQL returns
    the session's zone). Naive datetimes are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    # Named constraints, so later migrations can drop or alter them on both databases.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), str: String()}


def _id() -> Mapped[str]:
    return mapped_column(String(32), primary_key=True, default=new_id)


def _status(default: str) -> Mapped[str]:
    return mapped_column(String(16), default=default)


def _children(back_populates: str, order_by: str):
    """A one-to-many relationship whose children go with their parent (ON DELETE CASCADE too)."""
    return relationship(back_populates=back_populates, order_by=order_by, cascade="all, delete-orphan",
                        passive_deletes=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index(None, "status"), Index(None, "created_at"), Index(None, "callback_due_at"))

    id: Mapped[str] = _id()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    status: Mapped[str] = _status(JobStatus.QUEUED)
    origin: Mapped[str] = mapped_column(String(64))  # "cli", "upload", "batch", "webhook:shopify"
    store: Mapped[str | None] = mapped_column(String(255))
    callback_url: Mapped[str | None] = mapped_column(Text)
    # targets, scene, seed, title, category: what the fingerprint covers.
    params: Mapped[dict[str, Any]]
    # NULL once a failed job is superseded by its redo (see db.create_job).
    fingerprint: Mapped[str | None] = mapped_column(String(64), unique=True)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None]
    # The completion-callback outbox: set (to the job's end) in the transaction that finishes a job
    # with a callback_url; each attempt moves it to when its next attempt is due; cleared once the
    # callback is settled (2xx, refused, or given up). The sweeper sends what stays due for longer
    # than requeue_after (db.due_callbacks). None: nothing owed.
    callback_due_at: Mapped[dt.datetime | None]

    assets: Mapped[list[Asset]] = _children("job", "Asset.position")
    callbacks: Mapped[list[CallbackAttempt]] = _children("job", "CallbackAttempt.at")

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status} {self.origin}>"


class Asset(Base):
    """One source photo of a job."""

    __tablename__ = "assets"
    # The unique (job_id, position) index also serves lookups by job_id.
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[str] = _id()
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))  # output file stem
    filename: Mapped[str | None] = mapped_column(Text)  # as uploaded; display only
    sha256: Mapped[str] = mapped_column(String(64))
    source_key: Mapped[str] = mapped_column(Text)  # "" while source_url is not fetched yet
    source_url: Mapped[str | None] = mapped_column(Text)  # set: fetched by the cut-out task (jobs/units.py)
    width: Mapped[int]
    height: Mapped[int]
    title: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    cutout_status: Mapped[str] = _status(StageStatus.PENDING)
    cutout_key: Mapped[str | None] = mapped_column(Text)
    edges_status: Mapped[str] = _status(StageStatus.PENDING)
    control_key: Mapped[str | None] = mapped_column(Text)
    cutout_confidence: Mapped[float | None]  # 0-1, pipeline/confidence.py; None until cut out
    review_reason: Mapped[str | None] = mapped_column(Text)  # set: the cut-out needs review, and why
    mask_version: Mapped[int | None]  # the admin's mask (Mask.version) the cut-out used; None: the models'
    error: Mapped[str | None] = mapped_column(Text)
    # stage -> seconds; MutableDict so in-place edits are saved too.
    timings: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()), default=dict)

    job: Mapped[Job] = relationship(back_populates="assets")
    variants: Mapped[list[Variant]] = _children("asset", "Variant.created_at")

    def __repr__(self) -> str:
        return f"<Asset {self.id} {self.name}>"


class Variant(Base):
    """One output file: an asset rendered for one target, scene and seed."""

    __tablename__ = "variants"
    # A redelivered task can never add a second row for the same output; the index serves
    # lookups by asset_id too.
    __table_args__ = (UniqueConstraint("asset_id", "target", "scene", "seed"), Index(None, "status"))

    id: Mapped[str] = _id()
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(64))
    scene: Mapped[str] = mapped_column(String(64), default="")  # "" = the target's default scene
    seed: Mapped[int] = mapped_column(BigInteger)  # seeds go up to 2**32 - 1: past a 32-bit INTEGER
    status: Mapped[str] = _status(StageStatus.PENDING)
    key: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None]
    height: Mapped[int | None]
    check_ok: Mapped[bool | None]
    check_summary: Mapped[str | None] = mapped_column(Text)
    check_warnings: Mapped[str | None] = mapped_column(Text)  # e.g. an enlargement; not failures
    ai_generated: Mapped[bool] = mapped_column(default=False)
    approved: Mapped[bool | None]  # None: not reviewed yet
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None]
    attempts: Mapped[int] = mapped_column(default=0)  # claims; also the claim's fencing token
    # A RUNNING variant is leased to the worker that claimed it until then (db.claim_variant); the
    # worker renews it while it renders. Only an expired lease is claimed again or taken back.
    lease_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    asset: Mapped[Asset] = relationship(back_populates="variants")

    def __repr__(self) -> str:
        return f"<Variant {self.id} {self.target}/{self.scene or '-'}/{self.seed} {self.status}>"


class Mask(Base):
    """One version of the product mask an admin chose for a photo (touch-up), per store.

    A photo is its source bytes (sha256); `store` is the job's store ("" for jobs with none: pages,
    API, batch). The newest version is the one every door's cut-out uses; restoring an older one
    adds a version with the same blob, so the history only grows. The blob is a greyscale PNG at
    the source's size: 255 keeps, 0 removes.
    """

    __tablename__ = "masks"
    __table_args__ = (UniqueConstraint("store", "sha256", "version"),)

    id: Mapped[str] = _id()
    store: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]  # 1, 2, ... per (store, sha256)
    key: Mapped[str] = mapped_column(Text)  # content-addressed: equal masks share a blob
    origin: Mapped[str] = mapped_column(String(64))  # "strokes", "upload", "restore of 2"
    asset_id: Mapped[str | None] = mapped_column(String(32))  # the asset it was drawn on (for the record)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One incoming webhook request; the unique key makes a platform's retry a visible duplicate.

    Only a verified delivery holds the id it claims (`delivery_id`): a forged or repeated one is
    recorded under a generated key (its claim kept in `claimed_id`), so a forgery can never occupy,
    and so block, the real delivery's id.
    """

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("platform", "delivery_id"), Index(None, "status", "updated_at"))

    id: Mapped[str] = _id()
    platform: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str] = mapped_column(String(255))
    claimed_id: Mapped[str | None] = mapped_column(String(255))  # as the request said, even when rejected
    topic: Mapped[str | None] = mapped_column(String(128))
    store: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[dt.datetime | None]  # an intake task holds it since (a lease; None: free)
    status: Mapped[str] = _status(DeliveryStatus.ACCEPTED)
    reason: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    job_ids: Mapped[list[str] | None] = mapped_column(JSON())  # one job per scene; job_id is the first
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[str | None] = mapped_column(Text)  # a verified body, kept until it is processed

    job: Mapped[Job | None] = relationship()


class CallbackAttempt(Base):
    """One try at the outgoing completion callback of a job: the delivery log."""

    __tablename__ = "callback_attempts"

    id: Mapped[str] = _id()
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int]
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(default=False)

    job: Mapped[Job] = relationship(back_populates="callbacks")


class User(Base):
    """An admin who signs in to the web pages."""

    __tablename__ = "users"

    id: Mapped[str] = _id()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, self-describing
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]
    # Sessions carry the version they began under; sign-out and password changes bump it, which
    # ends every session begun before (auth.py, web/security.py).
    session_version: Mapped[int] = mapped_column(default=0)
    # Failed sign-ins for this username in the window that began at failed_login_at (auth.py):
    # in the database, so every web process counts the same ones.
    failed_logins: Mapped[int] = mapped_column(default=0)
    failed_login_at: Mapped[dt.datetime | None]


class ApiKey(Base):
    """A machine's key for the JSON API. Only its SHA-256 is stored: the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists so a key can be recognised
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class GeneratedSecret(Base):
    """A signing secret (storage, callback, session) generated once for the whole installation
    when its setting is unset: in the database, so every machine that shares the database signs
    and verifies with the same key (runtime.secret)."""

    __tablename__ = "generated_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ProductState(Base):
    """What webhook intake last did for one product of one store: the newest update it took (older
    deliveries are stale) and the images it processed (unchanged ones are skipped)."""

    __tablename__ = "product_states"
    __table_args__ = (UniqueConstraint("platform", "store", "product_id"),)

    id: Mapped[str] = _id()
    platform: Mapped[str] = mapped_column(String(32))
    store: Mapped[str] = mapped_column(String(255))
    product_id: Mapped[str] = mapped_column(String(255))
    source_updated_at: Mapped[dt.datetime | None]  # the platform's updated_at of the newest delivery taken
    delivery_id: Mapped[str | None] = mapped_column(String(32))  # the Delivery row that took it
    # image fingerprint (id, URL, version) -> SHA-256 of the bytes processed
    images: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()), default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PublicationStatus(StrEnum):
    QUEUED = "queued"  # recorded, its task enqueued (or to be, by the sweeper)
    RUNNING = "running"  # a worker holds it under a lease (lease_until)
    PUBLISHED = "published"  # the image is on the product
    FAILED = "failed"  # the platform refused it (its message in `error`), or retries ran out
    REPLACED = "replaced"  # was published; a later render of the same photo and target took its place


PUBLICATION_FINAL = (PublicationStatus.PUBLISHED, PublicationStatus.FAILED, PublicationStatus.REPLACED)


class JobProduct(Base):
    """Which store product a job's photos came from (webhook intake records it): where its variants
    are published. One job may serve several products that share the same photos."""

    __tablename__ = "job_products"
    __table_args__ = (UniqueConstraint("job_id", "platform", "store", "product_id"),
                      Index(None, "platform", "store", "product_id"))

    id: Mapped[str] = _id()
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    store: Mapped[str] = mapped_column(String(255))
    product_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Publication(Base):
    """One variant written back to one store product (product_studio/publish).

    Recorded (QUEUED) before it is attempted and settled by conditional updates, like a variant: a
    retried or duplicated task finds it done. `mark` is put on what is uploaded (alt text and file
    name), so a retry reads the product's images back and settles instead of uploading again."""

    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("variant_id", "platform", "store", "product_id"),
                      Index(None, "job_id"), Index(None, "status", "updated_at"),
                      Index(None, "platform", "store", "product_id"))

    id: Mapped[str] = _id()
    variant_id: Mapped[str] = mapped_column(ForeignKey("variants.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    store: Mapped[str] = mapped_column(String(255))
    product_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = _status(PublicationStatus.QUEUED)
    role: Mapped[str] = mapped_column(String(16), default="append")  # "append", or "main": first, replacing it
    variant_key: Mapped[str | None] = mapped_column(Text)  # the render published (a re-render has another key)
    mark: Mapped[str] = mapped_column(String(64))  # "ps-<variant id>.<render>", on the uploaded image
    remote_id: Mapped[str | None] = mapped_column(String(255))  # the platform's id of the image
    remote_url: Mapped[str | None] = mapped_column(Text)  # the image on the platform
    admin_url: Mapped[str | None] = mapped_column(Text)  # the product in the store's admin
    # The platform's id of an image to take off the product once this one is on: the earlier render
    # (republished on request) or, for role "main", the main image it replaces.
    replaces: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)  # claims; also the claim's fencing token
    lease_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    published_at: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"<Publication {self.id} {self.platform}/{self.store}/{self.product_id} {self.status}>"
