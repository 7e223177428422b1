"""Low-level image helpers: sniff, decode safely to 8-bit sRGB, resize, alpha.

Everything here works on bytes and numpy arrays (HxWx3 uint8 RGB, HxW uint8 alpha) and raises
BadInput with a message that does not name the input; the ingest stage adds the name.
No torch, no rembg.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageCms

from .errors import BadInput
from .sniff import sniff


class Decoded(NamedTuple):
    rgb: np.ndarray  # HxWx3 uint8 sRGB, C-contiguous
    alpha: np.ndarray | None  # HxW uint8, None when absent or fully opaque
    format: str  # one of sniff.SUPPORTED_FORMATS


# --- decoding -------------------------------------------------------------------------------


def check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    """Refuse from the header alone: bombs before any pixel is allocated, and slivers."""
    if width * height > max_pixels:
        raise BadInput(f"{width}x{height} px ({width * height / 1e6:.3g} MP) is over the {max_pixels / 1e6:g} MP "
                       "limit (PRODUCT_STUDIO_MAX_INPUT_PIXELS raises it)")
    if min(width, height) < min_side:
        raise BadInput(f"{width}x{height} px is below the {min_side} px minimum side")


def probe_image(data: bytes, *, max_pixels: int, min_side: int) -> tuple[str, int, int]:
    """Sniff and size-check from the header alone (nothing is decoded): the format and the upright
    width and height. BadInput for what decode_image would refuse before decoding; data that is
    corrupt past its header is found only when decoded."""
    fmt = sniff(data)
    with _open(data, fmt, max_pixels) as im:
        check_size(*im.size, max_pixels, min_side)
        width, height = im.size
        if exif_orientation(im) in (5, 6, 7, 8):  # a quarter turn: upright, it is the other way round
            width, height = height, width
    return fmt, width, height


def _open(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    """Pillow's lazy image (header read, pixels not decoded) of data sniffed as `fmt`."""
    if fmt == "HEIF":
        _register_heif()
    try:
        # Lazy: reads the header only; formats= keeps Pillow to the plugin we sniffed.
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (an error above 2x Image.MAX_IMAGE_PIXELS), hit before ours can run;
        # the warning only arrives here if warnings are turned into errors.
        pixels, pil_limit = ([int(n) for n in re.findall(r"\d+", str(exc))] + [0, 0])[:2]
        if pixels > max_pixels:
            raise BadInput(f"{pixels / 1e6:.3g} MP is over the {max_pixels / 1e6:g} MP limit "
                           "(PRODUCT_STUDIO_MAX_INPUT_PIXELS raises it)") from None
        raise BadInput(f"{pixels} px is over Pillow's {pil_limit}-pixel decompression-bomb limit") from None
    except Exception:
        raise BadInput(f"truncated or corrupt {fmt} data") from None
    return im


def decode_image(data: bytes, *, max_pixels: int, min_side: int) -> Decoded:
    """Sniff, size-check and decode the first frame to 8-bit sRGB RGB (+ real alpha), upright."""
    fmt = sniff(data)
    with _open(data, fmt, max_pixels) as im:
        check_size(*im.size, max_pixels, min_side)
        orientation = exif_orientation(im)
        icc = im.info.get("icc_profile")
        nclx = im.info.get("nclx_profile") if not icc else None  # HEIF's colour description without a profile
        if fmt == "JPEG" and im.mode in ("L", "RGB"):
            arr = _decode_jpeg(data, "GRAY" if im.mode == "L" else "RGB")
            if arr.shape[2] == 1:
                arr = arr[:, :, 0]
            rgb, alpha = _to_srgb(Image.fromarray(arr), icc) if _srgb_transform(icc, im.mode) else (arr, None)
        else:
            if fmt == "JPEG":  # CMYK: libjpeg-turbo validates strictly, Pillow converts
                _decode_jpeg(data, "CMYK")
            elif fmt == "PNG" and not _png_data_complete(data):
                raise BadInput("truncated or corrupt PNG data")
            try:
                im.load()  # first frame only for animations
            except Exception:
                raise BadInput(f"truncated or corrupt {fmt} data") from None
            rgb, alpha = _to_srgb(im, icc)
            if nclx and rgb.ndim == 3:
                rgb = nclx_to_srgb(rgb, nclx)
    if rgb.ndim == 2:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    rgb = np.require(apply_orientation(rgb, orientation), np.uint8, ["C", "W"])
    if alpha is not None:
        alpha = np.require(apply_orientation(alpha, orientation), np.uint8, ["C", "W"])
    return Decoded(rgb, alpha, fmt)


@lru_cache(maxsize=1)
def _register_heif() -> None:
    """Teach Pillow HEIF/HEIC through pi-heif: libheif with the libde265 decoder only (LGPL, no
    GPL x265 encoder, unlike pillow-heif's wheels). libheif applies the file's rotation and
    mirroring (irot/imir) itself and reports EXIF orientation 1, so nothing is turned twice."""
    from pi_heif import register_heif_opener

    register_heif_opener()


