"""Cut-out masks from rembg: one ONNX session per model name per process, made on first use.

Sessions are never built at import time (a Celery parent must not hold one before fork) and
`rembg` itself is imported only when the first session is made: its import is slow and it
reads U2NET_HOME once, so Settings.apply_environment() has to run before it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..config import Settings, get_settings
from ..errors import ModelUnavailable, UnknownName
from . import model_cache
from .registry import cutout_members, cutout_model

# Models whose rembg session squashes the image to a square with PIL's LANCZOS, normalises it
# (x / max(x), then (x - mean) / std) and min-max scales the first output. For these we do exactly
# that on the already-small image and call ONNX Runtime directly, skipping rembg's uint8 round trip
# and its LANCZOS resize of the mask back up. Any other rembg model goes through session.predict().
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_SQUARE_MODELS: dict[str, tuple[tuple[float, ...], tuple[float, ...], int]] = {
    name: (*_IMAGENET, 320) for name in ("u2net", "u2netp", "u2net_human_seg", "silueta")
}

# Models rembg cannot load from our file (its session for ISNet downloads and checks its own), run
# with ONNX Runtime directly on settings.model_dir/NAME.onnx. isnet-imgly as IMG.LY's own code runs
# it (@imgly/background-removal 1.4.5, src/inference.ts and utils.ts): RGB resized to 1024x1024,
# (x - 128) / 256 on the 0-255 values, float32 NCHW "input"; the first output, "output"
# (1x1x1024x1024, after a sigmoid), is the probability as it is (no min-max stretch), resized back.
_OWN_MODELS: dict[str, tuple[tuple[float, ...], tuple[float, ...], int]] = {
    "isnet-imgly": ((128.0,) * 3, (256.0,) * 3, 1024),
}


def model_candidates(settings: Settings, model: str) -> list[Path]:
    """Where rembg looks for `model` under U2NET_HOME (flat layout first, as `doctor` reports it)."""
    root = Path(settings.model_dir)
    return [root / f"{model}.onnx", root / "models" / model / f"{model}.onnx"]


class _OwnSession:
    """An ONNX Runtime session for a model rembg cannot load, shaped like rembg's (`inner_session`)."""

    def __init__(self, model_name: str, inner_session):
        self.model_name = model_name
        self.inner_session = inner_session


def _new_own_session(model: str, settings: Settings, threads: int) -> _OwnSession:
    import onnxruntime as ort

    path = next((p for p in model_candidates(settings, model) if p.is_file()), None)
    if path is None:
        raise ModelUnavailable(
            f"cut-out model {model!r} not found at {model_candidates(settings, model)[0]}; run "
            f"`{cutout_model(model).fetch_command}` (or choose another with PRODUCT_STUDIO_CUTOUT_MODEL / "
            "PRODUCT_STUDIO_MODEL_DIR)"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as for the rembg sessions below
    available = ort.get_available_providers()
    gpu = [] if settings.device == "cpu" else [
        p for p in ("CUDAExecutionProvider", "ROCMExecutionProvider") if p in available]
    return _OwnSession(model, ort.InferenceSession(str(path), opts, providers=[*gpu, "CPUExecutionProvider"]))


def _predict_own(inner, rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], side: int) -> np.ndarray:
    """An _OWN_MODELS model's probability, HxW float32 in [0, 1], for HxWx3 uint8 RGB."""
    h, w = rgb.shape[:2]
    # IMG.LY resizes with its own corner-anchored bilinear loop; OpenCV's centre-anchored bilinear is
    # what PyTorch (where ISNet was trained) does. Area averaging when shrinking, either way.
    into = cv2.INTER_AREA if min(h, w) > side else cv2.INTER_LINEAR
    x = cv2.resize(rgb, (side, side), interpolation=into).astype(np.float32)
    x = (x - np.float32(mean)) / np.float32(std)
    inp, out = inner.get_inputs()[0], inner.get_outputs()[0]
    x = x.transpose(2, 0, 1)[None].astype(np.float16 if "float16" in inp.type else np.float32)
    pred = np.asarray(inner.run([out.name], {inp.name: x})[0][0, 0], dtype=np.float32)
    back = cv2.INTER_AREA if max(h, w) < side else cv2.INTER_LINEAR
    return np.clip(cv2.resize(pred, (w, h), interpolation=back), 0, 1)


