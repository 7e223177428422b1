"""Retention (issue 17, item 9): `product-studio gc` removes unreferenced blobs and previews, old
jobs, rejected deliveries and product states, and never a blob something refers to; rejected
webhook requests are rate-limited per client address."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from product_studio import runtime
from product_studio.jobs import retention
from product_studio.jobs.retention import collect, preview_key
from product_studio.models import (
    Asset,
    Delivery,
    DeliveryStatus,
    Job,
    Mask,
    ProductState,
    Publication,
    PublicationStatus,
    Variant,
)
from product_studio.pipeline.plan import quality_key
from tests.test_db import postgres_admin  # noqa: F401 (a fixture)
from tests.test_storage import s3_endpoint  # noqa: F401 (a fixture)
from tests.web_helpers import fresh_app, run_job

LATER = 2 * 3600  # seconds: past the default grace period, so every blob written now is old enough


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def post_job(client, auth, data: bytes, targets=("ebay", "lifestyle"), seed: int = 3) -> str:
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": list(targets), "seed": str(seed)},
                    files=[("files", ("coffee.jpg", data, "image/jpeg"))])
    assert r.status_code == 202, r.text
    return r.json()["id"]


def download(client: TestClient, url: str) -> int:
    """The status of a variant's download link: the web door's /files route, or S3's own URL."""
    if not url.startswith(("http://", "https://")) or url.startswith("https://testserver/"):
        return client.get(url).status_code
    return httpx.get(url).status_code


def references() -> dict[str, str]:
    """Every blob key the rows name, and what names it: the test's own list, read from the rows."""
    refs: dict[str, str] = {}
    with runtime.database().session() as s:
        for a in s.scalars(select(Asset)):
            refs[a.source_key] = "source"
            if a.cutout_key:
                refs[a.cutout_key] = "cutout"
                refs[quality_key(a.cutout_key)] = "quality"
            if a.control_key:
                refs[a.control_key] = "control"
        for v in s.scalars(select(Variant).where(Variant.key.is_not(None))):
            refs[v.key] = "variant"
        for m in s.scalars(select(Mask)):
            if m.key:
                refs[m.key] = "mask"
        for p in s.scalars(select(Publication)):
            if p.variant_key:
                refs[p.variant_key] = "publication"
    return refs


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service),
                        pytest.param("s3", marks=pytest.mark.service)])
def studio(request, monkeypatch, tmp_path):
    """(client, auth headers) of a fresh installation: SQLite and local blobs; or a schema of its
    own in PostgreSQL (whose DELETEs cascade by the database's own foreign keys); or blobs in a
    prefix of its own on the SeaweedFS S3 server of tests/test_storage.py."""
    env = {}
    if request.param == "s3":
        from tests.test_storage import ACCESS_KEY, BUCKET, SECRET_KEY

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        endpoint = request.getfixturevalue("s3_endpoint")
        env["storage_url"] = f"s3://{BUCKET}/gc-{uuid.uuid4().hex}?endpoint={endpoint}"
    if request.param == "postgresql":
        from sqlalchemy.engine import make_url

        from tests.test_db import PG_URL

        admin = request.getfixturevalue("postgres_admin")
        schema = f"test_gc_{uuid.uuid4().hex[:12]}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        request.addfinalizer(lambda: _drop(admin, schema))
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        env["database_url"] = url.render_as_string(hide_password=False)
    app, key = fresh_app(monkeypatch, tmp_path, **env)
    client = TestClient(app, base_url="https://testserver")
    return client, {"Authorization": f"Bearer {key}"}


