"""Webhook deliveries and callbacks can be seen and retried (issue 15, item 6).

In this process: the real web app receives signed deliveries; their intake runs as the worker's
task runs it (tasks.intake.delivery, eagerly), the job's units and its completion callback as a
worker calls them. The Deliveries page, GET /api/v1/deliveries and `product-studio deliveries`
(the installed command, in a child process) show each delivery, its job and its callback attempts;
retries work from the page and the API, and what cannot be retried is a 409 naming why. The
README's own stores.toml example, whose callback host does not resolve, makes and runs its job:
only the callback fails, logged and shown."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from product_studio import runtime
from product_studio.jobs.completion import deliver_callback
from product_studio.models import CallbackAttempt, Delivery, Job
from tests.web_helpers import csrf_of, fresh_app, run_job, sign_in
from tests.webhook_stack import Loopback, generic_headers, photo, shopify_headers, shopify_product

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("product-studio"))


def readme_stores_toml() -> str:
    """The stores.toml example of README's Webhooks section, as written there, but for a quick
    target and no scene (the callback_url, https://acme.example.com/studio-done, is kept)."""
    block = re.search(r"```toml\n(\[\[store\]\].*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert 'callback_url = "https://acme.example.com/studio-done"' in block
    block = re.sub(r"(?m)^targets = .*$", 'targets = ["ebay"]', block)
    return re.sub(r"(?m)^scenes = .*$", "scenes = []", block)


class Receiver(http.server.ThreadingHTTPServer):
    """A completion-callback receiver that answers with the statuses queued in `answers` (then 200)."""

    daemon_threads = True

    def __init__(self):
        self.answers: list[int] = []
        self.received: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(outer.answers.pop(0) if outer.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/done"


@pytest.fixture
def servers():
    cdn, receiver = Loopback(), Receiver()
    yield cdn, receiver
    cdn.stop()
    receiver.shutdown()
    receiver.server_close()


@pytest.fixture
def site(monkeypatch, tmp_path):
    stores_file = tmp_path / "stores.toml"
    stores_file.write_text(readme_stores_toml())
    app, key = fresh_app(monkeypatch, tmp_path, stores_file=str(stores_file), generic_webhook_secret="generic-secret",
                         fetch_allow="127.0.0.1", callback_secret="cb-secret", fetch_timeout="10")
    client = TestClient(app, base_url="https://testserver")  # the session cookie is Secure
    sign_in(client)
    return client, {"Authorization": f"Bearer {key}"}, tmp_path


def run_intake(delivery_id: str) -> Delivery:
    """The worker's intake task, run here; returns the delivery as it settled."""
    from tasks.intake import delivery

    delivery.apply((delivery_id,))
    with runtime.database().session() as s:
        return s.get_one(Delivery, delivery_id, populate_existing=True)


def attempts(job_id: str) -> list[CallbackAttempt]:
    with runtime.database().session() as s:
        return list(s.scalars(select(CallbackAttempt).where(CallbackAttempt.job_id == job_id)
                              .order_by(CallbackAttempt.at)))


def listed(client: TestClient, api: dict, **query) -> dict[str, dict]:
    r = client.get("/api/v1/deliveries", params=query, headers=api)
    assert r.status_code == 200, r.text
    return {d["id"]: d for d in r.json()}


def cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}
    env |= {"PRODUCT_STUDIO_DATA_DIR": str(data), "COLUMNS": "80"}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_an_unresolvable_callback_fails_only_the_callback_and_every_door_shows_it(site, servers):
    client, api, tmp_path = site
    cdn, _ = servers
    body = shopify_product(7001, "2026-11-20T10:00:00Z", [(71, cdn.image("cup.jpg", photo(1)))])
    signed = shopify_headers(body, "wh-7001", secret="new-secret")  # the README's example store's secret
    r = client.post("/webhooks/shopify", content=body, headers={"Content-Type": "application/json", **signed})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    delivery_id = r.json()["delivery"]

    settled = run_intake(delivery_id)
    assert settled.status == "processed", settled.reason  # no up-front check of the store's callback address
    job_id = settled.job_id
    run_job(job_id)
    assert deliver_callback(job_id, attempt=1) is True  # settled: a name that does not exist is not retried
    with runtime.database().session() as s:
        job = s.get_one(Job, job_id)
        assert job.status == "done" and job.store == "acme"
        assert job.callback_url == "https://acme.example.com/studio-done"
    [attempt] = attempts(job_id)
    assert not attempt.ok and "acme.example.com" in (attempt.error or "")

    # The API: newest first, with its job and the failed attempt; a status filter.
    shown = listed(client, api)[delivery_id]
    assert (shown["platform"], shown["store"], shown["topic"], shown["status"]) == (
        "shopify", "acme", "products/update", "processed")
    [job] = shown["jobs"]
    assert job["id"] == job_id and job["status"] == "done" and job["callback"] == "failed"
    [tried] = job["callbacks"]
    assert tried["url"] == "https://acme.example.com/studio-done" and tried["ok"] is False and tried["error"]
    assert shown["retryable"] is True and "callback" in shown["retry"]
    assert delivery_id not in listed(client, api, status="failed")
    assert delivery_id in listed(client, api, status="processed")
    assert client.get("/api/v1/deliveries", params={"status": "nope"}, headers=api).status_code == 422
    assert client.get("/api/v1/deliveries").status_code == 401
    spec = client.get("/api/v1/openapi.json", headers=api).json()
    assert "DeliveryOut" in json.dumps(spec["paths"]["/api/v1/deliveries"]["get"]["responses"]["200"])

    # The page: linked from the nav; the delivery, a link to its job, the attempt and its error.
    html = client.get("/deliveries").text
    assert '<a href="/deliveries">Deliveries</a>' in html
    assert delivery_id in html and f'href="/jobs/{job_id}"' in html and "acme.example.com" in html
    assert 'action="/deliveries/' + delivery_id + '/retry"' in html
    assert delivery_id not in client.get("/deliveries", params={"status": "rejected"}).text

    # The command, at 80 columns: ids whole; --json as the API answers.
    table = cli("deliveries", data=tmp_path / "data")
    assert table.returncode == 0, table.stderr
    assert delivery_id in table.stdout and job_id in table.stdout and "…" not in table.stdout
    docs = json.loads(cli("deliveries", "--json", data=tmp_path / "data").stdout)
    assert docs[0]["id"] == delivery_id and docs[0]["jobs"][0]["callbacks"][0]["ok"] is False


def test_a_failed_delivery_and_a_failed_callback_are_retried(site, servers):
    client, api, _ = site
    cdn, receiver = servers
    url = cdn.url("/img/later.jpg")  # not served yet: the delivery fails
    body = json.dumps({"id": "gen-1", "images": [url], "title": "Cup", "targets": ["ebay"], "scenes": [],
                       "callback_url": receiver.url}).encode()
    r = client.post("/webhooks/generic", content=body, headers={"Content-Type": "application/json",
                                                                **generic_headers(body)})
    assert r.status_code == 200, r.text
    delivery_id = r.json()["delivery"]
    failed = run_intake(delivery_id)
    assert failed.status == "failed" and "404" in failed.reason and failed.payload is not None
    assert listed(client, api, status="failed")[delivery_id]["retry"] == "run its intake again"

    # From the page: a POST form with its CSRF token, then back to the list (post/redirect/get).
    cdn.image("later.jpg", photo(2))
    html = client.get("/deliveries", params={"status": "failed"}).text
    assert client.post(f"/deliveries/{delivery_id}/retry", data={"csrf_token": "forged"}).status_code == 403
    r = client.post(f"/deliveries/{delivery_id}/retry", data={"csrf_token": csrf_of(html), "status": "failed"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/deliveries?status=failed&retried={delivery_id}")
    assert f"Retry of delivery <code>{delivery_id}</code> queued" in client.get(r.headers["location"]).text
    assert client.post(f"/api/v1/deliveries/{delivery_id}/retry", headers=api).status_code == 409  # already going
    done = run_intake(delivery_id)
    assert done.status == "processed" and done.job_id, done.reason
    run_job(done.job_id)

    # The receiver answers 500: the last attempt fails and gives up; the API sends it again.
    receiver.answers = [500]
    assert deliver_callback(done.job_id, attempt=1) is True
    assert listed(client, api)[delivery_id]["jobs"][0]["callback"] == "failed"
    r = client.post(f"/api/v1/deliveries/{delivery_id}/retry", headers=api)
    assert r.status_code == 202, r.text
    assert r.json()["retrying"] == "callbacks" and r.json()["jobs"] == [done.job_id]
    assert r.json()["delivery"]["jobs"][0]["callback"] == "sending"
    assert deliver_callback(done.job_id, attempt=1) is True
    assert [(a.status_code, a.ok) for a in attempts(done.job_id)] == [(500, False), (200, True)]
    assert len(receiver.received) == 2
    shown = listed(client, api)[delivery_id]
    assert shown["jobs"][0]["callback"] == "delivered" and shown["retryable"] is False


def test_what_cannot_be_retried_is_a_409_naming_why(site):
    client, api, tmp_path = site
    body = json.dumps({"id": "gen-2", "images": ["http://127.0.0.1:9/x.jpg"], "targets": ["ebay"]}).encode()
    r = client.post("/webhooks/generic", content=body, headers={"Content-Type": "application/json",
                                                                **generic_headers(body, secret="wrong")})
    assert r.status_code == 401
    forged = r.json()["delivery"]
    r = client.post(f"/api/v1/deliveries/{forged}/retry", headers=api)
    assert r.status_code == 409 and "rejected" in r.json()["error"] and "never verified" in r.json()["error"]
    refused = cli("deliveries", "retry", forged, data=tmp_path / "data")
    assert refused.returncode == 2 and "never verified" in " ".join(refused.stderr.split())

    # A failed delivery whose payload was not kept.
    with runtime.database().session() as s:
        s.add(Delivery(id="f" * 32, platform="shopify", delivery_id="old-1", store="acme", status="failed",
                       reason="an image URL was refused", payload=None))
    r = client.post(f"/api/v1/deliveries/{'f' * 32}/retry", headers=api)
    assert r.status_code == 409 and "payload was not kept" in r.json()["error"]
    assert client.post(f"/api/v1/deliveries/{'0' * 32}/retry", headers=api).status_code == 404

    # What a forger sends is shown, escaped.
    evil = shopify_headers(b"{}", "<b>x</b>", secret="guess") | {"X-Shopify-Topic": "<script>alert(1)</script>"}
    assert client.post("/webhooks/shopify", content=b"{}", headers=evil).status_code == 401

    # The page: no Retry button for either, and a forced POST is refused with the reason.
    html = client.get("/deliveries").text
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert forged in html and f'/deliveries/{forged}/retry' not in html
    r = client.post(f"/deliveries/{forged}/retry", data={"csrf_token": csrf_of(html)},
                    headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 409 and "never verified" in r.text
    rows = listed(client, api)
    assert [rows[forged]["status"], rows["f" * 32]["status"]] == ["rejected", "failed"]
    assert list(rows)[1:3] == ["f" * 32, forged]  # newest first


def test_an_api_caller_still_gets_422_for_a_callback_that_does_not_resolve(site):
    client, api, _ = site
    r = client.post("/api/v1/jobs", headers=api, files=[("files", ("cup.jpg", photo(3), "image/jpeg"))],
                    data={"targets": "ebay", "callback_url": "https://acme.example.com/studio-done"})
    assert r.status_code == 422 and "acme.example.com" in r.json()["error"]
