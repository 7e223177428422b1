"""What `product-studio doctor` reports: each component, whether it works, and why not."""

from __future__ import annotations

import importlib.metadata as md
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .redact import known_secrets, redact, redact_url


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn (optional, missing) | fail (the default pipeline cannot run)
    detail: str


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _cutout(settings: Settings) -> Iterator[Check]:
    """One line per cut-out model the setting names."""
    from .backends.registry import cutout_members
    from .provision import md5

    for entry in cutout_members(settings.cutout_model):
        name = f"cutout model {entry.name}"
        path = Path(settings.model_dir) / entry.file
        if not path.is_file():
            hint = f"run `{entry.fetch_command}`" if entry.provisioned_offline else \
                "rembg downloads it when online; offline, put the file there"
            yield Check(name, "fail", f"missing {path}: {hint}")
        elif entry.md5 and md5(path) != entry.md5:
            yield Check(name, "fail", f"{path} has the wrong checksum; delete it and fetch again")
        else:
            yield Check(name, "ok", f"{path} ({entry.licence}; rembg {_version('rembg')})")


def _onnxruntime(settings: Settings) -> Check:
    import onnxruntime as ort

    return Check("onnxruntime", "ok", f"{ort.__version__}, providers {', '.join(ort.get_available_providers())}")


def _torch(settings: Settings) -> Check:
    try:
        import torch
        import torchvision
    except Exception as exc:  # a mismatched pair fails at import
        return Check("torch", "fail", f"import failed: {exc}")
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no GPU: CPU"
    return Check("torch", "ok", f"torch {torch.__version__}, torchvision {torchvision.__version__}; {cuda}; "
                               f"configured device {settings.device}")


def _edges(settings: Settings) -> Check:
    from .pipeline.edges import DETECTORS

    try:
        import controlnet_aux  # noqa: F401
    except Exception as exc:
        return Check("edges: controlnet-aux", "fail", f"import failed: {exc}")
    free = [n for n, d in DETECTORS.items() if not d.weights]
    hub = [n for n, d in DETECTORS.items() if d.weights]
    status = "ok" if settings.edge_detector in free else "warn"
    return Check("edges: controlnet-aux", status,
                 f"{_version('controlnet-aux')}; ready: {', '.join(free)}; need weights from "
                 f"{settings.annotators_repo}: {', '.join(hub)}; default {settings.edge_detector}")


def _scenes(settings: Settings) -> Check:
    """The presets every door offers: the built-in ones and those of PRODUCT_STUDIO_SCENES_FILE."""
    from .scenes import SCENES, all_scenes

    scenes = all_scenes(settings)  # BadInput naming the file and the scene when it does not load
    own = f"; from {settings.scenes_file}: {', '.join(n for n in scenes if n not in SCENES or scenes[n] != SCENES[n])}" \
        if settings.scenes_file else ""
    return Check("scenes", "ok", ", ".join(f"{s.name} ({s.backend})" for s in scenes.values()) + own)


def _scene_backends(settings: Settings) -> Iterator[Check]:
    """One line per registered scene backend that has a check (the others need nothing)."""
    from .backends.registry import scene_backends

    for backend in scene_backends().values():
        if (check := backend.checker()) is not None:
            status, detail = check(settings)
            yield Check(f"scene backend {backend.name}", status, detail)


def _database(settings: Settings) -> Check:
    from .db import Database

    db = Database(settings.database)
    try:
        current, head = db.current_revision(), db.head_revision()
    finally:
        db.dispose()
    url = db.url.render_as_string(hide_password=True)
    if current is None:
        return Check("database", "ok", f"{url}: not made yet (a new installation): it is made, at schema "
                                       f"{head}, on first use")
    if current != head:
        return Check("database", "warn", f"{url}: schema at {current}, {head} is current (migrated on first use)")
    return Check("database", "ok", f"{url}, schema {current}")


def _broker(settings: Settings) -> Check:
    from tasks import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
    return Check("broker", "ok", redact_url(settings.broker_url) + (" (embedded, no server)" if
                                                                    settings.broker_url.startswith("filesystem") else ""))


def _storage(settings: Settings) -> Check:
    from . import runtime

    blobs = runtime.store(settings)
    blobs.put("doctor/probe", b"ok")
    ok = blobs.get("doctor/probe") == b"ok"
    blobs.delete("doctor/probe")
    return Check("storage", "ok" if ok else "fail", f"{redact_url(settings.storage)} ({type(blobs).__name__}), writable")


