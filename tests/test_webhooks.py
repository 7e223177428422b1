"""Webhook receivers, end to end: real signed requests over HTTP to `product-studio serve`, images
fetched from a loopback server through the allow-list, intake and jobs run by a real Celery worker
on the embedded broker. Plus the pieces on their own: stores, payload reading, the records."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from sqlalchemy import func, select
from webhook_stack import (
    Loopback,
    Stack,
    bigcommerce_payload,
    generic_headers,
    photo,
    shopify_headers,
    shopify_product,
    woo_headers,
    woo_product,
)

from product_studio import callbacks
from product_studio.config import Settings
from product_studio.db import Database
from product_studio.errors import BadInput
from product_studio.models import Asset, Delivery, Job, ProductState
from product_studio.webhooks.deliveries import (
    Incoming,
    record_deliveries,
    release_delivery,
    settle_delivery,
    start_delivery,
    take_product,
)
from product_studio.webhooks.platforms import PLATFORMS, PayloadError
from product_studio.webhooks.stores import load_stores_file, stores

STORES_TOML = """
[[store]]
name = "acme"
platform = "shopify"
source = "acme.myshopify.com"
secrets = ["acme-secret"]
targets = ["google-shopping"]
callback_url = "{callback}"

[[store]]
name = "bolt"
platform = "shopify"
source = "https://Bolt.myshopify.com/"
secrets = ["bolt-secret"]
targets = ["ebay"]
"""


@pytest.fixture(scope="module")
def loopback():
    server = Loopback()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, loopback):
    tmp = tmp_path_factory.mktemp("webhooks")
    stores_file = tmp / "stores.toml"
    stores_file.write_text(STORES_TOML.format(callback=loopback.url("/callback")))
    s = Stack(tmp, loopback, stores_file=stores_file,
              # Lost messages are looked for often (a test needs it), but not so often that a busy
              # worker's queued work is re-enqueued over and over.
              extra_env={"PRODUCT_STUDIO_REQUEUE_AFTER": "15", "PRODUCT_STUDIO_SWEEP_INTERVAL": "1"}).start()
    yield s
    s.stop()


def jobs_of(stack: Stack, delivery: Delivery) -> list[Job]:
    with stack.db.session() as s:
        return [s.get_one(Job, j) for j in delivery.job_ids or []]


def asset_shas(stack: Stack, job_id: str) -> list[str]:
    with stack.db.session() as s:
        return list(s.scalars(select(Asset.sha256).where(Asset.job_id == job_id).order_by(Asset.position)))


def sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- Shopify ---------------------------------------------------------------------------------------

def test_shopify_only_new_or_changed_images_and_stale_updates_ignored(stack, loopback):
    a, b, c = photo(1), photo(2), photo(3)
    ua, ub, uc = (loopback.image(f"sh-{n}.jpg", d) for n, d in (("a", a), ("b", b), ("c", c)))
    shop = {"shop": "plain.myshopify.com"}

    def send(webhook_id: str, updated: str, images: list[tuple[int, str]]) -> str:
        body = shopify_product(4001, updated, images)
        r = stack.post("shopify", shopify_headers(body, webhook_id, **shop), body)
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
        return r.json()["delivery"]

    first = send("sh-1", "2026-11-20T10:00:00-05:00", [(1, ua), (2, ub)])
    d1 = stack.settled([first])[first]
    assert d1.status == "processed" and d1.store == "default" and d1.topic == "products/update"
    [job] = jobs_of(stack, d1)
    assert job.origin == "webhook:shopify" and job.store == "default" and job.params["targets"] == ["ebay"]
    assert asset_shas(stack, job.id) == [sha(a), sha(b)]

    second = send("sh-2", "2026-11-20T11:00:00-05:00", [(1, ua), (2, ub), (3, uc)])  # one image added
    d2 = stack.settled([second])[second]
    [job2] = jobs_of(stack, d2)
    assert d2.status == "processed" and asset_shas(stack, job2.id) == [sha(c)]

    older = send("sh-3", "2026-11-20T10:30:00-05:00", [(9, uc)])  # arrives late: stale
    same = send("sh-4", "2026-11-20T12:00:00-05:00", [(1, ua), (2, ub), (3, uc)])  # newer, nothing changed
    done = stack.settled([older, same])
    assert done[older].status == "stale" and "stale" in done[older].reason and not done[older].job_ids
    assert done[same].status == "ignored" and "no new or changed images" in done[same].reason
    assert loopback.fetches["sh-a.jpg"] == loopback.fetches["sh-b.jpg"] == loopback.fetches["sh-c.jpg"] == 1
    with stack.db.session() as s:
        state = s.scalars(select(ProductState).where(ProductState.product_id == "4001")).one()
    assert state.source_updated_at == dt.datetime(2026, 11, 20, 17, 0, tzinfo=dt.UTC)
    assert set(state.images.values()) == {sha(a), sha(b), sha(c)}


def test_shopify_rotation_duplicates_and_forgeries_that_cannot_block(stack, loopback):
    url = loopback.image("rot.jpg", photo(10))
    body = shopify_product(4002, "2026-11-21T09:00:00Z", [(1, url)])
    # A forgery claiming the delivery id first: rejected, recorded, and it does not take the id.
    forged = stack.post("shopify", shopify_headers(body, "rot-1", secret="guessed"), body)
    assert forged.status_code == 401 and "bad signature" in forged.json()["reason"]
    # The genuine delivery, signed with the old secret during a rotation.
    real = stack.post("shopify", shopify_headers(body, "rot-1", secret="shp-old-secret"), body)
    assert real.status_code == 200 and real.json()["status"] == "accepted", real.text
    again = stack.post("shopify", shopify_headers(body, "rot-1"), body)  # Shopify's retry
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    unsigned = stack.post("shopify", {"X-Shopify-Topic": "products/update", "X-Shopify-Webhook-Id": "rot-2"}, body)
    assert unsigned.status_code == 401 and "missing x-shopify-hmac-sha256" in unsigned.json()["reason"].lower()
    delete = stack.post("shopify", shopify_headers(body, "rot-3", topic="products/delete"), body)
    assert delete.status_code == 200 and delete.json()["status"] == "ignored"
    huge = stack.post("shopify", shopify_headers(body, "x" * 5000, secret="guessed"), body)  # past the column
    assert huge.status_code == 401 and stack.delivery(huge.json()["delivery"]).claimed_id.startswith("sha256:")

    ids = [r.json()["delivery"] for r in (forged, real, again, unsigned, delete)]
    rows = stack.settled(ids)
    f, r, d, u, x = (rows[i] for i in ids)
    assert (f.status, f.claimed_id, f.payload) == ("rejected", "rot-1", None) and f.delivery_id != "rot-1"
    assert (r.status, r.delivery_id) == ("processed", "rot-1")
    assert d.status == "duplicate" and d.reason.startswith(f"duplicate of delivery {r.id}")
    assert u.status == "rejected" and u.claimed_id == "rot-2"
    assert x.status == "ignored" and "products/delete" in x.reason
    assert loopback.fetches["rot.jpg"] == 1


def test_private_and_broken_image_urls_fail_the_delivery_with_the_reason(stack, loopback):
    broken = loopback.image("broken.jpg", photo(11)[:300])  # a JPEG cut short
    cases = {"http://169.254.169.254/latest/meta-data/iam.jpg": "cloud metadata address",
             "http://10.20.30.40/img.jpg": "private address",
             "http://[::1]:9/x.jpg": "loopback address",  # the allow-list names 127.0.0.1 only
             broken: "broken.jpg"}
    sent = {}
    for n, url in enumerate(cases):
        body = shopify_product(4100 + n, "2026-11-21T09:00:00Z", [(1, url)])
        r = stack.post("shopify", shopify_headers(body, f"bad-{n}", shop="plain.myshopify.com"), body)
        assert r.status_code == 200
        sent[r.json()["delivery"]] = cases[url]
    rows = stack.settled(list(sent))
    for row_id, expected in sent.items():
        assert rows[row_id].status == "failed" and expected in rows[row_id].reason, rows[row_id].reason
        assert not rows[row_id].job_ids


# --- WooCommerce -----------------------------------------------------------------------------------

def test_woocommerce_ping_product_created_and_bad_signature(stack, loopback):
    ping = stack.post("woocommerce", {"Content-Type": "application/x-www-form-urlencoded"}, b"webhook_id=12")
    assert ping.status_code == 200 and ping.json() == {"ok": True, "ping": "12"}

    data = photo(20)
    body = woo_product(501, "2026-11-21T08:00:00", [(77, loopback.image("woo.jpg", data))], category="Mugs")
    ok = stack.post("woocommerce", woo_headers(body, "9001"), body)
    bad = stack.post("woocommerce", woo_headers(body, "9002", secret="nope"), body)
    assert ok.status_code == 200 and bad.status_code == 401
    rows = stack.settled([ok.json()["delivery"], bad.json()["delivery"]])
    done = rows[ok.json()["delivery"]]
    assert done.status == "processed" and done.topic == "product.created"
    [job] = jobs_of(stack, done)
    assert job.origin == "webhook:woocommerce" and asset_shas(stack, job.id) == [sha(data)]
    with stack.db.session() as s:
        assert s.scalars(select(Asset.category).where(Asset.job_id == job.id)).one() == "Mugs"
    assert rows[bad.json()["delivery"]].status == "rejected"
    with stack.db.session() as s:  # the ping is not a delivery
        assert not s.scalars(select(Delivery).where(Delivery.platform == "woocommerce",
                                                    Delivery.claimed_id.is_(None))).all()


# --- BigCommerce -----------------------------------------------------------------------------------

def test_bigcommerce_thin_payload_is_read_through_the_api(stack, loopback):
    data = photo(30)
    loopback.products["321"] = {"id": 321, "name": "Mug", "type": "physical",
                                "date_modified": "2026-11-21T10:00:00+00:00",
                                "images": [{"id": 5, "url_zoom": loopback.image("bc.jpg", data),
                                            "url_standard": loopback.url("/img/missing.jpg"),
                                            "is_thumbnail": True, "date_modified": "2026-11-21T10:00:00+00:00"}]}
    body = bigcommerce_payload(321, "hash-321")
    ok = stack.post("bigcommerce", {"X-Product-Studio-Token": "bc-secret"}, body)
    dup = stack.post("bigcommerce", {"X-Product-Studio-Token": "bc-secret"}, body)  # same event, same hash
    wrong = stack.post("bigcommerce", {"X-Product-Studio-Token": "bc-guess"}, bigcommerce_payload(321, "hash-x"))
    assert [r.status_code for r in (ok, dup, wrong)] == [200, 200, 401]
    assert dup.json()["status"] == "duplicate"
    rows = stack.settled([r.json()["delivery"] for r in (ok, dup, wrong)])
    done = rows[ok.json()["delivery"]]
    assert done.status == "processed" and done.claimed_id == "hash-321"
    [job] = jobs_of(stack, done)
    assert asset_shas(stack, job.id) == [sha(data)]
    assert loopback.api_calls == [("/stores/abc123/v3/catalog/products/321?include=images", "bc-token")]
    assert rows[wrong.json()["delivery"]].status == "rejected"


def test_bigcommerce_product_gone_fails_with_the_reason(stack, loopback):
    r = stack.post("bigcommerce", {"X-Product-Studio-Token": "bc-secret"}, bigcommerce_payload(999, "hash-999"))
    row = stack.settled([r.json()["delivery"]])[r.json()["delivery"]]
    assert row.status == "failed" and "no such product" in row.reason


# --- generic ---------------------------------------------------------------------------------------

def test_generic_delivery_runs_to_a_finished_job_and_a_signed_callback(stack, loopback):
    data = photo(40)
    doc = {"id": "gen-1", "images": [loopback.image("gen.jpg", data)], "title": "Cup", "category": "Kitchen",
           "targets": ["ebay"], "scenes": [], "callback_url": loopback.url("/callback")}
    body = json.dumps(doc).encode()
    r = stack.post("generic", generic_headers(body), body)
    assert r.status_code == 200, r.text
    row = stack.settled([r.json()["delivery"]])[r.json()["delivery"]]
    [job] = jobs_of(stack, row)
    deadline = time.time() + 180
    while time.time() < deadline and not loopback.callbacks:
        time.sleep(0.3)
    assert loopback.callbacks, stack.logs()[-3000:]
    headers, sent = loopback.callbacks[-1]
    assert callbacks.verify(["cb-secret"], sent, headers.get(callbacks.HEADER))
    finished = json.loads(sent)["job"]
    assert finished["id"] == job.id and finished["status"] == "done"
    assert [v["target"] for a in finished["assets"] for v in a["variants"]] == ["ebay"]


def test_generic_replays_and_bad_bodies_are_refused(stack, loopback):
    body = json.dumps({"id": "gen-2", "images": [loopback.image("g2.jpg", photo(41))]}).encode()
    old = stack.post("generic", generic_headers(body, at=int(time.time()) - 400), body)
    assert old.status_code == 401 and "more than 300 s" in old.json()["reason"]
    unknown = json.dumps({"id": "gen-3", "images": [loopback.url("/img/g2.jpg")], "targets": ["myspace"]}).encode()
    r = stack.post("generic", generic_headers(unknown), unknown)
    assert r.status_code == 422 and "unknown target 'myspace'" in r.json()["reason"]
    no_images = json.dumps({"id": "gen-4", "images": []}).encode()
    assert stack.post("generic", generic_headers(no_images), no_images).status_code == 422
    # A signed body that does not parse is a 400; one that parses but cannot be used, a 422.
    for bad, status in ((b"[1, 2]", 400), (b"not json", 400), (b"[" * 10_000, 400),
                        (json.dumps({"images": ["https://x/y.jpg"]}).encode(), 422)):
        answer = stack.post("generic", generic_headers(bad), bad)
        assert answer.status_code == status and answer.json()["status"] == "rejected", answer.text
    rows = stack.settled([old.json()["delivery"], r.json()["delivery"]])
    assert {d.status for d in rows.values()} == {"rejected"}
    # The replay did not take its id: the same id, freshly signed, is accepted.
    fresh = stack.post("generic", generic_headers(body), body)
    assert fresh.json()["status"] == "accepted"


# --- several stores --------------------------------------------------------------------------------

def test_each_store_has_its_own_secrets_targets_and_callback(stack, loopback):
    data = photo(50)
    body = shopify_product(6001, "2026-11-22T10:00:00Z", [(1, loopback.image("acme.jpg", data))])
    acme = stack.post("shopify", shopify_headers(body, "acme-1", secret="acme-secret"), body)
    # Bolt's secret for a delivery claiming to be Acme's: neither Acme's nor the default's secret.
    posing = stack.post("shopify", shopify_headers(body, "acme-2", secret="bolt-secret"), body)
    bolt = stack.post("shopify", shopify_headers(body, "bolt-1", secret="bolt-secret", shop="bolt.myshopify.com"),
                      body)
    assert [r.status_code for r in (acme, posing, bolt)] == [200, 401, 200]
    rows = stack.settled([r.json()["delivery"] for r in (acme, posing, bolt)])
    a, b = rows[acme.json()["delivery"]], rows[bolt.json()["delivery"]]
    [job_a], [job_b] = jobs_of(stack, a), jobs_of(stack, b)
    assert (a.store, job_a.store, job_a.params["targets"]) == ("acme", "acme", ["google-shopping"])
    assert job_a.callback_url == loopback.url("/callback")
    assert (b.store, job_b.store, job_b.params["targets"]) == ("bolt", "bolt", ["ebay"])


def test_a_delivery_whose_message_was_lost_is_still_processed(stack, loopback):
    """Recorded but never enqueued (the publish failed after the commit): the sweeper finds it."""
    data = photo(60)
    body = woo_product(777, "2026-11-22T08:00:00", [(1, loopback.image("lost.jpg", data))])
    with stack.db.session() as s:
        [rec] = record_deliveries(s, [Incoming("woocommerce", "lost-1", "product.updated", "default", sha(body),
                                               "accepted", payload=body.decode())])
    row = stack.settled([rec.id], timeout=240)[rec.id]
    assert row.status == "processed"
    assert asset_shas(stack, row.job_ids[0]) == [sha(data)]


def test_secrets_are_never_logged(stack):
    logs = stack.logs()
    for secret in ("shp-new-secret", "shp-old-secret", "woo-secret", "bc-secret", "generic-secret", "acme-secret",
                   "bolt-secret", "bc-token"):
        assert secret not in logs
    found = stores(Settings(shopify_webhook_secret="shp-new-secret,shp-old-secret"))
    [store] = found.by_platform["shopify"]
    assert "shp-new-secret" not in repr(store) and "shp-new-secret" not in str(store.model_dump())
    assert store.secret_values() == ["shp-new-secret", "shp-old-secret"]


# --- the pieces on their own -----------------------------------------------------------------------

def test_stores_file_errors_name_the_store_and_never_echo_secrets(tmp_path):
    path = tmp_path / "stores.toml"
    path.write_text('[[store]]\nname = "acme"\nplatform = "shopify"\nsecrets = ["s3cr3t"]\ntargets = ["nope"]\n')
    with pytest.raises(BadInput, match="shopify store 'acme': unknown target 'nope'"):
        stores(Settings(stores_file=path))
    path.write_text('[[store]]\nname = "acme"\nplatform = "magento"\nsecrets = ["s3cr3t"]\ntargets = ["ebay"]\n')
    with pytest.raises(BadInput, match=r"store #1 \('acme'\): platform") as err:
        load_stores_file(path, Settings())
    assert "s3cr3t" not in str(err.value)


def test_payloads_read_as_the_platforms_document_them():
    settings = Settings()
    shop = PLATFORMS["shopify"]
    [store] = stores(Settings(shopify_webhook_secret="x")).by_platform["shopify"]
    media = json.dumps({"id": 5, "title": "Mug", "updated_at": "2026-01-02T03:04:05+01:00",
                        "category": {"name": "Mugs"}, "media": [
                            {"id": 8, "media_content_type": "IMAGE", "preview_image": {"src": "https://c/x.jpg"}},
                            {"id": 9, "media_content_type": "VIDEO", "preview_image": {"src": "https://c/v.jpg"}}]})
    event = shop.event(store, media, settings)
    assert event.product_id == "5" and event.category == "Mugs" and [i.url for i in event.images] == ["https://c/x.jpg"]
    assert event.updated_at == dt.datetime(2026, 1, 2, 2, 4, 5, tzinfo=dt.UTC)
    woo = PLATFORMS["woocommerce"].event(store, woo_product(3, "2026-01-02T03:04:05", [(1, "https://w/a.jpg")]),
                                         settings)
    assert woo.updated_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # *_gmt: naive means UTC
    with pytest.raises(PayloadError, match="not JSON"):
        shop.event(store, "<xml/>", settings)
    assert PLATFORMS["woocommerce"].ping(b"webhook_id=42") == "42" and PLATFORMS["woocommerce"].ping(b"{}") is None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def db(request, tmp_path):
    """An empty database at head: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path}/db.sqlite")
        database.upgrade()
        yield database
        database.dispose()
        return
    from uuid import uuid4

    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import OperationalError

    url = os.environ.get("PRODUCT_STUDIO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    admin, schema = create_engine(url, connect_args={"connect_timeout": 3}), f"test_wh_{uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable at {url} (a missing service is a failure in CI)")
        pytest.skip(f"PostgreSQL unreachable at {url}: {str(exc).splitlines()[0]}")
    database = Database(make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}))
    database.upgrade()
    yield database
    database.dispose()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


