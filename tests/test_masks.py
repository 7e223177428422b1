"""Touch-up through the JSON API and the task runner: a store's own mask (PUT) or strokes (POST)
become the photo's chosen mask, every variant renders again from it with fresh keys and checks,
approvals are cleared, a later job of the same photo uses it, and restoring a version brings its
files back. Bad masks and strokes get 422 with the reason; work in flight gets 409."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from product_studio import runtime
from product_studio.models import Job
from product_studio.pipeline.export import decode_png
from tests.web_helpers import fresh_app, run_job


def png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def api(monkeypatch, tmp_path, coffee_rgb, photo_bytes):
    """(client, auth headers, job id, asset id) of a finished two-target job of the coffee photo."""
    app, key = fresh_app(monkeypatch, tmp_path)
    client = TestClient(app, base_url="https://testserver")
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": ["ebay", "shopify-square"]},
                    files=[("files", ("coffee.jpg", photo_bytes(coffee_rgb), "image/jpeg"))])
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    run_job(job_id)
    asset_id = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()["assets"][0]["id"]
    return client, auth, job_id, asset_id


def cutout_alpha(asset_id: str) -> np.ndarray:
    with runtime.database().session() as s:
        from product_studio.models import Asset

        key = s.get_one(Asset, asset_id).cutout_key
    return decode_png(runtime.store().get(key))[..., 3]


def test_a_stores_own_mask_replaces_the_models_and_every_variant_follows(api):
    client, auth, job_id, asset_id = api
    before = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    old = {v["id"]: v for v in before["assets"][0]["variants"]}
    first = next(iter(old))
    assert client.post(f"/api/v1/variants/{first}/approve", headers=auth).json()["approved"] is True

    current = client.get(f"/api/v1/assets/{asset_id}/mask", headers=auth)
    assert current.status_code == 200 and current.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(current.content)).size == (600, 400)

    mask = np.zeros((400, 600), np.uint8)
    mask[80:330, 150:450] = 255  # a box where the cup is: clearly not the models' outline
    r = client.put(f"/api/v1/assets/{asset_id}/mask", headers=auth | {"Content-Type": "image/png"}, content=png(mask))
    assert r.status_code == 202, r.text
    assert r.json()["version"] == 1 and r.json()["origin"] == "upload"
    assert sorted(r.json()["variants_queued"]) == sorted(old)

    queued = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    assert queued["status"] == "running" and queued["finished_at"] is None
    assert {v["status"] for v in queued["assets"][0]["variants"]} == {"pending"}
    assert all(v["url"] is None and v["approved"] is None for v in queued["assets"][0]["variants"])
    # Nothing else may start on the photo while it renders again.
    again = client.put(f"/api/v1/assets/{asset_id}/mask", headers=auth | {"Content-Type": "image/png"},
                       content=png(mask))
    assert again.status_code == 409 and "still" in again.json()["error"]

    run_job(job_id)
    after = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    asset = after["assets"][0]
    assert after["status"] == "done" and asset["mask_version"] == 1
    assert asset["needs_review"] is False and asset["confidence"] == 1.0
    assert np.array_equal(cutout_alpha(asset_id), mask)
    for v in asset["variants"]:
        assert v["status"] == "done" and v["check"] and v["approved"] is None  # re-approve the new render
        assert v["url"] != old[v["id"]]["url"]  # a new file: the key follows the mask
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(
        client.get(f"/api/v1/assets/{asset_id}/mask", headers=auth).content))), mask)

    # Restoring the models' cut-out finds the files made from it before (content-addressed).
    r = client.post(f"/api/v1/assets/{asset_id}/mask/restore", headers=auth, json={"version": 0})
    assert r.status_code == 202 and r.json()["version"] == 2
    run_job(job_id)
    restored = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()["assets"][0]
    assert restored["mask_version"] is None
    keys = {v["id"]: v["url"].split("?")[0] for v in restored["variants"]}
    assert keys == {i: v["url"].split("?")[0] for i, v in old.items()}


def test_a_later_job_of_the_same_photo_uses_the_chosen_mask(api, coffee_rgb, photo_bytes):
    client, auth, job_id, asset_id = api
    mask = np.zeros((400, 600), np.uint8)
    mask[100:300, 200:400] = 255
    assert client.put(f"/api/v1/assets/{asset_id}/mask", headers=auth | {"Content-Type": "image/png"},
                      content=png(mask)).status_code == 202
    # The same photo and targets again find the earlier job, which is rendering again from the mask.
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": ["ebay", "shopify-square"]},
                    files=[("files", ("same-photo.jpg", photo_bytes(coffee_rgb), "image/jpeg"))])
    assert r.json()["created"] is False and r.json()["id"] == job_id
    run_job(job_id)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()["assets"][0]["mask_version"] == 1
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": "etsy"},
                    files=[("files", ("same-photo.jpg", photo_bytes(coffee_rgb), "image/jpeg"))])
    run_job(r.json()["id"])
    other = client.get(f"/api/v1/jobs/{r.json()['id']}", headers=auth).json()["assets"][0]
    assert other["mask_version"] == 1 and np.array_equal(cutout_alpha(other["id"]), mask)


def test_strokes_touch_up_the_current_mask(api):
    client, auth, job_id, asset_id = api
    models = cutout_alpha(asset_id)
    # A remove stroke across the middle of the cup, a keep dot in the far corner.
    body = {"strokes": [{"mode": "remove", "radius": 20, "points": [[220, 200], [380, 200]]},
                        {"mode": "keep", "radius": 10, "points": [[20, 20]]}]}
    r = client.post(f"/api/v1/assets/{asset_id}/mask/strokes", headers=auth, json=body)
    assert r.status_code == 202, r.text
    assert r.json()["origin"] == "strokes" and r.json()["version"] == 1
    run_job(job_id)
    alpha = cutout_alpha(asset_id)
    assert alpha[200, 300] == 0 and alpha[20, 20] == 255  # what each stroke touched
    assert models[200, 300] == 255 and models[20, 20] == 0


@pytest.mark.parametrize(("content", "reason"), [
    (b"not a png", "must be a PNG"),
    (png(np.full((400, 599), 255, np.uint8)), "599x400 px; the photo is 600x400"),
    (png(np.zeros((400, 600), np.uint8)), "keeps nothing"),
    (png(np.zeros((400, 600, 4), np.uint8), "RGBA"), "keeps nothing"),  # transparent everywhere
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot be read"),
])
def test_a_bad_mask_is_refused_with_the_reason(api, content, reason):
    client, auth, job_id, asset_id = api
    r = client.put(f"/api/v1/assets/{asset_id}/mask", headers=auth | {"Content-Type": "image/png"}, content=content)
    assert r.status_code == 422 and reason in r.json()["error"], r.text
    with runtime.database().session() as s:
        assert s.get_one(Job, job_id).status == "done"  # nothing was reopened


@pytest.mark.parametrize(("body", "reason"), [
    ({"strokes": []}, "stroke or a box"),
    ({"strokes": [{"mode": "keep", "radius": 5, "points": [[700, 10]]}]}, "outside"),
    ({"strokes": [{"mode": "erase", "radius": 5, "points": [[10, 10]]}]}, "mode"),
    ({"box": [500, 10, 100, 300]}, "box"),
])
def test_bad_strokes_are_refused_with_the_reason(api, body, reason):
    client, auth, job_id, asset_id = api
    r = client.post(f"/api/v1/assets/{asset_id}/mask/strokes", headers=auth, json=body)
    assert r.status_code == 422 and reason in r.json()["error"], r.text


def test_unknown_photos_and_versions(api):
    client, auth, job_id, asset_id = api
    assert client.get("/api/v1/assets/nope/mask", headers=auth).status_code == 404
    assert client.put("/api/v1/assets/nope/mask", headers=auth, content=b"x").status_code == 404
    r = client.post(f"/api/v1/assets/{asset_id}/mask/restore", headers=auth, json={"version": 7})
    assert r.status_code == 422 and "no mask version 7" in r.json()["error"]
    assert client.get(f"/api/v1/assets/{asset_id}/mask").status_code == 401


def test_schemathesis_finds_no_server_error_in_the_mask_routes(api):
    """The mask operations fuzzed from the spec against a real, finished photo (random ids only
    reach the 404 path, which tests/test_openapi.py covers)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    client, auth, job_id, asset_id = api
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", client.app, headers=auth)
    operations = [r.ok() for r in schema.get_all_operations() if "/mask" in r.ok().path]
    assert len(operations) == 4
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.path_parameters["asset_id"] = asset_id
            case.call_and_validate(headers=auth, checks=[not_a_server_error])

        try:
            fuzz()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc


