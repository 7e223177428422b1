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

# Models whose rembg session squashes the image to a square with PIL's LANCZOS, normalises it
# (x / max(x), then (x - mean) / std) and min-max scales the first output. For these we do exactly
# that on the already-small image and call ONNX Runtime directly, skipping rembg's uint8 round trip
# and its LANCZOS resize of the mask back up. Any other rembg model goes through session.predict().
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_SQUARE_MODELS: dict[str, tuple[tuple[float, ...], tuple[float, ...], int]] = {
    name: (*_IMAGENET, 320) for name in ("u2net", "u2netp", "u2net_human_seg", "silueta")
}

def model_candidates(settings: Settings, model: str) -> list[Path]:
    """Where rembg looks for `model` under U2NET_HOME (flat layout first, as `doctor` reports it)."""
    root = Path(settings.model_dir)
    return [root / f"{model}.onnx", root / "models" / model / f"{model}.onnx"]


def _new_session(model: str, settings: Settings, threads: int):
    settings.apply_environment()  # before `import rembg`: it reads U2NET_HOME
    import onnxruntime as ort
    import rembg
    from rembg.sessions import sessions as known

    if model not in known:
        raise UnknownName("cut-out model", model, list(known))
    if settings.offline and not any(p.is_file() for p in model_candidates(settings, model)):
        path = model_candidates(settings, model)[0]
        raise ModelUnavailable(
            f"cut-out model {model!r} not found at {path} and offline mode forbids downloading it; "
            f"put {path.name} there or set PRODUCT_STUDIO_CUTOUT_MODEL / PRODUCT_STUDIO_MODEL_DIR"
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


class RembgBackend:
    """Foreground probability for an RGB image, from a rembg model (settings.cutout_model)."""

    name = "rembg"

    def __init__(self, settings: Settings | None = None, model: str | None = None, threads: int | None = None):
        self.settings = settings or get_settings()
        self.model = model or self.settings.cutout_model
        self.threads = threads  # see get_session

    @property
    def session(self):
        return get_session(self.model, self.settings, self.threads)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 in [0, 1] for an HxWx3 uint8 RGB image the caller has already made small."""
        session = self.session
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
