"""A newcomer's first hour (issue 15): every message says what to do.

Run as a new user runs them: the installed `product-studio` command in a child process, with the
environment they would have set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("product-studio"))


def run(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}
    full |= {"PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "100", **env}
    return subprocess.run([CLI, *args], env=full, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize(("variable", "value", "accepted"), [
    ("MAX_INPUT_BYTES", "fifty megs", "a size like 50MB or 200 MiB"),
    ("CUTOUT_THREADS", "-1", "greater than or equal to 0"),
    ("SESSION_COOKIE_SECURE", "nah", "valid boolean"),
])
@pytest.mark.parametrize("command", [["process", "missing.jpg"], ["doctor"], ["serve", "--no-worker"]])
def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(tmp_path, variable, value, accepted, command):
    r = run(*command, env={f"PRODUCT_STUDIO_{variable}": value}, tmp_path=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    message = " ".join(r.stderr.split())  # the console may wrap the line
    assert f"PRODUCT_STUDIO_{variable}='{value}'" in message and accepted in message


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("EDGE_DETECTOR", "sobel", "unknown edge detector; choose one of: canny"),
    ("CUTOUT_MODEL", "nosuch", "unknown cut-out model"),
    ("DIFFUSION_KIND", "sd3", "sd15|sdxl"),
    ("DEVICE", "tpu", "cuda"),
    ("STORES_FILE", "/nonexistent/stores.toml", "stores file /nonexistent/stores.toml"),
    ("STORAGE_URL", "s3://bucket?public_endpoint=files.example.com", "public_endpoint must be http(s)://host"),
])
def test_settings_that_name_things_are_checked_at_start(tmp_path, variable, value, said):
    r = run("targets", env={f"PRODUCT_STUDIO_{variable}": value}, tmp_path=tmp_path)
    message = " ".join(r.stderr.split())
    assert r.returncode == 2 and f"PRODUCT_STUDIO_{variable}='{value}'" in message and said in message, message
    assert "Traceback" not in r.stderr


def test_sizes_are_read_as_the_readme_writes_them(monkeypatch):
    from product_studio import config

    for text, size in (("50 MB", 50_000_000), ("200 MiB", 200 * 2**20), ("52428800", 52428800)):
        monkeypatch.setenv("PRODUCT_STUDIO_MAX_INPUT_BYTES", text)
        config.get_settings.cache_clear()
        assert config.get_settings().max_input_bytes == size
    config.get_settings.cache_clear()


@pytest.mark.parametrize("columns", ["60", "80"])
def test_listings_never_cut_a_name_or_id_and_speak_json(tmp_path, columns):
    """What a user reads back or types (target, scene and model names, key ids) is whole at any
    width and when piped; --json gives the same rows to scripts."""
    import json

    from product_studio.presets import TARGETS
    from product_studio.scenes import SCENES

    env = {"COLUMNS": columns}
    shown = run("targets", env=env, tmp_path=tmp_path).stdout
    assert all(name in shown for name in TARGETS) and "…" not in shown
    shown = run("scenes", env=env, tmp_path=tmp_path).stdout
    assert all(name in shown for name in SCENES) and "…" not in shown
    key = run("keys", "create", "catalog-sync", env=env, tmp_path=tmp_path).stdout.strip()
    listed = run("keys", "list", env=env, tmp_path=tmp_path)
    rows = json.loads(run("keys", "list", "--json", env=env, tmp_path=tmp_path).stdout)
    assert len(rows) == 1 and rows[0]["id"] in listed.stdout and key.startswith(rows[0]["key prefix"])
    revoked = run("keys", "revoke", rows[0]["id"], env=env, tmp_path=tmp_path)  # the id as shown is taken
    assert revoked.returncode == 0, revoked.stderr
    for command in (["targets"], ["scenes"], ["models"]):
        doc = json.loads(run(*command, "--json", env=env, tmp_path=tmp_path).stdout)
        assert doc and all(isinstance(row, dict) for row in doc)


def test_exit_codes_mean_what_the_readme_says(tmp_path, coffee_rgb, photo_bytes):
    """2 bad input, 4 a service that may come back (named, its password hidden), 1 only a failed check."""
    from product_studio.batch.journal import STATE_DIR, locked

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cup.jpg").write_bytes(photo_bytes(coffee_rgb))
    assert run("check", "missing.jpg", "-t", "ebay", env={}, tmp_path=tmp_path).returncode == 2
    assert run("process", "missing.jpg", "-t", "ebay", env={}, tmp_path=tmp_path).returncode == 2

    down = {"PRODUCT_STUDIO_BROKER_URL": "redis://:hunter2@127.0.0.1:1/0"}
    for _ in range(2):  # the rerun still names the broker, not a missing worker
        r = run("batch", "photos", "--out", "out", "-t", "ebay", "--via-celery", env=down, tmp_path=tmp_path)
        message = " ".join(r.stderr.split())
        assert r.returncode == 4, r.stdout + r.stderr
        assert "cannot reach the broker redis://:***@127.0.0.1:1/0" in message and "hunter2" not in r.stdout + r.stderr
        assert "unexpected" not in (tmp_path / "out" / "failures.csv").read_text()

    with locked(tmp_path / "busy" / STATE_DIR):
        r = run("batch", "photos", "--out", "busy", "-t", "ebay", env={}, tmp_path=tmp_path)
    assert r.returncode == 4 and "another batch is writing to this folder" in " ".join(r.stderr.split())



@pytest.mark.parametrize("command", [["keys", "list"], ["serve", "--no-worker", "--port", "1"], ["worker"]])
def test_a_database_that_cannot_be_reached_is_one_line_and_exit_4(tmp_path, command):
    """Every command that needs the database, the web door and a worker included: one line naming
    the database (its password hidden) and the setting, exit 4; no traceback, no worker that
    starts only to fail every sweep."""
    down = {"PRODUCT_STUDIO_DATABASE_URL": "postgresql://studio:hunter2@127.0.0.1:1/studio"}
    r = run(*command, env=down, tmp_path=tmp_path)
    message = " ".join(r.stderr.split())
    assert r.returncode == 4, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "hunter2" not in r.stdout + r.stderr
    assert "the database postgresql://studio:***@127.0.0.1:1/studio cannot be reached" in message
    assert "PRODUCT_STUDIO_DATABASE_URL" in message


def test_a_worker_whose_database_goes_away_logs_one_line_a_round(monkeypatch, tmp_path, caplog):
    """The sweeper of a running worker whose database went away: a warning a round, no tracebacks."""
    from product_studio import config, runtime

    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_DATABASE_URL", "postgresql://studio:hunter2@127.0.0.1:1/studio")
    config.get_settings.cache_clear()
    runtime.reset()
    from tasks import sweeper

    try:
        with caplog.at_level("WARNING", logger=sweeper.log.name):
            assert sweeper.sweep_once(60) == 0
    finally:
        config.get_settings.cache_clear()
        runtime.reset()
    records = [r for r in caplog.records if r.name == sweeper.log.name]
    assert len(records) == 1 and records[0].exc_info is None, [r.getMessage() for r in records]
    assert "cannot be reached" in records[0].getMessage() and "hunter2" not in records[0].getMessage()


def test_a_sweep_that_cannot_reach_its_service_does_not_stop_the_others(monkeypatch, caplog):
    """A broker read timing out (an error with no text at all) skips its sweep for the round: the
    next sweep still runs, one warning says why, and the sweeper thread lives on."""
    import socket

    from kombu.exceptions import OperationalError

    from tasks import sweeper

    def times_out(_: float) -> int:
        raise OperationalError(str(socket.timeout()))

    monkeypatch.setattr(sweeper, "SWEEPS", [times_out, lambda _: 3])
    with caplog.at_level("WARNING", logger=sweeper.log.name):
        assert sweeper.sweep_once(60) == 3
    [record] = [r for r in caplog.records if r.name == sweeper.log.name]
    assert "times_out: OperationalError" in record.getMessage() and record.exc_info is None


def test_a_database_that_answers_but_cannot_be_used_is_a_setting_to_fix(tmp_path):
    """Not every database error is an outage: a SQLite file holding someone else's tables is exit 2,
    "cannot be used", with the database's own reason (not exit 4, "cannot be reached")."""
    import sqlite3

    clash = tmp_path / "theirs.db"
    with sqlite3.connect(clash) as conn:
        conn.execute("CREATE TABLE jobs (id TEXT)")
    r = run("keys", "list", env={"PRODUCT_STUDIO_DATABASE_URL": f"sqlite:///{clash}"}, tmp_path=tmp_path)
    message = " ".join(r.stderr.split())
    assert r.returncode == 2 and "cannot be used: table jobs already exists" in message, r.stdout + r.stderr
    assert "Traceback" not in r.stderr

