"""Shared fixtures: real photos from scikit-image and a way to encode them as upload bytes."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
from PIL import Image


@cache
def _coffee() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())  # 400x600x3 uint8, a cup on a saucer


@pytest.fixture
def coffee_rgb() -> np.ndarray:
    """A real product-like photo, HxWx3 uint8 (a fresh copy: tests may modify it)."""
    return _coffee().copy()


@pytest.fixture
def photo_bytes():
    """Factory: an array (or PIL image) as file bytes, e.g. photo_bytes(rgb, "PNG", icc_profile=...)."""

    def encode(pixels: np.ndarray | Image.Image, fmt: str = "JPEG", **save_options) -> bytes:
        im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        if fmt.upper() in ("JPEG", "JPG"):
            save_options.setdefault("quality", 95)
        buf = io.BytesIO()
        im.save(buf, fmt, **save_options)
        return buf.getvalue()

    return encode
