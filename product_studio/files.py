"""Atomic file and folder writes: readers see the old one or the whole new one, never half of it."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
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


@cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's renameat2(2), or None (not Linux, or a libc without it). Looked up on first use."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE): at no moment
    is either name missing. False where the kernel, file system or libc cannot (the caller then
    swaps in two renames); OSError for other failures."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


OLD_SUFFIX = ".old"  # a swap's previous folder waits in .<name>.<random>.old/prev until the new one is in
PREVIOUS = "prev"


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Build a photo's folder beside its final place, then swap it in whole: a failure midway
    leaves the previous results (or nothing), never a half-written set.

    The swap is one atomic exchange where the file system allows it (Linux): a crash at any
    moment leaves the previous folder or the new one at `folder`. Elsewhere it is two renames,
    the previous folder moved to .<name>.<random>.old/prev first; a crash between them leaves it
    only there, and recover_swaps() (run by each batch before it cleans up) puts it back.
    Raises OSError from the file system; whatever the body raises is raised after the staging
    folder is removed.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        if folder.exists() and exchange(tmp, folder):
            pass  # tmp now holds the previous results; removed below
        elif folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=OLD_SUFFIX))
            os.replace(folder, old / PREVIOUS)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_swaps(parent: Path) -> list[Path]:
    """Put back previous folders that a crash between staged_folder's two renames left only in
    .<name>.<random>.old/prev inside `parent`; returns the folders restored. A previous folder
    whose place is taken (the crash came after the second rename) is left for the caller's
    cleanup. Only for a caller that knows no staged_folder is running in `parent` (a batch holds
    its lock). Raises OSError from the file system."""
    restored = []
    for old in sorted(parent.glob(f".*.*{OLD_SUFFIX}")):
        prev = old / PREVIOUS
        name = old.name[1:-len(OLD_SUFFIX)].rpartition(".")[0]  # .<name>.<random>.old -> <name>
        if not name or not prev.is_dir():
            continue
        folder = parent / name
        if folder.exists() or folder.is_symlink():
            continue
        os.replace(prev, folder)
        restored.append(folder)
    return restored
