"""Issue 13: leak nothing, let no one in.

Each test plants or provokes one kind of fault and checks every door that could show it:
secrets in what is printed, served or written; unsigned webhook bodies that could crash a
receiver; callbacks that a second DNS answer could redirect; form fields and file names that
pages and API must treat alike; and clients that make unbounded work or hold connections.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from product_studio import config, runtime
from tests.test_storage import ACCESS_KEY, BUCKET, SECRET_KEY, s3_endpoint  # noqa: F401 (a fixture)
from tests.web_helpers import fresh_app, sign_in

# --- 1. secrets never shown or written -------------------------------------------------------------

BROKER_PASSWORD = "PLANTED-broker-pw-7f3a"
DATABASE_PASSWORD = "PLANTED-db-pw-19c2"
SIGNING_SECRETS = {"STORAGE_SECRET": "PLANTED-storage-secret-5e1d", "CALLBACK_SECRET": "PLANTED-callback-9a0b",
                   "SESSION_SECRET": "PLANTED-session-3c7e", "GENERIC_WEBHOOK_SECRET": "PLANTED-generic-hook-4d2f"}


def _leaks(text: str, secrets: list[str]) -> list[str]:
    """The planted secrets found in `text`, as written or percent-encoded."""
    return [s for s in secrets if s in text or quote(s, safe="") in text]


def _everything_under(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_no_output_shows_a_planted_secret(monkeypatch, tmp_path, caplog, coffee_rgb, photo_bytes):
    """doctor's table, the web Status page (doctor in a child process), and a batch's printed
    summary and every file it writes (summary.json quotes the broker when no worker answers),
    with credentials planted in the broker URL, the database URL and every signing secret."""
    caplog.set_level("DEBUG")
    env = {"BROKER_URL": f"filesystem://ops:{BROKER_PASSWORD}@localhost/",
           # trust auth ignores the password; with no server the check fails, and says why
           "DATABASE_URL": f"postgresql+psycopg://ps:{DATABASE_PASSWORD}@127.0.0.1:5432/test?connect_timeout=3",
           **SIGNING_SECRETS}
    secrets = [BROKER_PASSWORD, DATABASE_PASSWORD, *SIGNING_SECRETS.values()]
    # The web app runs on its own SQLite database (the planted Postgres URL may have no server).
    app, _ = fresh_app(monkeypatch, tmp_path, **{k: v for k, v in env.items() if k != "DATABASE_URL"})
    client = TestClient(app, base_url="https://testserver")
    sign_in(client)
    monkeypatch.setenv("PRODUCT_STUDIO_DATABASE_URL", env["DATABASE_URL"])
    page = client.get("/status")
    assert page.status_code == 200 and "broker" in page.text
    assert "filesystem://ops:***@localhost/" in page.text  # it still says where the broker is

    from product_studio.cli import app as cli

    config.get_settings.cache_clear()
    runtime.reset()
    runner = CliRunner()
    doctor = runner.invoke(cli, ["doctor"], env={"COLUMNS": "400"})
    assert "broker" in doctor.output and "database" in doctor.output, doctor.output

    # batch --via-celery on its own SQLite: no worker ever answers, so it stops and says which broker.
    monkeypatch.delenv("PRODUCT_STUDIO_DATABASE_URL")
    config.get_settings.cache_clear()
    runtime.reset()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cup.jpg").write_bytes(photo_bytes(np.ascontiguousarray(coffee_rgb[::4, ::4])))
    out = tmp_path / "out"
    batch = runner.invoke(cli, ["batch", str(photos), "--out", str(out), "-t", "ebay", "--via-celery",
                                "--worker-timeout", "1"], env={"COLUMNS": "400"})
    assert batch.exit_code == 4, batch.output
    summary = json.loads((out / "summary.json").read_text())
    assert "no Celery worker" in summary["error"] and "filesystem://ops:***@localhost/" in summary["error"]

    outputs = {"status page": page.text, "doctor": doctor.output, "batch output": batch.output,
               "batch files": _everything_under(out), "logs": caplog.text}
    assert {name: _leaks(text, secrets) for name, text in outputs.items() if _leaks(text, secrets)} == {}


@pytest.mark.service
@pytest.mark.slow
def test_doctor_hides_the_storage_urls_secret_key(monkeypatch, tmp_path, s3_endpoint):
    """An s3:// storage URL may carry `secret_key=` (and `access_key=`): doctor says where the
    bucket is, never the key, on a real S3 server (SeaweedFS)."""
    url = (f"s3://{BUCKET}/doctor?endpoint={s3_endpoint}&access_key={quote(ACCESS_KEY, safe='')}"
           f"&secret_key={quote(SECRET_KEY, safe='')}")
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_STORAGE_URL", url)
    config.get_settings.cache_clear()
    runtime.reset()
    from product_studio.doctor import run_checks

    storage = next(c for c in run_checks(config.get_settings()) if c.name == "storage")
    assert storage.status == "ok" and f"s3://{BUCKET}/doctor?endpoint=" in storage.detail, storage
    assert "secret_key=***" in storage.detail
    assert _leaks(storage.detail, [SECRET_KEY]) == []


def test_redact_masks_url_passwords_and_credential_parameters():
    from product_studio.redact import redact, redact_url

    assert redact_url("redis://:p%40ss@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("amqp://guest:guest@mq:5672//") == "amqp://guest:***@mq:5672//"
    assert redact_url("s3://b/p?endpoint=http://h:1&secret_key=a%2Bb&region=x") == \
        "s3://b/p?endpoint=http://h:1&secret_key=***&region=x"
    assert redact_url("https://cdn.example/a.jpg?X-Amz-Signature=abc&w=1") == \
        "https://cdn.example/a.jpg?X-Amz-Signature=***&w=1"
    assert redact_url("/var/lib/blobs") == "/var/lib/blobs"
    text = "Error: cannot reach amqp://bob:hunter2-x@mq// (key hunter2-x, signing abcdef123)"
    assert redact(text, ["abcdef123"]) == "Error: cannot reach amqp://bob:***@mq// (key hunter2-x, signing ***)"


# --- 2. no webhook body, signed or not, makes a receiver answer 5xx -------------------------------

HOOK_SECRETS = {"SHOPIFY_WEBHOOK_SECRET": "fz-shopify", "WOOCOMMERCE_WEBHOOK_SECRET": "fz-woo",
                "BIGCOMMERCE_WEBHOOK_SECRET": "fz-bigcommerce", "BIGCOMMERCE_API_TOKEN": "fz-bc-api",
                "GENERIC_WEBHOOK_SECRET": "fz-generic"}
HOSTILE_BODIES = [b"[" * 100_000, b'{"a":' * 50_000, b'{"id": "x", "images": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
                  b"1" * 5_000, b'{"id": ' + b"9" * 5_000 + b"}", b"\xff\xfe\x00bad utf-8", b"", b"null", b"[1, 2]",
                  b'{"producer": "stores/abc", "scope": "store/product/updated", "hash": {"a": [[[]]]}}',
                  b'{"id": {"deep": ' + b"[" * 300 + b"]" * 300 + b"}, \"images\": [\"http://x/y.jpg\"]}",
                  b'"' + b"\\u0000" * 1000 + b'"', b"NaN", b"webhook_id=12", b'{"id": "\xed\xa0\x80"}']


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    """The app in-process with one store per platform; 500s are answered, not raised."""
    with pytest.MonkeyPatch.context() as mp:
        # Hundreds of rejected requests from one address: past the per-address limit they would
        # be 429 (tests/test_gc.py tests that limit).
        app, _ = fresh_app(mp, tmp_path_factory.mktemp("hooks"), **HOOK_SECRETS,
                           WEBHOOK_REJECTED_RATE_LIMIT="1000000/minute")
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client


def _signed(platform: str, body: bytes) -> dict[str, str]:
    from tests.webhook_stack import b64_hmac, generic_headers

    if platform == "shopify":
        return {"X-Shopify-Hmac-Sha256": b64_hmac("fz-shopify", body), "X-Shopify-Topic": "products/update",
                "X-Shopify-Webhook-Id": "fz"}
    if platform == "woocommerce":
        return {"X-WC-Webhook-Signature": b64_hmac("fz-woo", body), "X-WC-Webhook-Topic": "product.updated",
                "X-WC-Webhook-Delivery-ID": "fz"}
    if platform == "bigcommerce":
        return {"X-Product-Studio-Token": "fz-bigcommerce"}
    return generic_headers(body, secret="fz-generic")


def _post_hook(client: TestClient, platform: str, body: bytes, signed: bool):
    headers = _signed(platform, body) if signed else {"X-Shopify-Topic": "products/update",
                                                      "X-Product-Studio-Signature": "t=1,v1=00"}
    return client.post(f"/webhooks/{platform}", content=body, headers=headers | {"Content-Type": "application/json"})


@pytest.mark.parametrize("platform", ["shopify", "woocommerce", "bigcommerce", "generic"])
@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=lambda b: repr(b[:12]))
def test_hostile_webhook_bodies_never_get_a_5xx(hooks, platform, body):
    """Unsigned: refused (401) before the body is parsed. Signed: a body that does not parse is
    400 (or, for the platforms whose door does not parse, accepted for intake to judge)."""
    unsigned = _post_hook(hooks, platform, body, signed=False)
    if platform == "woocommerce" and body == b"webhook_id=12":  # WooCommerce's unsigned creation ping
        assert unsigned.json() == {"ok": True, "ping": "12"}
    else:
        assert unsigned.status_code == 401 and unsigned.json()["status"] == "rejected", unsigned.text
    signed = _post_hook(hooks, platform, body, signed=True)
    assert signed.status_code < 500, (signed.status_code, signed.text)
    if platform in ("bigcommerce", "generic") and signed.status_code == 400:
        assert signed.json()["status"] == "rejected"


def test_random_webhook_bodies_never_get_a_5xx(hooks):
    """Random bytes and random JSON documents, signed and not, at every receiver."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                               lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                               max_leaves=20)
    as_json = json_values.map(lambda v: json.dumps(v).encode())
    documents = st.fixed_dictionaries({}, optional={
        "id": json_values, "images": json_values, "producer": st.sampled_from(["stores/abc", "x", ""]) | json_values,
        "scope": st.sampled_from(["store/product/updated", "x"]) | json_values, "hash": json_values,
        "targets": json_values, "scenes": json_values, "callback_url": json_values, "updated_at": json_values,
    }).map(lambda v: json.dumps(v).encode())

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(platform=st.sampled_from(["shopify", "woocommerce", "bigcommerce", "generic"]), signed=st.booleans(),
           body=st.binary(max_size=300) | as_json | documents)
    def check(platform, signed, body):
        r = _post_hook(hooks, platform, body, signed)
        assert r.status_code < 500, (platform, signed, body[:200], r.status_code, r.text)

    check()


