"""The web app in-process: auth on every route, sessions, CSRF, sign-in limits, upload limits,
no stored XSS, the JSON API end to end, and a web process that never imports torch."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
import uvicorn
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from PIL import Image

from product_studio import runtime
from product_studio.models import Asset, Job
from tests.web_helpers import csrf_of, fresh_app, run_job, sign_in

# /files/ links carry their own expiring signature; /logout needs only the CSRF token.
PUBLIC = {"/healthz", "/login", "/logout", "/static/{name}", "/files/{key:path}"}


@pytest.fixture
def small_photo(coffee_rgb, photo_bytes):
    def make(fmt: str = "JPEG", flip: bool = False) -> bytes:
        rgb = coffee_rgb[::2, ::2]
        return photo_bytes(np.ascontiguousarray(rgb[:, ::-1] if flip else rgb), fmt)

    return make


@pytest.fixture
def site(monkeypatch, tmp_path):
    app, key = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")  # the session cookie is Secure
    return app, client, key


def _api(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- auth everywhere ------------------------------------------------------------------------

def all_routes(routes) -> list[APIRoute]:
    """Every route, also inside included routers (which FastAPI keeps as nested objects)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += all_routes(route.original_router.routes)
    return found


def test_every_route_but_health_sign_in_and_webhooks_needs_auth(site):
    app, client, _ = site
    checked = 0
    for route in all_routes(app.routes):
        if route.path in PUBLIC or route.path.startswith("/webhooks/"):
            continue
        path = route.path.replace("{", "").replace("}", "").replace(":path", "")
        for method in route.methods - {"HEAD"}:
            r = client.request(method, path, follow_redirects=False)
            if route.path.startswith("/api/"):
                assert r.status_code == 401, (method, route.path, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer"
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, route.path)
            checked += 1
    assert checked >= 20
    assert client.get("/healthz").json() == {"ok": True}


def test_api_key_works_until_revoked(site):
    _, client, key = site
    assert client.get("/api/v1/jobs", headers=_api(key)).status_code == 200
    assert client.get("/api/v1/jobs", headers=_api(key + "x")).status_code == 401
    assert client.get("/api/v1/jobs", headers=_api("not-a-key")).status_code == 401
    from product_studio.auth import list_keys, revoke_key

    with runtime.database().session() as s:
        record = list_keys(s)[0]
        assert record.last_used_at is not None and record.key_hash != key  # only a hash is stored
        assert revoke_key(s, record.prefix)
    assert client.get("/api/v1/jobs", headers=_api(key)).status_code == 401


def test_session_cookie_is_secure_httponly_and_lax(site):
    _, client, _ = site
    r = sign_in(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=lax" in cookie
    assert client.get("/jobs").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(client.get("/jobs").text)})
    assert client.get("/jobs", follow_redirects=False).status_code == 303


def test_sign_in_redirects_only_within_the_site(site):
    _, client, _ = site
    token = csrf_of(client.get("/login").text)
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        r = client.post("/login", data={"username": "admin", "password": "correct horse battery",
                                         "csrf_token": token, "next": evil}, follow_redirects=False)
        assert r.headers["location"] == "/"
        token = csrf_of(client.get("/login").text)


