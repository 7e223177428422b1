"""`product-studio batch`: folders, globs and both CSV layouts in; one folder per product, a manifest,
failures and a summary out. Identical images are made once; an interrupted batch resumes where it
stopped; Celery workers can do the work. Photos are scikit-image's real ones, small, one target."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from product_studio.cli import app
from product_studio.config import get_settings

EXE = Path(sys.executable).with_name("product-studio")
TARGET = "lifestyle"  # one target, the cheapest (1080x1350), keeps every test affordable on two cores
FILES = {"cutout.png", "control.png", f"{TARGET}.jpg"}
runner = CliRunner(env={"COLUMNS": "200"})


@functools.cache
def _bases() -> tuple[np.ndarray, ...]:
    from skimage import data

    return tuple(np.ascontiguousarray(f()) for f in (data.coffee, data.rocket))


def photo(i: int, size: int = 200) -> bytes:
    """Photo number i: a real photo, cropped, flipped and tinted its own way; JPEG of `size` px."""
    base = _bases()[i % 2]
    h, w = base.shape[:2]
    dy, dx = i // 2 % (h // 10), i // 2 // (h // 10) % (w // 10)  # its own crop for every i < 4800
    img = base[dy:h - (i % 5) * h // 50, dx:w - (i % 3) * w // 40]
    if i // 2 % 2:
        img = img[:, ::-1]
    tint = 1 + 0.04 * np.array([(i % 4) - 1.5, (i % 3) - 1, (i % 5) - 2]) / 2
    img = np.clip(img * tint, 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def failures(out: Path) -> list[dict]:
    with open(out / "failures.csv", newline="") as f:
        return list(csv.DictReader(f))


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def assert_complete(out: Path, folders: list[str]) -> None:
    """Each folder holds exactly the expected files, each listed once in the manifest; no temp files."""
    rows = manifest(out)
    paths = Counter(r["path"] for r in rows)
    assert all(n == 1 for n in paths.values()), "a file is listed twice"
    assert set(paths) == {f"{folder}/{name}" for folder in folders for name in FILES}
    for folder in folders:
        assert {p.name for p in (out / folder).iterdir()} == FILES
    assert not [p for p in out.rglob(".*") if ".batch" not in p.parts], "temp files left behind"
    for r in rows:
        assert (out / r["path"]).stat().st_size == int(r["bytes"])
        if r["target"] == TARGET:
            assert r["check"] == "pass" and r["size"] == "1080x1350" and r["seed"] == "0"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Settings from a private data dir; fetches may reach loopback (the test servers)."""
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_FETCH_ALLOW", "127.0.0.1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def batch(*args: str):
    return runner.invoke(app, ["batch", *args, "-t", TARGET])