def test_white_background_variants_carry_no_scene_in_their_names(monkeypatch, tmp_path, coffee_rgb, photo_bytes):
    from fastapi.testclient import TestClient

    from tests.web_helpers import fresh_app, run_job, sign_in

    app, key = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": ["ebay", "etsy"], "scene": "marble"},
                    files=[("files", ("coffee.jpg", photo_bytes(coffee_rgb), "image/jpeg"))])
    run_job(r.json()["id"])
    variants = {v["target"]: v for v in client.get(f"/api/v1/jobs/{r.json()['id']}", headers=auth).json()
                ["assets"][0]["variants"]}
    names = {t: client.get(f"/api/v1/variants/{v['id']}/download", headers=auth).headers["content-disposition"]
             for t, v in variants.items()}
    assert 'filename="coffee-ebay-0.jpg"' in names["ebay"]  # nothing of marble is drawn on white
    assert 'filename="coffee-etsy-marble-0.jpg"' in names["etsy"]
    sign_in(client)
    page = client.get(f"/jobs/{r.json()['id']}").text
    assert "white background" in page and "marble · seed 0" in page


def test_the_first_starts_password_file_goes_when_the_password_changes(tmp_path):
    env = {}
    full = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}
    full |= {"PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data")}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env=full, input=stdin, capture_output=True, text=True, timeout=60)

    assert cli("users", "add", "admin", "--password-stdin", stdin="first password 1\n").returncode == 0, env
    stale = tmp_path / "data" / "initial-admin-password"
    stale.write_text("first password 1\n")
    r = cli("users", "password", "admin", "--password-stdin", stdin="a new password 2\n")
    assert r.returncode == 0, r.stderr
    assert not stale.exists()