def test_bigcommerce_token_must_belong_to_the_store_the_payload_names(monkeypatch, tmp_path):
    """BigCommerce names its store only in the payload: the token is checked against every
    BigCommerce store first, then the payload must name a store that token belongs to."""
    from tests.webhook_stack import bigcommerce_payload

    stores_file = tmp_path / "stores.toml"
    stores_file.write_text("".join(f'[[store]]\nname = "{n}"\nplatform = "bigcommerce"\nsource = "{n}-hash"\n'
                                   f'secrets = ["{n}-token"]\ntargets = ["ebay"]\napi_token = "t"\n\n'
                                   for n in ("north", "south")))
    app, _ = fresh_app(monkeypatch, tmp_path, STORES_FILE=str(stores_file))
    client = TestClient(app)
    post = lambda token, store: client.post(  # noqa: E731
        "/webhooks/bigcommerce", content=bigcommerce_payload(7, f"h-{token}-{store}", store_hash=f"{store}-hash"),
        headers={"X-Product-Studio-Token": f"{token}-token"})
    assert post("north", "north").json()["status"] == "accepted"
    assert post("south", "south").json()["status"] == "accepted"
    crossed = post("north", "south")
    assert crossed.status_code == 401 and "this token is not for" in crossed.json()["reason"]
    assert post("west", "north").status_code == 401


