"""One photo in, every target's file out: the stages composed, timed and written atomically.

The doors (CLI, Celery tasks, web) call `render_variant` and `process_photo`; none of them holds
image logic of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Settings, get_settings
from ..files import DIR_MODE, atomic_write_bytes
from ..presets import Target
from ..scenes import ScenePreset, get_scene
from .check import CheckReport, check_bytes
from .composite import composite
from .cutout import cut_out
from .edges import control_image
from .export import encode, encode_png
from .ingest import Source
from .layout import Placement, place
from .scene import render_background, shadow_style


class StageTimer:
    """Seconds spent per stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


@dataclass
class VariantFile:
    photo: str
    target: str
    path: Path
    width: int
    height: int
    bytes: int
    check: CheckReport
    seconds: float
    seed: int = 0
    ai_generated: bool = False


@dataclass
class PhotoResult:
    name: str
    folder: Path
    variants: list[VariantFile] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def scene_for(target: Target, scene: str | None, settings: Settings | None = None) -> ScenePreset:
    """The scene a target uses: the one asked for, else the target's default."""
    return get_scene(scene or target.default_scene, settings)


@dataclass
class Variant:
    pixels: np.ndarray  # (H, W, 3) uint8 on the target's canvas
    placement: Placement
    seed: int
    ai_generated: bool  # pixels outside the product came from a generative model
    control: np.ndarray | None = None  # the control image, when one was made


def render_variant(cutout: np.ndarray, target: Target, preset: ScenePreset, seed: int, *, name: str = "image",
                   title: str | None = None, category: str | None = None, settings: Settings | None = None,
                   timer: StageTimer | None = None) -> Variant:
    """Composite one variant on the target's canvas: the real product over its scene."""
    timer = timer or StageTimer()
    settings = settings or get_settings()
    with timer("layout"):
        placement = place(cutout, target, name)
    control = None
    generative = preset.backend == "diffusers" and not target.pure_white
    if generative:
        from ..backends import scene_diffusers  # torch only where a model paints

        with timer("edges"):
            control = control_image(placement, settings=settings)
        with timer("scene"):
            background = scene_diffusers.generate(placement, control, preset, seed=seed, variants=1, title=title,
                                                  category=category, settings=settings)[0].pixels
    else:
        with timer("scene"):
            background = render_background(target, preset, placement, seed)
    with timer("composite"):
        pixels = composite(background, placement, shadow_style(target, preset))
    return Variant(pixels, placement, seed, generative, control)


@contextmanager
def _staging(folder: Path):
    """Build a photo's folder beside its final place, then swap it in whole: a failure midway
    leaves the previous results (or nothing), never a half-written set."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
            os.replace(folder, old / "prev")
        os.replace(tmp, folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def process_photo(source: Source, targets: list[Target], out_dir: Path, *, scene: str | None = None,
                  seed: int = 0, detector: str | None = None, title: str | None = None,
                  category: str | None = None, settings: Settings | None = None) -> PhotoResult:
    """Write cutout.png, control.png and one file per target into out_dir/<source.name>/."""
    settings = settings or get_settings()
    timer = StageTimer()
    folder = Path(out_dir) / source.name
    result = PhotoResult(source.name, folder)
    # The control image is drawn on the first scene target's canvas (where a generator would use it).
    control_target = next((t for t in targets if not t.pure_white), targets[0])
    presets = {t.name: scene_for(t, scene, settings) for t in targets}  # unknown names fail before any work

    with _staging(folder) as stage:
        with timer("cutout"):
            cutout = cut_out(source.rgb, source.alpha, settings=settings)
        with timer("encode"):
            atomic_write_bytes(stage / "cutout.png", encode_png(cutout))

        for target in targets:
            t0 = time.perf_counter()
            variant = render_variant(cutout, target, presets[target.name], seed, name=source.name, title=title,
                                     category=category, settings=settings, timer=timer)
            if target is control_target:
                control = variant.control
                if control is None or detector not in (None, settings.edge_detector):
                    with timer("edges"):
                        control = control_image(variant.placement, detector, settings)
                with timer("encode"):
                    atomic_write_bytes(stage / "control.png", encode_png(control))
            with timer("encode"):
                data = encode(variant.pixels, target, ai_generated=variant.ai_generated)
                filename = f"{target.name}.{target.extension}"
                atomic_write_bytes(stage / filename, data)
            with timer("check"):
                report = check_bytes(data, target, f"{source.name}/{filename}", variant.placement.canvas_alpha)
            result.variants.append(VariantFile(
                source.name, target.name, folder / filename, target.width, target.height, len(data), report,
                time.perf_counter() - t0, variant.seed, variant.ai_generated,
            ))
    result.timings = dict(timer.seconds)
    return result