class ImageServer(http.server.ThreadingHTTPServer):
    """Serves {path: bytes} on loopback, counting the requests for each path."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.hits = files, Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits[self.path] += 1
                body = outer.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server():
    s = ImageServer({})
    yield s
    s.shutdown()
    s.server_close()


# -- sources ---------------------------------------------------------------------------------------


def test_folder_makes_one_folder_per_photo_and_skips_non_images(tmp_path, env):
    src = tmp_path / "photos"
    write(src / "mug.jpg", photo(0))
    write(src / "rocket.JPG", photo(1))
    write(src / "notes.txt", b"not a photo")
    out = tmp_path / "out"
    result = batch(str(src), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_complete(out, ["mug", "rocket"])
    s = summary(out)
    assert (s["done"], s["processed"], s["failed"], s["skipped"], s["exit_code"]) == (2, 2, 0, 1, 0)
    assert failures(out) == []
    assert "products per minute" in result.output


def test_glob_takes_only_matching_files(tmp_path, env):
    for name, i in (("a1.jpg", 0), ("a2.jpg", 1), ("b1.jpg", 2)):
        write(tmp_path / "in" / name, photo(i))
    out = tmp_path / "out"
    result = batch(str(tmp_path / "in" / "a*.jpg"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_complete(out, ["a1", "a2"])
    assert {r["source"] for r in manifest(out)} == {str(tmp_path / "in" / n) for n in ("a1.jpg", "a2.jpg")}


def test_plain_csv_paths_and_urls_skus_as_folders(tmp_path, env, server):
    server.files["/shop/blue-mug.jpg"] = photo(3)
    write(tmp_path / "img" / "mug.jpg", photo(0))
    write(tmp_path / "img" / "mug-back.jpg", photo(2))
    write(tmp_path / "img" / "rocket.jpg", photo(1))
    source = write_csv(tmp_path / "catalog.csv", ["image", "sku", "title", "category"], [
        ["img/mug.jpg", "MUG-1", "White mug", "Kitchen"],
        ["img/mug-back.jpg", "MUG-1", "", ""],  # a second image of the same product
        ["img/rocket.jpg", "../../etc/passwd", "Toy rocket", "Toys"],  # never a path taken from input
        [server.url("/shop/blue-mug.jpg"), "", "Blue mug", ""],  # no sku: the URL's file stem
    ])
    out = tmp_path / "out"
    result = batch(str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_complete(out, ["MUG-1/1", "MUG-1/2", "etc_passwd", "blue-mug"])
    rows = manifest(out)
    assert {(r["product"], r["image"]) for r in rows} == {("MUG-1", "1"), ("MUG-1", "2"), ("etc_passwd", "1"),
                                                          ("blue-mug", "1")}
    assert server.url("/shop/blue-mug.jpg") in {r["source"] for r in rows}
    assert not (tmp_path / "etc").exists()


def test_shopify_export_groups_images_by_handle_in_position_order(tmp_path, env, server):
    for i, name in enumerate(("tee-front", "tee-back", "cap")):
        server.files[f"/cdn/{name}.jpg"] = photo(i)
    header = ["Handle", "Title", "Body (HTML)", "Variant SKU", "Image Src", "Image Position", "Type",
              "Product Category"]
    source = write_csv(tmp_path / "products_export.csv", header, [
        ["classic-tee", "Classic Tee", "<p>Soft</p>", "TEE-S", server.url("/cdn/tee-back.jpg"), "2", "Shirts", ""],
        ["classic-tee", "", "", "TEE-M", "", "", "", ""],  # a variant row: no image, skipped
        ["classic-tee", "", "", "", server.url("/cdn/tee-front.jpg"), "1", "", ""],  # continuation row
        ["classic-tee", "", "", "TEE-L", server.url("/cdn/tee-front.jpg"), "", "", ""],  # the same image again
        ["Cap/Hat?", "Cap", "", "CAP", server.url("/cdn/cap.jpg"), "1", "", "Apparel > Hats"],
    ])
    out = tmp_path / "out"
    result = batch(str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_complete(out, ["classic-tee/1", "classic-tee/2", "Cap_Hat"])
    by_path = {r["path"]: r for r in manifest(out)}
    assert by_path[f"classic-tee/1/{TARGET}.jpg"]["source"].endswith("/cdn/tee-front.jpg")  # Image Position 1
    assert by_path[f"classic-tee/2/{TARGET}.jpg"]["source"].endswith("/cdn/tee-back.jpg")
    assert (summary(out)["skipped"], summary(out)["repeats"]) == (1, 1)  # a repeat is not "no image"
    shas = {r["path"]: (r["source_sha256"], r["sha256"]) for r in manifest(out)}
    import hashlib

    for path, (source_sha, sha) in shas.items():  # the output's own hash beside the source's
        assert sha == hashlib.sha256((out / path).read_bytes()).hexdigest() and source_sha != sha
    again = batch(str(source), "--out", str(out))  # everything resumed: no rate to speak of
    assert summary(out)["products_per_minute"] is None and "products per minute │ -" in " ".join(again.output.split())


def test_csv_without_an_image_column_names_the_file_and_what_it_found(tmp_path, env):
    source = write_csv(tmp_path / "bad.csv", ["picture", "sku"], [["a.jpg", "A"]])
    result = batch(str(source), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "bad.csv" in result.output and "no 'image' column" in result.output and "picture" in result.output


# -- dedupe, failures, resume ---------------------------------------------------------------------


def test_identical_images_are_made_once_and_every_product_gets_them(tmp_path, env, server):
    same = photo(5)
    server.files["/same.jpg"] = same
    write(tmp_path / "a.jpg", same)
    write(tmp_path / "b.jpg", same)
    write(tmp_path / "c.jpg", photo(6))
    source = write_csv(tmp_path / "c.csv", ["image", "sku"], [
        ["a.jpg", "A"], ["b.jpg", "B"], [server.url("/same.jpg"), "U"], ["c.jpg", "C"]])
    out = tmp_path / "out"
    result = batch(str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert_complete(out, ["A", "B", "U", "C"])
    s = summary(out)
    assert (s["processed"], s["deduped"], s["done"]) == (2, 2, 4)
    for name in FILES:
        assert (out / "A" / name).read_bytes() == (out / "B" / name).read_bytes() == (out / "U" / name).read_bytes()
    shas = {r["product"]: r["source_sha256"] for r in manifest(out)}
    assert shas["A"] == shas["B"] == shas["U"] != shas["C"]


def test_broken_and_missing_images_are_listed_with_reasons_and_the_exit_code_says_so(tmp_path, env):
    write(tmp_path / "good.jpg", photo(0))
    write(tmp_path / "broken.jpg", photo(1)[:1500])  # a truncated JPEG
    source = write_csv(tmp_path / "c.csv", ["image", "sku"], [
        ["good.jpg", "GOOD"], ["broken.jpg", "BROKEN"], ["nowhere.jpg", "MISSING"], ["", "EMPTY"],
        ["ftp://example.com/x.jpg", "FTP"]])
    out = tmp_path / "out"
    result = batch(str(source), "--out", str(out))
    assert result.exit_code == 2, result.output  # bad input
    assert_complete(out, ["GOOD"])
    reasons = {f["product"]: f["reason"] for f in failures(out)}
    assert set(reasons) == {"BROKEN", "MISSING", "EMPTY", "FTP"}
    assert "broken.jpg" in reasons["BROKEN"] and "truncated" in reasons["BROKEN"].lower()
    assert "nowhere.jpg" in reasons["MISSING"] and "no such file" in reasons["MISSING"]
    assert "line 5" in reasons["EMPTY"] and "empty" in reasons["EMPTY"]
    assert "ftp://example.com/x.jpg" in reasons["FTP"] and "http" in reasons["FTP"]
    assert all(f["exit_code"] == "2" for f in failures(out))
    assert not [p.name for p in out.iterdir() if p.is_dir() and p.name != ".batch" and p.name != "GOOD"]
    s = summary(out)
    assert (s["done"], s["failed"], s["exit_code"]) == (1, 4, 2)


def test_a_rerun_skips_finished_items_and_does_only_the_rest(tmp_path, env):
    src = tmp_path / "in"
    for i in range(3):
        write(src / f"p{i}.jpg", photo(i))
    out = tmp_path / "out"
    assert batch(str(src), "--out", str(out)).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    write(src / "p3.jpg", photo(3))
    result = batch(str(src), "--out", str(out))
    assert result.exit_code == 0, result.output
    s = summary(out)
    assert (s["resumed"], s["processed"], s["done"]) == (3, 1, 4)
    assert {p: p.stat().st_mtime_ns for p in before} == before, "a finished item was made again"
    assert_complete(out, ["p0", "p1", "p2", "p3"])
    # A folder deleted by hand is not "done" any more: it is made again.
    for p in (out / "p1").iterdir():
        p.unlink()
    (out / "p1").rmdir()
    assert batch(str(src), "--out", str(out)).exit_code == 0
    assert summary(out)["processed"] == 1
    assert_complete(out, ["p0", "p1", "p2", "p3"])


def journal_done(out: Path) -> int:
    path = out / ".batch" / "journal.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().splitlines() if b'"status":"done"' in line)


def test_a_batch_killed_mid_item_resumes_without_half_written_folders(tmp_path):
    src = tmp_path / "in"
    for i in range(6):
        write(src / f"p{i}.jpg", photo(i, size=256))
    out = tmp_path / "out"
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data")}
    argv = [str(EXE), "batch", str(src), "--out", str(out), "-t", TARGET]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while journal_done(out) < 2 and first.poll() is None:
        time.sleep(0.05)
    first.kill()  # a crash: no handler runs, no report is written
    first.wait(30)
    killed_at = journal_done(out)
    assert killed_at < 6, "the batch finished before the kill: nothing was tested"
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    s = summary(out)
    assert s["resumed"] >= killed_at and s["done"] == 6
    assert_complete(out, [f"p{i}" for i in range(6)])


# -- the acceptance test: 200 photos, interrupted, resumed ----------------------------------------


def test_200_photo_csv_batch_interrupted_then_resumed_completes_with_each_output_once(tmp_path):
    n = 200
    uniques = 160  # 40 rows repeat an earlier photo: identical images are made once, even across runs
    rows = []
    for i in range(n):
        k = i if i < uniques else (i * 37) % uniques
        rows.append([f"img/{i:03d}.jpg", f"SKU-{i:03d}", f"Product {i}", "Test"])
        write(tmp_path / f"img/{i:03d}.jpg", photo(k))
    source = write_csv(tmp_path / "catalog.csv", ["image", "sku", "title", "category"], rows)
    out = tmp_path / "out"
    env = {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    argv = [str(EXE), "batch", str(source), "--out", str(out), "-t", TARGET, "--jobs", "2"]

    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    deadline = time.time() + 240
    while journal_done(out) < 20 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, f"the batch ended before it was interrupted:\n{first.stdout.read()}"
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the batch and its worker processes
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, output
    assert "rerun the same command to resume" in output
    then = summary(out)
    done_then = then["done"]
    assert 20 <= done_then < n, "nothing left for the resumed run: the interruption tested nothing"
    assert len(manifest(out)) == 3 * done_then  # the manifest lists exactly what is finished

    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    s = summary(out)
    assert s["resumed"] == done_then and s["done"] == n and s["failed"] == 0
    assert s["processed"] + s["deduped"] == n - done_then
    assert then["processed"] + s["processed"] == uniques, "an image was made twice, or one was never made"
    assert_complete(out, [f"SKU-{i:03d}" for i in range(n)])
    rows = manifest(out)
    assert Counter(r["product"] for r in rows) == {f"SKU-{i:03d}": 3 for i in range(n)}


# -- Celery ----------------------------------------------------------------------------------------


@pytest.fixture
def celery_env(tmp_path):
    """A private embedded (filesystem://) broker, SQLite database and blob store."""
    return {**os.environ, "PRODUCT_STUDIO_DATA_DIR": str(tmp_path / "data"),
            "PRODUCT_STUDIO_BROKER_URL": "filesystem://", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def test_via_celery_says_when_no_worker_runs_then_a_worker_finishes_the_batch(tmp_path, celery_env):
    src = tmp_path / "in"
    write(src / "mug.jpg", photo(0))
    write(src / "rocket.jpg", photo(1))
    write(src / "mug-again.jpg", photo(0))
    write(src / "broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    argv = [str(EXE), "batch", str(src), "--out", str(out), "-t", TARGET, "--via-celery", "--worker-timeout", "3"]

    alone = subprocess.run(argv, env=celery_env, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 4, alone.stdout + alone.stderr  # transient: start a worker, then rerun
    assert "no Celery worker picked up any work" in alone.stderr and "product-studio worker" in alone.stderr
    assert summary(out)["done"] == 0

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([str(EXE), "worker", "--concurrency", "2", "--loglevel", "warning"], env=celery_env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        result = subprocess.run(argv[:-2], env=celery_env, capture_output=True, text=True, timeout=300)
    finally:
        worker.terminate()  # the main process only: it stops its pool (a group SIGTERM can deadlock it)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            pytest.fail("the worker did not stop on SIGTERM")
    assert result.returncode == 2, result.stdout + result.stderr + (tmp_path / "worker.log").read_text()
    assert_complete(out, ["mug", "rocket", "mug-again"])
    s = summary(out)
    assert (s["done"], s["processed"], s["deduped"], s["failed"], s["mode"]) == (3, 2, 1, 1, "celery")
    assert [f["product"] for f in failures(out)] == ["broken"]
    assert "not a raster image" in failures(out)[0]["reason"] or "broken.jpg" in failures(out)[0]["reason"]
    # The files are the worker's, copied out of the blob store byte for byte.
    stored = {p.read_bytes() for p in (tmp_path / "data" / "blobs" / "variants").rglob("*") if p.is_file()}
    assert len(stored) == 2
    assert (out / "mug" / f"{TARGET}.jpg").read_bytes() in stored
