"""Issue 13: leak nothing, let no one in.

Each test plants or provokes one kind of fault and checks every door that could show it:
secrets in what is printed, served or written; unsigned webhook bodies that could crash a
receiver; callbacks that a second DNS answer could redirect; form fields and file names that
pages and API must treat alike; and clients that make unbounded work or hold connections.
"""

from __future__ import annotations

import json
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
