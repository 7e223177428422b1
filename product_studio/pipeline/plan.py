"""The stage plan: every stage of a photo declared once, for both runners.

    source --cutout--> RGBA cut-out --control--> control image (one per layout canvas)
                                    --variant--> one file per target (layout, scene, composite, export)

Each stage declares the inputs its output depends on, the key derived from exactly those inputs
(content-addressed, with a version to bump when the output for the same inputs changes) and the
function that computes it. Two runners execute the plan: `pipeline/process.py` in this process
(a photo's folder: `process`, `batch --jobs`) and `jobs/units.py` as Celery tasks (blobs and
database rows). Neither decides anything on its own: which scene a target uses, whether it is
painted by a generative model (which needs a control image, a GPU worker and an AI label), and
which canvas a control image is drawn on are all answered here.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..backends.registry import ENSEMBLE_SEPARATOR, cutout_members, scene_backend
from ..config import Settings, get_settings
from ..content_keys import content_key
from ..presets import Target, get_target
from ..scenes import ScenePreset, get_scene
from .composite import composite
from .cutout import Cutout, cut_out_masked, cut_out_scored
from .edges import control_image
from .layout import Placement, place
from .scene import render_background, shadow_style


@dataclass(frozen=True)
class Stage:
    """One stage: its declared inputs, the blob folder and version of its key, its function."""

    name: str
    folder: str  # the key's first path segment in the blob store
    version: str  # bump when the output for the same inputs changes: new keys, old outputs not reused
    inputs: tuple[str, ...]  # what the key is derived from, in order
    compute: Callable

    def key(self, extension: str, **inputs: str | Mapping) -> str:
        """The content key "<folder>/<h[:2]>/<h>.<extension>" of this stage's output for `inputs`,
        which must be exactly the declared ones. Raises ValueError otherwise."""
        if set(inputs) != set(self.inputs):
            raise ValueError(f"stage {self.name} takes {', '.join(self.inputs)}; got {', '.join(sorted(inputs))}")
        return content_key(self.folder, extension, *(inputs[n] for n in self.inputs), self.version)


class StageTimer:
    """Seconds spent per stage, summed over calls (and over threads: safe to share)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] += time.perf_counter() - t0


# --- decisions ----------------------------------------------------------------------------------

def scene_for(target: Target, scene: str | None, settings: Settings | None = None) -> ScenePreset:
    """The scene a target uses: the one asked for, else the target's default. UnknownName for a
    scene that does not exist."""
    return get_scene(scene or target.default_scene, settings)


def is_generative(target: Target, preset: ScenePreset) -> bool:
    """Whether a model paints this variant's background (needs a control image and a GPU worker,
    and the file is labelled AI-generated). Pure-white targets never are."""
    return scene_backend(preset.backend).generative and not target.pure_white


def any_generative(targets: Iterable[str], scene: str | None, settings: Settings | None = None) -> bool:
    """Whether any of the named targets is painted by a generative backend with `scene`."""
    return any(is_generative(t, scene_for(t, scene, settings)) for t in map(get_target, targets))


def layout_canvas(target: Target) -> str:
    """What a placement depends on besides the cut-out (layout.place): canvas size, fill and
    alignment. Targets with the same canvas share their control image."""
    return f"{target.width}x{target.height} fill {target.fill:g} {target.align}"


def control_target(targets: list[Target]) -> Target:
    """The target whose canvas `process` draws control.png on: the first scene target (where a
    generator would use it), else the first target."""
    return next((t for t in targets if not t.pure_white), targets[0])


@dataclass(frozen=True)
class TargetPlan:
    target: Target
    preset: ScenePreset
    generative: bool


@dataclass(frozen=True)
class PhotoPlan:
    """What one photo's run makes: a variant per target, and the control images they need."""

    targets: tuple[TargetPlan, ...]
    control_target: Target

    def control_targets(self) -> list[Target]:
        """One target per distinct layout canvas needing a control image: the control target's
        (for the record and control.png) and each generative target's."""
        by_canvas: dict[str, Target] = {}
        for t in [self.control_target] + [p.target for p in self.targets if p.generative]:
            by_canvas.setdefault(layout_canvas(t), t)
        return list(by_canvas.values())


def plan_photo(targets: Iterable[str | Target], scene: str | None = None,
               settings: Settings | None = None) -> PhotoPlan:
    """The plan for a photo's targets (names or Targets, in order, duplicates dropped) with an
    optional scene. Raises UnknownName for an unknown target or scene, before any work."""
    settings = settings or get_settings()
    chosen = list({t.name: t for t in (get_target(t) if isinstance(t, str) else t for t in targets)}.values())
    plans = []
    for t in chosen:
        preset = scene_for(t, scene, settings)
        plans.append(TargetPlan(t, preset, is_generative(t, preset)))
    return PhotoPlan(tuple(plans), control_target(chosen))


# --- the stages' functions ----------------------------------------------------------------------

