"""Durability of OUT: the append-only, fsynced journal of settled items, the lock that lets one batch
at a time write a folder, the cleanup of a killed run's staging folders, and fsync of directories.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import TransientError
from ..files import recover_swaps

STATE_DIR = ".batch"  # inside OUT; product names never start with a dot, so none can clash with it
JOURNAL_VERSION = 2


class Journal:
    """Append-only JSON lines, one per settled item, each fsynced before the next item counts.

    A crash can only tear the last line: it is cut off when the journal is opened again.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.records: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        data = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        end = data.rfind(b"\n") + 1
        if end < len(data):
            os.ftruncate(self.fd, end)  # a torn last line: the item it was for is simply not done
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "key" in record:
                self.records[record["key"]] = record

    def append(self, record: dict) -> None:
        os.write(self.fd, json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        os.fsync(self.fd)
        self.records[record["key"]] = record

    def close(self) -> None:
        os.close(self.fd)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable before the journal says it happened."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(state: Path) -> Iterator[None]:
    """One batch per output folder at a time: a second would count the first's items twice."""
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransientError(f"{state.parent}: another batch is writing to this folder: wait for it to "
                                 "finish (or stop it), then run again") from None
        yield
    finally:
        os.close(fd)


def remove_leftovers(out: Path) -> None:
    """After a run that was killed (the lock is ours: nobody else is writing here): first put back
    every previous folder that a crash in the middle of a two-rename swap left only in its .old
    folder (files.recover_swaps), then remove the staging folders. Raises OSError."""
    for parent in (out, *(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))):
        recover_swaps(parent)
    for pattern in (".*.part", ".*.old", "*/.*.part", "*/.*.old"):
        for p in out.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

