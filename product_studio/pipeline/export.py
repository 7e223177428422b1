"""Encode final pixels into the file a target asks for."""

from __future__ import annotations

import io
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from ..errors import BadInput
from ..presets import Target


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


def decode_png(data: bytes) -> np.ndarray:
    """The inverse of encode_png for our own stored PNGs: HxWx3 RGB or HxWx4 RGBA uint8.
    Raises ValueError for bytes OpenCV cannot decode."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3:
        raise ValueError("not an RGB or RGBA PNG")
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB)


# IPTC's term for pixels made by a generative model; Google Merchant Center requires it.
AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    "<Iptc4xmpExt:DigitalSourceType>{}</Iptc4xmpExt:DigitalSourceType>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
)
_MIN_QUALITY = 50


@lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _save(image: Image.Image, fmt: str, quality: int, xmp: bytes | None) -> bytes:
    buf = io.BytesIO()
    opts: dict = {"icc_profile": srgb_icc()}
    if fmt == "jpeg":
        # 4:4:4 chroma keeps a pure-white background exactly 255 right up to the product's edge.
        opts.update(quality=quality, subsampling=0)
        if xmp:
            opts["xmp"] = xmp
        image.save(buf, "JPEG", **opts)
    elif fmt == "webp":
        opts.update(quality=quality, method=4)
        if xmp:
            opts["xmp"] = xmp
        image.save(buf, "WEBP", **opts)
    else:
        info = PngImagePlugin.PngInfo()
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        image.save(buf, "PNG", compress_level=6, pnginfo=info, **opts)
    return buf.getvalue()


def encode(pixels: np.ndarray, target: Target, ai_generated: bool = False) -> bytes:
    """Encode (H, W, 3) uint8 sRGB pixels as the target's file, within its byte cap.

    Lossy formats step their quality down until the file fits; a PNG that cannot fit is an error
    rather than a silently different format.
    """
    image = Image.fromarray(pixels, "RGB")
    xmp = _XMP.format(AI_SOURCE_TYPE).encode() if ai_generated else None
    quality = target.quality
    data = _save(image, target.format, quality, xmp)
    while target.max_bytes and len(data) > target.max_bytes:
        if target.format == "png" or quality <= _MIN_QUALITY:
            raise BadInput(
                f"{target.name}: cannot fit {target.format.upper()} under {target.max_bytes} bytes "
                f"(got {len(data)} at quality {quality})"
            )
        quality = max(_MIN_QUALITY, quality - 8)
        data = _save(image, target.format, quality, xmp)
    return data
