"""Generated scenes: SD1.5 / SDXL ControlNet inpainting around the placed product.

The model repaints the background only (the mask keeps the product) and follows the product's
edges through ControlNet. What it makes inside the product is never shown: the caller composites
the photographed product on top (pipeline/composite.py). torch and diffusers are imported lazily,
in the process that generates (a worker child), never at import.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..config import Settings, get_settings
from ..errors import BadInput, ModelUnavailable, ProductStudioError, TransientError, UnknownName
from ..scenes import ScenePreset
from . import model_cache

if TYPE_CHECKING:
    from ..pipeline.layout import Placement

PIPELINES = {"sd15": "StableDiffusionControlNetInpaintPipeline", "sdxl": "StableDiffusionXLControlNetInpaintPipeline"}
# Beyond about these many pixels the models repeat objects and slow down quadratically: larger
# canvases are generated at this budget and upscaled (only the background is; the product is not).
_MAX_PIXELS = {"sd15": 768 * 768, "sdxl": 1280 * 1024}
_MULTIPLE = 64  # the UNet halves the 1/8-scale latents three times: pad to a multiple of 8 * 8
_LATENT = 8  # image pixels per latent cell
_INIT_GREY = 128  # the product is shown to the model over neutral grey
_DEFAULT_NEGATIVE = "text, watermark, logo, lowres, blurry, deformed, distorted, duplicate objects"
_MAX_PRODUCT_CHARS = 80  # CLIP reads 77 tokens: a long title must not push the scene words out
_DTYPES = ("float32", "float16", "bfloat16")

_run_lock = threading.Lock()  # a pipeline's scheduler is stateful: one generation at a time per process


@dataclass(frozen=True)
class GeneratedScene:
    pixels: np.ndarray  # (H, W, 3) uint8, the whole canvas; the product's area holds background, not product
    seed: int  # generate(..., seed=this, variants=1) reproduces these pixels


# --- prompts -----------------------------------------------------------------------------------

def _clean(text: str | None) -> str:
    text = " ".join((text or "").split())  # no newlines or runs of spaces from a CSV cell
    if len(text) > _MAX_PRODUCT_CHARS:
        text = text[:_MAX_PRODUCT_CHARS].rsplit(" ", 1)[0]
    return text


def build_prompt(preset: ScenePreset, title: str | None = None, category: str | None = None) -> tuple[str, str]:
    """(prompt, negative prompt) for a scene preset and a product.

    `{product}` in the preset's prompt is replaced by the product's title, else its category, else
    "product". A prompt without the placeholder gets "a photo of {product}, " in front. Only that
    exact placeholder is substituted (str.replace, not str.format), so braces in titles or
    templates stay literal text.
    """
    product = _clean(title) or _clean(category) or "product"
    template = " ".join(preset.prompt.split())
    if "{product}" in template:
        prompt = template.replace("{product}", product)
    else:
        prompt = f"a photo of {product}, {template}".rstrip(", ")
    return prompt, preset.negative_prompt.strip() or _DEFAULT_NEGATIVE


# --- loading -----------------------------------------------------------------------------------

def _dtype_name(settings: Settings) -> str:
    if settings.diffusion_dtype:
        name = settings.diffusion_dtype.removeprefix("torch.")
        if name not in _DTYPES:
            raise UnknownName("diffusion dtype", name, _DTYPES)
        return name
    return "float16" if settings.device.startswith("cuda") else "float32"


def cache_key(settings: Settings) -> tuple:
    """The model_cache key of the pipeline these settings describe."""
    s = settings
    return ("diffusers", s.diffusion_kind, s.diffusion_model, s.diffusion_controlnet, s.diffusion_lora,
            s.diffusion_scheduler, s.device, _dtype_name(s), s.diffusion_cpu_offload)


def _load_failed(what: str, ident: str, env: str, settings: Settings, exc: Exception) -> ProductStudioError:
    """A loader's failure as ModelUnavailable (permanent: the model is truly absent, see
    model_cache.is_absent) or TransientError (retried: the hub answered 5xx or timed out, or a
    file is there but not whole, e.g. a half-written cache)."""
    def line(e: BaseException) -> str:
        lines = str(e).strip().splitlines()
        return type(e).__name__ + (f": {lines[0][:160]}" if lines else "")

    first = model_cache.causes(exc)[-1]  # loaders wrap the cause (a 503, a cut-off file) in an OSError
    reason = line(exc) + (f"; caused by {line(first)}" if first is not exc else "")
    if not model_cache.is_absent(exc, ident, offline=settings.offline):
        return TransientError(f"diffusion {what} {ident!r} could not be loaded this time ({reason}); "
                              "a later try may succeed")
    if settings.offline:
        fix = (" Offline mode is on: only local folders and models already in the Hugging Face cache can be"
               f" used. Set PRODUCT_STUDIO_OFFLINE=false to let it download from the hub, or download it and set"
               f" {env} to its folder.")
    else:
        fix = f" Download it and set {env} to its folder or hub id."
    return ModelUnavailable(f"diffusion {what} {ident!r} cannot be loaded ({reason}).{fix}")


def _check_fit(pipe, settings: Settings) -> None:
    """Mismatched ids load without complaint and fail obscurely at the first step: say so now."""
    model, kind = settings.diffusion_model, settings.diffusion_kind
    needed = ["vae", "unet", "text_encoder", "tokenizer"] + (["text_encoder_2", "tokenizer_2"] if kind == "sdxl" else [])
    missing = [n for n in needed if getattr(pipe, n, None) is None]
    is_sdxl = pipe.unet is not None and pipe.unet.config.get("addition_embed_type") == "text_time"
    if missing or is_sdxl != (kind == "sdxl"):
        raise ModelUnavailable(f"diffusion model {model!r} is not an {kind} model"
                               + (f" (it lacks {', '.join(missing)})" if missing else "")
                               + "; set PRODUCT_STUDIO_DIFFUSION_KIND to match it, or PRODUCT_STUDIO_DIFFUSION_MODEL")
    ours, theirs = pipe.unet.config.cross_attention_dim, pipe.controlnet.config.cross_attention_dim
    if ours != theirs:
        raise ModelUnavailable(f"ControlNet {settings.diffusion_controlnet!r} does not fit model {model!r} "
                               f"(cross-attention width {theirs} vs {ours}); set PRODUCT_STUDIO_DIFFUSION_CONTROLNET "
                               f"to a ControlNet made for {kind}")


def load_pipeline(settings: Settings | None = None):
    """Build the ControlNet inpaint pipeline the settings describe (uncached: see get_pipeline).

    Raises UnknownName (kind, dtype, scheduler), ModelUnavailable when the model, ControlNet or
    LoRA is truly absent or does not fit (configuration must change), TransientError when loading
    failed in a way a later try may not (hub 5xx, timeout, a file not yet whole).
    """
    settings = settings or get_settings()
    kind = settings.diffusion_kind
    if kind not in PIPELINES:
        raise UnknownName("diffusion kind", kind, list(PIPELINES))
    dtype_name = _dtype_name(settings)
    settings.apply_environment()  # HF_HUB_OFFLINE must be set before huggingface_hub is imported
    import diffusers
    import torch

    scheduler_cls = None
    if settings.diffusion_scheduler:
        scheduler_cls = getattr(diffusers, settings.diffusion_scheduler, None)
        if scheduler_cls is None or not settings.diffusion_scheduler.endswith("Scheduler"):
            raise UnknownName("diffusion scheduler", settings.diffusion_scheduler,
                              [n for n in dir(diffusers) if n.endswith("Scheduler")])
    dtype = getattr(torch, dtype_name)
    # local_files_only too: the env var is ignored if huggingface_hub was imported before it was set.
    local = settings.offline
    try:
        controlnet = diffusers.ControlNetModel.from_pretrained(
            settings.diffusion_controlnet, dtype=dtype, local_files_only=local)
    except Exception as exc:  # hub, offline and file errors come in many types
        raise _load_failed("ControlNet", settings.diffusion_controlnet, "PRODUCT_STUDIO_DIFFUSION_CONTROLNET",
                           settings, exc) from None
    # Product photos: no safety checker (SDXL has none to switch off).
    extra = {"safety_checker": None, "requires_safety_checker": False} if kind == "sd15" else {}
    try:
        pipe = getattr(diffusers, PIPELINES[kind]).from_pretrained(
            settings.diffusion_model, controlnet=controlnet, dtype=dtype, local_files_only=local, **extra)
    except Exception as exc:
        raise _load_failed("model", settings.diffusion_model, "PRODUCT_STUDIO_DIFFUSION_MODEL", settings, exc) from None
    _check_fit(pipe, settings)

    if settings.diffusion_lora:
        try:  # needs the peft package
            pipe.load_lora_weights(settings.diffusion_lora, local_files_only=local)
        except Exception as exc:
            raise _load_failed("LoRA", settings.diffusion_lora, "PRODUCT_STUDIO_DIFFUSION_LORA", settings, exc) from None
        pipe.fuse_lora()  # baked into the weights: no per-step adapter cost
        pipe.unload_lora_weights()  # drops the adapter layers, keeps the fused weights
    if dtype == torch.float32 and pipe.vae.config.get("force_upcast"):
        # Already float32: SDXL would still "upcast" the VAE on every call (and log a warning each time).
        pipe.vae.register_to_config(force_upcast=False)
    if scheduler_cls is not None:
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    if settings.diffusion_cpu_offload and settings.device != "cpu":
        pipe.enable_model_cpu_offload(device=settings.device)
    else:
        pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)  # workers log progress themselves
    return pipe


def get_pipeline(settings: Settings | None = None):
    """The pipeline for these settings, loaded once per process. A failed load is not cached:
    the next call tries again. Raises as load_pipeline."""
    settings = settings or get_settings()
    return model_cache.get(cache_key(settings), lambda: load_pipeline(settings))


# --- geometry ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Frame:
    """Canvas <-> model coordinates: scaled down to the model's pixel budget, padded to a multiple of 64."""

    W: int  # canvas
    H: int
    w: int  # scaled canvas inside the model image
    h: int
    left: int  # padding before it; the model image is (ph, pw)
    top: int
    pw: int
    ph: int

    @classmethod
    def fit(cls, W: int, H: int, max_pixels: int) -> _Frame:
        s = min(1.0, math.sqrt(max_pixels / (W * H)))
        w, h = max(1, round(W * s)), max(1, round(H * s))
        pw, ph = -(-w // _MULTIPLE) * _MULTIPLE, -(-h // _MULTIPLE) * _MULTIPLE
        # Centred padding keeps the product centred in what the model sees.
        return cls(W, H, w, h, (pw - w) // 2, (ph - h) // 2, pw, ph)

    def to_model(self, a: np.ndarray, fill: float) -> np.ndarray:
        if (self.w, self.h) != (self.W, self.H):
            a = cv2.resize(a, (self.w, self.h), interpolation=cv2.INTER_AREA)
        value = (fill,) * (a.shape[2] if a.ndim == 3 else 1)
        return cv2.copyMakeBorder(a, self.top, self.ph - self.h - self.top, self.left, self.pw - self.w - self.left,
                                  cv2.BORDER_CONSTANT, value=value)

    def to_canvas(self, a: np.ndarray) -> np.ndarray:
        a = a[self.top:self.top + self.h, self.left:self.left + self.w]
        if (self.w, self.h) != (self.W, self.H):
            a = cv2.resize(a, (self.W, self.H), interpolation=cv2.INTER_CUBIC)
        return a


def _keep_mask(alpha: np.ndarray) -> np.ndarray:
    """(h, w) bool, the product grown a little and out to whole latent cells: what the model keeps.

    The pipelines shrink the mask to latent cells; aligning it first makes "kept" the same set of
    pixels at both scales, and never leaves a partly-product cell open for the model to repaint
    (that paints a second outline just inside the product's edge).
    """
    grown = cv2.dilate((alpha >= 8 / 255).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    h, w = grown.shape
    cells = grown.reshape(h // _LATENT, _LATENT, w // _LATENT, _LATENT).any(axis=(1, 3))
    return np.repeat(np.repeat(cells, _LATENT, axis=0), _LATENT, axis=1)


def _fill_from_background(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Replace kept pixels by the nearest generated ones.

    The model leaves the kept area as the grey init; under the product's soft edge and in the
    grown margin that grey would show through the composite as a halo.
    """
    if keep.all() or not keep.any():
        return image
    _, labels = cv2.distanceTransformWithLabels(keep.astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    known = ~keep
    source = np.zeros(labels.max() + 1, np.intp)
    source[labels[known]] = np.flatnonzero(known)  # each background pixel's own label -> its index
    return image.reshape(-1, 3)[source[labels]].reshape(image.shape)


# --- generation --------------------------------------------------------------------------------

def generate(placement: Placement, control: np.ndarray, preset: ScenePreset, *, seed: int,
             variants: int = 1, title: str | None = None, category: str | None = None,
             settings: Settings | None = None) -> list[GeneratedScene]:
    """`variants` (1-8) background images around the placed product, seeds seed, seed+1, ... (one
    pipeline call; image i is reproduced alone by seed + i). The pipeline makes one per target
    (`paint`); no setting changes that.

    `control` is the (H, W, 3) uint8 control image in canvas coordinates (pipeline.edges). Each
    result is the whole canvas; composite the real product on top of it. Raises BadInput for
    `variants` out of range, ValueError for a control image of the wrong shape, and what
    get_pipeline raises.
    """
    settings = settings or get_settings()
    n = variants
    if not 1 <= n <= 8:
        raise BadInput(f"variants must be between 1 and 8, not {n}")
    W, H = placement.width, placement.height
    control = np.asarray(control, np.uint8)
    if control.shape != (H, W, 3):
        raise ValueError(f"control image {control.shape} does not match canvas {(H, W, 3)}")
    pipe = get_pipeline(settings)
    import torch
    from PIL import Image

    frame = _Frame.fit(W, H, _MAX_PIXELS[settings.diffusion_kind])
    keep = _keep_mask(frame.to_model(placement.canvas_alpha, 0))
    init = Image.fromarray(frame.to_model(placement.over(_INIT_GREY), _INIT_GREY))
    mask = Image.fromarray(np.where(keep, 0, 255).astype(np.uint8))  # white = repaint
    prompt, negative = build_prompt(preset, title, category)
    # One CPU generator per image: variant i draws only from seed + i, so it can be redone alone.
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
    with _run_lock:
        images = pipe(
            prompt=prompt, negative_prompt=negative,
            # n copies of image and mask, not one: the pipelines VAE-encode a batch-of-one image with
            # generators[0], which would tie every variant's result to the first seed.
            image=[init] * n, mask_image=[mask] * n,
            control_image=Image.fromarray(frame.to_model(control, 0)),
            height=frame.ph, width=frame.pw, strength=1.0,
            num_inference_steps=settings.diffusion_steps, guidance_scale=settings.diffusion_guidance,
            controlnet_conditioning_scale=settings.diffusion_conditioning_scale,
            num_images_per_prompt=n, generator=generators, output_type="np",
        ).images
    out = []
    for i, image in enumerate(images):
        pixels = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
        pixels = _fill_from_background(pixels, keep)
        out.append(GeneratedScene(np.ascontiguousarray(frame.to_canvas(pixels)), seed + i))
    return out


def paint(target, preset: ScenePreset, placement: Placement, seed: int, *, control: np.ndarray | None = None,
          title: str | None = None, category: str | None = None, settings: Settings | None = None) -> np.ndarray:
    """The registry's entry for `diffusers`: one generated background, (H, W, 3) uint8."""
    return generate(placement, control, preset, seed=seed, variants=1, title=title, category=category,
                    settings=settings)[0].pixels


def _findable(ident: str, marker: str, offline: bool) -> str | None:
    """Why the model `ident` (a local folder or a hub id) cannot be had without loading it, or
    None when it can: a folder must hold `marker` (its config file); a hub id must be in the
    Hugging Face cache when offline (online it downloads on first use)."""
    path = Path(ident).expanduser()
    if path.exists():
        return None if (path / marker).is_file() or path.is_file() else f"{ident} has no {marker}"
    if not offline:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(ident, marker)
    except Exception:  # not a valid hub id either
        return f"{ident} is neither a folder nor a hub id"
    return None if isinstance(cached, str) else f"{ident} is not in the Hugging Face cache"


def check(settings: Settings) -> tuple[str, str]:
    """For `doctor`: ("ok" | "warn", detail): whether diffusers imports and the configured model,
    ControlNet and LoRA can be had (present locally or cached; online, downloadable), without
    loading any weights. "warn": the generative scenes (ai-*) would fail; the rest works."""
    try:
        import diffusers
    except Exception as exc:
        return "warn", f"import failed: {exc}"
    wanted = [("model", settings.diffusion_model, "model_index.json", "PRODUCT_STUDIO_DIFFUSION_MODEL"),
              ("ControlNet", settings.diffusion_controlnet, "config.json", "PRODUCT_STUDIO_DIFFUSION_CONTROLNET")]
    problems = [f"{what} {why} ({env})" for what, ident, marker, env in wanted
                if (why := _findable(ident, marker, settings.offline))]
    lora = settings.diffusion_lora
    if lora and not Path(lora).expanduser().exists() and \
            _findable(lora, "pytorch_lora_weights.safetensors", settings.offline):
        problems.append(f"LoRA {lora} is not in the Hugging Face cache (PRODUCT_STUDIO_DIFFUSION_LORA)")
    mode = "offline" if settings.offline else "online: models download on first use"
    if problems:
        fix = " or set PRODUCT_STUDIO_OFFLINE=false to download them" if settings.offline else ""
        return "warn", (f"diffusers {diffusers.__version__}; {mode}; the ai-* scenes would fail: "
                        f"{'; '.join(problems)}. Download them and point the settings at their folders{fix}")
    return "ok", f"diffusers {diffusers.__version__}; {mode}; model and ControlNet found"