def incoming(claimed: str | None, status: str = "accepted") -> Incoming:
    return Incoming("shopify", claimed, "products/update", "default", "0" * 64, status, None,
                    "{}" if status != "rejected" else None)


def test_a_forgery_never_takes_an_id_and_duplicates_point_at_the_first(db):
    with db.session() as s:
        out = record_deliveries(s, [incoming("a", "rejected"), incoming("a"), incoming("b"), incoming("a"),
                                    incoming(None, "rejected")])
    assert [o.status for o in out] == ["rejected", "accepted", "accepted", "duplicate", "rejected"]
    assert out[3].reason.startswith(f"duplicate of delivery {out[1].id}")
    with db.session() as s:
        again = record_deliveries(s, [incoming("b"), incoming("c", "ignored")])
        rows = {d.id: d for d in s.scalars(select(Delivery))}
    assert [o.status for o in again] == ["duplicate", "ignored"]
    assert rows[out[0].id].claimed_id == "a" and rows[out[0].id].delivery_id == f"rejected:{out[0].id}"
    assert rows[out[1].id].delivery_id == "a" and rows[again[0].id].delivery_id.startswith("duplicate:")
    assert len(rows) == 7


def test_the_same_delivery_at_once_from_two_writers_is_accepted_once(db):
    from concurrent.futures import ThreadPoolExecutor

    def write(_: int) -> list[str]:
        with db.session() as s:
            return [o.status for o in record_deliveries(s, [incoming(f"x{i}") for i in range(30)])]

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(write, range(2))
    assert sorted(a + b) == ["accepted"] * 30 + ["duplicate"] * 30


