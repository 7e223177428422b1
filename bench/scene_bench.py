"""Seconds per studio scene at 2000 px, for every offline preset; then the diffusers backend's cost
outside its denoising loop.

    python bench/scene_bench.py [--size 2000] [--repeat 3] [--no-diffusion]
    python bench/scene_bench.py --check-archs       # real SD1.5/SDXL configs on the meta device: parameter counts
    python bench/scene_bench.py --diffusion real    # real-size random-weight models, CUDA fp16 (a GPU machine)

Target: at most 0.5 s per scene on a 2-core machine. The product is a synthetic cut-out so the
figure is the backend's own cost (layout excluded); a second column adds the composite with the
preset's shadows. `--only NAME,...` times some presets (solid, the anchor, is always timed).

Diffusion: each variant is one scene_diffusers.generate() call (one image) through get_pipeline(),
loading models saved to a temp folder with save_pretrained, as real ids load. "Denoising loop" runs
from the first ControlNet/UNet forward to the last scheduler step; the rest of the call (prompt
encoding, VAE encode and decode, pre- and post-processing) is the overhead. `--diffusion tiny` (the
default, fast anywhere) uses tests/tiny_diffusers.py's models, `real` (GPU only) the
published architectures of bench/diffusion_archs.py. Runs of 8 steps or fewer use guidance 1.0
(no classifier-free guidance, as LCM / Lightning / Turbo models are run: UNet batch 1, not 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from product_studio.pipeline.layout import place
from product_studio.pipeline.composite import composite
from product_studio.pipeline.scene import render_background, shadow_style
from product_studio.presets import TARGETS
from product_studio.scenes import SCENES

# (kind, canvas px, steps); the backend's pixel budgets are sd15 768*768 and sdxl 1280*1024, so
# these canvases are generated at their own size.
TINY = [("sd15", 256, 4), ("sdxl", 256, 4)]
REAL = [("sdxl", 1024, s) for s in (4, 8, 30)] + [("sd15", px, s) for px in (512, 768) for s in (4, 8, 30)]


def synthetic_placement(width: int, height: int):
    target = TARGETS["lifestyle"].model_copy(update={"width": width, "height": height})
    cutout = np.zeros((600, 400, 4), np.uint8)
    cutout[100:550, 80:320] = (90, 60, 40, 255)
    return place(cutout, target)


def studio_section(size: int, repeat: int, only: set[str] | None = None) -> None:
    """Per offline preset at size x size px: the scene alone (render_background, what the 0.5 s
    target is about), the scene with the product's shadows composited (composite with the
    preset's ShadowStyle), CPU seconds of the scene (all threads), and the scene's time as a ratio
    to `solid` (one flat colour) timed in the same run, which drifts less with the machine's load."""
    target = TARGETS["lifestyle"].model_copy(update={"width": size, "height": size})
    placement = synthetic_placement(size, size)
    print(f"studio scenes at {size}x{size} px, median of {repeat} seeds (wall s; cpu: all threads)")
    print(f"  {'scene':15s} {'scene':>7s} {'+shadows':>9s} {'cpu':>7s} {'x solid':>8s}")
    rows = []
    for preset in SCENES.values():
        if preset.backend not in ("studio", "solid") or (only and preset.name not in only | {"solid"}):
            continue
        scene, total, cpu = [], [], []
        for seed in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            background = render_background(target, preset, placement, seed)
            t1, c1 = time.perf_counter(), time.process_time()
            composite(background, placement, shadow_style(target, preset))
            scene.append(t1 - t0)
            cpu.append(c1 - c0)
            total.append(time.perf_counter() - t0)
        rows.append((preset.name, statistics.median(scene), statistics.median(total), statistics.median(cpu)))
    anchor = next(r[1] for r in rows if r[0] == "solid")
    for name, scene, total, cpu in rows:
        print(f"  {name:15s} {scene:7.3f} {total:9.3f} {cpu:7.3f} {scene / anchor:8.1f}")
    slowest = max(rows, key=lambda r: r[1])
    print(f"slowest {slowest[1]:.3f} s per scene ({slowest[0]}; target <= 0.5 s), "
          f"{max(r[2] for r in rows):.3f} s with shadows")


