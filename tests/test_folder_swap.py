"""A crash while a photo's output folder is swapped never loses its previous results (issue 17, item 6).

staged_folder swaps the new folder in with one atomic exchange where Linux allows it, so at no
moment is the folder missing. Where it cannot (no renameat2), it is two renames, and a crash
between them leaves the previous folder only in .<name>.<random>.old/prev: the next batch run
puts it back before it cleans up, instead of deleting it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_batch import ImageServer, assert_complete, batch, photo, summary, write_csv

from product_studio.batch.journal import remove_leftovers
from product_studio.config import get_settings
from product_studio.files import exchange, staged_folder

ROOT = Path(__file__).resolve().parents[1]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_crash_between_the_two_renames_keeps_the_previous_results(tmp_path, monkeypatch):
    """The state such a crash leaves, made on disk; the image is gone from the shop since, so the
    previous results could not be made again: the next batch keeps them."""
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRODUCT_STUDIO_FETCH_ALLOW", "127.0.0.1")
    get_settings.cache_clear()
    server = ImageServer({"/shop/blue-mug.jpg": photo(3)})
    try:
        source = write_csv(tmp_path / "catalog.csv", ["image", "title"], [[server.url("/shop/blue-mug.jpg"), "Mug"]])
        out = tmp_path / "out"
        first = batch(str(source), "--out", str(out))
        assert first.exit_code == 0, first.output
        before = digests(out / "blue-mug")
        # A later run was swapping in a new folder and died between the two renames: the previous
        # folder is only in its .old folder, the new one (complete or not) still in its .part folder.
        aside = out / ".blue-mug.k3j4h5g6.old"
        aside.mkdir()
        os.replace(out / "blue-mug", aside / "prev")
        (out / ".blue-mug.q9w8e7r6.part").mkdir()
        (out / ".blue-mug.q9w8e7r6.part" / "cutout.png").write_bytes(b"\x89PNG half")
        del server.files["/shop/blue-mug.jpg"]  # the image is no longer in the shop
        second = batch(str(source), "--out", str(out))
        assert second.exit_code == 0, second.output
        assert summary(out)["resumed"] == 1 and summary(out)["done"] == 1
        assert digests(out / "blue-mug") == before
        assert_complete(out, ["blue-mug"])  # and no .old or .part folder is left
    finally:
        server.shutdown()
        server.server_close()
        get_settings.cache_clear()


# Run in its own process, killed with SIGKILL right after the previous folder was moved aside:
# os.replace, the file system call, is where the crash is injected. "no-exchange" stands for a
# libc or kernel without renameat2, where staged_folder must fall back to two renames.
SWAP = """
import os, signal, sys
from pathlib import Path
from product_studio import files

folder, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "no-exchange":
    files._renameat2 = lambda: None
real_replace = os.replace

def replace(src, dst):
    real_replace(src, dst)
    if Path(src) == folder:  # the previous folder is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
with files.staged_folder(folder) as stage:
    (stage / "result.txt").write_text("new")
print("swapped")
"""


@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_a_swap_killed_at_its_worst_moment_leaves_the_previous_or_the_new_folder(tmp_path, mode):
    folder = tmp_path / "out" / "MUG-1" / "2"  # a product's second image: a folder inside a folder
    folder.mkdir(parents=True)
    (folder / "result.txt").write_text("previous")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", SWAP, str(folder), mode], env=env, capture_output=True, text=True,
                         timeout=60)
    if mode == "exchange":
        if not exchange_works(tmp_path):
            pytest.skip("this file system cannot exchange two folders atomically")
        # One atomic exchange: the folder was never moved aside, so there was no moment to crash in.
        assert run.returncode == 0 and "swapped" in run.stdout, run.stderr
        assert (folder / "result.txt").read_text() == "new"
    else:
        assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
        assert not folder.exists()  # the crash left it only in its .old folder
        remove_leftovers(tmp_path / "out")  # what the next batch run does first, under its lock
        assert (folder / "result.txt").read_text() == "previous"
    assert not [p for p in (tmp_path / "out").rglob(".*")], "staging folders left behind"


def exchange_works(tmp: Path) -> bool:
    a, b = tmp / "xa", tmp / "xb"
    a.mkdir()
    b.mkdir()
    (a / "f").touch()
    try:
        return exchange(a, b) and (b / "f").exists()
    finally:
        shutil.rmtree(a)
        shutil.rmtree(b)


def test_staged_folder_swaps_and_cleans_up_normally(tmp_path):
    folder = tmp_path / "p"
    for text in ("one", "two"):
        with staged_folder(folder) as stage:
            (stage / "r.txt").write_text(text)
        assert (folder / "r.txt").read_text() == text
    with pytest.raises(RuntimeError), staged_folder(folder) as stage:
        (stage / "r.txt").write_text("three")
        raise RuntimeError("a stage failed")
    assert (folder / "r.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]
