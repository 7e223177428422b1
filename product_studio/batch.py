"""Catalog batches: a folder, a glob or a product CSV in; one folder per product, a manifest, a
summary and a failures file out. The CLI's `batch` command is a thin door onto `run_batch`.

    catalogue = read_source("products.csv")               # Shopify export or image,sku,title,category
    summary = run_batch(catalogue, Path("out"), BatchOptions(targets=("amazon-main",), jobs=2))

The unit of work is an *item*: one image of one product. Its outputs go to OUT/<product>/ (or
OUT/<product>/<n>/ when the product has several images), built aside and swapped in whole. Only then
is the item appended to a journal (OUT/.batch/journal.jsonl, one fsynced line per item), so a crash
or Ctrl-C never leaves a half-written folder counted as done, and the next run with the same OUT
skips what the journal says is finished. Identical images (same SHA-256) are processed once; the
other products that use them get copies of the finished files.

Work runs in this process (--jobs 1), in N spawned worker processes that each load the cut-out model
once (--jobs N), or on Celery workers (via_celery: submitted through work.submit, waited for by
polling the database, copied out of the blob store).
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import glob
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import threading
import time
import traceback
import unicodedata
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .config import Settings, get_settings
from .errors import BadInput, ProductStudioError, TransientError
from .files import atomic_write_bytes

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif"})
STATE_DIR = ".batch"  # inside OUT; product names never start with a dot, so none can clash with it
REPORTS = ("manifest.csv", "failures.csv", "summary.json")
MANIFEST_COLUMNS = ("source", "product", "image", "target", "path", "size", "bytes", "check", "seed", "sha256")
FAILURE_COLUMNS = ("source", "product", "image", "kind", "target", "reason", "exit_code")
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_JOURNAL_VERSION = 2


# -- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One image of one product."""

    product: str  # sanitised: the product's folder name
    image: int  # 1-based order among the product's images
    images: int  # how many images the product has
    source: str  # as written in the input (path or URL): shown in messages and the manifest
    path: Path | None = None  # a local file...
    url: str | None = None  # ...or an http(s) URL
    title: str | None = None
    category: str | None = None
    error: str | None = None  # a row that can never be processed (an empty image cell, an ftp:// URL)

    @property
    def folder(self) -> str:
        """The item's output folder, relative to OUT."""
        return self.product if self.images == 1 else f"{self.product}/{self.image}"

    @property
    def location(self) -> str:
        if self.path is not None:
            return os.path.abspath(self.path)  # the same file, wherever the command is run from
        return self.url or self.source


@dataclass(frozen=True)
class Catalogue:
    source: str
    kind: str  # "folder", "glob", "file", "shopify-csv", "csv"
    items: tuple[Item, ...]
    skipped: int = 0  # rows without an image (Shopify variant rows), non-image files in a folder

    @property
    def products(self) -> int:
        return len({i.product for i in self.items})


@dataclass
class _Row:
    """A source image before product names are given out."""

    product_id: str | None  # sku / Handle: rows sharing one are one product's images
    source: str
    path: Path | None = None
    url: str | None = None
    title: str | None = None
    category: str | None = None
    order: float = math.inf  # Shopify's Image Position; ties keep row order
    error: str | None = None


def safe_name(text: str, fallback: str = "product") -> str:
    """A folder name from untrusted text: letters, digits, '-', '_', '.'; never hidden, never a path."""
    text = unicodedata.normalize("NFKC", text)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    name = re.sub(r"_{2,}", "_", name).strip("._-")[:100].rstrip("._-")
    return name or fallback


def _stem(location: str) -> str:
    path = urlsplit(location).path if _URL.match(location) else location
    return PurePosixPath(path.replace("\\", "/")).stem


def _make_items(rows: list[_Row]) -> tuple[Item, ...]:
    """Group rows into products (in order of first appearance), name each product once, uniquely."""
    groups: dict[Any, list[_Row]] = {}
    for n, row in enumerate(rows):
        groups.setdefault(row.product_id if row.product_id else ("row", n), []).append(row)
    taken = {r.casefold() for r in REPORTS}  # case-insensitive: macOS and Windows folders are
    items = []
    for members in groups.values():
        members.sort(key=lambda r: r.order)  # stable: equal positions keep row order
        first = members[0]
        base = safe_name(first.product_id or _stem(first.source))
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.casefold())
        title = next((r.title for r in members if r.title), None)
        category = next((r.category for r in members if r.category), None)
        for k, r in enumerate(members, 1):
            items.append(Item(name, k, len(members), r.source, r.path, r.url, title, category, r.error))
    return tuple(items)


