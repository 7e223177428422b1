"""`product-studio serve` on the embedded defaults: the whole thing on one machine, no servers."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from webhook_stack import wait_until_serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("PRODUCT_STUDIO_BROKER_URL", None)
    env.pop("PRODUCT_STUDIO_DATABASE_URL", None)
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("product-studio")), "serve", "--port", str(port),
                             "--concurrency", "2"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, tmp_path / "serve.log")
    yield base
    proc.terminate()  # serve stops its own worker
    proc.wait(90)
    deadline = time.time() + 30
    while (left := processes_using(str(tmp_path))) and time.time() < deadline:
        time.sleep(0.5)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "serve left its worker running"


def processes_using(data_dir: str) -> list[int]:
    """Processes whose environment points at this test's data folder."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"PRODUCT_STUDIO_DATA_DIR={data_dir}".encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            pass
    return found


def jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def api_key(tmp_path: Path) -> dict:
    """An API key made with the CLI against the server's data folder, as headers."""
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([str(Path(sys.executable).with_name("product-studio")), "keys", "create", "serve-test"],
                         env=env, capture_output=True, text=True, check=True)
    return {"Authorization": f"Bearer {out.stdout.strip()}"}


def test_upload_runs_in_the_embedded_worker_and_downloads_are_signed(server, tmp_path):
    from skimage import data

    h = api_key(tmp_path)

    files = [("files", ("cup.jpg", jpeg(data.coffee()), "image/jpeg")),
             ("files", ("rocket.jpg", jpeg(data.rocket()), "image/jpeg"))]
    assert httpx.post(f"{server}/api/v1/jobs", files=files, data={"targets": ["ebay"]}).status_code == 401
    r = httpx.post(f"{server}/api/v1/jobs", files=files, data={"targets": ["shopify-square", "lifestyle"]},
                   headers=h, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    again = httpx.post(f"{server}/api/v1/jobs", files=files, data={"targets": ["shopify-square", "lifestyle"]},
                       headers=h)
    assert again.json() == {**r.json(), "created": False, "status": again.json()["status"]}  # found, not redone

    deadline = time.time() + 180
    while time.time() < deadline:
        doc = httpx.get(f"{server}/api/v1/jobs/{job_id}", headers=h).json()
        if doc["status"] in ("done", "partial", "failed"):
            break
        time.sleep(0.5)
    assert doc["status"] == "done", doc
    variants = [v for a in doc["assets"] for v in a["variants"]]
    assert len(variants) == 4 and all(v["check"] == "pass" for v in variants), [v["check"] for v in variants]
    url = variants[0]["url"]
    got = httpx.get(server + url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(got.content)).size in ((2048, 2048), (1080, 1350))
    assert httpx.get(server + url.replace("sig=", "sig=0")).status_code == 403

    bad = httpx.post(f"{server}/api/v1/jobs", files=[("files", ("x.jpg", b"<html>hi</html>", "image/jpeg"))],
                     data={"targets": ["ebay"]}, headers=h)
    assert bad.status_code == 422 and "x.jpg" in bad.json()["error"]