def _new_session(model: str, settings: Settings, threads: int):
    if model in _OWN_MODELS:
        return _new_own_session(model, settings, threads)
    settings.apply_environment()  # before `import rembg`: it reads U2NET_HOME
    import onnxruntime as ort
    import rembg
    from rembg.sessions import sessions as known

    if model not in known:
        raise UnknownName("cut-out model", model, list(known))
    if settings.offline and not any(p.is_file() for p in model_candidates(settings, model)):
        path = model_candidates(settings, model)[0]
        entry = cutout_model(model)
        fix = f"run `{entry.fetch_command}`" if entry.provisioned_offline else \
            f"put {path.name} there, or set PRODUCT_STUDIO_OFFLINE=false"
        raise ModelUnavailable(
            f"cut-out model {model!r} not found at {path} and offline mode forbids downloading it; {fix} "
            "(or choose another with PRODUCT_STUDIO_CUTOUT_MODEL / PRODUCT_STUDIO_MODEL_DIR)"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Idle ORT threads spin-wait by default, stealing the cores that cv2/numpy work in other
    # threads needs; blocking instead costs nothing measurable for one 320 px inference.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    kwargs = {"providers": ["CPUExecutionProvider"]} if settings.device == "cpu" else {}
    return rembg.new_session(model, sess_opts=opts, **kwargs)


def get_session(model: str, settings: Settings | None = None, threads: int | None = None):
    """The process-wide rembg session for `model`, made once (thread-safe, in `model_cache`).

    `threads` (ONNX Runtime intra-op threads) only counts when the session is made; default
    settings.cutout_threads, 0 = one per core, the fastest for one image at a time. With two
    images in flight on two cores, 1 thread each did ~10% better (less ORT synchronisation).
    """
    settings = settings or get_settings()
    return model_cache.get(("rembg", model), lambda: _new_session(
        model, settings, settings.cutout_threads if threads is None else threads))


def clear_sessions() -> None:
    """Drop every cached rembg session (frees model memory; the next use builds a fresh one)."""
    model_cache.clear(kind="rembg")


def backends_for(settings: Settings, threads: int | None = None) -> list[RembgBackend]:
    """One backend per model the cut-out setting names ("u2netp+u2net": two, averaged by the caller)."""
    return [RembgBackend(settings, model=m.name, threads=threads) for m in cutout_members(settings.cutout_model)]


class RembgBackend:
    """Foreground probability for an RGB image, from one rembg model (default: the setting's first)."""

    name = "rembg"

    def __init__(self, settings: Settings | None = None, model: str | None = None, threads: int | None = None):
        self.settings = settings or get_settings()
        self.model = model or cutout_members(self.settings.cutout_model)[0].name
        self.threads = threads  # see get_session

    @property
    def session(self):
        return get_session(self.model, self.settings, self.threads)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 in [0, 1] for an HxWx3 uint8 RGB image the caller has already made small."""
        session = self.session
        own = _OWN_MODELS.get(self.model)
        if own is not None:
            return _predict_own(session.inner_session, rgb, *own)
        spec = _SQUARE_MODELS.get(self.model)
        if spec is None:
            mask = session.predict(Image.fromarray(rgb))[0]
            return np.asarray(mask.convert("L"), dtype=np.float32) * (1 / 255)
        mean, std, side = spec
        # The same filter as rembg: u2netp's answer on hard photos swings with the resampling
        # (cv2 INTER_AREA input cost 0.02-0.03 IoU on the alphamatting set).
        x = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.LANCZOS), np.float32)
        x *= 1 / max(float(x.max()), 1e-6)
        x = (x - np.float32(mean)) / np.float32(std)
        inner = session.inner_session
        feed = {inner.get_inputs()[0].name: x.transpose(2, 0, 1)[None]}
        pred = inner.run(None, feed)[0][0, 0]
        lo, hi = float(pred.min()), float(pred.max())
        pred = (pred - lo) / max(hi - lo, 1e-6)
        h, w = rgb.shape[:2]
        return np.clip(cv2.resize(pred, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