def test_a_scene_whose_model_is_missing_loses_only_its_target_and_names_the_fix(tmp_path, coffee_rgb):
    from product_studio.config import Settings
    from product_studio.pipeline.ingest import Source
    from product_studio.pipeline.process import process_photo
    from product_studio.presets import get_target

    settings = Settings(data_dir=tmp_path / "data", offline=True, diffusion_model=str(tmp_path / "no-model"),
                        diffusion_controlnet=str(tmp_path / "no-controlnet"))
    source = Source("coffee", coffee_rgb, None, "0" * 64, "JPEG")
    result = process_photo(source, [get_target("amazon-main"), get_target("lifestyle")], tmp_path / "out",
                           scene="ai-studio", settings=settings)
    assert [v.target for v in result.variants] == ["amazon-main"]
    assert (tmp_path / "out" / "coffee" / "amazon-main.jpg").is_file()
    why = str(result.failures["lifestyle"])
    assert result.failures["lifestyle"].exit_code == 3
    assert "PRODUCT_STUDIO_OFFLINE=false" in why and "PRODUCT_STUDIO_DIFFUSION_" in why


def test_errors_name_the_setting_flag_or_command_that_fixes_them(tmp_path, coffee_rgb, photo_bytes):
    (tmp_path / "cup.jpg").write_bytes(photo_bytes(coffee_rgb))
    r = run("process", "cup.jpg", "-t", "lifestyle", "--detector", "hed", "--out", "out", env={}, tmp_path=tmp_path)
    message = " ".join(r.stderr.split())
    assert r.returncode == 3 and "--detector hed:" in message and "PRODUCT_STUDIO_OFFLINE=false" in message
    assert "canny" in message and not (tmp_path / "out").exists()  # no empty folder left behind

    r = run("models", "fetch", "--no-warm", env={"PRODUCT_STUDIO_CUTOUT_MODEL": "isnet-general-use"}, tmp_path=tmp_path)
    message = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 3 and "ready" not in message and "PRODUCT_STUDIO_OFFLINE=false" in message


