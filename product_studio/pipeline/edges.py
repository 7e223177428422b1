"""ControlNet control images from the product alone, in canvas coordinates.

Detectors come from controlnet-aux, by name. Canny and lineart_standard need no weights; the
others load from the Hugging Face hub (or a local folder) and fail with a clear message when
the weights cannot be had.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from ..backends import model_cache
from ..config import Settings, get_settings
from ..errors import ModelUnavailable, UnknownName
from .layout import Placement


@dataclass(frozen=True)
class Detector:
    cls: str  # class name in controlnet_aux
    weights: bool  # loaded with from_pretrained(settings.annotators_repo)
    options: tuple[tuple[str, object], ...] = ()


DETECTORS: dict[str, Detector] = {
    "canny": Detector("CannyDetector", False, (("low_threshold", 100), ("high_threshold", 200))),
    "lineart_standard": Detector("LineartStandardDetector", False),
    "hed": Detector("HEDdetector", True),
    "pidi": Detector("PidiNetDetector", True),
    "lineart": Detector("LineartDetector", True),
    "mlsd": Detector("MLSDdetector", True),
    "depth": Detector("MidasDetector", True),
    "normal": Detector("NormalBaeDetector", True),
}


def _build(name: str, settings: Settings):
    spec = DETECTORS[name]
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
        raise ModelUnavailable(
            f"edge detector {name!r} needs weights from {settings.annotators_repo!r}, which cannot be loaded "
            f"({type(exc).__name__}); download them and set PRODUCT_STUDIO_ANNOTATORS_REPO to their folder, "
            f"or use PRODUCT_STUDIO_EDGE_DETECTOR=canny"
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