def test_forms_need_the_sessions_csrf_token(site, small_photo):
    _, client, _ = site
    sign_in(client)
    files = [("files", ("a.jpg", small_photo(), "image/jpeg"))]
    assert client.post("/upload", data={"targets": "ebay"}, files=files).status_code == 403
    other = TestClient(client.app, base_url="https://testserver")
    sign_in(other)
    foreign = csrf_of(other.get("/").text)
    assert client.post("/upload", data={"targets": "ebay", "csrf_token": foreign}, files=files).status_code == 403
    mine = csrf_of(client.get("/").text)
    r = client.post("/upload", data={"targets": "ebay", "csrf_token": mine}, files=files, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    # Signing in needs the token too: no login CSRF.
    fresh = TestClient(client.app, base_url="https://testserver")
    r = fresh.post("/login", data={"username": "admin", "password": "correct horse battery"})
    assert r.status_code == 403


def test_failed_sign_ins_are_rate_limited_per_user(site):
    _, client, _ = site
    for _ in range(5):
        assert sign_in(client, password="wrong password!").status_code == 401
    r = sign_in(client)  # even the right password waits now
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    other = TestClient(client.app, base_url="https://testserver")
    assert sign_in(other, username="nobody", password="whatever!!").status_code == 401  # another name still tries


# --- uploads ----------------------------------------------------------------------------------

def test_upload_limits_count_bytes_and_pixels(monkeypatch, tmp_path, small_photo, photo_bytes):
    app, key = fresh_app(monkeypatch, tmp_path, max_upload_files="2", max_upload_bytes=str(400_000),
                         max_input_pixels=str(200 * 200))
    client = TestClient(app, base_url="https://testserver")
    tiny = photo_bytes(np.full((150, 150, 3), 90, np.uint8), "PNG")
    three = [("files", (f"{i}.png", tiny, "image/png")) for i in range(3)]
    r = client.post("/api/v1/jobs", headers=_api(key), data={"targets": "ebay"}, files=three)
    assert r.status_code == 413 and "limit is 2" in r.json()["error"]
    big = photo_bytes(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8), "PNG")
    r = client.post("/api/v1/jobs", headers=_api(key), data={"targets": "ebay"},
                    files=[("files", ("big.png", big, "image/png"))])
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["error"]
    r = client.post("/api/v1/jobs", headers=_api(key), data={"targets": "ebay"},
                    files=[("files", ("wide.jpg", small_photo(), "image/jpeg"))])  # 200x300 > 200*200 pixels
    assert r.status_code == 422 and "0.04 MP limit" in r.json()["error"]
    with runtime.database().session() as s:
        assert s.query(Job).count() == 0  # nothing half-recorded


def test_body_over_the_limit_is_refused_before_it_is_read(monkeypatch, tmp_path):
    """Content-Length over the limit: 413 at once, without waiting for (or reading) the body."""
    app, key = fresh_app(monkeypatch, tmp_path, max_upload_bytes="1000")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 50000000\r\n\r\n")
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413")
        # Streamed without a length: counted as it arrives.
        client = TestClient(app, base_url="https://testserver")
        r = client.post("/api/v1/jobs", headers=_api(key) | {"Content-Type": "multipart/form-data; boundary=b"},
                        content=iter([b"x" * 600, b"x" * 600]))
        assert r.status_code == 413
    finally:
        server.should_exit = True
        thread.join(10)


def test_uploaded_filenames_are_never_paths(site, small_photo):
    _, client, key = site
    r = client.post("/api/v1/jobs", headers=_api(key), data={"targets": "ebay"},
                    files=[("files", ("../../../etc/passwd.jpg", small_photo(), "image/jpeg")),
                           ("files", ("..\\..\\win.jpg", small_photo(flip=True), "image/jpeg"))])
    assert r.status_code == 202
    job_id = r.json()["id"]
    with runtime.database().session() as s:
        assets = s.get_one(Job, job_id).assets
        assert [a.name for a in assets] == ["passwd", "win"]
        assert all(a.source_key.startswith("sources/") and ".." not in a.source_key for a in assets)
    run_job(job_id)
    for v in client.get(f"/api/v1/jobs/{job_id}/variants", headers=_api(key)).json():
        client.post(f"/api/v1/variants/{v['id']}/approve", headers=_api(key))
    names = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/jobs/{job_id}/approved.zip",
                                                  headers=_api(key)).content)).namelist()
    assert names and all(".." not in n and not n.startswith("/") and "\\" not in n for n in names)


XSS = {"filename": '<img src=x onerror=alert(1)>.jpg', "title": '<script>alert("title")</script>',
       "category": '"><svg onload=alert(2)>'}