# --- 5. every door validates the same way; 6. regenerations are capped ---------------------------

UNICODE_NAME = "ünïcødé 商品 .jpg"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, coffee_rgb_module):
    """One finished job (two targets) of a photo with a non-Latin-1 name, on an app whose
    regeneration caps are small: 3 per photo and target, 5 per job, a minute."""
    from tests.web_helpers import run_job

    with pytest.MonkeyPatch.context() as mp:
        app, key = fresh_app(mp, tmp_path_factory.mktemp("studio"), REGENERATE_LIMIT_PER_VARIANT="3/minute",
                             REGENERATE_LIMIT_PER_JOB="5/minute")
        client = TestClient(app, base_url="https://testserver")
        api = {"Authorization": f"Bearer {key}"}
        photo = _jpeg(coffee_rgb_module[::4, ::4])
        r = client.post("/api/v1/jobs", headers=api, files=[("files", (UNICODE_NAME, photo, "image/jpeg"))],
                        data={"targets": ["ebay", "shopify-square"]})
        assert r.status_code == 202, r.text
        run_job(r.json()["id"])
        variants = client.get(f"/api/v1/jobs/{r.json()['id']}/variants", headers=api).json()
        assert [v["status"] for v in variants] == ["done", "done"], variants
        sign_in(client)
        yield client, api, [v["id"] for v in variants]