# nclx colour primaries (ITU-T H.273 table 2) that are sRGB's (BT.709) or unspecified: no conversion.
_SRGB_PRIMARIES = {1, 2}
# nclx transfer characteristics (H.273 table 3) decoded with the sRGB curve (13; BT.709, BT.601 and
# BT.2020's SDR curves are close to it at 8 bits), or linear (8); PQ (16) and HLG (18) are HDR.
_SRGB_TRANSFER, _LINEAR_TRANSFER, _HDR_TRANSFER = {1, 2, 6, 13, 14, 15}, {8}, {16, 18}


def _rgb_to_xyz(primaries: dict) -> np.ndarray:
    """The 3x3 matrix from linear RGB with these primaries and white point (CIE xy) to XYZ."""
    xy = [(primaries[f"color_primary_{c}_x"], primaries[f"color_primary_{c}_y"]) for c in ("red", "green", "blue")]
    wx, wy = primaries["color_primary_white_x"], primaries["color_primary_white_y"]
    m = np.array([[x / y for x, y in xy], [1.0, 1.0, 1.0], [(1 - x - y) / y for x, y in xy]])
    white = np.array([wx / wy, 1.0, (1 - wx - wy) / wy])
    return m * np.linalg.solve(m, white)


_SRGB_XY = {"color_primary_red_x": 0.64, "color_primary_red_y": 0.33, "color_primary_green_x": 0.30,
            "color_primary_green_y": 0.60, "color_primary_blue_x": 0.15, "color_primary_blue_y": 0.06,
            "color_primary_white_x": 0.3127, "color_primary_white_y": 0.3290}


def nclx_to_srgb(rgb: np.ndarray, nclx: dict) -> np.ndarray:
    """(H, W, 3) uint8 RGB described by an nclx colour box (ISO/IEC 23008-12; the codes of ITU-T
    H.273) -> the same colours in sRGB, (H, W, 3) uint8. iPhones describe their HEIC photos this
    way as Display P3 (primaries 12) with the sRGB curve. Out-of-gamut colours are clipped.
    Raises BadInput for HDR transfer curves (PQ, HLG), which need tone mapping."""
    primaries, transfer = int(nclx.get("color_primaries", 2)), int(nclx.get("transfer_characteristics", 2))
    if transfer in _HDR_TRANSFER:
        raise BadInput("HDR HEIF images (PQ or HLG) are not supported (export as JPEG)")
    if primaries in _SRGB_PRIMARIES or "color_primary_red_x" not in nclx:
        return rgb
    matrix = np.linalg.solve(_rgb_to_xyz(_SRGB_XY), _rgb_to_xyz(nclx)).astype(np.float32)
    if transfer in _LINEAR_TRANSFER:
        linear = rgb.astype(np.float32) / 255
    else:
        linear = _SRGB_TO_LINEAR[rgb]
    out = np.clip(linear @ matrix.T, 0.0, 1.0)
    encoded = np.where(out <= 0.0031308, out * 12.92, 1.055 * np.power(out, 1 / 2.4) - 0.055)
    return np.clip(encoded * 255 + 0.5, 0, 255).astype(np.uint8)


_V = np.arange(256, dtype=np.float32) / 255
_SRGB_TO_LINEAR = np.where(_V <= 0.04045, _V / 12.92, ((_V + 0.055) / 1.055) ** 2.4).astype(np.float32)


# libjpeg warnings that mean pixels are missing or garbage (it fills them with grey and goes on,
# and Pillow says nothing). Others ("N extraneous bytes before marker") are harmless and common.
_JPEG_DAMAGE = ("premature end", "bad huffman", "bad arithmetic", "instead of rst")