def read_source(source: str) -> Catalogue:
    """A folder (its image files), a glob, a CSV (Shopify product export or image,sku,title,category)
    or a single image file."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise BadInput(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return Catalogue(source, "folder", _file_items(images), skipped=len(files) - len(images))
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_csv(path)
        return Catalogue(source, "file", _file_items([path]))
    if any(c in source for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not matches:
            raise BadInput(f"{source}: no files match this pattern")
        return Catalogue(source, "glob", _file_items(matches))
    raise BadInput(f"{source}: no such file or folder")


def _file_items(paths: list[Path]) -> tuple[Item, ...]:
    return _make_items([_Row(None, str(p), path=p) for p in paths])


def _resolve(cell: str, base: Path) -> tuple[Path | None, str | None, str | None]:
    """(path, url, error) for an image cell: an http(s) URL, or a path relative to the CSV's folder."""
    if _URL.match(cell):
        if urlsplit(cell).scheme.lower() in ("http", "https"):
            return None, cell, None
        return None, None, f"{cell}: only http(s) URLs and local paths are supported"
    return base / cell, None, None


def read_csv(path: Path) -> Catalogue:
    """A Shopify product export (detected by its Handle and Image Src columns) or a plain
    image,sku,title,category CSV. Errors name the file and, for a row, its line."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Excel and Shopify exports may start with a BOM
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise BadInput(f"{path}: empty file, expected a header row") from None
    except csv.Error as exc:
        raise BadInput(f"{path}: not a readable CSV ({exc})") from None
    columns = {name: i for i, name in reversed(list(enumerate(header)))}  # first of a repeated name

    def records() -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for cells in reader:
                if any(c.strip() for c in cells):
                    yield reader.line_num, {k: cells[i].strip() if i < len(cells) else "" for k, i in columns.items()}
        except csv.Error as exc:
            raise BadInput(f"{path}, line {reader.line_num}: {exc}") from None

    if "handle" in columns and "image src" in columns:
        rows, skipped = _shopify_rows(records(), path.parent)
        return Catalogue(str(path), "shopify-csv", _make_items(rows), skipped)
    if "image" not in columns:
        raise BadInput(f"{path}: no 'image' column (found: {', '.join(h for h in header if h) or 'none'}); "
                       "expected image,sku,title,category or a Shopify product export (Handle, Image Src, ...)")
    return Catalogue(str(path), "csv", _make_items(_plain_rows(records(), path)))


def _plain_rows(records: Iterator[tuple[int, dict[str, str]]], csv_path: Path) -> list[_Row]:
    rows = []
    for line, r in records:
        sku = r.get("sku") or None
        cell = r["image"]
        if cell:
            p, url, error = _resolve(cell, csv_path.parent)
        else:
            p, url, error = None, None, f"{csv_path.name}, line {line}: the image cell is empty"
        rows.append(_Row(sku, cell or f"{csv_path.name}:{line}", p, url, r.get("title") or None,
                         r.get("category") or None, error=error))
    return rows


def _shopify_rows(records: Iterator[tuple[int, dict[str, str]]], base: Path) -> tuple[list[_Row], int]:
    """Shopify repeats a product's Handle on every row; only its first row has the Title (and Type),
    and variant rows have no Image Src (skipped, as are repeats of the same image)."""
    rows, skipped, seen = [], 0, set()
    titles: dict[str, str] = {}
    categories: dict[str, str] = {}
    for _, r in records:
        handle, src = r["handle"], r["image src"]
        if handle and r.get("title"):
            titles.setdefault(handle, r["title"])
        category = r.get("type") or r.get("product category")
        if handle and category:
            categories.setdefault(handle, category)
        if not src or (handle, src) in seen:
            skipped += 1
            continue
        seen.add((handle, src))
        p, url, error = _resolve(src, base)
        position = r.get("image position", "")
        order = float(position) if position.isdigit() else math.inf
        rows.append(_Row(handle or None, src, p, url, order=order, error=error))
    for row in rows:
        row.title, row.category = titles.get(row.product_id or ""), categories.get(row.product_id or "")
    return rows, skipped


# -- options, outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    targets: tuple[str, ...]
    scene: str | None = None
    seed: int = 0
    detector: str | None = None
    jobs: int = 1
    via_celery: bool = False
    worker_timeout: float = 60.0  # --via-celery: seconds for a worker to pick up the first piece of work

    def validate(self, settings: Settings) -> None:
        """Unknown names and impossible combinations fail before any work."""
        from .presets import get_target
        from .scenes import get_scene

        if not self.targets:
            raise BadInput("no targets: pass at least one -t/--target")
        for t in self.targets:
            get_target(t)
        if self.scene:
            get_scene(self.scene, settings)
        if self.jobs < 1:
            raise BadInput(f"--jobs must be at least 1, got {self.jobs}")
        if self.via_celery and self.jobs != 1:
            raise BadInput("--jobs sets in-process workers; with --via-celery size the Celery workers instead")
        if self.via_celery and self.detector:
            raise BadInput("--detector is not supported with --via-celery: workers use PRODUCT_STUDIO_EDGE_DETECTOR")

    def fingerprint(self, settings: Settings) -> str:
        """What makes an earlier run's outputs reusable: the same targets, scene, seed and models."""
        doc = {"targets": list(dict.fromkeys(self.targets)), "scene": self.scene or "", "seed": self.seed,
               "detector": self.detector or settings.edge_detector, "cutout": settings.cutout_model}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OutputFile:
    """One file in an item's folder, as the manifest describes it."""

    name: str
    target: str  # export target, or "cutout" / "control"
    width: int
    height: int
    bytes: int
    check: str = ""  # "pass" or the failing rules; "" for cutout and control
    seed: int | None = None

    @property
    def check_failed(self) -> bool:
        return bool(self.check) and self.check != "pass"