@pytest.fixture(scope="module")
def coffee_rgb_module():
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def _jpeg(rgb) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_non_latin1_photo_names_download_with_an_ascii_fallback_and_filename_star(studio):
    """RFC 6266 / RFC 8187: the name reaches every client, from the API and from the pages."""
    from urllib.parse import unquote

    client, api, (variant, _) = studio
    for url, headers in ((f"/api/v1/variants/{variant}/download", api), (f"/variants/{variant}/download", {})):
        r = client.get(url, headers=headers)
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", (url, r.status_code, r.text[:200])
        disposition = r.headers["content-disposition"]
        assert disposition.isascii()
        fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
        assert fallback.startswith("unic_de_") and fallback.endswith(".jpg"), disposition
        star = unquote(disposition.split("filename*=UTF-8''", 1)[1])
        assert star.startswith("ünïcødé") and "商品" in star and star.endswith(".jpg"), disposition


@pytest.mark.parametrize("seed", ["²", "١٢", "12", " 7 ", "-1", "4294967296", "1e3", "0x10", "seven", "9" * 5000])
def test_a_seed_is_accepted_or_refused_alike_by_page_and_api(monkeypatch, seed):
    """Pages validate a regeneration with the API's own model: the same verdict, never a 500.
    (Checked on a validator alone, so no regeneration is counted against the caps below.)"""
    from pydantic import ValidationError

    from product_studio.web.pages import form_model
    from product_studio.web.schemas import Regenerate

    try:
        api_ok = Regenerate.model_validate_json(json.dumps({"seed": seed})).seed
    except ValidationError:
        api_ok = None
    try:
        page_ok = form_model(Regenerate, seed=seed.strip() or None).seed
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "status_code", None) == 422, exc
        page_ok = None
    assert page_ok == api_ok


def test_page_regenerate_with_a_bad_seed_is_422_never_500(studio):
    from tests.web_helpers import csrf_of

    client, _, (_, variant) = studio
    token = csrf_of(client.get("/jobs").text)
    for seed in ("²", "4294967296", "x"):
        r = client.post(f"/variants/{variant}/regenerate", data={"seed": seed, "csrf_token": token},
                        follow_redirects=False)
        assert r.status_code == 422, (seed, r.status_code, r.text[:300])


def test_regenerations_are_capped_per_variant_and_per_job(studio):
    """3 a minute for one photo's target (also through regenerations of regenerations), 5 for the
    job, whichever door asks; the answer is 429 with Retry-After."""
    from tests.web_helpers import csrf_of

    client, api, (first, second) = studio
    answers = []
    current = first
    for _ in range(3):  # a chain: each regenerates the previous one's output
        r = client.post(f"/api/v1/variants/{current}/regenerate", headers=api, json={})
        answers.append(r.status_code)
        if r.status_code == 202:  # the new variant must settle before it can be regenerated
            _settle(r.json()["id"])
            current = r.json()["id"]
    over = client.post(f"/api/v1/variants/{first}/regenerate", headers=api, json={})
    assert answers == [202, 202, 202] and over.status_code == 429, (answers, over.text)
    assert int(over.headers["retry-after"]) >= 1 and "this photo's variant" in over.json()["error"]
    # The other target has its own count, until the job's (5) runs out; the page door counts too.
    token = csrf_of(client.get("/jobs").text)
    page = [client.post(f"/variants/{second}/regenerate", data={"csrf_token": token}, follow_redirects=False)
            .status_code for _ in range(3)]
    assert page == [303, 303, 429], page
    assert "this job" in client.post(f"/api/v1/variants/{second}/regenerate", headers=api, json={}).json()["error"]


