"""A HEIC photo straight from a phone goes through every door: the API upload, batch (a folder
with .heic files), and the pages' upload (same reader as the API)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.web_helpers import fresh_app, run_job

HEIC = (Path(__file__).parent / "data" / "photo.heic").read_bytes()


def test_heic_through_the_api_and_batch(monkeypatch, tmp_path):
    app, key = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"},
                    files=[("files", ("IMG_4031.HEIC", HEIC, "image/heic"))])
    assert r.status_code == 202, r.text
    run_job(r.json()["id"])
    doc = client.get(f"/api/v1/jobs/{r.json()['id']}", headers=auth).json()
    assert doc["status"] == "done" and doc["assets"][0]["name"] == "IMG_4031"

    from product_studio.cli import app as cli

    photos = tmp_path / "phone"
    photos.mkdir()
    (photos / "IMG_4031.HEIC").write_bytes(HEIC)
    out = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["batch", str(photos), "--out", str(tmp_path / "out"),
                                                         "-t", "ebay"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "out" / "IMG_4031" / "ebay.jpg").is_file()
