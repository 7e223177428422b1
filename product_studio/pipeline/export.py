"""Encode final pixels into the file a target asks for."""

from __future__ import annotations

import cv2
import numpy as np


def encode_png(pixels: np.ndarray, compression: int = 1) -> bytes:
    """Lossless PNG of an RGB or RGBA uint8 array.

    zlib level 1 is several times faster than Pillow's default 6 for a few percent more bytes;
    fully transparent pixels should already be zeroed by the caller so they compress to nothing.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"encode_png needs HxWx3/4 uint8, got {pixels.shape} {pixels.dtype}")
    code = cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(".png", cv2.cvtColor(pixels, code), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:  # pragma: no cover - OpenCV only fails here on memory exhaustion
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