def test_a_refused_private_address_names_the_setting_that_allows_it():
    from product_studio.config import Settings
    from product_studio.errors import BadInput
    from product_studio.fetch import fetch_image

    with pytest.raises(BadInput, match="PRODUCT_STUDIO_FETCH_ALLOW=10.1.2.3"):
        fetch_image("http://10.1.2.3/cup.jpg", Settings())



def test_the_web_doors_machine_is_not_failed_for_models_only_workers_load(monkeypatch, tmp_path):
    """In the production layout the web door's machine has no models: `doctor --web` and the
    Status page of `serve --no-worker` leave the model checks out instead of failing them (exit 3),
    and still check the services."""
    empty = {"PRODUCT_STUDIO_MODEL_DIR": str(tmp_path / "no-models")}
    assert run("doctor", env=empty, tmp_path=tmp_path).returncode == 3
    r = run("doctor", "--web", env=empty | {"COLUMNS": "200"}, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cutout model" not in r.stdout and "torch" not in r.stdout
    assert all(name in r.stdout for name in ("database", "broker", "storage"))

    from fastapi.testclient import TestClient

    from product_studio.web import pages
    from product_studio.web.app import create_app
    from tests.web_helpers import fresh_app, sign_in

    fresh_app(monkeypatch, tmp_path, model_dir=str(tmp_path / "no-models"))
    pages._status_cache.clear()  # noqa: SLF001
    client = TestClient(create_app(worker_here=False), base_url="https://testserver")
    sign_in(client)
    html = client.get("/status").text
    assert "cutout model" not in html and "database" in html and "storage" in html
    assert "checked where the workers run" in html  # says why the models are not there

def test_doctor_tells_the_truth_quietly(tmp_path):
    """Doctor says the generative scenes would fail when their models cannot be had, lists the
    scenes file's presets as every door offers them, prints no third-party warnings, and notices
    work that no worker takes."""
    import datetime as dt

    scenes = tmp_path / "scenes.toml"
    scenes.write_text('[[scene]]\nname = "shop-teal"\ntitle = "Teal sweep"\nbackend = "studio"\n'
                      'palette = ["#2a9d8f", "#e9f5f3"]\n')
    env = {"PRODUCT_STUDIO_SCENES_FILE": str(scenes), "PRODUCT_STUDIO_DIFFUSION_MODEL": str(tmp_path / "no-model")}
    r = run("doctor", env=env | {"COLUMNS": "400"}, tmp_path=tmp_path)
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 3}
    assert "missing" in lines["scene backend diffusers"] and "would fail" in lines["scene backend diffusers"]
    assert "shop-teal" in lines["scenes"] and "shop-teal" in run("scenes", env=env, tmp_path=tmp_path).stdout
    assert "Warning" not in r.stderr and "warnings.warn" not in r.stderr, r.stderr

    # A job queued ten minutes ago that nothing has touched since: no worker takes the work.
    from product_studio import config, runtime
    from product_studio.db import AssetSpec, create_job
    from product_studio.models import Variant

    os.environ["PRODUCT_STUDIO_DATA_DIR"] = str(tmp_path / "data")
    try:
        config.get_settings.cache_clear()
        runtime.reset()
        with runtime.database().session() as s:
            job, _ = create_job(s, origin="upload", params={"targets": ["ebay"]}, assets=[AssetSpec(
                name="cup", filename="cup.jpg", sha256="1" * 64, source_key="sources/x.jpg", width=9, height=9)])
            for v in job.assets[0].variants:
                s.get_one(Variant, v.id).updated_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    finally:
        del os.environ["PRODUCT_STUDIO_DATA_DIR"]
        config.get_settings.cache_clear()
        runtime.reset()
    r = run("doctor", env={"COLUMNS": "400"}, tmp_path=tmp_path)
    workers = next(line for line in r.stdout.splitlines() if "workers" in line)
    assert "FAIL" in workers and "product-studio worker" in workers and r.returncode == 4