@dataclass(frozen=True)
class Rendered:
    files: tuple[OutputFile, ...]


@dataclass(frozen=True)
class Failed:
    reason: str
    exit_code: int = 1
    stage: str = "process"
    detail: str | None = None  # a traceback for unexpected errors: kept in the journal, not the CSV


def _failure(exc: BaseException, label: str, stage: str) -> Failed:
    if isinstance(exc, ProductStudioError):
        return Failed(str(exc), exc.exit_code, stage)
    # A bug must not stop a catalogue of thousands: it is recorded against its item.
    return Failed(f"{label}: unexpected {type(exc).__name__}: {exc}", 1, stage, traceback.format_exc())


# -- the journal ---------------------------------------------------------------------------------


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


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable before the journal says it happened."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    """One batch per output folder at a time: a second would count the first's items twice."""
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProductStudioError(f"{state.parent}: another batch is writing to this folder") from None
        yield
    finally:
        os.close(fd)


def _remove_leftovers(out: Path) -> None:
    """Staging folders of a run that was killed (the lock is ours: nobody else is writing them)."""
    for pattern in (".*.part", ".*.old", "*/.*.part", "*/.*.old"):
        for p in out.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# -- workers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderJob:
    """What a worker process needs for one image: bytes, not a path (the parent hashed them)."""

    data: bytes
    label: str  # names the input in error messages
    parent: str  # OUT or OUT/<product>
    name: str  # the folder's name inside parent
    targets: tuple[str, ...]
    scene: str | None
    seed: int
    detector: str | None
    title: str | None
    category: str | None


_worker_settings: Settings | None = None


def _init_worker(settings: Settings, threads: int) -> None:
    """A worker process: interrupts are the parent's to handle; cores are shared between workers."""
    import cv2

    global _worker_settings
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_settings = settings
    settings.apply_environment()
    cv2.setNumThreads(threads)


def _image_size(image: bytes | Path) -> tuple[int, int]:
    """Width and height from the image's header."""
    from PIL import Image

    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
        return im.size


def render(job: RenderJob, settings: Settings | None = None) -> Rendered | Failed:
    """Cut out and render one image into parent/name/ (built aside, swapped in whole)."""
    from .pipeline.ingest import load_bytes
    from .pipeline.process import process_photo
    from .presets import get_target

    settings = settings or _worker_settings or get_settings()
    try:
        source = dataclasses.replace(load_bytes(job.data, job.label, settings), name=job.name)
        result = process_photo(source, [get_target(t) for t in job.targets], Path(job.parent), scene=job.scene,
                               seed=job.seed, detector=job.detector, title=job.title, category=job.category,
                               settings=settings)
        files = [OutputFile(name, target, *_image_size(result.folder / name), (result.folder / name).stat().st_size)
                 for name, target in (("cutout.png", "cutout"), ("control.png", "control"))]
    except Exception as exc:
        return _failure(exc, job.label, "process")
    files += [OutputFile(v.path.name, v.target, v.width, v.height, v.bytes, v.check.summary(), v.seed)
              for v in result.variants]
    return Rendered(tuple(files))


