"""Atomic file and folder writes: readers see the old one or the whole new one, never half of it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's 0600 would hide files from a web server
DIR_MODE = 0o777 & ~_umask()  # what mkdir() would give: mkdtemp's 0700 likewise


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True, mode: int | None = None) -> Path:
    """Write `data` to a temp file beside `path`, then rename it into place.

    `durable` syncs the bytes before the rename, so after a power cut a content-addressed key is
    never an empty file that looks "already done" forever. `mode` (e.g. 0o600 for a secret)
    overrides the umask's default.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        # Interrupted or failed: leave nothing behind but what was there before.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Build a photo's folder beside its final place, then swap it in whole: a failure midway
    leaves the previous results (or nothing), never a half-written set."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
            os.replace(folder, old / "prev")
        os.replace(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
