"""Cut-out confidence and "needs review": the score itself, and a photo marked for review showing
so in every door (process, batch manifest and summary, the API's job document, the completion
callback, the gallery's badge and filter); enlargement warnings in the same places.

The photo that needs review is real pipeline input, not a forced flag: an opaque colour ramp that
fills the frame (from the public bug reports' `full_frame.png`), where there is no background to
remove, so the models' guesses disagree and the cut-out keeps a fragment."""

from __future__ import annotations

import csv
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from product_studio import runtime
from product_studio.config import Settings
from product_studio.jobs.completion import deliver_callback
from product_studio.models import Job
from product_studio.pipeline.confidence import (
    GIVEN_ALPHA,
    MIN_COVERAGE,
    assess,
    given_alpha,
)
from product_studio.pipeline.ingest import load_bytes
from product_studio.pipeline.process import process_photo
from product_studio.presets import get_target
from tests.web_helpers import fresh_app, run_job, sign_in


def full_frame() -> np.ndarray:
    """800x800 opaque ramp filling the frame: nothing to cut out."""
    yy, xx = np.mgrid[0:800, 0:800]
    ramp = np.zeros((800, 800, 3), np.uint8)
    ramp[..., 0] = xx * 255 // 799
    ramp[..., 1] = 120
    ramp[..., 2] = yy * 255 // 799
    return ramp


@pytest.fixture
def photos(coffee_rgb, photo_bytes):
    """{name: JPEG bytes}: a clear product photo, and one with no background to remove."""
    return {"coffee.jpg": photo_bytes(coffee_rgb), "ramp.jpg": photo_bytes(full_frame())}


# --- the score ---------------------------------------------------------------------------------

def test_agreeing_models_score_high_and_disagreeing_ones_low():
    yy, xx = np.mgrid[0:200, 0:300]
    disc = (((xx - 150) ** 2 + (yy - 100) ** 2) < 60**2).astype(np.float32)
    sure = assess([disc, disc], disc > 0.5)
    noisy = np.clip(disc * 0.55 + 0.3 * np.sin(xx / 3.0) ** 2, 0, 1).astype(np.float32)
    unsure = assess([disc, noisy], (disc + noisy) / 2 >= 0.5)
    assert 0.9 < sure.score <= 1 and not sure.reasons
    assert 0 <= unsure.score < sure.score - 0.15 and unsure.reasons
    assert sure.needs_review(0.87) is False and unsure.needs_review(0.87) is True
    assert "confidence" in unsure.review_reason(0.87) and sure.review_reason(0.87) is None


def test_a_cutout_keeping_almost_nothing_says_so():
    probs = np.zeros((100, 100), np.float32)
    probs[:2, :2] = 1  # a corner fragment
    q = assess([probs, probs], probs >= 0.5)
    assert np.count_nonzero(probs) / probs.size < MIN_COVERAGE
    assert q.score <= 0.05 and "keeps only" in q.reasons[0]


def test_the_photos_own_transparency_is_trusted_unless_it_keeps_almost_everything():
    assert GIVEN_ALPHA.score == 1.0 and not GIVEN_ALPHA.needs_review(0.99)
    disc = np.zeros((100, 100), np.uint8)
    disc[30:70, 30:70] = 255
    assert given_alpha(disc) is GIVEN_ALPHA
    corners = np.full((100, 100), 255, np.uint8)
    corners[0, 0] = corners[-1, -1] = 0  # rounded corners: the backdrop kept whole
    q = given_alpha(corners)
    assert q.needs_review(0.87) and "background to remove" in q.reasons[0]


# --- process -----------------------------------------------------------------------------------

def test_process_marks_the_photo_with_no_background_for_review(tmp_path, photos):
    settings = Settings()
    targets = [get_target("ebay")]
    ramp = process_photo(load_bytes(photos["ramp.jpg"], "ramp.jpg"), targets, tmp_path, settings=settings)
    cup = process_photo(load_bytes(photos["coffee.jpg"], "coffee.jpg"), targets, tmp_path, settings=settings)
    assert ramp.review_reason and ramp.quality.score < settings.cutout_review_below
    assert cup.review_reason is None and cup.quality.score >= settings.cutout_review_below