def test_no_stored_xss_through_filename_title_or_category(site, small_photo):
    _, client, _ = site
    sign_in(client)
    r = client.post("/upload", data={"targets": "ebay", "title": XSS["title"], "category": XSS["category"],
                                     "csrf_token": csrf_of(client.get("/").text)},
                    files=[("files", (XSS["filename"], small_photo(), "image/jpeg"))], follow_redirects=False)
    job_url = r.headers["location"]
    run_job(job_url.rsplit("/", 1)[1])
    for url in (job_url, f"{job_url}/panel", "/jobs"):
        html = client.get(url).text
        for raw in XSS.values():
            assert raw not in html, (url, raw)
        assert "&lt;script&gt;alert(&#34;title&#34;)&lt;/script&gt;" in html or url == job_url + "/panel"
    html = client.get(job_url).text
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html and "&#34;&gt;&lt;svg onload=alert(2)&gt;" in html
    # And the pages forbid inline scripts outright.
    assert "script-src 'self'" in client.get(job_url).headers["content-security-policy"]


# --- the JSON API, end to end -----------------------------------------------------------------

def test_api_job_review_regenerate_and_downloads(site, small_photo):
    _, client, key = site
    h = _api(key)
    r = client.post("/api/v1/jobs", headers=h, data={"targets": ["ebay", "shopify-square"], "title": "Cup"},
                    files=[("files", ("cup.jpg", small_photo(), "image/jpeg")),
                           ("files", ("cup2.png", small_photo("PNG", flip=True), "image/png"))])
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["created"] and created["status"] == "queued"
    again = client.post("/api/v1/jobs", headers=h, data={"targets": ["ebay", "shopify-square"], "title": "Cup"},
                        files=[("files", ("cup.jpg", small_photo(), "image/jpeg")),
                               ("files", ("cup2.png", small_photo("PNG", flip=True), "image/png"))]).json()
    assert again == created | {"created": False}  # the same photos and parameters: the same job
    job_id = created["id"]

    run_job(job_id)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert job["status"] == "done" and len(job["assets"]) == 2
    variants = client.get(f"/api/v1/jobs/{job_id}/variants", headers=h).json()
    assert len(variants) == 4 and all(v["status"] == "done" and v["check"] == "pass" for v in variants)
    assert all(v["approved"] is None for v in variants)
    nothing = client.get(f"/api/v1/jobs/{job_id}/approved.zip", headers=h)  # not an empty zip that looks fine
    assert nothing.status_code == 409 and "approve some first" in nothing.json()["error"]

    first, second = variants[0]["id"], variants[1]["id"]
    assert client.post(f"/api/v1/variants/{first}/approve", headers=h).json()["approved"] is True
    assert client.post(f"/api/v1/variants/{second}/reject", headers=h).json()["approved"] is False
    one = client.get(f"/api/v1/variants/{first}/download", headers=h)
    assert one.status_code == 200 and one.content[:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(one.content)).size == (1600, 1600)  # ebay
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/jobs/{job_id}/approved.zip", headers=h).content))
    assert len(zf.namelist()) == 1 and zf.read(zf.namelist()[0]) == one.content

    r = client.post(f"/api/v1/variants/{first}/regenerate", headers=h, json={"seed": 7, "scene": "marble"})
    assert r.status_code == 202
    fresh = r.json()
    assert fresh["id"] != first and fresh["seed"] == 7 and fresh["scene"] == "marble" and fresh["status"] == "pending"
    assert client.get(f"/api/v1/jobs/{job_id}", headers=h).json()["status"] == "running"  # reopened
    assert client.post(f"/api/v1/variants/{first}/regenerate", headers=h,
                       json={"seed": 7, "scene": "marble"}).json()["id"] == fresh["id"]  # asked twice: one variant
    run_job(job_id)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=h).json()["status"] == "done"
    assert len(client.get(f"/api/v1/jobs/{job_id}/variants", headers=h).json()) == 5

    listed = client.get("/api/v1/jobs", headers=h).json()
    assert listed[0]["id"] == job_id and listed[0]["progress"]["done"] == 5 and listed[0]["photos"] == 2