def _drop(admin, schema: str) -> None:
    runtime.reset()  # close this installation's connections first
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def test_gc_keeps_every_referenced_blob_and_removes_the_rest(studio, coffee_rgb, photo_bytes):
    t0 = time.perf_counter()
    client, auth = studio
    blobs = runtime.store()
    job_id = post_job(client, auth, photo_bytes(coffee_rgb))
    run_job(job_id)
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    asset_id = doc["assets"][0]["id"]
    models_keys = {k for k, what in references().items() if what in ("cutout", "quality", "variant")}
    # A mask saved: the models' cut-out and its variants are no longer referenced (a new render).
    mask = np.zeros((400, 600), np.uint8)
    mask[80:330, 150:450] = 255
    r = client.put(f"/api/v1/assets/{asset_id}/mask", headers=auth | {"Content-Type": "image/png"}, content=png(mask))
    assert r.status_code == 202, r.text
    run_job(job_id)
    # A publication of a render (its variant since rendered again) keeps that render.
    with runtime.database().session() as s:
        variant = s.scalars(select(Variant).where(Variant.asset_id == asset_id)).first()
        published = "variants/pu/published-render.jpg"
        s.add(Publication(variant_id=variant.id, job_id=job_id, platform="shopify", store="acme",
                          product_id="1", variant_key=published, mark="ps-x.1",
                          status=PublicationStatus.PUBLISHED))
    blobs.put(published, b"published render")
    # Strays: nothing refers to these.
    stray_source = "sources/zz/stray.png"
    blobs.put(stray_source, png(np.full((40, 60, 3), 200, np.uint8)))
    strays = {stray_source: 0, "variants/zz/stray.jpg": 0, "cutouts/zz/stray.png": 0, "controls/zz/stray.png": 0}
    # Previews: of a live variant (kept), of the stray (goes with it), of a blob long gone (goes).
    from product_studio.web.media import preview

    live = next(k for k, what in references().items() if what == "variant")
    preview(live)
    preview(stray_source)
    blobs.put(preview_key("variants/00/gone.jpg", 480), b"old preview")
    # Never collected: mask versions' blobs (even one no version names), folders gc does not know.
    blobs.put("masks/zz/unnamed.png", b"mask")
    blobs.put("doctor/probe", b"ok")
    for k in strays:
        if not blobs.exists(k):
            blobs.put(k, b"x" * 10)
        strays[k] = len(blobs.get(k))

    refs = references()
    assert {"source", "cutout", "quality", "control", "variant", "mask", "publication"} <= set(refs.values())
    old_models_keys = models_keys
    assert not old_models_keys & set(refs)  # the models' cut-out and renders are unreferenced now
    before = set(blobs.keys())
    assert set(refs) <= before

    # Within the grace period nothing goes.
    young = collect()
    assert (young.blobs, young.previews) == (0, 0) and young.kept_young >= len(strays)
    assert set(blobs.keys()) == before

    dry = collect(dry_run=True, now=time.time() + LATER)
    assert dry.blobs >= len(strays) and dry.previews == 2
    assert set(blobs.keys()) == before

    done = collect(now=time.time() + LATER)
    after = set(blobs.keys())
    assert (done.blobs, done.blob_bytes, done.previews) == (dry.blobs, dry.blob_bytes, dry.previews)
    assert set(refs) <= after, f"referenced blobs collected: {sorted(set(refs) - after)}"
    assert not set(strays) & after
    assert not old_models_keys & after  # the models' cut-out and renders, unreferenced, went
    assert preview_key(live, 480) in after
    assert preview_key(stray_source, 480) not in after and preview_key("variants/00/gone.jpg", 480) not in after
    assert {"masks/zz/unnamed.png", "doctor/probe"} <= after
    assert before - after == set(done.removed_keys)
    assert done.blob_bytes >= sum(strays.values())
    # The job still reads whole: every variant downloads, every preview shows.
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    for v in doc["assets"][0]["variants"]:
        assert download(client, v["url"]) == 200
    assert collect(now=time.time() + LATER).blobs == 0  # nothing left to collect
    print(f"\nfill, collect and check: {time.perf_counter() - t0:.1f} s")


def test_old_jobs_go_and_their_blobs_unless_unfinished_work_will_use_them(studio, coffee_rgb, photo_bytes,
                                                                        monkeypatch):
    client, auth = studio
    blobs = runtime.store()
    data = photo_bytes(coffee_rgb)
    old_job = post_job(client, auth, data)
    run_job(old_job)
    old_keys = set(references())
    other = post_job(client, auth, photo_bytes(np.ascontiguousarray(coffee_rgb[::-1])), targets=("ebay",))
    run_job(other)
    with runtime.database().session() as s:  # the first job finished long ago
        s.get_one(Job, old_job).finished_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    # Nothing by age unless asked.
    assert collect(now=time.time() + LATER).jobs == 0

    monkeypatch.setenv("PRODUCT_STUDIO_RETAIN_JOBS_DAYS", "30")
    from product_studio import config

    config.get_settings.cache_clear()
    # A queued job for the same photo, targets and seed (a new job: a title, which no key of these
    # targets depends on): its work will find the old job's outputs stored, so they stay while it
    # is unfinished.
    r = client.post("/api/v1/jobs", headers=auth, files=[("files", ("coffee.jpg", data, "image/jpeg"))],
                    data={"targets": ["ebay", "lifestyle"], "seed": "3", "title": "Mug"})
    assert r.status_code == 202, r.text
    queued = r.json()["id"]
    later = time.time() + LATER + 31 * 86400  # every row's updated_at is past 30 days then
    with runtime.database().session() as s:  # the other job too recent to go
        s.get_one(Job, other).finished_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    done = collect(now=later)
    assert done.jobs == 1
    with runtime.database().session() as s:
        assert s.get(Job, old_job) is None and s.get(Job, other) is not None
        assert s.scalar(select(func.count()).select_from(Asset).where(Asset.job_id == old_job)) == 0
    assert old_keys <= set(blobs.keys()), "blobs the queued job will reuse were collected"
    run_job(queued)
    assert client.get(f"/api/v1/jobs/{queued}", headers=auth).json()["status"] == "done"
    assert old_keys <= set(references())  # the same keys, recorded again
    # The queued job finished: its own rows keep the blobs; another job's untouched stray goes.
    assert collect(now=time.time() + LATER).blobs == 0