def test_the_process_command_shows_needs_review(tmp_path, photos):
    from typer.testing import CliRunner

    from product_studio.cli import app

    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)
    result = CliRunner().invoke(app, ["process", str(tmp_path / "ramp.jpg"), str(tmp_path / "coffee.jpg"),
                                      "-t", "ebay", "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "cutout" in line]
    assert any("ramp" in line and "needs review" in line for line in lines), result.output
    assert any("coffee" in line and "confidence" in line and "needs review" not in line for line in lines)
    assert "warning: enlarged" in result.output  # 600 px photos on a 1600 px canvas


# --- batch -------------------------------------------------------------------------------------

def test_batch_manifest_and_summary_name_the_photo_to_review(tmp_path, photos):
    from product_studio.batch import BatchOptions, read_source, run_batch

    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in photos.items():
        (folder / name).write_bytes(data)
    summary = run_batch(read_source(str(folder)), tmp_path / "out", BatchOptions(targets=("ebay",)),
                        settings=Settings())
    assert summary.needs_review == 1
    rows = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv", newline="")))
    review = {r["product"]: r["needs_review"] for r in rows}
    assert review["ramp"] and not review["coffee"]
    assert all(0 <= float(r["confidence"]) <= 1 for r in rows)
    assert any(r["target"] == "ebay" and "enlarged" in r["warnings"] for r in rows)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["needs_review"] == 1


# --- API, callback, gallery ----------------------------------------------------------------------

class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802 (the stdlib's name)
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_api_callback_and_gallery_show_the_photo_to_review(monkeypatch, tmp_path, photos):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app, key = fresh_app(monkeypatch, tmp_path, fetch_allow="127.0.0.1")
        client = TestClient(app, base_url="https://testserver")
        hook = f"http://127.0.0.1:{server.server_port}/done"
        r = client.post("/api/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                        data={"targets": "ebay", "callback_url": hook},
                        files=[("files", (n, d, "image/jpeg")) for n, d in photos.items()])
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        run_job(job_id)

        doc = client.get(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
        by_name = {a["name"]: a for a in doc["assets"]}
        assert by_name["ramp"]["needs_review"] is True and by_name["ramp"]["review_reason"]
        assert by_name["coffee"]["needs_review"] is False and by_name["coffee"]["confidence"] > 0.87
        assert "enlarged" in by_name["ramp"]["variants"][0]["warnings"]

        assert deliver_callback(job_id, attempt=1) is True
        sent = json.loads(_Receiver.bodies[-1])["job"]
        assert {a["name"]: a["needs_review"] for a in sent["assets"]} == {"coffee": False, "ramp": True}

        sign_in(client)
        page = client.get(f"/jobs/{job_id}").text
        assert page.count('class="badge review"') == 1 and "Show the 1 photo needing review" in page
        assert "warning: enlarged" in page
        only = client.get(f"/jobs/{job_id}?review=1").text
        assert "ramp.jpg" in only and "coffee.jpg" not in only and "Show all photos" in only
    finally:
        server.shutdown()


def test_the_review_reason_is_kept_with_the_asset(monkeypatch, tmp_path, photos):
    """A Celery-run cut-out stores its quality beside the PNG: a rerun of the stage reads it back."""
    from product_studio.jobs import Upload, submit
    from product_studio.jobs.units import run_cutout

    fresh_app(monkeypatch, tmp_path)
    job = submit([Upload("ramp.jpg", photos["ramp.jpg"])], targets=["ebay"]).job
    asset_id = job.assets[0].id
    run_cutout(asset_id)
    with runtime.database().session() as s:
        asset = s.get_one(Job, job.id).assets[0]
        first = (asset.cutout_confidence, asset.review_reason)
        asset.cutout_status, asset.review_reason = "pending", None
    run_cutout(asset_id)  # the stored cut-out is found; its quality comes from the stored document
    with runtime.database().session() as s:
        asset = s.get_one(Job, job.id).assets[0]
        assert (asset.cutout_confidence, asset.review_reason) == first and first[1]
    assert Path(tmp_path / "data").is_dir()
