"""The three engines that render a batch's unique images: Inline (--jobs 1, this process), Pool
(--jobs N spawned worker processes) and Celery (--via-celery: submitted through the job service,
waited for by polling the database, copied out of the blob store); and `render`, the worker function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, get_settings
from ..errors import TransientError
from .outcomes import Failed, OutputFile, Rendered, as_failure
from .sources import Item


@dataclass(frozen=True)
class Task:
    """A loaded image on its way to an engine (or to a copy of an identical image's files)."""

    item: Item
    sha: str
    dedupe: str  # same key, same files


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
    mask_key: str | None = None  # the photo's chosen mask (touch-up), as the run's plan saw it


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
    """Cut out and render one image into parent/name/ (built aside, swapped in whole), with its
    chosen mask when it has one."""
    from ..jobs.masks import load_mask
    from ..pipeline.ingest import load_bytes
    from ..pipeline.process import process_photo
    from ..presets import get_target

    settings = settings or _worker_settings or get_settings()
    try:
        source = dataclasses.replace(load_bytes(job.data, job.label, settings), name=job.name)
        mask = load_mask(job.mask_key, source.width, source.height, settings) if job.mask_key else None
        result = process_photo(source, [get_target(t) for t in job.targets], Path(job.parent), scene=job.scene,
                               seed=job.seed, detector=job.detector, title=job.title, category=job.category,
                               mask=mask, settings=settings)
        files = [OutputFile(name, target, *_image_size(result.folder / name), (result.folder / name).stat().st_size,
                            sha256=_sha256(result.folder / name))
                 for name, target in (("cutout.png", "cutout"), ("control.png", "control"))]
        files[0] = dataclasses.replace(files[0], confidence=result.quality.score if result.quality else None,
                                       review=result.review_reason or "")
        files += [OutputFile(v.path.name, v.target, v.width, v.height, v.bytes, v.check.summary(), v.seed,
                             v.check.warnings_line() or "", sha256=_sha256(v.path))
                  for v in result.variants]
    except Exception as exc:
        return as_failure(exc, job.label, "process")
    if result.failures:  # the other targets are in the folder; the item is redone on a rerun
        worst = max(result.failures.values(), key=lambda e: e.exit_code)
        return Failed("; ".join(f"{t}: {e}" for t, e in result.failures.items()), worst.exit_code, "process")
    return Rendered(tuple(files))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


class Inline:
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


class Pool:
    """--jobs N: N spawned processes (never forked from a parent that runs threads); each loads the
    cut-out model on its first image and keeps it."""

    def __init__(self, jobs: int, settings: Settings):
        import multiprocessing

        from ..pipeline.cutout import default_workers

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


class Celery:
    """--via-celery: one job per unique image, submitted through the core (jobs.submit), enqueued
    here (the door's part) and waited for by polling the database; finished files are copied out of
    the blob store and written with `write_folder`."""

    POLL = 0.5

    def __init__(self, settings: Settings, targets: tuple[str, ...], scene: str | None, seed: int,
                 worker_timeout: float, write_folder: Callable[[Item, dict[str, bytes]], None]):
        from .. import runtime

        self.settings, self.write_folder = settings, write_folder
        self.targets, self.scene, self.seed, self.worker_timeout = targets, scene, seed, worker_timeout
        self.db, self.blobs = runtime.database(self.settings), runtime.store(self.settings)
        self.waiting: dict[str, list[Task]] = {}  # job id -> its items (several when titles differ)
        self.moved, self.last_move, self.picked_up = -1, time.monotonic(), False

    def submit(self, task: Task, data: bytes) -> Failed | None:
        """Record the item's job and enqueue its work; an item the job service refuses is its
        failure. Raises TransientError naming the broker when it cannot be reached: that stops the
        run (every other item would fail alike) and a rerun resumes."""
        from ..jobs import Upload, submit
        from ..jobs.steps import cutouts
        from ..models import JOB_FINAL, StageStatus

        item = task.item
        try:
            submission = submit([Upload(item.source, data, item.title, item.category)], targets=list(self.targets),
                                scene=self.scene, seed=self.seed, origin="batch", settings=self.settings)
        except Exception as exc:
            return as_failure(exc, item.source, "submit")
        job = submission.job
        steps = submission.steps
        if not submission.created and job.status not in JOB_FINAL:
            # Found again on a rerun: its messages may have been lost with an unreachable broker
            # (the units are idempotent, so a message still in line costs at most a repeat).
            steps = cutouts([a.id for a in job.assets if a.cutout_status == StageStatus.PENDING])
        try:
            from tasks.pipeline import (
                enqueue,  # the door enqueues; importing the batch needs no Celery
            )

            enqueue(steps)
        except Exception as exc:  # kombu's OperationalError, a refused connection...
            from ..redact import redact_url

            raise TransientError(f"cannot reach the broker {redact_url(self.settings.broker_url)} "
                                 f"({type(exc).__name__}: {exc}): start it, or fix PRODUCT_STUDIO_BROKER_URL, "
                                 "then rerun this command to resume") from None
        if not self.waiting:
            self.last_move = time.monotonic()  # the wait for a worker starts with the first job
        self.waiting.setdefault(job.id, []).append(task)
        return None

    def busy(self) -> bool:
        return bool(self.waiting)

    def poll(self, idle: Future | None) -> list[tuple[Task, Rendered | Failed]]:
        """Settled jobs' items; waits about POLL seconds (for `idle`, when nothing is submitted)."""
        from sqlalchemy import select

        from ..models import JOB_FINAL, Job

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

        from ..models import Asset, Job, StageStatus
        from ..presets import get_target

        with self.db.session() as s:
            job = s.get_one(Job, job_id, options=[selectinload(Job.assets).selectinload(Asset.variants)])
            asset = job.assets[0]
            variants = [(v.target, v.status, v.key, v.width, v.height, v.bytes, v.check_summary, v.seed,
                         v.check_warnings, v.error) for v in asset.variants]
            keys, error = (asset.cutout_key, asset.control_key), asset.error or job.error
            confidence, review = asset.cutout_confidence, asset.review_reason or ""
        bad = [f"{t}: {e or status}" for t, status, *_, e in variants if status != StageStatus.DONE]
        if bad or not all(keys):
            return Failed(f"{item.source}: " + ("; ".join(bad) or error or "no cut-out was stored"), 1, "worker")
        try:
            blobs = {"cutout.png": self.blobs.get(keys[0]), "control.png": self.blobs.get(keys[1])}
            files = [OutputFile(n, n.removesuffix(".png"), *_image_size(d), len(d), sha256=hashlib.sha256(d).hexdigest())
                     for n, d in blobs.items()]
            files[0] = dataclasses.replace(files[0], confidence=confidence, review=review)
            for t, _, key, w, h, size, check, seed, warnings, _ in variants:
                name = f"{t}.{get_target(t).extension}"
                blobs[name] = self.blobs.get(key)
                files.append(OutputFile(name, t, w, h, size, check or "", seed, warnings or "",
                                        sha256=hashlib.sha256(blobs[name]).hexdigest()))
            self.write_folder(item, blobs)
        except (OSError, KeyError) as exc:  # storage trouble, or a blob the database names but lacks
            return Failed(f"{item.source}: cannot copy the results out of storage ({exc})", 4, "copy")
        return Rendered(tuple(files))

    def _watch(self, settled: bool) -> None:
        """Stop waiting when no worker moves anything: at first within worker_timeout, later within
        the task time limit plus the sweeper's requeue delay (a worker that died mid-batch)."""
        from sqlalchemy import func, select

        from ..models import Asset, StageStatus, Variant

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
        limit = self.worker_timeout if not self.picked_up else (
            self.worker_timeout + self.settings.task_time_limit + self.settings.requeue_after)
        if now - self.last_move > limit:
            what = "picked up any work" if not self.picked_up else "made progress"
            raise TransientError(
                f"no Celery worker {what} in {limit:.0f} s (broker {self.settings.broker_url}): start one with "
                "`product-studio worker` on the same PRODUCT_STUDIO_* settings, then rerun this command to resume")

    def stop(self, now: bool) -> None:
        pass  # submitted jobs stay queued: a rerun finds them by fingerprint and collects them


def outcome_of(fut: Future) -> Rendered | Failed:
    """A pool's or Inline's future as the item's outcome; a dead worker process stops the run."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return fut.result()
    except BrokenProcessPool:  # killed (out of memory?) or crashed: which image did it is unknown
        raise TransientError("a worker process died (out of memory?); rerun the same command to resume, "
                             "perhaps with fewer --jobs") from None


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]

