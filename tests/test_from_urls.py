"""Issue 17 item 8: `POST /api/v1/jobs/from-urls` answers 202 once the job is recorded, before any
URL is fetched; each photo's cut-out task fetches its URL, and one that cannot be fetched fails
its photo with the reason in the job document while the others go on."""

from __future__ import annotations

import http.server
import threading

import pytest
from fastapi.testclient import TestClient

from product_studio import runtime
from product_studio.errors import BadInput
from product_studio.jobs import units
from product_studio.models import Asset, Job
from tests.web_helpers import fresh_app


@pytest.fixture
def photo_server(small_photo):
    """Serves /cup.jpg and /mug.png; anything else is a 404. Counts the requests."""
    photos = {"/cup.jpg": (small_photo(), "image/jpeg"), "/mug.png": (small_photo("PNG", flip=True), "image/png")}
    seen: list[str] = []

    class Photos(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            body, ctype = photos.get(self.path, (b"", ""))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", ctype or "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Photos)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()


@pytest.fixture
def small_photo(coffee_rgb, photo_bytes):
    import numpy as np

    def make(fmt: str = "JPEG", flip: bool = False) -> bytes:
        rgb = coffee_rgb[::2, ::2]
        return photo_bytes(np.ascontiguousarray(rgb[:, ::-1] if flip else rgb), fmt)

    return make


def _cutout(asset_id: str) -> None:
    """The cut-out task as the worker runs it: bad input fails the photo for good."""
    try:
        units.run_cutout(asset_id)
    except BadInput as e:
        units.fail(asset_id, str(e), stage="cutout")


def test_from_urls_answers_before_fetching_and_a_bad_url_fails_only_its_photo(monkeypatch, tmp_path,
                                                                               photo_server):
    base, seen = photo_server
    app, key = fresh_app(monkeypatch, tmp_path, fetch_allow="127.0.0.1")
    client = TestClient(app, base_url="https://testserver")
    auth = {"Authorization": f"Bearer {key}"}
    body = {"image_urls": [f"{base}/cup.jpg", f"{base}/gone.jpg", f"{base}/mug.png"], "targets": ["ebay"],
            "title": "Cup"}
    r = client.post("/api/v1/jobs/from-urls", headers=auth, json=body)
    assert r.status_code == 202, r.text
    assert seen == [], "the door fetched before answering"
    job_id = r.json()["id"]
    assert r.json()["created"] is True
    again = client.post("/api/v1/jobs/from-urls", headers=auth, json=body).json()
    assert again == r.json() | {"created": False} and seen == []  # the same request finds the same job

    with runtime.database().session() as s:
        assets = s.get_one(Job, job_id).assets
        assert [a.name for a in assets] == ["cup", "gone", "mug"]
        assert all(a.source_key == "" and a.source_url for a in assets)
        asset_ids = [a.id for a in assets]
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    assert doc["status"] == "queued" and len(doc["assets"]) == 3

    for asset_id in asset_ids:
        _cutout(asset_id)
    assert sorted(seen) == ["/cup.jpg", "/gone.jpg", "/mug.png"]
    with runtime.database().session() as s:
        cup, gone, mug = (s.get_one(Asset, a) for a in asset_ids)
        assert cup.source_key.startswith("sources/") and cup.width == 300 and len(cup.sha256) == 64
        assert mug.source_key.endswith(".png") and cup.cutout_status == mug.cutout_status == "done"
        assert gone.cutout_status == "failed" and gone.source_key == ""
        assert runtime.store().exists(cup.source_key)
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    failed = doc["assets"][1]["variants"][0]
    assert failed["status"] == "failed" and "404" in failed["error"], failed
    assert doc["assets"][0]["width"] == 300 and doc["assets"][0]["variants"][0]["status"] == "pending"
