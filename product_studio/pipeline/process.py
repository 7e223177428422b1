"""The in-process runner: the stage plan (pipeline/plan.py) run for one photo, its outputs
written to a folder atomically. Used by `process` and `batch --jobs`; the Celery runner is
jobs/units.py. No decisions or image logic here: only running the plan's stages and writing files.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Settings, get_settings
from ..errors import ProductStudioError
from ..files import atomic_write_bytes, staged_folder
from ..presets import Target
from .check import CheckReport, check_bytes
from .confidence import CutoutQuality
from .cutout import default_workers
from .export import encode, encode_png
from .ingest import Source
from .layout import Placement, place
from .plan import (
    StageTimer,
    TargetPlan,
    layout_canvas,
    make_control,
    make_cutout,
    plan_photo,
    render_variant,
)


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
    timings: dict[str, float] = field(default_factory=dict)  # s per stage, summed over the targets' threads
    seconds: float = 0.0  # wall time of the whole photo
    quality: CutoutQuality | None = None  # how far to trust the cut-out
    review_reason: str | None = None  # set when the cut-out needs review (settings.cutout_review_below)
    failures: dict[str, ProductStudioError] = field(default_factory=dict)  # target -> why it was not made


def process_photo(source: Source, targets: list[Target], out_dir: Path, *, scene: str | None = None,
                  seed: int = 0, detector: str | None = None, title: str | None = None,
                  category: str | None = None, mask: np.ndarray | None = None,
                  settings: Settings | None = None) -> PhotoResult:
    """Write cutout.png, control.png and one file per target into out_dir/<source.name>/.

    control.png is drawn with `detector` (default: the configured one) on the plan's control
    target's canvas; generative variants use the configured detector's control image for their
    own canvas, each made once. `mask`: the photo's chosen mask ((H, W) uint8, jobs/masks.py),
    which replaces the models. A target that fails on its own (its scene's model is missing) is
    left out and named in `failures`; the others are written. Raises UnknownName (unknown scene)
    before any work, and the stages' errors (ModelUnavailable, BadInput...) when the cut-out or
    every target fails, leaving the previous folder in place."""
    started = time.perf_counter()
    settings = settings or get_settings()
    timer = StageTimer()
    folder = Path(out_dir) / source.name
    result = PhotoResult(source.name, folder)
    plan = plan_photo(targets, scene, settings)  # unknown names fail before any work
    detector = detector or settings.edge_detector
    placements: dict[str, Placement] = {}  # layout canvas -> the cut-out placed there, once
    controls: dict[tuple[str, str], np.ndarray] = {}  # (canvas, detector) -> control image, made once

    def placement_for(target: Target) -> Placement:
        canvas = layout_canvas(target)
        if canvas not in placements:
            with timer("layout"):
                placements[canvas] = place(cutout, target, source.name)
        return placements[canvas]

    def control_for(target: Target, which: str) -> np.ndarray:
        key = (layout_canvas(target), which)
        if key not in controls:
            with timer("edges"):
                controls[key] = make_control(cutout, target, which, settings, source.name, placement_for(target))
        return controls[key]

    with staged_folder(folder) as stage:
        with timer("cutout"):
            cut = make_cutout(source.rgb, source.alpha, settings, mask=mask)
        cutout, result.quality = cut.rgba, cut.quality
        result.review_reason = cut.quality.review_reason(settings.cutout_review_below)

        def write_cutout() -> None:
            with timer("encode"):
                atomic_write_bytes(stage / "cutout.png", encode_png(cutout))

        def make_variant(p: TargetPlan) -> VariantFile | ProductStudioError:
            try:
                return render_one(p)
            except ProductStudioError as exc:  # this target's own trouble (a scene's missing model)
                return exc

        def render_one(p: TargetPlan) -> VariantFile:
            t0 = time.perf_counter()
            target = p.target
            if target is plan.control_target:
                png = control_for(target, detector)
                with timer("encode"):
                    atomic_write_bytes(stage / "control.png", encode_png(png))
            control = control_for(target, settings.edge_detector) if p.generative else None
            variant = render_variant(cutout, target, p.preset, seed, name=source.name, control=control, title=title,
                                     category=category, settings=settings, timer=timer,
                                     placement=placement_for(target))
            with timer("encode"):
                data = encode(variant.pixels, target, ai_generated=variant.ai_generated)
                filename = f"{target.name}.{target.extension}"
                atomic_write_bytes(stage / filename, data)
            with timer("check"):
                report = check_bytes(data, target, f"{source.name}/{filename}", variant.placement.canvas_alpha,
                                     variant.placement.scale)
            return VariantFile(source.name, target.name, folder / filename, target.width, target.height, len(data),
                               report, time.perf_counter() - t0, variant.seed, variant.ai_generated)

        # The targets are independent, and OpenCV, NumPy and zlib release the GIL: render them on
        # every core, as the cut-out's models used them all before. (Caches above may, rarely,
        # compute a shared canvas twice: harmless.)
        with ThreadPoolExecutor(min(len(plan.targets), default_workers()), thread_name_prefix="target") as pool:
            written = pool.submit(write_cutout)
            made = list(pool.map(make_variant, plan.targets))
            written.result()
        # One target that cannot be made (its scene's model is missing) loses only itself.
        result.variants = [m for m in made if isinstance(m, VariantFile)]
        result.failures = {p.target.name: m for p, m in zip(plan.targets, made) if not isinstance(m, VariantFile)}
        if not result.variants:
            raise next(iter(result.failures.values()))
    result.timings = dict(timer.seconds)
    result.seconds = time.perf_counter() - started
    return result
