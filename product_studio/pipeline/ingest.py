"""Ingest: bytes from an upload, a fetched URL or a file -> one trusted 8-bit sRGB Source.

The decoding itself lives in product_studio.imaging; this stage adds the limits from Settings,
the input's name in every message, the output stem and the SHA-256 of the original bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Settings, get_settings
from ..errors import BadInput
from ..imaging import decode_image, probe_image
from ..naming import display_label, safe_stem


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class Source:
    name: str  # stem for outputs, e.g. "coffee"
    rgb: np.ndarray  # HxWx3 uint8 sRGB, EXIF orientation applied, C-contiguous
    alpha: np.ndarray | None  # HxW uint8 when the input had a real (not all-opaque) alpha
    sha256: str  # hex SHA-256 of the original bytes
    format: str  # detected format: "JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP", "AVIF"

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def load_bytes(data: bytes, name: str = "upload", settings: Settings | None = None) -> Source:
    """Decode `data`; `name` (e.g. the upload's filename) names it in errors and gives the stem."""
    settings = settings or get_settings()
    return _load(bytes(data), display_label(name), safe_stem(name), settings, len(data))


@dataclass(frozen=True)
class Probe:
    """What the header says, nothing decoded: the door records it, the worker decodes."""

    name: str  # stem for outputs
    sha256: str  # hex SHA-256 of the original bytes
    format: str
    width: int  # upright
    height: int


def probe_bytes(data: bytes, name: str = "upload", settings: Settings | None = None) -> Probe:
    """Check `data` as load_bytes does up to its header (type, byte and pixel limits) without
    decoding it: BadInput naming `name`. Data corrupt past its header fails when decoded."""
    settings = settings or get_settings()
    label = display_label(name)
    if len(data) > settings.max_input_bytes:
        raise BadInput(f"{label}: {len(data)} bytes is over the {settings.max_input_bytes}-byte limit")
    try:
        fmt, width, height = probe_image(data, max_pixels=settings.max_input_pixels,
                                         min_side=settings.min_input_side)
    except BadInput as exc:
        raise BadInput(f"{label}: {exc}") from None
    return Probe(safe_stem(name), hashlib.sha256(data).hexdigest(), fmt, width, height)


def load_path(path: str | Path, settings: Settings | None = None) -> Source:
    """Decode a file, reading at most max_input_bytes + 1 bytes of it."""
    settings = settings or get_settings()
    path = Path(path)
    label = display_label(path.name or str(path))
    data = read_bounded(path, label, settings)
    return _load(data, label, safe_stem(path.name), settings, len(data))


def read_bounded(path: Path, label: str, settings: Settings) -> bytes:
    """A file's bytes; BadInput naming `label` when it is missing, unreadable or over
    max_input_bytes (checked before reading: a huge file is never pulled into memory)."""
    limit = settings.max_input_bytes
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise BadInput(f"{label}: {size} bytes is over the {limit}-byte limit")
            return f.read(limit + 1)
    except FileNotFoundError:
        raise BadInput(f"{label}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{label}: is a directory, not a file") from None
    except OSError as exc:
        raise BadInput(f"{label}: cannot read the file ({exc.strerror or type(exc).__name__})") from None


def _load(data: bytes, label: str, stem: str, settings: Settings, size: int) -> Source:
    if size > settings.max_input_bytes:
        raise BadInput(f"{label}: {size} bytes is over the {settings.max_input_bytes}-byte limit")
    try:
        rgb, alpha, fmt = decode_image(
            data, max_pixels=settings.max_input_pixels, min_side=settings.min_input_side
        )
    except BadInput as exc:
        raise BadInput(f"{label}: {exc}") from None
    return Source(stem, rgb, alpha, hashlib.sha256(data).hexdigest(), fmt)