class _Inline:
    """--jobs 1: render in this process, one image at a time, behind the pool's interface."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def submit(self, job: RenderJob) -> Future:
        fut: Future = Future()
        fut.set_result(render(job, self.settings))
        return fut

    def busy(self) -> bool:
        return False

    def stop(self, now: bool) -> None:
        pass


class _Pool:
    """--jobs N: N spawned processes (never forked from a parent that runs threads); each loads the
    cut-out model on its first image and keeps it."""

    def __init__(self, jobs: int, settings: Settings):
        import multiprocessing

        from .pipeline.cutout import default_workers

        threads = max(1, default_workers() // jobs)
        if not settings.cutout_threads:  # ONNX Runtime would start a thread per core in every worker
            settings = settings.model_copy(update={"cutout_threads": threads})
        self.pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), initializer=_init_worker,
                                        initargs=(settings, threads))

    def submit(self, job: RenderJob) -> Future:
        return self.pool.submit(render, job)

    def busy(self) -> bool:
        return False

    def stop(self, now: bool) -> None:
        if now:  # a second Ctrl-C: their staging folders are removed by the next run
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=not now, cancel_futures=True)


class _Celery:
    """--via-celery: one job per unique image, submitted through the core (work.submit) and
    waited for by polling the database; finished files are copied out of the blob store."""

    POLL = 0.5

    def __init__(self, run: _Run):
        from . import runtime

        self.run, self.settings = run, run.settings
        self.db, self.blobs = runtime.database(self.settings), runtime.store(self.settings)
        self.waiting: dict[str, list[_Task]] = {}  # job id -> its items (several when titles differ)
        self.moved, self.last_move, self.picked_up = -1, time.monotonic(), False

    def submit(self, task: _Task, data: bytes) -> Failed | None:
        from .work import Upload, submit

        item, o = task.item, self.run.options
        try:
            job, _ = submit([Upload(item.source, data, item.title, item.category)], targets=list(o.targets),
                            scene=o.scene, seed=o.seed, origin="batch", settings=self.settings)
        except Exception as exc:
            return _failure(exc, item.source, "submit")
        if not self.waiting:
            self.last_move = time.monotonic()  # the wait for a worker starts with the first job
        self.waiting.setdefault(job.id, []).append(task)
        return None

    def busy(self) -> bool:
        return bool(self.waiting)

    def poll(self, idle: Future | None) -> list[tuple[_Task, Rendered | Failed]]:
        """Settled jobs' items; waits about POLL seconds (for `idle`, when nothing is submitted)."""
        from sqlalchemy import select

        from .models import JOB_FINAL, Job

        if not self.waiting:
            if idle is not None:
                wait([idle], timeout=self.POLL)
            return []
        time.sleep(self.POLL)
        with self.db.session() as s:  # short: on SQLite a session holds the write lock
            final = [j for chunk in _chunks(list(self.waiting), 500) for j in s.scalars(
                select(Job.id).where(Job.id.in_(chunk), Job.status.in_(JOB_FINAL)))]
        settled = []
        for job_id in final:
            tasks = self.waiting.pop(job_id)
            settled += [(t, self._collect(job_id, t.item)) for t in tasks]
        self._watch(bool(settled))
        return settled

    def _collect(self, job_id: str, item: Item) -> Rendered | Failed:
        """A finished job's files written into the item's folder, or why it failed."""
        from sqlalchemy.orm import selectinload

        from .models import Asset, Job, StageStatus
        from .presets import get_target

        with self.db.session() as s:
            job = s.get_one(Job, job_id, options=[selectinload(Job.assets).selectinload(Asset.variants)])
            asset = job.assets[0]
            variants = [(v.target, v.status, v.key, v.width, v.height, v.bytes, v.check_summary, v.seed, v.error)
                        for v in asset.variants]
            keys, error = (asset.cutout_key, asset.control_key), asset.error or job.error
        bad = [f"{t}: {e or status}" for t, status, *_, e in variants if status != StageStatus.DONE]
        if bad or not all(keys):
            return Failed(f"{item.source}: " + ("; ".join(bad) or error or "no cut-out was stored"), 1, "worker")
        try:
            blobs = {"cutout.png": self.blobs.get(keys[0]), "control.png": self.blobs.get(keys[1])}
            files = [OutputFile(n, n.removesuffix(".png"), *_image_size(d), len(d)) for n, d in blobs.items()]
            for t, _, key, w, h, size, check, seed, _ in variants:
                name = f"{t}.{get_target(t).extension}"
                blobs[name] = self.blobs.get(key)
                files.append(OutputFile(name, t, w, h, size, check or "", seed))
            self.run.write_folder(item, blobs)
        except (OSError, KeyError) as exc:  # storage trouble, or a blob the database names but lacks
            return Failed(f"{item.source}: cannot copy the results out of storage ({exc})", 4, "copy")
        return Rendered(tuple(files))

    def _watch(self, settled: bool) -> None:
        """Stop waiting when no worker moves anything: at first within worker_timeout, later within
        the task time limit plus the sweeper's requeue delay (a worker that died mid-batch)."""
        from sqlalchemy import func, select

        from .models import Asset, StageStatus, Variant

        moved = 0
        with self.db.session() as s:
            for chunk in _chunks(list(self.waiting), 500):
                moved += s.scalar(select(func.count()).select_from(Variant).join(Asset).where(
                    Asset.job_id.in_(chunk), Variant.status != StageStatus.PENDING)) or 0
                moved += s.scalar(select(func.count()).select_from(Asset).where(
                    Asset.job_id.in_(chunk), Asset.cutout_status != StageStatus.PENDING)) or 0
        now = time.monotonic()
        if settled or moved != self.moved:
            self.picked_up = self.picked_up or settled or moved > 0
            self.moved, self.last_move = moved, now
            return
        o = self.run.options
        limit = o.worker_timeout if not self.picked_up else (
            o.worker_timeout + self.settings.task_time_limit + self.settings.requeue_after)
        if now - self.last_move > limit:
            what = "picked up any work" if not self.picked_up else "made progress"
            raise TransientError(
                f"no Celery worker {what} in {limit:.0f} s (broker {self.settings.broker_url}): start one with "
                "`product-studio worker` on the same PRODUCT_STUDIO_* settings, then rerun this command to resume")

    def stop(self, now: bool) -> None:
        pass  # submitted jobs stay queued: a rerun finds them by fingerprint and collects them