def _settle(variant_id: str) -> None:
    """Render one new variant here, as a worker would."""
    from product_studio.jobs import units

    units.run_variant(variant_id)


# --- 6. stalled clients are dropped ----------------------------------------------------------------

@contextmanager
def _serving(monkeypatch, tmp_path, **env: str):
    """The app under uvicorn as `serve` runs it (web/server.py's options), in a thread; yields
    its port."""
    import threading
    import time

    import uvicorn

    from product_studio.web.server import uvicorn_options

    app, _ = fresh_app(monkeypatch, tmp_path, **env)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           **uvicorn_options(config.get_settings())))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(monkeypatch, tmp_path):
    """Served with a 1 s read timeout and a 200 bytes/s floor."""
    with _serving(monkeypatch, tmp_path, READ_TIMEOUT="1", READ_MIN_RATE="200",
                  GENERIC_WEBHOOK_SECRET="slow-secret") as port:
        yield port


def _dribble(port: int, head: bytes, drip: bytes, limit: float = 6.0) -> tuple[float, bytes]:
    """Send `head`, then `drip` one byte every 0.2 s; the seconds until the server answered or
    closed the connection (`limit` if it never did), and what it sent."""
    import socket
    import time

    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.settimeout(0.2)
        sent = 0
        while time.monotonic() - start < limit:
            try:
                answer = sock.recv(4096)
                return time.monotonic() - start, answer  # b"": closed
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - start, b""
            if drip:
                try:
                    sock.send(drip[sent % len(drip):][:1])
                    sent += 1
                except OSError:
                    return time.monotonic() - start, b""
    return limit, b""


