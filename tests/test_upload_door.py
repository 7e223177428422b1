"""Issue 17 item 8: the upload door stores each photo's bytes as they arrive and decodes none of
them: it sniffs the type and reads the header at once (a non-image, or one over the pixel limit,
is still a 422 at once), and the cut-out task decodes, failing a photo corrupt past its header."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from product_studio import imaging, runtime
from product_studio.errors import BadInput
from product_studio.jobs import units
from product_studio.models import Asset, Job
from tests.web_helpers import fresh_app

MIB = 1024 * 1024


def _jpeg(side: int, seed: int, orientation: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1),
                    np.full((side, side), seed * 7 % 256, np.float32)], -1)
    rgb[: side // 2] += rng.normal(0, 4, (side // 2, side, 3)).astype(np.float32)
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if orientation != 1:
        im = im.resize((side, side // 2))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture
def web(monkeypatch, tmp_path):
    app, key = fresh_app(monkeypatch, tmp_path)
    return TestClient(app, base_url="https://testserver"), {"Authorization": f"Bearer {key}"}


def test_the_door_decodes_nothing_and_holds_one_upload_at_a_time(web, monkeypatch):
    client, auth = web
    photos = [_jpeg(1200, i) for i in range(12)]  # 4.1 MiB each decoded: 50 MiB held before
    decoded = []
    real = imaging.decode_image
    monkeypatch.setattr(imaging, "decode_image", lambda *a, **k: decoded.append(1) or real(*a, **k))
    monkeypatch.setattr("product_studio.pipeline.ingest.decode_image", imaging.decode_image)
    warm = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"},  # imports, first queries
                       files=[("files", ("warm.jpg", _jpeg(300, 99), "image/jpeg"))])
    assert warm.status_code == 202, warm.text
    files = [("files", (f"p{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    tracemalloc.start()
    try:
        r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"}, files=files)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 202, r.text
    assert decoded == [], "the web process decoded an upload"
    body = sum(map(len, photos))
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB for a {body / MIB:.1f} MiB upload"
    with runtime.database().session() as s:
        assets = s.get_one(Job, r.json()["id"]).assets
        assert [(a.name, a.width, a.height) for a in assets] == [(f"p{i}", 1200, 1200) for i in range(12)]
        assert all(runtime.store().get(a.source_key) == data for a, data in zip(assets, photos, strict=True))


def test_a_non_image_or_too_many_pixels_is_refused_at_once(web, monkeypatch):
    client, auth = web
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"},
                    files=[("files", ("ok.jpg", _jpeg(300, 1), "image/jpeg")),
                           ("files", ("page.jpg", b"<html>not a photo</html>", "image/jpeg"))])
    assert r.status_code == 422 and "page.jpg" in r.json()["error"] and "HTML" in r.json()["error"]
    monkeypatch.setenv("PRODUCT_STUDIO_MAX_INPUT_PIXELS", "40000")
    from product_studio import config

    config.get_settings.cache_clear()
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"},
                    files=[("files", ("big.jpg", _jpeg(300, 2), "image/jpeg"))])
    assert r.status_code == 422 and "0.04 MP limit" in r.json()["error"]


def test_upright_size_comes_from_the_header(web):
    client, auth = web
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"},
                    files=[("files", ("turned.jpg", _jpeg(400, 3, orientation=6), "image/jpeg"))])
    assert r.status_code == 202, r.text
    with runtime.database().session() as s:
        asset = s.get_one(Job, r.json()["id"]).assets[0]
        assert (asset.width, asset.height) == (200, 400)  # stored 400x200, turned a quarter


def test_a_photo_corrupt_past_its_header_fails_in_the_worker(web):
    client, auth = web
    good, bad = _jpeg(400, 4), _jpeg(400, 5)
    r = client.post("/api/v1/jobs", headers=auth, data={"targets": "ebay"},
                    files=[("files", ("good.jpg", good, "image/jpeg")),
                           ("files", ("cut.jpg", bad[: len(bad) // 2], "image/jpeg"))])
    assert r.status_code == 202, r.text  # the header is fine: the door cannot tell
    job_id = r.json()["id"]
    with runtime.database().session() as s:
        good_id, bad_id = (a.id for a in s.get_one(Job, job_id).assets)
    with pytest.raises(BadInput, match="corrupt") as failed:
        units.run_cutout(bad_id)
    units.fail(bad_id, str(failed.value), stage="cutout")  # as the cut-out task does
    units.run_cutout(good_id)
    with runtime.database().session() as s:
        assert s.get_one(Asset, good_id).cutout_status == "done"
        assert s.get_one(Asset, bad_id).cutout_status == "failed"
    doc = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json()
    assert "corrupt" in doc["assets"][1]["variants"][0]["error"]