def test_api_errors_name_the_problem(site, small_photo):
    _, client, key = site
    h = _api(key)
    r = client.post("/api/v1/jobs", headers=h, data={"targets": "no-such-target"},
                    files=[("files", ("a.jpg", small_photo(), "image/jpeg"))])
    assert r.status_code == 422 and "unknown target 'no-such-target'" in r.json()["error"]
    r = client.post("/api/v1/jobs", headers=h, data={"targets": "ebay"},
                    files=[("files", ("page.jpg", b"<html><body>hi</body></html>", "image/jpeg"))])
    assert r.status_code == 422 and "page.jpg" in r.json()["error"]
    assert client.get("/api/v1/jobs/nope", headers=h).status_code == 404
    assert client.post("/api/v1/variants/nope/approve", headers=h).status_code == 404
    r = client.post("/api/v1/jobs", headers=h, data={"targets": "ebay"},
                    files=[("files", ("a.jpg", small_photo(), "image/jpeg"))])
    pending = client.get(f"/api/v1/jobs/{r.json()['id']}/variants", headers=h).json()[0]["id"]
    r = client.post(f"/api/v1/variants/{pending}/approve", headers=h)
    assert r.status_code == 422 and "only finished variants" in r.json()["error"]
    with runtime.database().session() as s:
        assert s.query(Asset).count() == 1  # the refused uploads recorded nothing


# --- pages --------------------------------------------------------------------------------------

