"""isnet-imgly, the opt-in AGPL-3.0 ISNet from IMG.LY's npm data package: reassembling it from the
chunks dist/resources.json lists, refusing anything that does not check out, the licence gate of
`models fetch`, and the cut-out running it through ONNX Runtime. No network: the npm download
(provision._npm_pack) is replaced by a tarball built here, holding a tiny real ONNX model."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from product_studio import provision as prov
from product_studio.backends import model_cache
from product_studio.backends.cutout_rembg import RembgBackend, clear_sessions
from product_studio.backends.registry import CUTOUT_MODELS, cutout_members
from product_studio.cli import app
from product_studio.config import Settings, get_settings
from product_studio.errors import ModelUnavailable

ENTRY = CUTOUT_MODELS["isnet-imgly"]
runner = CliRunner(env={"COLUMNS": "250"})


# -- a tiny ONNX model, written as protobuf by hand (the `onnx` package is not a dependency) ---------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _msg(field: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _value_info(name: str, channels: int) -> bytes:  # float tensor [1, channels, "h", "w"]
    dims = _msg(1, _int(1, 1)) + _msg(1, _int(1, channels)) + _msg(1, _msg(2, "h")) + _msg(1, _msg(2, "w"))
    return _msg(1, name) + _msg(2, _msg(1, _int(1, 1) + _msg(2, dims)))


def tiny_isnet() -> bytes:
    """ONNX model "input" [1,3,h,w] -> "output" = sigmoid(input[:, 0]) as [1,1,h,w]: a 1x1 convolution
    that keeps the red channel only, so the test sees the channel order and the normalisation."""
    weight = (_int(1, 1) + _int(1, 3) + _int(1, 1) + _int(1, 1) + _int(2, 1) + _msg(8, "w")
              + _msg(9, struct.pack("<3f", 1.0, 0.0, 0.0)))
    conv = _msg(1, "input") + _msg(1, "w") + _msg(2, "c") + _msg(3, "conv") + _msg(4, "Conv")
    sigmoid = _msg(1, "c") + _msg(2, "output") + _msg(3, "sigmoid") + _msg(4, "Sigmoid")
    graph = (_msg(1, conv) + _msg(1, sigmoid) + _msg(2, "tiny_isnet") + _msg(5, weight)
             + _msg(11, _value_info("input", 3)) + _msg(12, _value_info("output", 1)))
    return _int(1, 7) + _msg(2, "test") + _msg(7, graph) + _msg(8, _msg(1, "") + _int(2, 13))


# -- a fake npm tarball like @imgly/background-removal-data's ----------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(payload: bytes, n: int) -> list[bytes]:
    bounds = np.linspace(0, len(payload), n + 1).astype(int)
    return [payload[a:b] for a, b in itertools.pairwise(bounds)]


def npm_tarball(path: Path, payload: bytes, n_chunks: int = 3, *, key: str = ENTRY.member,
                edit_resources=None, edit_chunks=None) -> Path:
    """package/dist/resources.json listing `payload` under `key` in `n_chunks` chunks (written to the
    tarball in reverse order, as a real tarball need not keep them in order), plus a decoy model."""
    chunks = split(payload, n_chunks)
    bounds = np.cumsum([0] + [len(c) for c in chunks])
    decoy = b"not this one" * 10
    resources = {
        "/onnxruntime-web/ort-wasm.wasm": {"chunks": [{"hash": sha256(b"wasm"), "offsets": [0, 4]}], "size": 4},
        "/models/small": {"chunks": [{"hash": sha256(decoy), "offsets": [0, len(decoy)]}], "size": len(decoy)},
        key: {"chunks": [{"hash": sha256(c), "offsets": [int(a), int(b)]} for c, (a, b) in
                         zip(chunks, itertools.pairwise(bounds))], "size": len(payload),
              "mime": "application/octet-steam"},
    }
    if edit_resources:
        edit_resources(resources)
    files = {sha256(c): c for c in [b"wasm", decoy, *reversed(chunks)]}
    if edit_chunks:
        edit_chunks(files)
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package.json", json.dumps({"name": "@imgly/background-removal-data", "version": "1.4.5"}).encode())
        for name, data in files.items():
            add(f"dist/{name}", data)
        add("dist/resources.json", json.dumps(resources).encode())
    return path


class FakeNpm:
    """Stands in for `npm pack`: serves a tarball built here and records what was asked for."""

    def __init__(self):
        self.asked: list[str] = []
        self.tarball: Path | None = None

    def pack(self, spec: str, dest: Path) -> Path:
        self.asked.append(spec)
        if self.tarball is None:
            raise ModelUnavailable("no network in tests")
        return Path(shutil.copy(self.tarball, dest / "imgly-background-removal-data-1.4.5.tgz"))


@pytest.fixture
def npm(monkeypatch):
    fake = FakeNpm()
    monkeypatch.setattr(prov, "_npm_pack", fake.pack)  # the download boundary, nothing else
    return fake


def entry_for(payload: bytes, **kw):
    return replace(ENTRY, size=len(payload), md5=hashlib.md5(payload).hexdigest(), **kw)


# -- provision ----------------------------------------------------------------------------------------

def test_registry_entry_is_opt_in_agpl_and_pinned():
    assert ENTRY.licence == "AGPL-3.0" and ENTRY.accept_license == "agpl-3.0"
    assert ENTRY.npm == "@imgly/background-removal-data@1.4.5" and ENTRY.member == "/models/medium"
    assert ENTRY.size == 88_188_479 and len(ENTRY.md5) == 32
    default = Settings.model_fields["cutout_model"].default
    assert "isnet-imgly" not in [m.name for m in cutout_members(default)]


def test_provision_reassembles_the_chunks_in_order(npm, tmp_path):
    payload = tiny_isnet() * 3 + bytes(range(256))  # chunk boundaries fall mid-way through the model
    npm.tarball = npm_tarball(tmp_path / "pkg.tgz", payload)
    settings = Settings(model_dir=tmp_path / "models")
    path = prov.provision(entry_for(payload), settings)
    assert path == tmp_path / "models" / "isnet-imgly.onnx" and path.read_bytes() == payload
    assert npm.asked == ["@imgly/background-removal-data@1.4.5"]
    assert prov.provision(entry_for(payload), settings) == path and len(npm.asked) == 1  # verified: no download
    assert not [p for p in path.parent.iterdir() if p.name != path.name], "temp files left behind"


REFUSALS = {  # case: what the error says
    "registry size": "the registry expects", "registry md5": "unexpected checksum",
    "resources size": "resources.json says", "chunk bytes": "does not match its SHA-256",
    "chunk offsets": "expected it to start at 0", "missing chunk": "has no package/dist/",
    "traversal": "is not a SHA-256", "missing key": r"has no /models/medium \(models listed: /models/small\)",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_provision_refuses_what_does_not_check_out(npm, tmp_path, case):
    payload = tiny_isnet() + b"\0" * 1000
    entry, edit_resources, edit_chunks = entry_for(payload), None, None
    model = lambda r: r[ENTRY.member]
    if case == "registry size":
        entry = replace(entry, size=len(payload) + 1)
    elif case == "registry md5":
        entry = replace(entry, md5="0" * 32)
    elif case == "resources size":
        edit_resources = lambda r: model(r).update(size=len(payload) - 1)
    elif case == "chunk bytes":  # the bytes behind a chunk's name are not the ones named
        def edit_chunks(files):
            name = next(n for n, c in files.items() if c == payload[:len(c)])
            files[name] = b"X" + files[name][1:]
    elif case == "chunk offsets":
        edit_resources = lambda r: model(r)["chunks"].reverse()
    elif case == "missing chunk":
        def edit_chunks(files):
            del files[sha256(split(payload, 3)[1])]
    elif case == "traversal":
        def edit_resources(r):
            model(r)["chunks"][0]["hash"] = "../../package.json"
    elif case == "missing key":
        edit_resources = lambda r: r.pop(ENTRY.member)
    npm.tarball = npm_tarball(tmp_path / "pkg.tgz", payload, edit_resources=edit_resources, edit_chunks=edit_chunks)
    with pytest.raises(ModelUnavailable, match=REFUSALS[case]):
        prov.provision(entry, Settings(model_dir=tmp_path / "models"))
    assert not (tmp_path / "models" / "isnet-imgly.onnx").exists()


def test_a_symlink_in_the_tarball_is_not_read(npm, tmp_path):
    payload = b"model bytes" * 50
    tarball = npm_tarball(tmp_path / "pkg.tgz", payload, n_chunks=1)
    with tarfile.open(tarball) as tar:  # the same tarball, its chunk now a link to another file
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(tarball, "w:gz") as tar:
        for m, data in members:
            if m.name.endswith(sha256(payload)):
                m = tarfile.TarInfo(m.name)
                m.type, m.linkname = tarfile.SYMTYPE, "../package.json"
                tar.addfile(m)
            else:
                tar.addfile(m, io.BytesIO(data))
    npm.tarball = tarball
    with pytest.raises(ModelUnavailable, match="has no package/dist/"):
        prov.provision(entry_for(payload), Settings(model_dir=tmp_path / "models"))


def test_without_npm_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(prov.shutil, "which", lambda name: None)
    with pytest.raises(ModelUnavailable, match="needs npm"):
        prov._npm_pack(ENTRY.npm, tmp_path)


# -- models fetch / models -----------------------------------------------------------------------------

@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PRODUCT_STUDIO_MODEL_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    yield tmp_path / "models"
    get_settings.cache_clear()


@pytest.mark.parametrize("flag", [[], ["--accept-license", "mit"]])
def test_fetch_without_accepting_the_licence_is_refused(npm, cli_env, flag):
    result = runner.invoke(app, ["models", "fetch", "isnet-imgly", *flag, "--no-warm"])
    assert result.exit_code == 2, result.output
    assert "--accept-license agpl-3.0" in result.stderr and "AGPL-3.0" in result.stderr
    assert npm.asked == [] and not (cli_env / "isnet-imgly.onnx").exists()  # nothing downloaded


def test_fetch_with_the_licence_accepted_and_models_shows_it(npm, cli_env, monkeypatch, tmp_path):
    payload = tiny_isnet()
    npm.tarball = npm_tarball(tmp_path / "pkg.tgz", payload)
    monkeypatch.setitem(CUTOUT_MODELS, "isnet-imgly", entry_for(payload))

    def row():
        return next(r for r in prov.describe(get_settings()) if "isnet-imgly" in r.model)

    assert row().status == "missing (product-studio models fetch isnet-imgly --accept-license agpl-3.0)"
    result = runner.invoke(app, ["models", "fetch", "isnet-imgly", "--accept-license", "AGPL-3.0", "--no-warm"])
    assert result.exit_code == 0, result.output + result.stderr
    assert (cli_env / "isnet-imgly.onnx").read_bytes() == payload
    assert row().status == "ready" and row().licence == "AGPL-3.0" and "available" in row().model  # not in use
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "isnet-imgly" in listed.output and "AGPL-3.0" in listed.output


# -- the cut-out -----------------------------------------------------------------------------------------

@pytest.fixture
def fresh_sessions():
    clear_sessions()
    yield
    clear_sessions()  # the tiny model's session must not serve a later test


def test_predict_runs_the_model_with_imgly_preprocessing(tmp_path, monkeypatch, fresh_sessions):
    (tmp_path / "isnet-imgly.onnx").write_bytes(tiny_isnet())
    monkeypatch.setenv("PRODUCT_STUDIO_CUTOUT_MODEL", "isnet-imgly")
    settings = Settings(model_dir=tmp_path, cutout_threads=1)
    rgb = np.zeros((48, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)  # left: red
    rgb[:, 40:] = (0, 255, 255)  # right: no red, full green and blue
    built = model_cache.loads.get(("rembg", "isnet-imgly"), 0)
    backend = RembgBackend(settings)
    assert backend.model == "isnet-imgly"
    assert model_cache.loads.get(("rembg", "isnet-imgly"), 0) == built  # not made before the first predict
    prob = backend.predict(rgb)
    assert prob.shape == (48, 80) and prob.dtype == np.float32
    sig = lambda v: 1 / (1 + np.exp(-(v - 128) / 256))  # IMG.LY's (x - 128) / 256
    np.testing.assert_allclose(prob[:, :36], sig(255), atol=1e-4)
    np.testing.assert_allclose(prob[:, 44:], sig(0), atol=1e-4)
    backend.predict(rgb[:20])
    assert model_cache.loads[("rembg", "isnet-imgly")] == built + 1  # one session, made on first use
    inner = backend.session.inner_session
    assert inner.get_session_options().intra_op_num_threads == 1


def test_cut_out_with_isnet_setting(tmp_path, fresh_sessions, coffee_rgb):
    from product_studio.pipeline.cutout import cut_out

    (tmp_path / "isnet-imgly.onnx").write_bytes(tiny_isnet())
    rgba = cut_out(coffee_rgb, settings=Settings(model_dir=tmp_path, cutout_model="isnet-imgly", cutout_threads=1))
    assert rgba.shape == (*coffee_rgb.shape[:2], 4) and rgba.dtype == np.uint8


def test_missing_model_names_the_fetch_command(tmp_path, fresh_sessions):
    backend = RembgBackend(Settings(model_dir=tmp_path, cutout_model="isnet-imgly"))
    with pytest.raises(ModelUnavailable, match="models fetch isnet-imgly --accept-license agpl-3.0"):
        backend.predict(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.slow
def test_the_real_model_keeps_the_cup_and_drops_the_table(coffee_rgb, fresh_sessions):
    """With the fetched model (`models fetch isnet-imgly --accept-license agpl-3.0`), else skipped."""
    settings = Settings(cutout_model="isnet-imgly", cutout_threads=1)
    if not (settings.model_dir / ENTRY.file).is_file():
        pytest.skip(f"isnet-imgly not in {settings.model_dir}")
    from product_studio.pipeline.cutout import cut_out

    alpha = cut_out(coffee_rgb, settings=settings)[..., 3]
    assert alpha[150:250, 250:350].min() == 255  # the cup's body
    assert alpha[:40, :40].max() == 0 and alpha[-40:, -40:].max() == 0  # table corners