def _result(fut: Future) -> Rendered | Failed:
    from concurrent.futures.process import BrokenProcessPool

    try:
        return fut.result()
    except BrokenProcessPool:  # killed (out of memory?) or crashed: which image did it is unknown
        raise TransientError("a worker process died (out of memory?); rerun the same command to resume, "
                             "perhaps with fewer --jobs") from None


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


# -- the run -------------------------------------------------------------------------------------


class Reporter:
    """Progress callbacks; the CLI draws a bar, tests and the bench need none."""

    def start(self, total: int, done: int) -> None: ...

    def advance(self, item: Item, outcome: Rendered | Failed) -> None: ...

    def note(self, message: str) -> None: ...

    def stop(self) -> None: ...


@dataclass
class BatchSummary:
    source: str
    out: str
    mode: str
    items: int = 0  # images in the catalogue
    products: int = 0
    done: int = 0  # items finished, this run or before
    resumed: int = 0  # ...of which an earlier run finished
    processed: int = 0  # unique images rendered this run
    deduped: int = 0  # items this run filled with copies of an identical image's files
    failed: int = 0
    check_failed: int = 0  # variants made but failing their target's rules
    skipped: int = 0  # rows without an image, non-image files in a folder
    products_done: int = 0  # products with every image finished, at least one of them this run
    seconds: float = 0.0
    products_per_minute: float = 0.0
    interrupted: bool = False
    error: str | None = None  # why the run stopped early (no Celery worker)
    exit_code: int = 0
    reports: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Task:
    item: Item
    sha: str
    dedupe: str  # same key, same files


@dataclass
class _Loaded:
    item: Item
    data: bytes = b""
    task: _Task | None = None
    failure: Failed | None = None


