"""The command line as a user runs it: real photos, real files, one-line errors, no partial output."""

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from product_studio.cli import app

runner = CliRunner(env={"COLUMNS": "250"})  # wide tables: no wrapped cells to match against


def write_photo(path: Path, rgb: np.ndarray, **kw) -> Path:
    Image.fromarray(rgb).save(path, **kw)
    return path


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (never decoded in full by a safe reader)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("cli")
    # Twice scikit-image's 600x400: amazon-main refuses less than 500 px of real detail, and the
    # cup in the original has 450 (tests/test_bad_inputs.py covers that refusal).
    big = np.asarray(Image.fromarray(data.coffee()).resize((1200, 800), Image.Resampling.LANCZOS))
    photo = write_photo(root / "coffee.jpg", big, quality=95)
    out = root / "out"
    result = runner.invoke(app, ["process", str(photo), "-t", "amazon-main", "-t", "walmart-main", "-t", "ebay",
                                 "-t", "lifestyle", "--out", str(out)])
    return result, out


def test_process_writes_cutout_control_and_one_file_per_target(processed):
    result, out = processed
    assert result.exit_code == 0, result.output
    folder = out / "coffee"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["amazon-main.jpg", "control.png", "cutout.png", "ebay.jpg", "lifestyle.jpg", "walmart-main.jpg"]
    with Image.open(folder / "cutout.png") as im:
        assert im.mode == "RGBA" and im.size == (1200, 800)  # source resolution
    with Image.open(folder / "walmart-main.jpg") as im:
        assert im.size == (2200, 2200)
    for column in ("photo", "target", "pixels", "bytes", "check", "seconds"):
        assert column in result.output
    assert result.output.count("pass") >= 4
    assert not list(out.glob(".*")), "temp files left behind"


def test_check_command_passes_and_fails_with_named_rules(processed, tmp_path):
    _, out = processed
    ok = runner.invoke(app, ["check", str(out / "coffee" / "amazon-main.jpg"), "--target", "amazon-main"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["check", str(out / "coffee" / "lifestyle.jpg"), "--target", "amazon-main"])
    assert bad.exit_code == 1
    assert "white background" in bad.output and "aspect" in bad.output and "FAIL" in bad.output


def test_targets_lists_every_target_with_its_rules():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    for name in ("amazon-main", "walmart-main", "shopify-square", "ebay", "etsy", "google-shopping", "lifestyle"):
        assert name in result.output
    assert "85%" in result.output and "5 MB" in result.output


BAD_INPUTS = {
    "truncated.jpg": lambda rgb: _jpeg(rgb)[:3000],
    "truncated.png": lambda rgb: _png(rgb)[:5000],
    "notes.jpg": lambda rgb: b"just some text, not a photo\n" * 20,
    "drawing.svg": lambda rgb: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    "page.png": lambda rgb: b"<!DOCTYPE html><html><body>hi</body></html>",
    "doc.jpg": lambda rgb: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
    "bomb.png": lambda rgb: bomb_png(40000, 40000),
    "dot.png": lambda rgb: _png(rgb[:1, :1]),
}


def _jpeg(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _png(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_gets_a_one_line_error_and_no_output(name, tmp_path):
    from skimage import data

    path = tmp_path / name
    path.write_bytes(BAD_INPUTS[name](data.coffee()))
    out = tmp_path / "out"
    result = runner.invoke(app, ["process", str(path), "-t", "amazon-main", "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not out.exists() or not any(out.iterdir()), "partial output left behind"


def test_good_and_bad_photos_in_one_run(tmp_path):
    from skimage import data

    good = write_photo(tmp_path / "cup.png", data.coffee())
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(_jpeg(data.coffee())[:2000])
    out = tmp_path / "out"
    result = runner.invoke(app, ["process", str(good), str(bad), "-t", "ebay", "--out", str(out)])
    assert result.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["cup"]
    assert (out / "cup" / "ebay.jpg").is_file()


def test_unknown_target_is_a_clear_error():
    result = runner.invoke(app, ["process", "x.jpg", "-t", "amazon-mian"])
    assert result.exit_code == 2
    assert "unknown target 'amazon-mian'" in result.stderr and "amazon-main" in result.stderr


def test_installed_entry_point_and_doctor():
    exe = Path(sys.executable).with_name("product-studio")
    result = subprocess.run([str(exe), "doctor"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    for component in ("cutout model u2netp", "onnxruntime", "torch", "controlnet-aux", "scenes"):
        assert component in result.stdout
