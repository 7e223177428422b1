"""Publishing, end to end, per platform: a signed product webhook to `product-studio serve`, the job
run by a real worker, the variant approved through the API, the image written to the platform's
stand-in (tests/standins/: real HTTP servers on loopback) exactly once, with the right product,
alt text and position, and the platform's product update webhook sent back making no job. The
stand-ins throttle once and answer a 5xx after doing the work, so the publisher must wait out the
throttle and read the product back instead of attaching the image a second time. Last, a worker
killed with SIGKILL in the middle of publishing a 10-variant job on Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest
from sqlalchemy import func, select
from standins.bigcommerce import BigCommerceStandIn
from standins.shopify import ShopifyStandIn, now_iso
from standins.woocommerce import WooCommerceStandIn
from webhook_stack import EXE, Loopback, Stack, bigcommerce_payload, photo, shopify_headers, woo_headers

from product_studio.auth import create_key
from product_studio.models import Job, JobProduct, Publication

pytestmark = pytest.mark.slow

STORES = """
[[store]]
name = "acme"
platform = "shopify"
source = "acme.myshopify.com"
secrets = ["acme-secret"]
targets = ["ebay"]
api_url = "{api}"
api_token = "shpat_standin"
api_version = "2026-10"
publish = "on-approve"
"""
BIGCOMMERCE = """
[[store]]
name = "bolt"
platform = "bigcommerce"
source = "abc123"
secrets = ["bolt-token"]
targets = ["ebay"]
api_url = "{api}"
api_token = "bc-standin-token"
publish = "on-approve"
"""


@pytest.fixture(scope="module")
def shop():
    server = ShopifyStandIn(token="shpat_standin")
    yield server
    server.stop()


WOOCOMMERCE = """
[[store]]
name = "corner"
platform = "woocommerce"
source = "https://shop.example.com/"
secrets = ["corner-secret"]
targets = ["ebay"]
api_url = "{api}"
consumer_key = "ck_standin"
consumer_secret = "cs_standin"
wp_user = "studio"
wp_app_password = "abcd efgh ijkl mnop qrst uvwx"
publish = "on-approve"
"""


@pytest.fixture(scope="module")
def woocommerce():
    server = WooCommerceStandIn()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bigcommerce():
    server = BigCommerceStandIn(store_hash="abc123", token="bc-standin-token")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shop, bigcommerce, woocommerce):
    tmp = tmp_path_factory.mktemp("publish")
    stores_file = tmp / "stores.toml"
    stores_file.write_text(STORES.format(api=shop.base) + BIGCOMMERCE.format(api=bigcommerce.base)
                           + WOOCOMMERCE.format(api=woocommerce.base))
    cdn = Loopback()
    s = Stack(tmp, cdn, stores_file=stores_file).start()
    with s.db.session() as session:
        s.key = create_key(session, "publish-test").key
    yield s
    s.stop()
    cdn.stop()


def api(stack: Stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.base}/api/v1{path}", headers={"Authorization": f"Bearer {stack.key}"},
                         timeout=30, **kwargs)


def send_product(stack: Stack, shop: ShopifyStandIn, pid: int, webhook_id: str, topic: str, updated_at: str) -> str:
    body = shop.product_webhook(pid, updated_at)
    r = stack.post("shopify", shopify_headers(body, webhook_id, secret="acme-secret", topic=topic,
                                              shop="acme.myshopify.com"), body)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    return r.json()["delivery"]


def finished_job(stack: Stack, job_id: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = api(stack, "GET", f"/jobs/{job_id}").json()
        if doc["status"] in ("done", "partial", "failed"):
            return doc
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish\n{stack.logs()[-4000:]}")


def settled_publication(stack: Stack, job_id: str, variant_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = api(stack, "GET", f"/jobs/{job_id}").json()
        [v] = [v for a in doc["assets"] for v in a["variants"] if v["id"] == variant_id]
        pubs = v["publications"]
        if pubs and all(p["status"] in ("published", "failed") for p in pubs):
            return pubs[0]
        time.sleep(0.3)
    pytest.fail(f"the publication of {variant_id} did not settle: {pubs}\n{stack.logs()[-4000:]}")


def job_count(stack: Stack) -> int:
    with stack.db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def made_job(stack: Stack, shop: ShopifyStandIn, pid: int, title: str, data: bytes) -> tuple[str, str]:
    """A product in the stand-in, its products/create webhook, the job run: (job id, variant id)."""
    shop.add_product(pid, title, images=[(f"{title} front", data)])
    delivery = send_product(stack, shop, pid, f"create-{pid}", "products/create", now_iso(-60))
    row = stack.settled([delivery])[delivery]
    assert row.status == "processed", row.reason
    [job_id] = row.job_ids
    with stack.db.session() as s:
        assert s.scalars(select(JobProduct.product_id).where(JobProduct.job_id == job_id)).all() == [str(pid)]
    doc = finished_job(stack, job_id)
    [variant] = [v for a in doc["assets"] for v in a["variants"]]
    assert doc["status"] == "done" and variant["target"] == "ebay" and variant["publications"] == []
    return job_id, variant["id"]


def test_approved_variant_reaches_shopify_once_and_its_webhook_makes_no_job(stack, shop):
    job_id, vid = made_job(stack, shop, 7001, "Coffee cup", photo(1))
    # The throttled productUpdate is not run; the one sent after the wait runs, and Shopify's gateway
    # then answers 502: the publisher must find the image by reading the product back.
    shop.throttle_once.add("productUpdate")
    shop.fail_once["productUpdate"] = "after"
    approved = api(stack, "POST", f"/variants/{vid}/approve")
    assert approved.status_code == 200 and approved.json()["approved"] is True

    pub = settled_publication(stack, job_id, vid)
    assert pub["status"] == "published", pub
    [on_product] = [m for m in shop.products[7001].media if m.alt and vid in m.alt]
    mark = on_product.alt.rsplit("[", 1)[1].rstrip("]")
    assert on_product.alt == f"Coffee cup [{mark}]" and mark.startswith(f"ps-{vid}-")
    assert mark in on_product.filename and on_product.filename.endswith(".jpg")
    assert sum(shop.attached[7001].values()) == 1, shop.attached  # attached exactly once
    assert [m.alt for m in shop.products[7001].media] == ["Coffee cup front", on_product.alt]  # appended: position 2
    assert on_product.data.startswith(b"\xff\xd8")  # the variant's JPEG
    assert shop.requests["productUpdate"] == 2 and shop.too_soon == 0  # the throttle's wait was honoured
    assert shop.upload_problems == [] and shop.bad_tokens == 0
    assert pub["image_id"] == f"gid://shopify/MediaImage/{on_product.id}" and pub["product_id"] == "7001"
    assert pub["admin_url"] == "https://acme.myshopify.com/admin/products/7001"
    assert pub["image_url"] == shop.image_url(on_product)

    # Shopify now sends products/update with the new image: recognised, no job.
    jobs_before = job_count(stack)
    delivery = send_product(stack, shop, 7001, "update-7001", "products/update", now_iso())
    row = stack.settled([delivery])[delivery]
    assert row.status == "ignored" and "only images Product Studio published" in row.reason, row.reason
    assert not row.job_ids and job_count(stack) == jobs_before

    # Asking again changes nothing: approving again, or Publish on a published render.
    assert api(stack, "POST", f"/variants/{vid}/approve").status_code == 200
    again = api(stack, "POST", f"/variants/{vid}/publish")
    assert again.status_code == 202 and again.json()["queued"] == []
    assert again.json()["publications"][0]["status"] == "published"
    time.sleep(1)
    assert sum(shop.attached[7001].values()) == 1
    assert "shpat_standin" not in stack.logs() and "acme-secret" not in stack.logs()


def test_a_refused_image_is_recorded_with_shopifys_message_and_retried_on_request(stack, shop):
    job_id, vid = made_job(stack, shop, 7002, "Teapot", photo(2))
    shop.max_media[7002] = 1  # the product is full: Shopify refuses more media
    assert api(stack, "POST", f"/variants/{vid}/approve").status_code == 200
    pub = settled_publication(stack, job_id, vid)
    assert pub["status"] == "failed" and "Exceeded maximum number of media" in pub["error"], pub
    assert "shopify productUpdate" in pub["error"] and sum(shop.attached[7002].values()) == 0

    shop.max_media[7002] = 250
    retry = api(stack, "POST", f"/jobs/{job_id}/publish", json={"approved_only": True})
    assert retry.status_code == 202 and retry.json()["queued"] == [pub["id"]]
    pub = settled_publication(stack, job_id, vid)
    assert pub["status"] == "published" and pub["error"] is None
    assert sum(shop.attached[7002].values()) == 1
    with stack.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Publication).where(Publication.job_id == job_id)) == 1


def test_approved_variant_reaches_bigcommerce_once_and_its_webhook_makes_no_job(stack, bigcommerce):
    bc = bigcommerce
    bc.add_product(321, "Espresso cup", images=[("Espresso cup front", photo(3)), ("Espresso cup side", photo(4))])
    created = bigcommerce_payload(321, "bc-created-321", store_hash="abc123", scope="store/product/created")
    r = stack.post("bigcommerce", {"X-Product-Studio-Token": "bolt-token"}, created)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    row = stack.settled([r.json()["delivery"]])[r.json()["delivery"]]
    assert row.status == "processed" and row.store == "bolt", row.reason
    [job_id] = row.job_ids
    doc = finished_job(stack, job_id)
    front = [v for a in doc["assets"] for v in a["variants"] if a["name"].startswith("original-1")]
    [vid] = [v["id"] for v in front]
    # A 429 on the upload (X-Rate-Limit-Time-Reset-Ms), then a 502 after the image was made.
    bc.throttle_once.add("POST")
    bc.fail_once["POST"] = "after"
    assert api(stack, "POST", f"/variants/{vid}/approve").status_code == 200
    pub = settled_publication(stack, job_id, vid)
    assert pub["status"] == "published", pub

    [ours_] = bc.with_description(321, vid)
    mark = ours_["description"].rsplit("[", 1)[1].rstrip("]")
    assert ours_["description"] == f"Espresso cup [{mark}]" and mark in ours_["image_file"]
    assert sum(bc.attached[321].values()) == 1, bc.attached  # created exactly once
    listed = sorted(bc.products[321].images, key=lambda i: (not i["is_thumbnail"], i["sort_order"]))
    assert [i["description"] for i in listed] == ["Espresso cup front", "Espresso cup side", ours_["description"]]
    assert not ours_["is_thumbnail"] and bc.too_soon == 0 and bc.bad_tokens == 0
    assert bc.blobs[ours_["id"]].startswith(b"\xff\xd8")
    assert pub["image_id"] == str(ours_["id"]) and pub["product_id"] == "321"
    assert pub["admin_url"] == "https://store-abc123.mybigcommerce.com/manage/products/edit/321"

    jobs_before = job_count(stack)
    updated = bigcommerce_payload(321, "bc-updated-321", store_hash="abc123", scope="store/product/updated")
    r = stack.post("bigcommerce", {"X-Product-Studio-Token": "bolt-token"}, updated)
    row = stack.settled([r.json()["delivery"]])[r.json()["delivery"]]
    assert row.status == "ignored" and "only images Product Studio published" in row.reason, row.reason
    assert not row.job_ids and job_count(stack) == jobs_before
    assert "bc-standin-token" not in stack.logs() and "bolt-token" not in stack.logs()


def test_approved_variant_reaches_woocommerce_once_and_its_webhook_makes_no_job(stack, woocommerce):
    woo = woocommerce
    woo.add_product(501, "Tea cup", images=[("Tea cup front", photo(5))])
    body = woo.product_webhook(501)
    r = stack.post("woocommerce", woo_headers(body, "woo-created-501", secret="corner-secret"), body)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    row = stack.settled([r.json()["delivery"]])[r.json()["delivery"]]
    assert row.status == "processed" and row.store == "corner", row.reason
    [job_id] = row.job_ids
    doc = finished_job(stack, job_id)
    [vid] = [v["id"] for a in doc["assets"] for v in a["variants"]]
    # The media upload answers 502 after storing the file; the product update is rate-limited once.
    woo.fail_once["POST"] = "after"
    woo.throttle_once.add("PUT")
    assert api(stack, "POST", f"/variants/{vid}/approve").status_code == 200
    pub = settled_publication(stack, job_id, vid)
    assert pub["status"] == "published", pub

    [ours_] = woo.with_alt(501, vid)
    mark = ours_.alt.rsplit("[", 1)[1].rstrip("]")
    assert ours_.alt == f"Tea cup [{mark}]" and mark in ours_.title and mark in ours_.filename
    assert sum(woo.attached[501].values()) == 1, woo.attached
    assert [woo.media[i].alt for i in woo.products[501].images] == ["Tea cup front", ours_.alt]  # after, not featured
    assert len([a for a in woo.media.values() if mark in a.title]) == 1  # uploaded to the library once
    assert woo.too_soon == 0 and woo.bad_auth == 0 and ours_.data.startswith(b"\xff\xd8")
    assert pub["image_id"] == str(ours_.id) and pub["product_id"] == "501"
    assert pub["admin_url"] == f"{woo.base}/wp-admin/post.php?post=501&action=edit"

    jobs_before = job_count(stack)
    body = woo.product_webhook(501)
    r = stack.post("woocommerce", woo_headers(body, "woo-updated-501", secret="corner-secret",
                                              topic="product.updated"), body)
    row = stack.settled([r.json()["delivery"]])[r.json()["delivery"]]
    assert row.status == "ignored" and "only images Product Studio published" in row.reason, row.reason
    assert not row.job_ids and job_count(stack) == jobs_before
    logs = stack.logs()
    assert not any(secret in logs for secret in ("cs_standin", "ck_standin", "abcd efgh", "corner-secret"))


def test_publishing_doors_refuse_what_cannot_be_published(stack):
    assert api(stack, "POST", "/variants/nope/publish").status_code == 404
    assert api(stack, "POST", "/jobs/nope/publish").status_code == 404


# --- a worker killed while it publishes ----------------------------------------------------------

def test_worker_killed_mid_publishing_every_image_arrives_exactly_once(tmp_path):
    """A 10-photo job on Redis, published through the CLI door; the worker is killed with SIGKILL
    (parent and children) while publications are in flight, a new one takes over: every image is on
    the product exactly once (the stand-in counts attachments per product, not uploads)."""
    from test_worker import RedisServer

    redis = RedisServer(tmp_path)
    redis.start()
    shop = ShopifyStandIn(token="shpat_standin", ready_after=2.0)  # each image takes 2 s to be READY
    cdn = Loopback()
    stores_file = tmp_path / "stores.toml"
    stores_file.write_text(STORES.format(api=shop.base))
    stack = Stack(tmp_path, cdn, stores_file=stores_file)
    stack.env |= {"PRODUCT_STUDIO_BROKER_URL": redis.url, "PRODUCT_STUDIO_REQUEUE_AFTER": "6",
                  "PRODUCT_STUDIO_SWEEP_INTERVAL": "1", "PRODUCT_STUDIO_BROKER_VISIBILITY_TIMEOUT": "20"}
    try:
        stack.start()
        shop.add_product(8001, "Mug set", images=[(f"mug {i}", photo(100 + i)) for i in range(10)])
        delivery = send_product(stack, shop, 8001, "create-8001", "products/create", now_iso(-60))
        row = stack.settled([delivery], timeout=300)[delivery]
        [job_id] = row.job_ids
        deadline = time.time() + 400
        while time.time() < deadline:
            with stack.db.session() as s:
                status = s.get_one(Job, job_id, populate_existing=True).status
            if status in ("done", "partial", "failed"):
                break
            time.sleep(1)
        assert status == "done", stack.logs()[-4000:]

        out = subprocess.run([str(EXE), "publish", job_id, "--json"], env=stack.env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert len(listed) == 10 and {p["product"] for p in listed} == {"8001"}

        deadline = time.time() + 120
        while sum(shop.attached[8001].values()) < 3 and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(stack.worker.pid, signal.SIGKILL)  # parent and children, mid-publishing
        stack.worker.wait(10)
        with stack.db.session() as s:
            states = s.scalars(select(Publication.status).where(Publication.job_id == job_id)).all()
        assert states.count("published") < 10, "everything was published before the kill: nothing was tested"
        stack.worker = subprocess.Popen([str(EXE), "worker", "--queues", stack.queues, "--concurrency", "2",
                                         "--loglevel", "warning"], env=stack.env,
                                        stdout=open(tmp_path / "worker.log", "a"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.time() + 240
        while time.time() < deadline:
            with stack.db.session() as s:
                states = s.scalars(select(Publication.status).where(Publication.job_id == job_id)).all()
            if states.count("published") == 10:
                break
            time.sleep(0.5)
        assert states.count("published") == 10, f"{states}\n{stack.logs()[-4000:]}"
        time.sleep(2)  # a late duplicate would attach now
        counts = shop.attached[8001]
        assert len(counts) == 10 and set(counts.values()) == {1}, counts  # each variant's image once
        assert len(shop.products[8001].media) == 20
        with stack.db.session() as s:  # some publication was taken over from the killed worker
            assert max(s.scalars(select(Publication.attempts).where(Publication.job_id == job_id))) >= 2
    finally:
        stack.stop()
        shop.stop()
        cdn.stop()
        redis.stop()