@contextmanager
def _interrupts(run: _Run) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): take no new items, finish and record the running ones.
    Second: stop at once (KeyboardInterrupt); unrecorded items are simply redone next time."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        if run.stopping:
            raise KeyboardInterrupt
        run.stopping = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Run:
    def __init__(self, catalogue: Catalogue, out: Path, options: BatchOptions, settings: Settings,
                 reporter: Reporter):
        self.catalogue, self.out, self.options, self.settings = catalogue, out, options, settings
        self.reporter = reporter
        self.params = options.fingerprint(settings)
        self.generative = self._generative()
        self.stopping = False
        mode = "celery" if options.via_celery else f"in-process, {options.jobs} job(s)"
        self.summary = BatchSummary(catalogue.source, str(out), mode, items=len(catalogue.items),
                                    products=catalogue.products, skipped=catalogue.skipped)
        self.valid: set[str] = set()  # keys of items whose "done" record is true on disk
        self.finished: dict[str, tuple[Item, Rendered]] = {}  # dedupe key -> an item holding its files
        self.failed: dict[str, Failed] = {}
        self.followers: dict[str, list[_Task]] = {}  # dedupe key -> items waiting for its leader
        self.in_flight: dict[Future, _Task] = {}
        self.capacity = 64 if options.via_celery else options.jobs + 1  # images sent ahead of the results
        self.touched: set[str] = set()  # products with an item finished this run

    def _generative(self) -> bool:
        """Whether a target is painted by a diffusion model, whose prompt names the product."""
        from .pipeline.process import scene_for
        from .presets import get_target

        return any(scene_for(t, self.options.scene, self.settings).backend == "diffusers" and not t.pure_white
                   for t in map(get_target, self.options.targets))

    def key(self, item: Item) -> str:
        return hashlib.sha256(json.dumps([item.folder, item.location, self.params]).encode()).hexdigest()[:32]

    def dedupe_key(self, item: Item, sha: str) -> str:
        extra = [item.title, item.category] if self.generative else []
        return hashlib.sha256(json.dumps([sha, self.params, *extra]).encode()).hexdigest()[:32]

    # -- recording --

    def record_done(self, task: _Task, outcome: Rendered, copied: bool) -> None:
        item = task.item
        self.journal.append({"v": _JOURNAL_VERSION, "key": self.key(item), "status": "done", "sha256": task.sha,
                             "dedupe": task.dedupe, "files": [dataclasses.asdict(f) for f in outcome.files],
                             "at": time.time()})
        self.valid.add(self.key(item))
        self.touched.add(item.product)
        self.summary.deduped += copied
        self.summary.processed += not copied
        self.reporter.advance(item, outcome)

    def record_failed(self, item: Item, failure: Failed) -> None:
        self.journal.append({"v": _JOURNAL_VERSION, "key": self.key(item), "status": "failed",
                             "stage": failure.stage, "reason": failure.reason, "exit_code": failure.exit_code,
                             "detail": failure.detail, "at": time.time()})
        self.reporter.advance(item, failure)

    # -- files --

    def write_folder(self, item: Item, files: dict[str, bytes]) -> None:
        """The item's folder, built aside and swapped in whole, the swap made durable."""
        from .pipeline.process import _staging

        folder = self.out / item.folder
        with _staging(folder) as stage:
            for name, data in files.items():
                atomic_write_bytes(stage / name, data)
        _fsync_dir(folder.parent)

    def copy(self, src: Item, dst: Item, outcome: Rendered) -> Rendered | Failed:
        """An identical image's finished files, copied into another product's folder."""
        try:
            self.write_folder(dst, {f.name: (self.out / src.folder / f.name).read_bytes() for f in outcome.files})
        except OSError as exc:
            return Failed(f"{dst.source}: cannot copy the results of {src.source} ({exc})", 1, "copy")
        return outcome

    # -- loading (in loader threads) --

    def load(self, item: Item) -> _Loaded:
        if item.error:
            return _Loaded(item, failure=Failed(item.error, BadInput.exit_code, "read"))
        try:
            data = self._fetch(item.url) if item.url else self._read(item.path, item.source)
        except Exception as exc:
            return _Loaded(item, failure=_failure(exc, item.source, "fetch" if item.url else "read"))
        sha = hashlib.sha256(data).hexdigest()
        return _Loaded(item, data, _Task(item, sha, self.dedupe_key(item, sha)))

    def _read(self, path: Path, label: str) -> bytes:
        from .pipeline.ingest import read_bounded

        return read_bounded(path, label, self.settings)

    def _fetch(self, url: str) -> bytes:
        from .fetch import fetch_image  # only batches with URLs need the network stack

        return fetch_image(url, self.settings).data

    # -- the loop --

    def run(self) -> BatchSummary:
        t0 = time.perf_counter()
        state = self.out / STATE_DIR
        with _locked(state):
            _remove_leftovers(self.out)
            self.journal = Journal(state / "journal.jsonl")
            try:
                pending = self._plan()
                self.reporter.start(len(self.catalogue.items), self.summary.resumed)
                with _interrupts(self):
                    self._work(pending)
            except KeyboardInterrupt:  # the second Ctrl-C: what was not recorded is redone next time
                self.summary.interrupted = True
            except TransientError as exc:  # no Celery worker runs the jobs, or a worker process died
                self.summary.error = str(exc)
            finally:
                self.reporter.stop()
                self.summary.seconds = time.perf_counter() - t0
                self._finish()
                self.journal.close()
        return self.summary

    def _plan(self) -> list[Item]:
        """The items still to do; finished ones seed the dedupe table."""
        pending = []
        for item in self.catalogue.items:
            record = self.journal.records.get(self.key(item))
            files = tuple(OutputFile(**f) for f in record["files"]) if record and record["status"] == "done" else ()
            if files and all((self.out / item.folder / f.name).is_file() for f in files):
                self.valid.add(self.key(item))
                self.summary.resumed += 1
                self.finished.setdefault(record["dedupe"], (item, Rendered(files)))
            else:
                pending.append(item)
        return pending

    def _engine(self):
        if self.options.via_celery:
            return _Celery(self)
        return _Inline(self.settings) if self.options.jobs == 1 else _Pool(self.options.jobs, self.settings)

    def _work(self, pending: list[Item]) -> None:
        engine = self._engine()
        todo, loads = deque(pending), deque()
        with ThreadPoolExecutor(4, thread_name_prefix="batch-load") as loader:
            try:
                while not self.stopping and (todo or loads or self.in_flight or engine.busy()):
                    while todo and len(loads) < self.capacity + 4:  # read ahead, but not the whole catalogue
                        loads.append(loader.submit(self.load, todo.popleft()))
                    while loads and loads[0].done() and len(self.in_flight) < self.capacity and not self.stopping:
                        self._dispatch(loads.popleft().result(), engine)
                    self._collect(engine, loads)
                if self.stopping:
                    self._drain(loads)
            except BaseException:
                for fut in loads:
                    fut.cancel()
                engine.stop(now=True)
                raise
            engine.stop(now=False)

    def _collect(self, engine, loads: deque[Future]) -> None:
        """Wait a little for a result (or the next load) and settle what finished."""
        if isinstance(engine, _Celery):
            for task, outcome in engine.poll(idle=loads[0] if loads else None):
                self._settle(task, outcome)
            return
        waitables = list(self.in_flight)
        if loads and len(self.in_flight) < self.capacity:  # a finished load could be dispatched
            waitables.append(loads[0])
        done, _ = wait(waitables, timeout=0.5, return_when=FIRST_COMPLETED)
        for fut in done:
            if fut in self.in_flight:
                self._settle(self.in_flight.pop(fut), _result(fut))

    def _drain(self, loads: deque[Future]) -> None:
        """After a Ctrl-C: start nothing new; record what is already running."""
        self.summary.interrupted = True
        for fut in loads:
            fut.cancel()
        for fut in list(self.in_flight):
            if fut.cancel():
                self.in_flight.pop(fut)
        running = sum(not f.done() for f in self.in_flight)
        if running:
            self.reporter.note(f"interrupted: finishing {running} running item(s); Ctrl-C again to stop at once")
        for fut in list(self.in_flight):
            self._settle(self.in_flight.pop(fut), _result(fut))

    def _dispatch(self, loaded: _Loaded, engine) -> None:
        """Send a loaded item to work, or settle it from an identical image's result."""
        if loaded.failure or loaded.task is None:
            self.record_failed(loaded.item, loaded.failure or Failed("nothing loaded"))
            return
        task = loaded.task
        if task.dedupe in self.finished:
            holder, outcome = self.finished[task.dedupe]
            self._settle_copy(task, self.copy(holder, task.item, outcome))
        elif task.dedupe in self.failed:
            self.record_failed(task.item, self.failed[task.dedupe])
        elif task.dedupe in self.followers:
            self.followers[task.dedupe].append(task)
        else:
            self.followers[task.dedupe] = []
            if isinstance(engine, _Celery):
                failure = engine.submit(task, loaded.data)
                if failure:
                    self._settle(task, failure)
                return
            item, o = task.item, self.options
            folder = self.out / item.folder
            job = RenderJob(loaded.data, item.source, str(folder.parent), folder.name, tuple(dict.fromkeys(o.targets)),
                            o.scene, o.seed, o.detector, item.title, item.category)
            self.in_flight[engine.submit(job)] = task

    def _settle(self, task: _Task, outcome: Rendered | Failed) -> None:
        """A leader's result: record it, then give the items waiting on it copies (or its failure)."""
        followers = self.followers.pop(task.dedupe, [])
        if isinstance(outcome, Failed):
            self.record_failed(task.item, outcome)
            self.failed[task.dedupe] = outcome
            for f in followers:
                self.record_failed(f.item, outcome)
            return
        _fsync_dir((self.out / task.item.folder).parent)  # the swap is on disk before the journal says so
        self.record_done(task, outcome, copied=False)
        self.finished[task.dedupe] = (task.item, outcome)
        for f in followers:
            self._settle_copy(f, self.copy(task.item, f.item, outcome))

    def _settle_copy(self, task: _Task, outcome: Rendered | Failed) -> None:
        if isinstance(outcome, Failed):
            self.record_failed(task.item, outcome)
        else:
            self.record_done(task, outcome, copied=True)

    # -- reports --

    def _finish(self) -> None:
        """manifest.csv, failures.csv and summary.json from the journal: every item of the catalogue
        once, as it stands now (this run's results and the earlier runs' still valid ones)."""
        s = self.summary
        manifest, failures, codes = [], [], []
        done_by_product: dict[str, int] = {}
        for item in self.catalogue.items:
            key = self.key(item)
            record = self.journal.records.get(key)
            where = {"source": item.source, "product": item.product, "image": item.image}
            if key in self.valid:
                done_by_product[item.product] = done_by_product.get(item.product, 0) + 1
                for f in map(lambda f: OutputFile(**f), record["files"]):
                    manifest.append(where | {"target": f.target, "path": f"{item.folder}/{f.name}",
                                             "size": f"{f.width}x{f.height}", "bytes": f.bytes, "check": f.check,
                                             "seed": "" if f.seed is None else f.seed, "sha256": record["sha256"]})
                    if f.check_failed:
                        failures.append(where | {"kind": "check", "target": f.target, "reason": f.check,
                                                 "exit_code": 1})
                        codes.append(1)
            elif record and record["status"] == "failed":
                failures.append(where | {"kind": record["stage"], "target": "", "reason": record["reason"],
                                         "exit_code": record["exit_code"]})
                codes.append(record["exit_code"])
        s.done = sum(done_by_product.values())
        s.failed = sum(1 for f in failures if f["kind"] != "check")
        s.check_failed = sum(1 for f in failures if f["kind"] == "check")
        images = {item.product: item.images for item in self.catalogue.items}
        s.products_done = sum(1 for p in self.touched if done_by_product.get(p) == images[p])
        s.products_per_minute = 60 * s.products_done / s.seconds if s.seconds > 0 else 0.0
        s.exit_code = max([0, *codes, TransientError.exit_code if s.error else 0])
        if s.interrupted:
            s.exit_code = INTERRUPTED
        s.reports = {name: str(self.out / name) for name in REPORTS}
        atomic_write_bytes(self.out / "manifest.csv", _csv(MANIFEST_COLUMNS, manifest))
        atomic_write_bytes(self.out / "failures.csv", _csv(FAILURE_COLUMNS, failures))
        atomic_write_bytes(self.out / "summary.json", json.dumps(dataclasses.asdict(s), indent=2).encode() + b"\n")