def test_rejected_deliveries_and_product_states_go_by_age(studio, monkeypatch):
    now = dt.datetime.now(dt.UTC)
    old, recent = now - dt.timedelta(days=31), now - dt.timedelta(days=1)
    with runtime.database().session() as s:
        for i, (status, at) in enumerate([(DeliveryStatus.REJECTED, old), (DeliveryStatus.DUPLICATE, old),
                                          (DeliveryStatus.REJECTED, recent), (DeliveryStatus.PROCESSED, old)]):
            s.add(Delivery(platform="generic", delivery_id=f"d{i}", status=status, received_at=at, updated_at=at))
        s.add(ProductState(platform="shopify", store="acme", product_id="1", images={}, updated_at=old))
    dry = collect(dry_run=True)
    assert (dry.rejected_deliveries, dry.product_states) == (2, 0)  # product states: kept unless asked
    done = collect()
    assert done.rejected_deliveries == 2
    with runtime.database().session() as s:
        assert sorted(s.scalars(select(Delivery.delivery_id))) == ["d2", "d3"]
        # updated_at moves on every write: set it back after the insert
        s.execute(ProductState.__table__.update().values(updated_at=old))
    from product_studio import config

    monkeypatch.setenv("PRODUCT_STUDIO_RETAIN_PRODUCT_STATES_DAYS", "30")
    config.get_settings.cache_clear()
    assert collect().product_states == 1


def test_gc_in_the_moment_between_a_workers_write_and_its_commit(studio, coffee_rgb, photo_bytes):
    """Another worker's gc runs right after each blob is stored, before the row naming it is
    committed (the source before its job exists, each stage's output before it is recorded):
    the grace period and the keys of unfinished work keep every one."""
    client, auth = studio
    blobs = runtime.store()
    cls, real_put = type(blobs), type(blobs).put
    written: list[str] = []

    def put_then_collect(self, key, data, content_type="application/octet-stream"):
        real_put(self, key, data, content_type)
        if key.split("/")[0] in ("sources", "cutouts", "controls", "variants"):
            written.append(key)
            assert key not in collect().removed_keys

    cls.put = put_then_collect
    try:
        job_id = post_job(client, auth, photo_bytes(coffee_rgb), seed=11)
        run_job(job_id)
    finally:
        cls.put = real_put
    assert any(k.startswith("sources/") for k in written) and any(k.startswith("variants/") for k in written)
    assert set(written) <= set(blobs.keys())
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    assert doc["status"] == "done"
    for v in doc["assets"][0]["variants"]:
        assert download(client, v["url"]) == 200


def test_the_gc_command_dry_run_and_report(studio, monkeypatch):
    from product_studio import config
    from product_studio.cli import app

    blobs = runtime.store()
    blobs.put("variants/zz/stray.jpg", b"12345")
    time.sleep(1.1)  # S3 modification times are whole seconds
    monkeypatch.setenv("PRODUCT_STUDIO_GC_GRACE", "0.5")
    config.get_settings.cache_clear()
    runner = CliRunner(env={"COLUMNS": "250"})
    dry = runner.invoke(app, ["gc", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove" in dry.output and "1 blob(s) (5 bytes)" in dry.output
    assert blobs.exists("variants/zz/stray.jpg")
    real = runner.invoke(app, ["gc", "--json"])
    assert real.exit_code == 0, real.output
    assert '"blobs": 1' in real.output and '"blob_bytes": 5' in real.output
    assert not blobs.exists("variants/zz/stray.jpg")


def test_the_worker_runs_gc_periodically(monkeypatch):
    from tasks import sweeper

    ran = threading.Event()
    monkeypatch.setattr(retention, "collect", lambda *a, **k: ran.set())
    sweeper._stop.clear()  # noqa: SLF001
    thread = threading.Thread(target=sweeper._gc_loop, args=(0.05,), daemon=True)  # noqa: SLF001
    thread.start()
    try:
        assert ran.wait(5)
    finally:
        sweeper._stop.set()  # noqa: SLF001
        thread.join(5)
    assert not thread.is_alive()


def test_preview_sides_match_the_web_door():
    from product_studio.web.media import PREVIEW_SIDE
    from product_studio.web.touchup import DISPLAY_SIDE

    assert set(retention.PREVIEW_SIDES) == {PREVIEW_SIDE, DISPLAY_SIDE}


def test_rejected_webhooks_are_rate_limited_per_address(monkeypatch, tmp_path):
    app, _ = fresh_app(monkeypatch, tmp_path, webhook_rejected_rate_limit="3/minute",
                       generic_webhook_secret="generic-secret")
    one = TestClient(app, base_url="https://testserver", client=("203.0.113.1", 5000))
    two = TestClient(app, base_url="https://testserver", client=("203.0.113.2", 5000))
    body = b'{"id": "forged"}'
    forged = {"X-Product-Studio-Signature": "t=1,v1=00"}
    codes = [one.post("/webhooks/generic", content=body, headers=forged).status_code for _ in range(6)]
    assert codes == [401] * 3 + [429] * 3
    refused = one.post("/webhooks/generic", content=body, headers=forged)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert two.post("/webhooks/generic", content=body, headers=forged).status_code == 401  # another address
    with runtime.database().session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 4  # the 429s left no rows