def make_cutout(rgb: np.ndarray, alpha: np.ndarray | None, settings: Settings,
                mask: np.ndarray | None = None) -> Cutout:
    """The (H, W, 4) uint8 RGBA cut-out at source resolution from (H, W, 3) uint8 RGB (+ (H, W)
    alpha), with its confidence (pipeline/confidence.py). `mask`, an admin's (H, W) uint8 alpha
    matte from touch-up, replaces both the models and the photo's own alpha."""
    if mask is not None:
        return cut_out_masked(rgb, mask, settings=settings, decontaminate_edges=alpha is None)
    return cut_out_scored(rgb, alpha, settings=settings)


def make_control(cutout: np.ndarray, target: Target, detector: str | None, settings: Settings,
                 name: str = "image", placement: Placement | None = None) -> np.ndarray:
    """The (H, W, 3) uint8 ControlNet control image of the product placed on target's canvas
    (`placement`, when the caller already placed it there)."""
    return control_image(placement or place(cutout, target, name), detector, settings)


@dataclass
class Variant:
    pixels: np.ndarray  # (H, W, 3) uint8 on the target's canvas
    placement: Placement
    seed: int
    ai_generated: bool  # pixels outside the product came from a generative model
    control: np.ndarray | None = None  # the control image, when one was used


def render_variant(cutout: np.ndarray, target: Target, preset: ScenePreset, seed: int, *, name: str = "image",
                   control: np.ndarray | None = None, title: str | None = None, category: str | None = None,
                   settings: Settings | None = None, timer: StageTimer | None = None,
                   placement: Placement | None = None) -> Variant:
    """Composite one variant on the target's canvas: the real product over its scene.

    A generative variant uses `control` (from the control stage, for this target's canvas and
    the configured detector) or makes it when not given. `placement`: the cut-out already placed
    on this target's layout canvas (layout_canvas), when the caller has it."""
    timer = timer or StageTimer()
    settings = settings or get_settings()
    if placement is None:
        with timer("layout"):
            placement = place(cutout, target, name)
    generative = is_generative(target, preset)
    if generative and control is None:
        with timer("edges"):
            control = control_image(placement, settings=settings)
    with timer("scene"):
        background = render_background(target, preset, placement, seed, control=control if generative else None,
                                       title=title, category=category, settings=settings)
    with timer("composite"):
        pixels = composite(background, placement, shadow_style(target, preset))
    return Variant(pixels, placement, seed, generative, control if generative else None)


# --- the stages ---------------------------------------------------------------------------------

def cutout_inputs(source_sha256: str, settings: Settings, mask_key: str | None = None) -> dict:
    """The cut-out key's inputs: the source's bytes (by hash) and what changes it: an admin's mask
    (by its content-addressed blob key), else the model settings (the models by their registry
    names, so "u2netp + u2net" and "u2netp+u2net" are one). Every later key derives from the
    cut-out's, so each mask version gets its own control images and variants, and restoring a
    mask finds the files made from it before."""
    if mask_key:
        return {"source_sha256": source_sha256,
                "params": {"mask": mask_key, "decontaminate": settings.cutout_decontaminate}}
    models = ENSEMBLE_SEPARATOR.join(m.name for m in cutout_members(settings.cutout_model))
    return {"source_sha256": source_sha256,
            "params": {"model": models, "refine": settings.cutout_refine, "flip": settings.cutout_flip_tta,
                       "decontaminate": settings.cutout_decontaminate}}


def generator_inputs(target: Target, preset: ScenePreset, title: str | None, category: str | None,
                     settings: Settings) -> dict:
    """What a generative variant depends on besides its cut-out, target, scene and seed: the prompt's
    product words, the control image's detector and every diffusion setting. {} for the others."""
    if not is_generative(target, preset):
        return {}
    diffusion = {k: str(v) for k, v in settings.model_dump().items() if k.startswith("diffusion_")}
    return {"title": title or "", "category": category or "", "detector": settings.edge_detector,
            "device": settings.device, **diffusion}


CUTOUT = Stage("cutout", "cutouts", "cutout-2", ("source_sha256", "params"), make_cutout)
CONTROL = Stage("control", "controls", "render-3", ("cutout_key", "canvas", "detector"), make_control)
VARIANT = Stage("variant", "variants", "render-3", ("cutout_key", "target", "scene", "seed", "generator"),
                render_variant)


def cutout_key(source_sha256: str, settings: Settings, mask_key: str | None = None) -> str:
    """The cut-out's PNG key (with an admin's mask: see cutout_inputs); its quality document
    (JSON) is stored beside it, see quality_key."""
    return CUTOUT.key("png", **cutout_inputs(source_sha256, settings, mask_key))


def quality_key(cutout_key: str) -> str:
    """Where the cut-out's quality (CutoutQuality.as_dict(), JSON) is stored: the same hash, .json."""
    return cutout_key.removesuffix(".png") + ".json"


def control_key(cutout_key: str, target: Target, detector: str) -> str:
    return CONTROL.key("png", cutout_key=cutout_key, canvas=layout_canvas(target), detector=detector)


def variant_key(cutout_key: str, target: Target, preset: ScenePreset, seed: int, generator: dict) -> str:
    """`generator`: generator_inputs(...) for this variant."""
    return VARIANT.key(target.extension, cutout_key=cutout_key, target=target.model_dump_json(),
                       scene=preset.model_dump_json(), seed=str(seed), generator=generator)