def _csv(columns: tuple[str, ...], rows: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


class RichReporter(Reporter):
    """A progress bar with ETA and the failure count; one line per failure above it."""

    def __init__(self, console):
        self.console = console
        self.failed = 0

    def start(self, total: int, done: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("batch", total=total, completed=done, failed=0)
        if done:
            self.progress.console.print(f"resuming: {done} of {total} image(s) already done", highlight=False)

    def advance(self, item: Item, outcome: Rendered | Failed) -> None:
        from rich.markup import escape

        if isinstance(outcome, Failed):
            self.failed += 1
            self.progress.console.print(f"[red]error:[/red] {escape(outcome.reason)}", highlight=False,
                                        soft_wrap=True)
        self.progress.update(self.task, advance=1, failed=self.failed)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/yellow]", highlight=False)

    def stop(self) -> None:
        if hasattr(self, "progress"):
            self.progress.stop()


def summary_table(s: BatchSummary):
    """The printed summary: what was made, what failed, where the reports are."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"batch {s.source} -> {s.out} ({s.mode})"), show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [("images", s.items), ("products", s.products), ("done", f"{s.done} ({s.resumed} by an earlier run)"),
            ("processed this run", s.processed), ("copied from identical images", s.deduped),
            ("failed", f"[red]{s.failed}[/red]" if s.failed else 0),
            ("variants failing their checks", f"[red]{s.check_failed}[/red]" if s.check_failed else 0),
            ("rows / files skipped (no image)", s.skipped),
            ("time", f"{s.seconds:.1f} s"), ("products per minute", f"{s.products_per_minute:.1f}")]
    for name, value in rows:
        table.add_row(name, str(value))
    for name, path in s.reports.items():
        table.add_row(name, escape(path))
    return table


def run_batch(catalogue: Catalogue, out: Path, options: BatchOptions, *, settings: Settings | None = None,
              reporter: Reporter | None = None) -> BatchSummary:
    """Make every item's outputs under `out` (skipping those a previous run finished) and write
    manifest.csv, failures.csv and summary.json there. Never raises for one item's failure."""
    settings = settings or get_settings()
    options.validate(settings)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out}: exists and is not a folder")
    return _Run(catalogue, out, options, settings, reporter or Reporter()).run()