def test_the_status_page_shows_its_frame_before_the_checks(monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from tests.web_helpers import fresh_app, sign_in

    app, _ = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")
    sign_in(client)
    with client.stream("GET", "/status") as r:
        chunks = [c.decode() for c in r.iter_bytes() if c]
    assert "<h1>Status</h1>" in chunks[0] and "cutout model" not in chunks[0]  # the frame first, alone
    page = "".join(chunks)
    assert page.count("<tr>") >= 10 and "workers" in page and page.rstrip().endswith("</html>")


def test_the_api_shows_what_the_pages_show(monkeypatch, tmp_path, coffee_rgb, photo_bytes):
    from fastapi.testclient import TestClient

    from tests.web_helpers import fresh_app, run_job

    app, key = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": ["ebay", "etsy"], "title": "Espresso cup",
                                                        "category": "Kitchen"},
                    files=[("files", ("coffee.jpg", photo_bytes(coffee_rgb), "image/jpeg"))])
    job_id = r.json()["id"]
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    assert doc["progress"] == {"pending": 2, "running": 0, "done": 0, "failed": 0, "total": 2}
    run_job(job_id)
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    asset = doc["assets"][0]
    assert (asset["title"], asset["category"], asset["filename"]) == ("Espresso cup", "Kitchen", "coffee.jpg")
    assert (asset["width"], asset["height"]) == (600, 400)
    assert doc["progress"]["done"] == 2 and doc["approved"] == 0 and doc["origin"] == "api"
    assert doc["params"] == {"targets": ["ebay", "etsy"], "scene": None, "seed": 0}


def test_an_api_jobs_callback_can_be_seen(monkeypatch, tmp_path, coffee_rgb, photo_bytes):
    """A job made through the API with a callback_url shows its callback's attempts in its
    document and on its page, as webhook jobs do on the Deliveries page."""
    import http.server
    import threading

    from fastapi.testclient import TestClient

    from product_studio.jobs.completion import deliver_callback
    from tests.web_helpers import fresh_app, run_job, sign_in

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app, key = fresh_app(monkeypatch, tmp_path, fetch_allow="127.0.0.1")
        client = TestClient(app, base_url="https://testserver")
        auth = {"Authorization": f"Bearer {key}"}
        hook = f"http://127.0.0.1:{server.server_port}/done?token=hunter2"
        r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay", "callback_url": hook},
                        files=[("files", ("coffee.jpg", photo_bytes(coffee_rgb), "image/jpeg"))])
        job_id = r.json()["id"]
        run_job(job_id)
        deliver_callback(job_id, attempt=1)
        doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
        assert doc["callbacks"][0]["status_code"] == 500 and not doc["callbacks"][0]["ok"]
        assert "hunter2" not in str(doc) and doc["callback_url"].startswith("http://127.0.0.1")
        sign_in(client)
        page = client.get(f"/jobs/{job_id}").text
        assert 'id="callback-state"' in page and "(500)" in page and "hunter2" not in page
    finally:
        server.shutdown()


def test_megapixels_are_read_as_written_and_the_limit_names_its_setting(monkeypatch, tmp_path):
    from product_studio import config
    from product_studio.config import Settings
    from product_studio.errors import BadInput
    from product_studio.fetch import fetch_image
    from product_studio.pipeline.ingest import load_bytes

    monkeypatch.setenv("PRODUCT_STUDIO_MAX_INPUT_PIXELS", "250 MP")
    config.get_settings.cache_clear()
    assert config.get_settings().max_input_pixels == 250_000_000
    config.get_settings.cache_clear()
    import numpy as np
    from PIL import Image

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(big)
    with pytest.raises(BadInput, match=r"\(0.12 MP\) is over the 0.1 MP limit \(PRODUCT_STUDIO_MAX_INPUT_PIXELS"):
        load_bytes(big.read_bytes(), "big.png", Settings(max_input_pixels=100_000))
    # A cloud metadata address is refused without advice to allow it.
    with pytest.raises(BadInput) as refused:
        fetch_image("http://169.254.169.254/latest/meta-data", Settings())
    assert "FETCH_ALLOW" not in str(refused.value)