def test_pages_show_progress_gallery_and_review(site, small_photo):
    _, client, _ = site
    sign_in(client)
    token = csrf_of(client.get("/").text)
    r = client.post("/upload", data={"targets": ["ebay", "lifestyle"], "title": "Mug", "csrf_token": token},
                    files=[("files", ("mug.jpg", small_photo(), "image/jpeg"))], follow_redirects=False)
    job_url = r.headers["location"]
    panel = client.get(f"{job_url}/panel")
    assert panel.headers["x-job-final"] == "0" and "0 of 2 done" in panel.text
    run_job(job_url.rsplit("/", 1)[1])
    panel = client.get(f"{job_url}/panel")
    assert panel.headers["x-job-final"] == "1" and "2 of 2 done" in panel.text
    assert panel.text.count("check: pass") == 2
    variant_id = panel.text.split('id="v-', 1)[1].split('"', 1)[0]
    r = client.post(f"/variants/{variant_id}/review", data={"action": "approve", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303
    assert "Download 1 approved (zip)" in client.get(job_url).text
    thumb = client.get(f"/previews/variant/{variant_id}.jpg")
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 480
    assert zipfile.ZipFile(io.BytesIO(client.get(f"{job_url}/approved.zip").content)).namelist()[0].endswith(".jpg")
    assert client.get("/jobs/no-such-job/approved.zip").status_code == 404  # not "nothing approved"
    r = client.post(f"/variants/{variant_id}/regenerate", data={"scene": "wood", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303
    assert "2 of 3 done" in client.get(f"{job_url}/panel").text


def test_keys_page_shows_a_new_key_once(site):
    _, client, _ = site
    sign_in(client)
    r = client.post("/keys", data={"name": "sync <b>", "csrf_token": csrf_of(client.get("/keys").text)})
    new_key = r.text.split('id="new-key" readonly value="', 1)[1].split('"', 1)[0]
    assert new_key.startswith("ps_") and "sync &lt;b&gt;" in r.text
    assert client.get("/api/v1/jobs", headers=_api(new_key)).status_code == 200
    assert new_key not in client.get("/keys").text


def test_status_page_reports_doctor_checks(site):
    _, client, _ = site
    sign_in(client)
    html = client.get("/status").text
    for component in ("cutout model", "database", "broker", "storage"):
        assert component in html


# --- light: no torch in the web process ----------------------------------------------------------

def test_the_web_process_never_imports_torch(tmp_path):
    """Serve every page and an upload in a fresh interpreter; the heavy runtimes stay out of it."""
    script = f"""
import sys, os, json
os.environ["PRODUCT_STUDIO_DATA_DIR"] = {str(tmp_path / "data")!r}
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent.parent)!r})
from tests.web_helpers import fresh_app, sign_in, csrf_of
from fastapi.testclient import TestClient
import numpy as np, io
from PIL import Image
class MP:
    def setenv(self, k, v): os.environ[k] = v
import pathlib
app, key = fresh_app(MP(), pathlib.Path({str(tmp_path)!r}))
c = TestClient(app, base_url="https://testserver")
sign_in(c)
buf = io.BytesIO(); Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(buf, "JPEG")
r = c.post("/upload", data={{"targets": "ebay", "csrf_token": csrf_of(c.get("/").text)}},
           files=[("files", ("a.jpg", buf.getvalue(), "image/jpeg"))], follow_redirects=False)
job = r.headers["location"]
pages = ["/", "/jobs", job, job + "/panel", "/keys", "/status", "/api/v1/openapi.json"]
codes = [c.get(p).status_code for p in pages]
heavy = sorted(m for m in ("torch", "onnxruntime", "rembg", "controlnet_aux", "diffusers", "transformers")
               if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["codes"] == [200] * 7
    assert report["heavy"] == []


def test_api_job_from_image_urls_fetches_only_allowed_addresses(monkeypatch, tmp_path, small_photo):
    import http.server

    from product_studio.errors import BadInput
    from product_studio.jobs import units

    body = small_photo()

    class Photos(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Photos)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/cup.jpg"
    try:
        app, key = fresh_app(monkeypatch, tmp_path)  # no allow-list: loopback is refused
        client = TestClient(app, base_url="https://testserver")
        r = client.post("/api/v1/jobs/from-urls", headers=_api(key), json={"image_urls": [url], "targets": ["ebay"]})
        assert r.status_code == 202, r.text  # recorded; the cut-out task fetches, and refuses loopback
        with runtime.database().session() as s:
            asset_id = s.get_one(Job, r.json()["id"]).assets[0].id
        with pytest.raises(BadInput, match="127.0.0.1"):
            units.run_cutout(asset_id)

        app, key = fresh_app(monkeypatch, tmp_path / "allowed", fetch_allow="127.0.0.1")
        client = TestClient(app, base_url="https://testserver")
        r = client.post("/api/v1/jobs/from-urls", headers=_api(key),
                        json={"image_urls": [url], "targets": ["ebay"], "title": "Cup"})
        assert r.status_code == 202, r.text
        with runtime.database().session() as s:
            asset_id = s.get_one(Job, r.json()["id"]).assets[0].id
        units.run_cutout(asset_id)
        with runtime.database().session() as s:
            asset = s.get_one(Asset, asset_id)
            assert (asset.name, asset.title, asset.width) == ("cup", "Cup", 300)
    finally:
        httpd.shutdown()


def test_callbacks_never_go_to_private_addresses(site, small_photo):
    """A job cannot make the service POST into its own network: refused at submit (422), and
    again at delivery, logged and not retried."""
    _, client, key = site
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "http://localhost/x",
                "file:///etc/passwd"):
        r = client.post("/api/v1/jobs", headers=_api(key), data={"targets": "ebay", "callback_url": url},
                        files=[("files", ("a.jpg", small_photo(), "image/jpeg"))])
        assert r.status_code == 422, (url, r.text)
    from product_studio.jobs import Upload, submit
    from product_studio.jobs.completion import deliver_callback
    from product_studio.models import CallbackAttempt

    job = submit([Upload("a.jpg", small_photo())], targets=["ebay"]).job
    with runtime.database().session() as s:  # as if the name now resolved to a private address
        s.get_one(Job, job.id).callback_url = "http://10.0.0.8/hook"
    run_job(job.id)
    assert deliver_callback(job.id, attempt=1) is True  # settled: no retries
    with runtime.database().session() as s:
        (attempt,) = s.query(CallbackAttempt).all()
        assert not attempt.ok and "private address" in attempt.error


def test_another_title_is_another_job(site, small_photo):
    _, client, key = site
    ids = set()
    for title in ("Red cup", "Red cup", "Blue cup"):
        r = client.post("/api/v1/jobs", headers=_api(key), data={"targets": "lifestyle", "title": title},
                        files=[("files", ("cup.jpg", small_photo(), "image/jpeg"))])
        ids.add(r.json()["id"])
    assert len(ids) == 2