@pytest.mark.slow
def test_clients_sending_a_byte_a_second_are_dropped(served):
    """Headers, a body, or nothing at all, dribbled: each connection is answered 408 and closed
    within about READ_TIMEOUT (1 s) plus a check's tick, not held; a normal request still works."""
    import httpx

    headers_seconds, headers_answer = _dribble(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: a\r\n")
    body_seconds, body_answer = _dribble(
        served, b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n", b'{"id": "slow"}')
    idle_seconds, idle_answer = _dribble(served, b"", b"")
    assert headers_seconds < 3 and headers_answer.startswith(b"HTTP/1.1 408"), (headers_seconds, headers_answer)
    assert body_seconds < 3 and body_answer.startswith(b"HTTP/1.1 408"), (body_seconds, body_answer)
    assert idle_seconds < 3 and idle_answer.startswith(b"HTTP/1.1 408"), (idle_seconds, idle_answer)
    assert httpx.get(f"http://127.0.0.1:{served}/healthz").json() == {"ok": True}
    # A body at a fair pace (40 kB in 1.2 s: over 200 bytes/s) is not a stalled client.
    import time

    def paced():
        for _ in range(6):
            yield b" " * 8000
            time.sleep(0.2)

    r = httpx.post(f"http://127.0.0.1:{served}/webhooks/generic", content=paced(), timeout=10,
                   headers={"Content-Type": "application/json", "Content-Length": "48000"})
    assert r.status_code == 401  # read in full, then judged: not signed


# --- 3. callbacks go to the address that was checked ------------------------------------------------

class _Receiver:
    """An HTTP server on one loopback address that counts the POSTs it gets."""

    def __init__(self, host: str, port: int):
        import http.server
        import threading

        self.posts: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_callback_is_sent_to_the_address_that_was_checked(monkeypatch, tmp_path):
    """DNS rebinding: a resolver stand-in answers the allowed 127.0.0.2 to the first lookup of
    the callback's host and the forbidden 127.0.0.1 to every later one. The POST must go to the
    checked address (one lookup), never to the second answer."""
    import socket

    from product_studio.db import AssetSpec, create_job
    from product_studio.jobs.completion import deliver_callback
    from product_studio.models import Job, JobStatus

    with socket.socket() as probe:  # a port free on both addresses
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    checked, forbidden = _Receiver("127.0.0.2", port), _Receiver("127.0.0.1", port)
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_FETCH_ALLOW", "127.0.0.2")  # an internal receiver, allowed on purpose
    config.get_settings.cache_clear()
    runtime.reset()
    url = f"http://callbacks.example:{port}/done"
    with runtime.database().session() as s:
        job, _ = create_job(s, origin="api", params={"targets": ["ebay"]}, callback_url=url, assets=[
            AssetSpec(name="cup", filename="cup.jpg", sha256="0" * 64, source_key="sources/x.jpg", width=9, height=9)])
        job.status = JobStatus.DONE
        job_id = job.id

    real, lookups = socket.getaddrinfo, []

    def resolver(host, port, *args, **kwargs):
        if host != "callbacks.example":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.2" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    try:
        assert deliver_callback(job_id, 1, config.get_settings()) is True
    finally:
        checked.close()
        forbidden.close()
    assert (len(checked.posts), len(forbidden.posts), len(lookups)) == (1, 0, 1)
    assert json.loads(checked.posts[0])["job"]["id"] == job_id
    with runtime.database().session() as s:
        assert [a.status_code for a in s.get_one(Job, job_id).callbacks] == [204]


# --- 4. sessions end at sign-out and password changes; the sign-in limit cannot be dodged ----------

def test_a_session_cookie_copied_before_sign_out_stops_working(monkeypatch, tmp_path):
    from tests.web_helpers import csrf_of

    app, _ = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")
    assert sign_in(client).status_code == 303
    token = csrf_of(client.get("/keys").text)
    copied = client.cookies.get("ps_session")
    client.post("/logout", data={"csrf_token": token})
    thief = TestClient(app, base_url="https://testserver", cookies={"ps_session": copied})
    assert thief.get("/keys", follow_redirects=False).status_code == 303
    made = thief.post("/keys", data={"name": "after-sign-out", "csrf_token": token}, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"].startswith("/login")
    from product_studio.auth import list_keys

    with runtime.database().session() as s:
        assert "after-sign-out" not in [k.name for k in list_keys(s)]
    assert sign_in(client).status_code == 303 and client.get("/keys").status_code == 200  # a new sign-in works


def test_a_password_change_ends_every_session(monkeypatch, tmp_path):
    from product_studio.auth import set_password
    from tests.web_helpers import PASSWORD

    app, _ = fresh_app(monkeypatch, tmp_path)
    phone, laptop = (TestClient(app, base_url="https://testserver") for _ in range(2))
    assert sign_in(phone).status_code == sign_in(laptop).status_code == 303
    with runtime.database().session() as s:  # what `product-studio users password admin` does
        set_password(s, "admin", PASSWORD + " v2")
    assert phone.get("/jobs", follow_redirects=False).status_code == 303
    assert laptop.get("/jobs", follow_redirects=False).status_code == 303
    assert sign_in(phone, password=PASSWORD + " v2").status_code == 303


def test_forged_forwarded_addresses_do_not_dodge_the_sign_in_limit(monkeypatch, tmp_path):
    """Thirty wrong passwords, each claiming another X-Forwarded-For, from loopback (which
    uvicorn on its own trusts): limited after five, and then even the right password waits."""
    import httpx

    from tests.web_helpers import PASSWORD, csrf_of

    with _serving(monkeypatch, tmp_path, SESSION_COOKIE_SECURE="false", LOGIN_CLIENT_RATE_LIMIT="8/minute") as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            token = csrf_of(client.get("/login").text)

            def attempt(password: str, n: int, username: str = "admin") -> int:
                return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                                   headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code

            answers = [attempt("wrong password!", n) for n in range(30)]
            assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}, answers
            assert attempt(PASSWORD, 99) == 429
            # Other usernames, still claiming other addresses: the real address (loopback) has
            # used 5 of its 8, so 3 more tries and no more.
            others = [attempt("wrong password!", 100 + n, f"user{n}") for n in range(5)]
            assert others == [401, 401, 401, 429, 429], others
