"""ControlNet control images from the product alone, in canvas coordinates.

Detectors are named as in controlnet-aux. The two without weights, `canny` and
`lineart_standard`, are plain OpenCV and run here, line for line as controlnet-aux 0.0.10
computes them (same output for the same input and options), because importing controlnet-aux
imports torch and every detector: seconds that a one-photo `process` should not pay. The others
come from controlnet-aux, loaded from the Hugging Face hub (or a local folder), and fail with a
clear message when the weights cannot be had.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from ..backends import model_cache
from ..config import Settings, get_settings
from ..errors import ModelUnavailable, TransientError, UnknownName
from .layout import Placement

# --- the weightless detectors, without controlnet-aux (or torch) ---------------------------------


def hwc3(x: np.ndarray) -> np.ndarray:
    """controlnet_aux.util.HWC3: HxW, HxWx1 or HxWx4 (over white) uint8 as HxWx3."""
    assert x.dtype == np.uint8
    if x.ndim == 2:
        x = x[:, :, None]
    assert x.ndim == 3
    C = x.shape[2]
    assert C == 1 or C == 3 or C == 4
    if C == 3:
        return x
    if C == 1:
        return np.concatenate([x, x, x], axis=2)
    color = x[:, :, 0:3].astype(np.float32)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    y = color * alpha + 255.0 * (1.0 - alpha)
    return y.clip(0, 255).astype(np.uint8)


def resize_image(input_image: np.ndarray, resolution: int) -> np.ndarray:
    """controlnet_aux.util.resize_image: short side to `resolution`, both sides rounded to 64."""
    H, W = input_image.shape[:2]
    H = float(H)
    W = float(W)
    k = float(resolution) / min(H, W)
    H *= k
    W *= k
    H = int(np.round(H / 64.0)) * 64
    W = int(np.round(W / 64.0)) * 64
    return cv2.resize(input_image, (W, H), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def _pil(x: np.ndarray):
    from PIL import Image

    return Image.fromarray(x)


class CannyDetector:
    """controlnet_aux.canny.CannyDetector (0.0.10), the same arguments and output."""

    def __call__(self, input_image=None, low_threshold=100, high_threshold=200, detect_resolution=512,
                 image_resolution=512, output_type=None, **kwargs):
        if "img" in kwargs:
            warnings.warn("img is deprecated, please use `input_image=...` instead.", DeprecationWarning)
            input_image = kwargs.pop("img")
        if input_image is None:
            raise ValueError("input_image must be defined.")
        if not isinstance(input_image, np.ndarray):
            input_image = np.array(input_image, dtype=np.uint8)
            output_type = output_type or "pil"
        else:
            output_type = output_type or "np"

        input_image = hwc3(input_image)
        input_image = resize_image(input_image, detect_resolution)
        detected_map = hwc3(cv2.Canny(input_image, low_threshold, high_threshold))
        H, W, _ = resize_image(input_image, image_resolution).shape
        detected_map = cv2.resize(detected_map, (W, H), interpolation=cv2.INTER_LINEAR)
        return _pil(detected_map) if output_type == "pil" else detected_map


class LineartStandardDetector:
    """controlnet_aux.lineart_standard.LineartStandardDetector (0.0.10), the same arguments and output."""

    def __call__(self, input_image=None, guassian_sigma=6.0, intensity_threshold=8, detect_resolution=512,
                 output_type="pil"):
        if not isinstance(input_image, np.ndarray):
            input_image = np.array(input_image, dtype=np.uint8)
        else:
            output_type = output_type or "np"
        original_height, original_width, _ = input_image.shape

        input_image = hwc3(input_image)
        input_image = resize_image(input_image, detect_resolution)
        x = input_image.astype(np.float32)
        g = cv2.GaussianBlur(x, (0, 0), guassian_sigma)
        intensity = np.min(g - x, axis=2).clip(0, 255)
        intensity /= max(16, np.median(intensity[intensity > intensity_threshold]))
        intensity *= 127
        detected_map = hwc3(intensity.clip(0, 255).astype(np.uint8))
        detected_map = cv2.resize(detected_map, (original_width, original_height), interpolation=cv2.INTER_CUBIC)
        return _pil(detected_map) if output_type == "pil" else detected_map


# --- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    cls: str  # class name in controlnet_aux
    weights: bool  # loaded with from_pretrained(settings.annotators_repo)
    options: tuple[tuple[str, object], ...] = ()
    local: type | None = None  # this module's copy of a weightless class: controlnet-aux is not imported


DETECTORS: dict[str, Detector] = {
    "canny": Detector("CannyDetector", False, (("low_threshold", 100), ("high_threshold", 200)), CannyDetector),
    "lineart_standard": Detector("LineartStandardDetector", False, local=LineartStandardDetector),
    "hed": Detector("HEDdetector", True),
    "pidi": Detector("PidiNetDetector", True),
    "lineart": Detector("LineartDetector", True),
    "mlsd": Detector("MLSDdetector", True),
    "depth": Detector("MidasDetector", True),
    "normal": Detector("NormalBaeDetector", True),
}


def _build(name: str, settings: Settings):
    spec = DETECTORS[name]
    if spec.local is not None:
        return spec.local()
    settings.apply_environment()
    with warnings.catch_warnings():  # its timm registrations warn on every import
        warnings.simplefilter("ignore")
        import controlnet_aux  # slow (imports every detector): only when a control image is needed

    cls = getattr(controlnet_aux, spec.cls)
    if not spec.weights:
        return cls()
    try:
        model = cls.from_pretrained(settings.annotators_repo)
    except Exception as exc:  # hub/offline/file errors come in many types
        from ..backends.model_cache import is_absent

        if not is_absent(exc, settings.annotators_repo, offline=settings.offline):
            raise TransientError(f"edge detector {name!r}: its weights from {settings.annotators_repo!r} could not "
                                 f"be loaded this time ({type(exc).__name__}: {str(exc)[:160]}); a later try may "
                                 "succeed") from None
        raise ModelUnavailable(
            f"edge detector {name!r} needs weights from {settings.annotators_repo!r}, which cannot be loaded "
            f"({type(exc).__name__}): "
            + ("set PRODUCT_STUDIO_OFFLINE=false to let them download from the hub, or download them and set "
               if settings.offline else "download them and set ")
            + "PRODUCT_STUDIO_ANNOTATORS_REPO to their folder; or choose a detector that needs no weights "
              "(canny, lineart_standard)"
        ) from None
    return model.to(settings.device) if hasattr(model, "to") else model


def get_detector(name: str, settings: Settings | None = None):
    settings = settings or get_settings()
    if name not in DETECTORS:
        raise UnknownName("edge detector", name, list(DETECTORS))
    return model_cache.get(("detector", name, settings.annotators_repo, settings.device), lambda: _build(name, settings))


def control_image(placement: Placement, detector: str | None = None, settings: Settings | None = None) -> np.ndarray:
    """(H, W, 3) uint8 control image of the product's edges on the placement's canvas."""
    settings = settings or get_settings()
    name = detector or settings.edge_detector
    run = get_detector(name, settings)
    # Line detectors expect ink on paper: show them the product on white.
    product = placement.over(255)
    H, W = product.shape[:2]
    # controlnet-aux resizes to multiples of 64; padding first keeps its scale at exactly 1,
    # so edges land on the canvas pixels they came from.
    ph, pw = -H % 64, -W % 64
    padded = cv2.copyMakeBorder(product, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
    res = min(padded.shape[:2])
    kwargs = dict(DETECTORS[name].options, detect_resolution=res, output_type="np")
    if "image_resolution" in inspect.signature(run.__call__).parameters:
        kwargs["image_resolution"] = res
    edges = run(padded, **kwargs)
    edges = np.asarray(edges, np.uint8)
    if edges.shape[:2] != padded.shape[:2]:  # learned detectors may work at their own size
        edges = cv2.resize(edges, (padded.shape[1], padded.shape[0]), interpolation=cv2.INTER_LINEAR)
    edges = edges[:H, :W]
    if edges.ndim == 2:
        edges = np.repeat(edges[..., None], 3, axis=2)
    # Only the product's edges: nothing outside a thin ring around its silhouette survives.
    alpha = np.clip(placement.canvas_alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    keep = cv2.dilate((alpha > 4).astype(np.uint8), np.ones((5, 5), np.uint8))
    edges = edges * keep[..., None]
    # The silhouette itself is always drawn, so a white product on white (or black on black for
    # another detector) still tells ControlNet where the product ends.
    outline = cv2.Canny(alpha, 64, 192)
    return np.maximum(edges, outline[..., None])
