"""Image type sniffing: one magic-byte table for every door (uploads, files, fetched URLs, batch).

The type comes from the bytes, never from a name or a declared Content-Type, so Pillow only ever
runs a plugin we chose (EPS would start Ghostscript, for one). Magic numbers are the formats'
own: JPEG (ITU T.81 SOI marker), PNG (RFC 2083 signature), GIF87a/89a, TIFF (II*/MM*), BMP,
RIFF/WEBP, and ISO-BMFF `ftyp` brands for AVIF/HEIF (ISO/IEC 14496-12, 23008-12).
"""

from __future__ import annotations

from .errors import BadInput

# Formats we decode. Anything else is refused by sniff() before Pillow sees it.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF", "HEIF")
# The media type each supported format is served and stored as.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
               "TIFF": "image/tiff", "BMP": "image/bmp", "AVIF": "image/avif", "HEIF": "image/heic"}


_RASTER_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
# Raster formats people upload that we do not decode: say so, and what to do.
_UNSUPPORTED_MAGIC = (
    (b"8BPS", "Photoshop PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
)
# Things that are not raster images at all.
_OTHER_MAGIC = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "PostScript/EPS"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "an ELF executable"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_TEXT_BYTES = frozenset(range(0x20, 0x100)) | {0x09, 0x0A, 0x0C, 0x0D, 0x1B}


def sniff(data: bytes) -> str:
    """The real type from magic bytes (never the name): a SUPPORTED_FORMATS entry, or BadInput."""
    if not data:
        raise BadInput("empty file")
    for magic, fmt in _RASTER_MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":  # ISO base media: AVIF, HEIF, or a video
        size = int.from_bytes(data[:4], "big")
        brands = {data[i : i + 4] for i in range(8, min(max(size, 16), 256), 4)} - {b"\x00\x00\x00\x00"}
        if brands & {b"avif", b"avis"}:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"  # HEIC: what iPhones save by default
        raise BadInput("not a raster image (looks like an MP4/MOV video)")
    for magic, what in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            raise BadInput(f"{what} images are not supported (export as JPEG or PNG)")
    if data[:4] == b"RIFF":
        raise BadInput("not a raster image (looks like RIFF audio/video)")
    if b"%PDF-" in data[:1024]:  # readers accept the header anywhere in the first KiB
        raise BadInput("not a raster image (looks like PDF)")
    for magic, what in _OTHER_MAGIC:
        if data.startswith(magic):
            raise BadInput(f"not a raster image (looks like {what})")
    what = _describe_text(data[:4096])
    if what is None:
        raise BadInput("not a supported image format (unrecognised data)")
    raise BadInput(f"not a raster image (looks like {what})")


def _describe_text(head: bytes) -> str | None:
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if low.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if b"<svg" in low:
        return "SVG"
    if any(tag in low for tag in (b"<html", b"<head", b"<body", b"<script", b"<iframe")):
        return "HTML"
    if low.startswith(b"<"):
        return "XML"
    if low.startswith((b"{", b"[")):
        return "JSON"
    if all(b in _TEXT_BYTES for b in head):
        return "plain text"
    return None



def media_type(head: bytes) -> str | None:
    """The media type (e.g. "image/jpeg") of a supported raster format the first bytes announce,
    or None for anything sniff() refuses. The first 16 bytes decide every format but ISO-BMFF
    (AVIF), whose image brand may be listed further on: give those their first 256 bytes."""
    try:
        return MEDIA_TYPES[sniff(head)]
    except BadInput:
        return None