def test_the_touch_up_page_previews_saves_and_restores(api):
    from tests.web_helpers import csrf_of, sign_in

    client, auth, job_id, asset_id = api
    sign_in(client)
    gallery = client.get(f"/jobs/{job_id}").text
    assert f'href="/assets/{asset_id}/touch-up"' in gallery
    page = client.get(f"/assets/{asset_id}/touch-up")
    assert page.status_code == 200 and "needs JavaScript" in page.text and 'id="view"' in page.text
    token = csrf_of(page.text)
    photo = client.get(f"/assets/{asset_id}/photo.jpg")
    assert photo.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(client.get(f"/assets/{asset_id}/mask.png").content)).size == (600, 400)

    edit = {"strokes": [{"mode": "remove", "radius": 20, "points": [[220, 200], [380, 200]]}]}
    url = f"/assets/{asset_id}/mask/preview"
    assert client.post(url, json=edit).status_code == 403  # no CSRF token
    preview = client.post(url, json=edit, headers={"X-CSRF-Token": token})
    assert preview.status_code == 200 and float(preview.headers["X-Refine-Seconds"]) >= 0
    shown = np.asarray(Image.open(io.BytesIO(preview.content)))
    assert shown.shape == (400, 600) and shown[200, 300] == 0
    bad = client.post(url, json={"strokes": [{"mode": "keep", "radius": 5, "points": [[9000, 1]]}]},
                      headers={"X-CSRF-Token": token})
    assert bad.status_code == 422 and "outside" in bad.json()["error"]
    with runtime.database().session() as s:
        assert s.get_one(Job, job_id).status == "done"  # a preview saves nothing

    import json

    saved = client.post(f"/assets/{asset_id}/mask", data={"edit": json.dumps(edit), "csrf_token": token},
                        follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == f"/jobs/{job_id}#a-{asset_id}"
    blocked = client.get(f"/assets/{asset_id}/touch-up").text
    assert 'id="blocked"' in blocked  # rendering again: saving waits
    run_job(job_id)
    assert "your mask v1" in client.get(f"/jobs/{job_id}").text
    history = client.get(f"/assets/{asset_id}/touch-up").text
    assert "v1" in history and "strokes" in history and 'value="0"' in history
    r = client.post(f"/assets/{asset_id}/mask/restore", data={"version": "0", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303
    run_job(job_id)
    assert "your mask" not in client.get(f"/jobs/{job_id}").text


def test_process_and_batch_reruns_use_the_chosen_mask(api, tmp_path, coffee_rgb, photo_bytes):
    """The in-process doors read the same masks: `process`, and `batch`, whose rerun into the same
    folder renders a photo again when its chosen mask changed since (and only then)."""
    from typer.testing import CliRunner

    from product_studio.cli import app

    client, auth, job_id, asset_id = api
    runner = CliRunner(env={"COLUMNS": "200"})
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "coffee.jpg").write_bytes(photo_bytes(coffee_rgb))
    mask = np.zeros((400, 600), np.uint8)
    mask[100:300, 200:400] = 255
    assert client.put(f"/api/v1/assets/{asset_id}/mask", headers=auth | {"Content-Type": "image/png"},
                      content=png(mask)).status_code == 202

    def alpha(path):
        return np.asarray(Image.open(path))[..., 3]

    r = runner.invoke(app, ["process", str(photos / "coffee.jpg"), "-t", "ebay", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert np.array_equal(alpha(tmp_path / "p" / "coffee" / "cutout.png"), mask)

    out = tmp_path / "b"
    r = runner.invoke(app, ["batch", str(photos), "--out", str(out), "-t", "ebay"])
    assert r.exit_code == 0, r.output
    assert np.array_equal(alpha(out / "coffee" / "cutout.png"), mask)
    again = runner.invoke(app, ["batch", str(photos), "--out", str(out), "-t", "ebay"])
    assert again.exit_code == 0 and "1 of 1 image(s) already done" in again.output, again.output
    run_job(job_id)
    assert client.post(f"/api/v1/assets/{asset_id}/mask/restore", headers=auth, json={"version": 0}).status_code == 202
    r = runner.invoke(app, ["batch", str(photos), "--out", str(out), "-t", "ebay"])
    assert r.exit_code == 0, r.output
    assert not np.array_equal(alpha(out / "coffee" / "cutout.png"), mask)  # the models' again


def test_process_on_a_fresh_installation_makes_no_database(monkeypatch, tmp_path, coffee_rgb, photo_bytes):
    from typer.testing import CliRunner

    from product_studio import config
    from product_studio.cli import app

    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PRODUCT_STUDIO_DATABASE_URL", raising=False)
    config.get_settings.cache_clear()
    runtime.reset()
    (tmp_path / "cup.jpg").write_bytes(photo_bytes(coffee_rgb))
    r = CliRunner().invoke(app, ["process", str(tmp_path / "cup.jpg"), "-t", "ebay", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "data" / "product-studio.db").exists()
