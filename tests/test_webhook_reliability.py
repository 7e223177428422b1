"""500 deliveries to the real server, across the four platforms: 10% duplicates, 10% bad
signatures (half of them claiming, first, the id of a genuine delivery), 5% image URLs at private
addresses, 5% broken images. Exactly the valid unique deliveries are processed, each once (one
job, one fetch of its image); every other request is recorded with its reason; nothing is lost.

Intake runs on a worker of its own queue (PRODUCT_STUDIO_WEBHOOK_QUEUE=webhooks): the jobs it
creates are not rendered here; tests/test_webhooks.py runs deliveries through to finished jobs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import func, select
from webhook_stack import (
    Loopback,
    Stack,
    b64_hmac,
    bigcommerce_payload,
    generic_headers,
    photo,
    shopify_headers,
    shopify_product,
    woo_headers,
    woo_product,
)

from product_studio.models import Asset, Delivery, Job

PLATFORMS = ("shopify", "woocommerce", "bigcommerce", "generic")
PRIVATE = ("http://10.0.0.5/p.jpg", "http://169.254.169.254/latest/meta-data/", "http://192.168.1.9/p.jpg",
           "http://[::1]/p.jpg", "http://172.16.4.4/p.jpg")


@dataclass
class Request:
    kind: str  # valid, duplicate, forged, private, broken
    platform: str
    claimed: str
    headers: dict[str, str]
    body: bytes
    image: str | None = None  # the image's name on the loopback server (valid and broken ones)
    url: str | None = None
    answer: dict = field(default_factory=dict)
    status: int = 0


def build(i: int, platform: str, url: str, loopback: Loopback, *, forged: bool = False) -> Request:
    """Delivery number i on `platform` for a product whose one image is at `url`."""
    pid = 100000 + i
    if platform == "shopify":
        claimed = f"shopify-{i}"
        body = shopify_product(pid, "2026-11-23T10:00:00Z", [(i, url)])
        headers = shopify_headers(body, claimed, secret="forged" if forged else "shp-new-secret")
    elif platform == "woocommerce":
        claimed = str(50000 + i)
        body = woo_product(pid, "2026-11-23T10:00:00", [(i, url)])
        headers = woo_headers(body, claimed, topic="product.updated", secret="forged" if forged else "woo-secret")
    elif platform == "bigcommerce":
        claimed = hashlib.sha1(b"bc-%d" % i).hexdigest()
        loopback.products[str(pid)] = {"id": pid, "name": f"Mug {i}", "date_modified": "2026-11-23T10:00:00+00:00",
                                       "images": [{"id": i, "url_zoom": url, "is_thumbnail": True}]}
        body = bigcommerce_payload(pid, claimed)
        headers = {"X-Product-Studio-Token": "forged" if forged else "bc-secret"}
    else:
        claimed = f"generic-{i}"
        body = json.dumps({"id": claimed, "product_id": str(pid), "images": [url], "title": f"Mug {i}"}).encode()
        headers = generic_headers(body, secret="forged" if forged else "generic-secret")
    return Request("forged" if forged else "valid", platform, claimed, headers, body, url=url)


def mix(loopback: Loopback) -> tuple[list[Request], list[Request]]:
    """(forgeries to send first, everything else in a shuffled order): 500 requests."""
    rng = random.Random(6)
    valid, other = [], []
    for i in range(350):
        name = f"ok-{i}.jpg"
        r = build(i, PLATFORMS[i % 4], loopback.image(name, photo(i, size=64)), loopback)
        r.image = name
        valid.append(r)
    for r in rng.sample(valid, 50):  # the platform sends it again
        other.append(Request("duplicate", r.platform, r.claimed, r.headers, r.body))
    first = [forged_like(r) for r in rng.sample(valid, 25)]  # genuine ids, wrong secret, sent before them
    for n in range(25):  # forgeries with ids of their own
        other.append(build(1000 + n, PLATFORMS[n % 4], loopback.image(f"forged-{n}.jpg", photo(900 + n, 64)),
                           loopback, forged=True))
    for n in range(25):
        r = build(2000 + n, PLATFORMS[n % 4], PRIVATE[n % len(PRIVATE)], loopback)
        r.kind = "private"
        other.append(r)
    for n in range(25):
        name = f"broken-{n}.jpg"
        data = photo(3000 + n, 64)[:200] if n % 2 else b"<html>not an image</html>"  # cut short / not an image
        r = build(3000 + n, PLATFORMS[n % 4], loopback.image(name, data), loopback)
        r.kind, r.image = "broken", name
        other.append(r)
    rest = valid + other
    rng.shuffle(rest)
    return first, rest


def forged_like(genuine: Request) -> Request:
    """The genuine delivery's claim and body, signed with the wrong secret."""
    headers, body = dict(genuine.headers), genuine.body
    if genuine.platform == "shopify":
        headers["X-Shopify-Hmac-Sha256"] = b64_hmac("forged", body)
    elif genuine.platform == "woocommerce":
        headers["X-WC-Webhook-Signature"] = b64_hmac("forged", body)
    elif genuine.platform == "bigcommerce":
        headers["X-Product-Studio-Token"] = "forged"
    else:
        headers = generic_headers(body, secret="forged")
    return Request("forged", genuine.platform, genuine.claimed, headers, body)