def _decode_jpeg(data: bytes, colorspace: str) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True)
    except ValueError as exc:
        if any(s in str(exc).lower() for s in _JPEG_DAMAGE):
            raise BadInput("truncated or corrupt JPEG data") from None
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=False)
    except ValueError:
        raise BadInput("truncated or corrupt JPEG data") from None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_data_complete(data: bytes) -> bool:
    """Whether the IDAT stream inflates to every row the header promises.

    Pillow fills rows missing from a zlib stream that ends early with black and raises nothing.
    Inflating costs about a fifth of a decode; output is capped at what the header needs.
    """
    if data[12:16] != b"IHDR":  # the spec puts it first; Pillow is laxer
        return False
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(ctype, 4)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    need = 0
    for x0, y0, dx, dy in passes:
        pw, ph = max(0, (w - x0 + dx - 1) // dx), max(0, (h - y0 + dy - 1) // dy)
        if pw and ph:
            need += ph * (1 + (pw * bits + 7) // 8)  # a filter byte per row
    z, pos = zlib.decompressobj(), 8
    try:
        while need > 0 and pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            buf = data[pos + 8 : pos + 8 + length] if kind == b"IDAT" else b""
            while buf and need > 0:
                need -= len(z.decompress(buf, need))
                buf = z.unconsumed_tail
            pos += 12 + length
    except (zlib.error, struct.error):
        return False
    return need <= 0


def exif_orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation 1..8, as ImageOps.exif_transpose reads it; 1 if absent or broken."""
    try:
        value = int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # malformed EXIF must not sink an otherwise good photo
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an HxW[xC] array (a view; same result as ImageOps.exif_transpose)."""
    if orientation in (5, 6, 7, 8):
        a = a.swapaxes(0, 1)
    if orientation in (2, 3, 6, 7):
        a = a[:, ::-1]
    if orientation in (3, 4, 7, 8):
        a = a[::-1]
    return a


def _to_srgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Any decoded Pillow mode -> (RGB or L array in sRGB, real alpha or None)."""
    im = _to_8bit(im)
    alpha = None
    if im.mode in ("LA", "RGBA"):
        a = np.asarray(im)
        alpha = a[..., -1] if a[..., -1].min() < 255 else None
        im = Image.fromarray(np.ascontiguousarray(a[..., :-1] if im.mode == "RGBA" else a[..., 0]))
    transform = _srgb_transform(icc, im.mode)
    if transform is not None:
        try:
            im = ImageCms.applyTransform(im, transform)
        except ImageCms.PyCMSError:
            transform = None  # treated like a profile that would not parse
    if transform is None and im.mode == "CMYK":
        im = im.convert("RGB")  # untagged CMYK: Pillow's naive formula is all we have
    return np.asarray(im), alpha


_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "YCbCr": "RGB"}


def _to_8bit(im: Image.Image) -> Image.Image:
    """Normalise to L, LA, RGB, RGBA or CMYK, 8 bits per channel."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return im
    try:
        if mode == "P":
            return im.convert("RGBA" if im.has_transparency_data else "RGB")
        if mode.startswith("I"):  # 16-bit grey (I;16, I;16B, I): scale with rounding, not truncation
            a = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
            return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8))
        return im.convert(_CONVERT[mode])
    except (KeyError, TypeError, ValueError):  # F (float), LAB, HSV...
        raise BadInput(f"unsupported colour mode {mode}") from None


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _srgb_transform(icc: bytes | None, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform from the embedded profile to sRGB; None when untagged, sRGB or unusable."""
    return _build_transform(icc, mode) if icc else None


@lru_cache(maxsize=32)
def _build_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").lower()
        if mode != "CMYK" and "srgb" in desc and "linear" not in desc:
            return None  # the common case: skip a no-op transform
        return ImageCms.buildTransform(src, _SRGB, mode, "RGB", ImageCms.Intent.PERCEPTUAL)
    except Exception:
        # A corrupt profile, or one for another colour space: browsers ignore it and so do we.
        return None


# --- resizing and alpha ---------------------------------------------------------------------


def resize_long_side(img: np.ndarray, n: int) -> np.ndarray:
    """Scale so the longer side is `n` px, keeping the aspect ratio.

    INTER_AREA to shrink (no aliasing), INTER_CUBIC to enlarge. A 4-channel uint8 image is treated
    as straight-alpha RGBA and resized premultiplied, so hidden colours under transparent pixels
    do not bleed into the edges. Returns `img` itself when it already has that size.
    """
    if n < 1:
        raise ValueError(f"resize_long_side needs n >= 1, got {n}")
    h, w = img.shape[:2]
    if max(h, w) == n:
        return img
    scale = n / max(h, w)
    size = (n, max(1, round(h * scale))) if w >= h else (max(1, round(w * scale)), n)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    if img.ndim == 3 and img.shape[2] == 4 and img.dtype == np.uint8:
        return unpremultiply(cv2.resize(premultiply(img), size, interpolation=interp))
    out = cv2.resize(img, size, interpolation=interp)
    return out[..., None] if img.ndim == 3 and out.ndim == 2 else out


def with_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """HxWx4 uint8 RGBA from RGB and an optional alpha (opaque when None)."""
    a = np.full(rgb.shape[:2], 255, np.uint8) if alpha is None else alpha
    return np.dstack([rgb, a])


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """uint8 straight RGBA -> float32 premultiplied RGBA in 0..1."""
    p = rgba.astype(np.float32) * (1 / 255)
    p[..., :3] *= p[..., 3:]
    return p


def unpremultiply(p: np.ndarray) -> np.ndarray:
    """float32 premultiplied RGBA in 0..1 -> uint8 straight RGBA (colour 0 where alpha is 0)."""
    p = np.clip(p, 0, 1)
    a = p[..., 3:]
    rgb = np.divide(p[..., :3], a, out=np.zeros_like(p[..., :3]), where=a > 1 / 512)
    out = np.concatenate([np.minimum(rgb, 1), a], axis=-1)
    return (out * 255 + 0.5).astype(np.uint8)
