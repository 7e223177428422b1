"""Atomic file writes: readers see the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
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