WORKER_GRACE = 120.0  # s: work waiting this long with nothing moving means no worker takes it


def _workers(settings: Settings) -> Check:
    """Whether a worker consumes the queues: asked over the broker where it can answer (Redis,
    RabbitMQ: a Celery ping), and read from the database everywhere (work queued for more than
    WORKER_GRACE s while nothing moved: the embedded broker cannot be asked)."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from . import runtime
    from .models import Asset, StageStatus, Variant, utcnow

    start = "start one with `product-studio worker` (`serve` starts one unless --no-worker)"
    answered = None
    if not settings.broker_url.startswith("filesystem"):
        from tasks import app

        answered = len(app.control.ping(timeout=1.0) or [])
        if answered == 0:
            return Check("workers", "fail", f"no worker answered on {redact_url(settings.broker_url)}: jobs will wait "
                                            f"at queued; {start}")
    running = (StageStatus.RUNNING,)
    with runtime.database(settings).session() as s:
        waiting = s.scalar(select(func.min(Variant.updated_at)).where(Variant.status == StageStatus.PENDING))
        latest = s.scalar(select(func.max(Variant.updated_at)).where(Variant.status != StageStatus.PENDING))
        busy = s.scalar(select(func.count()).select_from(Asset).where(
            Asset.cutout_status.in_(running) | Asset.edges_status.in_(running))) or 0
        busy += s.scalar(select(func.count()).select_from(Variant).where(Variant.status.in_(running))) or 0
    now = utcnow()
    if waiting is not None and not busy and now - waiting > timedelta(seconds=WORKER_GRACE) and \
            (latest is None or now - latest > timedelta(seconds=WORKER_GRACE)):
        minutes = (now - waiting).total_seconds() / 60
        return Check("workers", "fail", f"work has waited {minutes:.0f} min and nothing moved for "
                                        f"{WORKER_GRACE:.0f} s: no worker seems to consume the queues; {start}")
    if answered:
        return Check("workers", "ok", f"{answered} worker(s) answered")
    return Check("workers", "ok", "nothing is waiting for a worker (the embedded broker cannot be asked "
                                  "whether one runs)" if waiting is None else "work is moving")


CHECKS: tuple[Callable[[Settings], Check | Iterator[Check]], ...] = (
    _cutout, _onnxruntime, _torch, _edges, _scenes, _scene_backends, _database, _broker, _workers, _storage,
)
# What only a machine that renders needs: a web door on a machine of its own loads no model.
MODEL_CHECKS = (_cutout, _onnxruntime, _torch, _edges, _scene_backends)


def run_checks(settings: Settings, *, web_only: bool = False) -> Iterator[Check]:
    """Every check's lines, in order; `web_only` leaves out MODEL_CHECKS (the web door's machine in
    the production layout). Each detail is redacted (product_studio/redact.py): no password, secret
    key or token from a URL or the settings reaches the terminal or the web Status page, also
    when a failing library quotes one in its exception. Never raises."""
    settings.apply_environment()
    secrets = known_secrets(settings)
    for check in CHECKS:
        if web_only and check in MODEL_CHECKS:
            continue
        try:
            with warnings.catch_warnings():  # third-party import chatter (timm, torch.jit) is not ours to show
                warnings.simplefilter("ignore")
                found = check(settings)
                checks = [found] if isinstance(found, Check) else list(found)
        except Exception as exc:  # doctor reports; it never crashes
            checks = [Check(check.__name__.strip("_"), "fail", f"{type(exc).__name__}: {exc}")]
        for c in checks:
            yield Check(c.name, c.status, redact(c.detail, secrets))


if __name__ == "__main__":  # `python -m product_studio.doctor --jsonl [--web]`: the web Status page's source
    import dataclasses
    import json
    import sys

    from .config import get_settings
    from .errors import BadSetting

    try:
        found = run_checks(get_settings(), web_only="--web" in sys.argv)
    except BadSetting as exc:  # the Status page shows it as its one failing check
        found = iter([Check("settings", "fail", str(exc))])
    for c in found:  # one line per check as soon as it is known: the page shows them as they come
        if "--jsonl" in sys.argv:
            print(json.dumps(dataclasses.asdict(c)), flush=True)
        else:
            print(f"{c.status:5} {c.name}: {c.detail}", flush=True)