def send(stack: Stack, requests: list[Request], concurrency: int) -> None:
    with httpx.Client(timeout=60) as client:
        def one(r: Request) -> None:
            resp = client.post(f"{stack.base}/webhooks/{r.platform}", content=r.body,
                               headers={"Content-Type": "application/json", **r.headers})
            r.status, r.answer = resp.status_code, resp.json()

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, requests))


@pytest.fixture
def loopback():
    server = Loopback()
    yield server
    server.stop()


def test_500_mixed_deliveries_valid_ones_processed_exactly_once(tmp_path, loopback):
    first, rest = mix(loopback)
    requests = first + rest
    kinds = Counter(r.kind for r in requests)
    assert len(requests) == 500 and kinds == {"valid": 350, "duplicate": 50, "forged": 50, "private": 25,
                                              "broken": 25}
    stack = Stack(tmp_path, loopback, queues="webhooks", extra_env={"PRODUCT_STUDIO_WEBHOOK_QUEUE": "webhooks"})
    try:
        stack.start()
        send(stack, first, 1)  # the forgeries of genuine ids arrive before the genuine deliveries
        send(stack, rest, 16)
        assert Counter((r.kind, r.status) for r in requests) == {
            ("valid", 200): 350, ("duplicate", 200): 50, ("forged", 401): 50, ("private", 200): 25,
            ("broken", 200): 25}
        rows = stack.settled([r.answer["delivery"] for r in requests], timeout=300)
        with stack.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Delivery)) == 500  # one record per request
            jobs = {j.id: j for j in s.scalars(select(Job))}
            shas = dict(s.execute(select(Asset.job_id, Asset.sha256)).all())
    finally:
        stack.stop()

    valid = {(r.platform, r.claimed): r for r in requests if r.kind == "valid"}

    # Valid and unique: processed, once, into a job of its own holding exactly its image.
    processed = [d for d in rows.values() if d.status == "processed"]
    assert {(d.platform, d.claimed_id) for d in processed} == set(valid) and len(processed) == 350
    assert len(jobs) == 350 and {j for d in processed for j in d.job_ids} == set(jobs)
    for d in processed:
        [job_id] = d.job_ids
        assert jobs[job_id].origin == f"webhook:{d.platform}"
        assert shas[job_id] == hashlib.sha256(loopback.images[valid[(d.platform, d.claimed_id)].image]).hexdigest()
    assert all(loopback.fetches[r.image] == 1 for r in valid.values()), "an image was fetched twice"

    # Duplicates: recorded against the first delivery of their id.
    duplicates = [d for d in rows.values() if d.status == "duplicate"]
    assert len(duplicates) == 50
    first_of = {(d.platform, d.claimed_id): d.id for d in processed}
    assert all(d.reason.startswith(f"duplicate of delivery {first_of[(d.platform, d.claimed_id)]}")
               for d in duplicates)

    # Forgeries: rejected with the reason, under keys of their own (the genuine ids stayed free).
    rejected = [d for d in rows.values() if d.status == "rejected"]
    assert len(rejected) == 50 and all(not d.delivery_id == d.claimed_id for d in rejected)
    assert all(d.reason.startswith("bad signature") for d in rejected), {d.reason for d in rejected}
    assert all(d.payload is None and d.job_ids is None for d in rejected)

    # Refused URLs and broken images: failed, with the URL and the reason.
    failed = {d.id: d for d in rows.values() if d.status == "failed"}
    assert len(failed) == 50
    for r in requests:
        if r.kind in ("private", "broken"):
            d = failed[r.answer["delivery"]]
            assert not d.job_ids
            if r.kind == "private":
                assert "refused" in d.reason and r.url.split("/")[2].strip("[]").split(":")[0] in d.reason
            else:
                assert r.image in d.reason, d.reason
    assert Counter(d.status for d in rows.values()) == {"processed": 350, "duplicate": 50, "rejected": 50,
                                                        "failed": 50}
