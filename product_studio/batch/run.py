"""The run: BatchOptions, and `run_batch`, which plans what is left to do from the journal, reads
ahead, hands unique images to an engine, settles identical ones with copies, records every item in
the journal and writes the reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, get_settings
from ..errors import BadInput, TransientError
from ..files import atomic_write_bytes, staged_folder
from .engines import Celery, Inline, Pool, RenderJob, Task, outcome_of
from .journal import (
    JOURNAL_VERSION,
    STATE_DIR,
    Journal,
    fsync_dir,
    locked,
    remove_leftovers,
)
from .outcomes import Failed, OutputFile, Rendered, as_failure
from .report import BatchSummary, Reporter, write_reports
from .sources import Catalogue, Item


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
        from ..presets import get_target
        from ..scenes import get_scene

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


@dataclass
class _Loaded:
    item: Item
    data: bytes = b""
    task: Task | None = None
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
                                    products=catalogue.products, skipped=catalogue.skipped,
                                    repeats=catalogue.repeats)
        self.valid: set[str] = set()  # keys of items whose "done" record is true on disk
        self.finished: dict[str, tuple[Item, Rendered]] = {}  # dedupe key -> an item holding its files
        self.failed: dict[str, Failed] = {}
        self.followers: dict[str, list[Task]] = {}  # dedupe key -> items waiting for its leader
        self.in_flight: dict[Future, Task] = {}
        self.capacity = 64 if options.via_celery else options.jobs + 1  # images sent ahead of the results
        self.touched: set[str] = set()  # products with an item finished this run
        self.masks: dict[str, str] = {}  # photo SHA-256 -> its chosen mask's key (touch-up), read at start

    def _generative(self) -> bool:
        """Whether a target is painted by a diffusion model, whose prompt names the product."""
        from ..pipeline.plan import any_generative

        return any_generative(self.options.targets, self.options.scene, self.settings)

    def key(self, item: Item) -> str:
        return hashlib.sha256(json.dumps([item.folder, item.location, self.params]).encode()).hexdigest()[:32]

    def dedupe_key(self, item: Item, sha: str) -> str:
        extra = [item.title, item.category] if self.generative else []
        return hashlib.sha256(json.dumps([sha, self.params, *extra]).encode()).hexdigest()[:32]

    # -- recording --

    def record_done(self, task: Task, outcome: Rendered, copied: bool) -> None:
        item = task.item
        self.journal.append({"v": JOURNAL_VERSION, "key": self.key(item), "status": "done", "sha256": task.sha,
                             "mask": self.masks.get(task.sha), "dedupe": task.dedupe, "files": [dataclasses.asdict(f) for f in outcome.files],
                             "at": time.time()})
        self.valid.add(self.key(item))
        self.touched.add(item.product)
        self.summary.deduped += copied
        self.summary.processed += not copied
        self.reporter.advance(item, outcome)

    def record_failed(self, item: Item, failure: Failed) -> None:
        self.journal.append({"v": JOURNAL_VERSION, "key": self.key(item), "status": "failed",
                             "stage": failure.stage, "reason": failure.reason, "exit_code": failure.exit_code,
                             "detail": failure.detail, "at": time.time()})
        self.reporter.advance(item, failure)

    # -- files --

    def write_folder(self, item: Item, files: dict[str, bytes]) -> None:
        """The item's folder, built aside and swapped in whole, the swap made durable."""
        folder = self.out / item.folder
        with staged_folder(folder) as stage:
            for name, data in files.items():
                atomic_write_bytes(stage / name, data)
        fsync_dir(folder.parent)

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
            return _Loaded(item, failure=as_failure(exc, item.source, "fetch" if item.url else "read"))
        sha = hashlib.sha256(data).hexdigest()
        return _Loaded(item, data, Task(item, sha, self.dedupe_key(item, sha)))

    def _read(self, path: Path, label: str) -> bytes:
        from ..pipeline.ingest import read_bounded

        return read_bounded(path, label, self.settings)

    def _fetch(self, url: str) -> bytes:
        from ..fetch import fetch_image  # only batches with URLs need the network stack

        return fetch_image(url, self.settings).data

    # -- the loop --

    def run(self) -> BatchSummary:
        t0 = time.perf_counter()
        state = self.out / STATE_DIR
        with locked(state):
            remove_leftovers(self.out)
            self.journal = Journal(state / "journal.jsonl")
            try:
                from ..jobs.masks import chosen_keys

                self.masks = chosen_keys(None, self.settings)  # the installation's own (store-less) jobs
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
            if files and record.get("mask") != self.masks.get(record.get("sha256", "")):
                files = ()  # a mask was chosen (or restored) in touch-up since: render it again
            if files and all((self.out / item.folder / f.name).is_file() for f in files):
                self.valid.add(self.key(item))
                self.summary.resumed += 1
                self.finished.setdefault(record["dedupe"], (item, Rendered(files)))
            else:
                pending.append(item)
        return pending

    def _engine(self):
        if self.options.via_celery:
            return Celery(self.settings, self.options.targets, self.options.scene, self.options.seed,
                          self.options.worker_timeout, self.write_folder)
        return Inline(self.settings) if self.options.jobs == 1 else Pool(self.options.jobs, self.settings)

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
        if isinstance(engine, Celery):
            for task, outcome in engine.poll(idle=loads[0] if loads else None):
                self._settle(task, outcome)
            return
        waitables = list(self.in_flight)
        if loads and len(self.in_flight) < self.capacity:  # a finished load could be dispatched
            waitables.append(loads[0])
        done, _ = wait(waitables, timeout=0.5, return_when=FIRST_COMPLETED)
        for fut in done:
            if fut in self.in_flight:
                self._settle(self.in_flight.pop(fut), outcome_of(fut))

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
            self._settle(self.in_flight.pop(fut), outcome_of(fut))

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
            if isinstance(engine, Celery):
                failure = engine.submit(task, loaded.data)
                if failure:
                    self._settle(task, failure)
                return
            item, o = task.item, self.options
            folder = self.out / item.folder
            job = RenderJob(loaded.data, item.source, str(folder.parent), folder.name, tuple(dict.fromkeys(o.targets)),
                            o.scene, o.seed, o.detector, item.title, item.category, self.masks.get(task.sha))
            self.in_flight[engine.submit(job)] = task

    def _settle(self, task: Task, outcome: Rendered | Failed) -> None:
        """A leader's result: record it, then give the items waiting on it copies (or its failure)."""
        followers = self.followers.pop(task.dedupe, [])
        if isinstance(outcome, Failed):
            self.record_failed(task.item, outcome)
            self.failed[task.dedupe] = outcome
            for f in followers:
                self.record_failed(f.item, outcome)
            return
        fsync_dir((self.out / task.item.folder).parent)  # the swap is on disk before the journal says so
        self.record_done(task, outcome, copied=False)
        self.finished[task.dedupe] = (task.item, outcome)
        for f in followers:
            self._settle_copy(f, self.copy(task.item, f.item, outcome))

    def _settle_copy(self, task: Task, outcome: Rendered | Failed) -> None:
        if isinstance(outcome, Failed):
            self.record_failed(task.item, outcome)
        else:
            self.record_done(task, outcome, copied=True)

    # -- reports --

    def _finish(self) -> None:
        write_reports(self.out, self.catalogue, self.journal.records, self.key, self.valid, self.touched, self.summary)


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