class LoopClock:
    """Marks inside pipe(): around each ControlNet / UNet forward, and after each scheduler step.

    On CUDA the marks are events, so measuring adds no synchronisation to the pipeline.
    """

    def __init__(self, pipe, cuda: bool):
        self.cuda = cuda
        self.reset()
        for module in (pipe.controlnet, pipe.unet):
            module.forward = self._around(module.forward)
        step = pipe.scheduler.step

        def timed_step(*args, **kwargs):
            out = step(*args, **kwargs)
            self.step_ends.append(self._mark())
            return out

        pipe.scheduler.step = timed_step

    def reset(self) -> None:
        self.forwards, self.step_ends = [], []

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _around(self, forward):
        def timed(*args, **kwargs):
            start = self._mark()
            out = forward(*args, **kwargs)
            self.forwards.append((start, self._mark()))
            return out

        return timed

    def _seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a

    def read(self) -> tuple[float, float]:
        """(denoising loop, sum of the model forwards) in seconds, for the call since reset()."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        loop = self._seconds(self.forwards[0][0], self.step_ends[-1])
        return loop, sum(self._seconds(a, b) for a, b in self.forwards)


def diffusion_section(mode: str, device: str, dtype: str, repeat: int, kinds: list[str]) -> None:
    import cv2
    import diffusers
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny_diffusers

    from product_studio.backends import model_cache
    from product_studio.backends import scene_diffusers as sd
    from product_studio.config import Settings

    for lib in (diffusers, transformers):  # no progress bars; no warnings about the toy tokenizer's 77-token cut
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", "invalid value encountered in cast")  # random fp16 weights may decode to NaN
    cuda = device.startswith("cuda")
    where = f"{device} ({torch.cuda.get_device_name(device)})" if cuda else f"{device} ({torch.get_num_threads()} threads)"
    print(f"\ndiffusion, {mode} models: device {where}, dtype {dtype}; torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}; median of {repeat} calls after a warm-up")
    preset = SCENES["ai-kitchen"]
    for kind in kinds:
        variants = [(px, steps) for k, px, steps in (TINY if mode == "tiny" else REAL) if k == kind]
        with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
            t0 = time.perf_counter()
            if mode == "tiny":
                model_dir, controlnet_dir = getattr(tiny_diffusers, f"save_tiny_{kind}")(Path(tmp))
            else:
                from diffusion_archs import save_real

                model_dir, controlnet_dir = save_real(kind, Path(tmp), device, getattr(torch, dtype))
                torch.cuda.empty_cache()
            built = time.perf_counter() - t0
            settings = Settings(diffusion_kind=kind, diffusion_model=str(model_dir),
                                diffusion_controlnet=str(controlnet_dir), device=device, diffusion_dtype=dtype,
                                diffusion_variants=1, offline=True, _env_file=None)
            t0 = time.perf_counter()
            pipe = sd.get_pipeline(settings)
            print(f"  {kind}: built and saved in {built:.1f} s, loaded by load_pipeline in {time.perf_counter() - t0:.1f} s")
            clock = LoopClock(pipe, cuda)
            for px, steps in variants:
                run = settings.model_copy(update={"diffusion_steps": steps,
                                                  "diffusion_guidance": 1.0 if steps <= 8 else 7.0})
                placement = synthetic_placement(px, px)
                edges = cv2.Canny((placement.canvas_alpha * 255).astype(np.uint8), 64, 192)
                control = np.repeat(edges[..., None], 3, axis=2)
                samples = []
                for i in range(repeat + 1):  # the first call warms up
                    clock.reset()
                    t0 = time.perf_counter()
                    sd.generate(placement, control, preset, seed=i, title="Red Mug", settings=run)
                    samples.append((time.perf_counter() - t0, *clock.read()))
                total, loop, forward = (statistics.median(x) for x in zip(*samples[1:]))
                print(f"  {kind} {mode} {px}px {steps} steps cfg {run.diffusion_guidance:g}: total {total:.2f} s, "
                      f"denoising loop {loop:.2f} s (UNet+ControlNet {forward:.2f} s), "
                      f"overhead {100 * (total - loop) / total:.0f}%")
            del pipe, clock
            model_cache.clear()
            if cuda:
                torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--diffusion", choices=("tiny", "real"), default="tiny", help="tiny (default) or real (GPU)")
    ap.add_argument("--no-diffusion", action="store_true", help="studio scenes only")
    ap.add_argument("--only", help="studio presets to time, comma-separated (default: all)")
    ap.add_argument("--kinds", default="sd15,sdxl", help="diffusion kinds to time, comma-separated")
    ap.add_argument("--device", help="default: cuda if available, else cpu")
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="default: float16 on CUDA, else float32")
    ap.add_argument("--check-archs", action="store_true",
                    help="only build the real architectures on the meta device and print parameter counts")
    args = ap.parse_args()

    if args.check_archs:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from diffusion_archs import check_archs

        sys.exit(0 if check_archs() else 1)
    studio_section(args.size, args.repeat, set(args.only.split(",")) if args.only else None)
    if args.no_diffusion:
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    mode = args.diffusion
    if mode == "real" and not device.startswith("cuda"):
        sys.exit("--diffusion real needs a CUDA device (real-size models take minutes per image on a CPU); "
                 "--check-archs verifies their configurations here")
    dtype = args.dtype or ("float16" if device.startswith("cuda") else "float32")
    diffusion_section(mode, device, dtype, args.repeat, args.kinds.split(","))


if __name__ == "__main__":
    main()
