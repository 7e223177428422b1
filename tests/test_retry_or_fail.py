"""What a retry can fix is retried; what it cannot fails once (issue 17, item 5).

Loading a diffusion model: a hub answering 503 and a file not yet whole (a half-written download)
are TransientError, retried; only a model that is truly absent (no such repository, a path that
does not exist) is ModelUnavailable, permanent. The hub is a local HTTP server standing in for
huggingface.co (HF_ENDPOINT); the models are tiny ones written by tests/tiny_diffusers.py.

Webhook intake: a correctly signed delivery whose body cannot be parsed (1,000 nested arrays)
fails on its first attempt as bad input; one whose image host is down is retried, then given up.
The intake task runs through Celery's own `apply` (in-process, retries included), on SQLite.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from product_studio.backends import model_cache
from product_studio.backends import scene_diffusers as sd
from product_studio.config import Settings
from product_studio.errors import ModelUnavailable, TransientError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(model_dir, controlnet_dir) of a tiny random SD1.5 inpainting model and ControlNet."""
    from tiny_diffusers import save_tiny_sd15

    return save_tiny_sd15(tmp_path_factory.mktemp("tiny-sd15"))


def local_settings(model: Path, controlnet: Path) -> Settings:
    return Settings(diffusion_kind="sd15", diffusion_model=str(model), diffusion_controlnet=str(controlnet),
                    diffusion_steps=1, offline=True, device="cpu", _env_file=None)


class Hub(http.server.ThreadingHTTPServer):
    """Stands in for the model hub: repositories under down/ answer 503 (Retry-After: 0, so the hub
    client's own five retries take seconds, not half a minute); any other answers 404 RepoNotFound."""

    daemon_threads = True

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                repo = self.path.removeprefix("/api/models/").lstrip("/")
                if repo.startswith("down/"):
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                else:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = answer

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


# Run in a fresh interpreter: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, and
# other tests in this process may have imported it offline.
LOAD_EACH = """
import json, sys
from product_studio.backends.scene_diffusers import load_pipeline
from product_studio.config import Settings
model, controlnet = sys.argv[1], sys.argv[2]
out = {}
for case, update in json.loads(sys.argv[3]).items():
    s = Settings(diffusion_kind="sd15", diffusion_model=model, diffusion_controlnet=controlnet, offline=False,
                 device="cpu", _env_file=None).model_copy(update=update)
    try:
        load_pipeline(s)
        out[case] = ["loaded", ""]
    except Exception as exc:
        out[case] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def test_a_hub_answering_503_is_transient_and_only_a_missing_repository_is_permanent(tiny, tmp_path):
    model, controlnet = tiny
    hub = Hub()
    cases = {
        "model hub down": {"diffusion_model": "down/inpainting"},
        "controlnet hub down": {"diffusion_controlnet": "down/canny"},
        "model not on the hub": {"diffusion_model": "nobody/no-such-model"},
        "controlnet not on the hub": {"diffusion_controlnet": "nobody/no-such-controlnet"},
        "no such folder": {"diffusion_model": str(tmp_path / "missing")},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRODUCT_STUDIO_", "TRANSFORMERS_"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(ROOT)}
    try:
        run = subprocess.run([sys.executable, "-c", LOAD_EACH, str(model), str(controlnet), json.dumps(cases)],
                             env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    finally:
        hub.shutdown()
        hub.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for case in ("model hub down", "controlnet hub down"):
        kind, message = got[case]
        assert kind == "TransientError", (case, got[case])
        assert "503" in message and "\n" not in message
    for case in ("model not on the hub", "controlnet not on the hub", "no such folder"):
        kind, message = got[case]
        assert kind == "ModelUnavailable", (case, got[case])
        assert "PRODUCT_STUDIO_DIFFUSION_" in message


def half_written(src: Path, dst: Path, file: str, keep: int) -> Path:
    """A copy of a model folder with `file` cut off after `keep` bytes, as a download killed midway
    (or still running) leaves it."""
    shutil.copytree(src, dst)
    data = (src / file).read_bytes()
    (dst / file).write_bytes(data[:keep])
    return dst


@pytest.mark.parametrize(("part", "file", "keep"), [
    ("model", "unet/diffusion_pytorch_model.safetensors", 1 << 15),  # the weights cut off
    ("model", "unet/diffusion_pytorch_model.safetensors", 4),  # not even the header's length
    ("model", "model_index.json", 200),  # the pipeline's index cut off
    ("controlnet", "config.json", 100),
])
def test_a_half_written_model_is_retried_and_loads_once_whole(tiny, tmp_path, part, file, keep):
    model, controlnet = tiny
    src = model if part == "model" else controlnet
    copy = half_written(src, tmp_path / part, file, keep)
    settings = local_settings(copy if part == "model" else model, copy if part == "controlnet" else controlnet)
    with pytest.raises(TransientError) as err:
        sd.get_pipeline(settings)
    assert str(copy) in str(err.value) and "\n" not in str(err.value)
    shutil.copy(src / file, copy / file)  # the download finishes
    assert sd.get_pipeline(settings) is not None  # the failure was not remembered
    assert model_cache.loads[sd.cache_key(settings)] == 1
    model_cache.clear("diffusers")


def test_a_folder_missing_a_file_the_model_needs_is_permanent(tiny, tmp_path):
    model, controlnet = tiny
    copy = shutil.copytree(model, tmp_path / "model")
    shutil.rmtree(copy / "unet")
    with pytest.raises(ModelUnavailable, match="PRODUCT_STUDIO_DIFFUSION_MODEL"):
        sd.load_pipeline(local_settings(copy, controlnet))


# --- webhook intake -------------------------------------------------------------------------------

DELIVER = """
import json, sys
from product_studio import runtime
from product_studio.models import Delivery
from product_studio.webhooks.deliveries import Incoming, record_deliveries
from tasks.intake import delivery

bodies = json.loads(sys.stdin.read())
with runtime.database().session() as s:
    recorded = record_deliveries(s, [Incoming("shopify", name, "products/update", "default",
                                              hashlib.sha256(body.encode()).hexdigest(), "accepted", None, body)
                                     for name, body in bodies.items()])
out = {}
for name, rec in zip(bodies, recorded):
    delivery.apply(args=(rec.id,))
    with runtime.database().session() as s:
        d = s.get(Delivery, rec.id)
        out[name] = [d.status, d.reason]
print(json.dumps(out))
""".replace("import json, sys", "import hashlib, json, sys")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_signed_delivery_that_cannot_be_parsed_fails_once_as_bad_input(tmp_path):
    nested = "[" * 1000 + "]" * 1000
    unreachable = json.dumps({"id": 7, "title": "Cup", "updated_at": "2026-01-01T00:00:00Z",
                              "images": [{"id": 1, "src": f"http://127.0.0.1:{closed_port()}/cup.jpg"}]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_STUDIO_")}
    env |= {"PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data"), "PRODUCT_STUDIO_SHOPIFY_WEBHOOK_SECRET": "s",
            "PRODUCT_STUDIO_FETCH_ALLOW": "127.0.0.1", "PRODUCT_STUDIO_FETCH_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", DELIVER], input=json.dumps({"nested": nested, "down": unreachable}),
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    status, reason = got["nested"]
    assert status == "failed" and "nest" in reason
    assert "attempts" not in reason  # failed on its first attempt, not after six
    status, reason = got["down"]  # the contrast: a host that is down may come back
    assert status == "failed" and reason.startswith("gave up after 6 attempts:") and "cup.jpg" in reason