def test_one_run_at_a_time_holds_a_delivery(db):
    with db.session() as s:
        [rec] = record_deliveries(s, [incoming("lease-1")])
    with db.session() as s:
        assert start_delivery(s, rec.id, lease=60) is not None
        assert start_delivery(s, rec.id, lease=60) is None  # a duplicated message: the other run is on it
        release_delivery(s, rec.id)  # the first run will retry
        assert start_delivery(s, rec.id, lease=60) is not None
        assert start_delivery(s, rec.id, lease=0) is not None  # a run that died: its lease ran out
        assert settle_delivery(s, rec.id, "ignored", "nothing to do")
        assert start_delivery(s, rec.id, lease=0) is None and not settle_delivery(s, rec.id, "failed", "late")
        row = s.get_one(Delivery, rec.id, populate_existing=True)
    assert (row.status, row.reason, row.job_ids, row.payload) == ("ignored", "nothing to do", None, None)
    with db.session() as s:  # SQL NULL, not a JSON null
        assert s.scalar(select(func.count()).select_from(Delivery).where(Delivery.job_ids.is_(None))) == 1


def test_a_product_is_taken_only_by_newer_updates(db):
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    take = {"platform": "shopify", "store": "default", "product_id": "1"}
    with db.session() as s:
        assert take_product(s, **take, updated_at=t0, delivery_id="d1")[0] is not None
        assert take_product(s, **take, updated_at=t0, delivery_id="d1")[0] is not None  # its own retry
        state, why = take_product(s, **take, updated_at=t0, delivery_id="d2")  # as new: already seen
        assert state is None and "not after" in why
        assert take_product(s, **take, updated_at=t0 - dt.timedelta(seconds=1), delivery_id="d3")[0] is None
        assert take_product(s, **take, updated_at=t0 + dt.timedelta(seconds=1), delivery_id="d4")[0] is not None
        assert take_product(s, **take, updated_at=None, delivery_id="d5")[0] is not None  # nothing to compare
