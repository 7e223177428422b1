"""Ingest: real type sniffing, limits, colour/bit-depth normalisation, orientation, frames."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps
from skimage import data

from product_studio.config import Settings
from product_studio.errors import BadInput
from product_studio.imaging import apply_orientation, resize_long_side
from product_studio.pipeline.ingest import Source, load_bytes, load_path


def bad(data: bytes, name: str = "x.png", settings: Settings | None = None) -> str:
    """The BadInput message for `data` (and check it is one line naming the input)."""
    with pytest.raises(BadInput) as info:
        load_bytes(data, name, settings)
    msg = str(info.value)
    assert msg.startswith(f"{name}: ") and "\n" not in msg
    return msg


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file(width: int, height: int, colour_type: int, interlace: int, pixel_stream: bytes) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, interlace))
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", zlib.compress(pixel_stream)) + png_chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (grey), with one row of pixel data."""
    return png_file(width, height, 0, 0, b"\0" * (width + 1))


def s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def icc_rgb(colorants: list[tuple[float, float, float]], gamma: float, desc: str) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile (D50 PCS), built by hand."""
    xyz = lambda v: b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)  # noqa: E731
    text = desc.encode() + b"\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 78),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(colorants[0])),
        (b"gXYZ", xyz(colorants[1])),
        (b"bXYZ", xyz(colorants[2])),
        *[(trc, b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))) for trc in (b"rTRC", b"gTRC", b"bTRC")],
        (b"cprt", b"text\0\0\0\0no copyright\0\0\0\0"),
    ]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
        + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


SRGB_D50 = [(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]


def gradient(h: int, w: int) -> np.ndarray:
    """Asymmetric RGB test pattern: every pixel differs from its rotations and mirrors."""
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    r, g = x * 255 // max(w - 1, 1) + 0 * y, y * 255 // max(h - 1, 1) + 0 * x
    return np.dstack([r, g, (x * 7 + y * 13) % 256]).astype(np.uint8)


# --- basics -----------------------------------------------------------------------------------


def test_jpeg_photo_loads_as_contiguous_srgb(coffee_rgb, photo_bytes, tmp_path):
    raw = photo_bytes(coffee_rgb, "JPEG")
    path = tmp_path / "coffee.jpg"
    path.write_bytes(raw)
    src = load_path(path)
    assert isinstance(src, Source)
    assert (src.name, src.format, src.width, src.height) == ("coffee", "JPEG", 600, 400)
    assert src.rgb.dtype == np.uint8 and src.rgb.shape == (400, 600, 3)
    assert src.rgb.flags["C_CONTIGUOUS"] and src.rgb.flags["WRITEABLE"] and src.alpha is None
    assert np.abs(src.rgb.astype(int) - coffee_rgb).mean() < 4
    # Same pixels as Pillow decodes (the fast libjpeg-turbo path must not differ).
    assert np.array_equal(src.rgb, np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    assert src.sha256 == hashlib.sha256(raw).hexdigest()


def test_sha256_is_of_the_original_bytes(photo_bytes):
    raw = photo_bytes(gradient(32, 48), "PNG")
    assert load_bytes(raw).sha256 == hashlib.sha256(raw).hexdigest()
    assert load_bytes(raw + b"trailing").sha256 != load_bytes(raw).sha256


def test_type_comes_from_magic_bytes_not_the_name(coffee_rgb, photo_bytes):
    src = load_bytes(photo_bytes(coffee_rgb, "PNG"), "photo.jpg")
    assert (src.format, src.name) == ("PNG", "photo")
    assert np.array_equal(src.rgb, coffee_rgb)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "GIF", "AVIF"])
def test_other_raster_formats(fmt, photo_bytes):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, 30:] = (200, 30, 90)  # two flat colours so GIF's palette and lossy codecs stay exact-ish
    opts = {"WEBP": {"lossless": True}, "AVIF": {"quality": 95}}.get(fmt, {})
    src = load_bytes(photo_bytes(rgb, fmt, **opts), f"x.{fmt.lower()}")
    assert src.format == fmt and src.rgb.shape == (40, 60, 3)
    assert np.abs(src.rgb[5:-5, 5:25].astype(int) - rgb[5:-5, 5:25]).max() <= 3
    assert np.abs(src.rgb[5:-5, 35:-5].astype(int) - rgb[5:-5, 35:-5]).max() <= 3


def test_stem_is_safe_for_output_paths(photo_bytes):
    raw = photo_bytes(gradient(20, 20), "PNG")
    assert load_bytes(raw, "../../etc/my photo.PNG").name == "my_photo"
    assert load_bytes(raw, "..").name == "upload"
    assert load_bytes(raw, "café.v2.jpg").name == "café.v2"


# --- not a raster photo -----------------------------------------------------------------------


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("logo.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "(looks like SVG)"),
        ("page.jpg", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", "(looks like HTML)"),
        ("snippet.png", b"\xef\xbb\xbf  <script>alert(1)</script>", "not a raster image (looks like HTML)"),
        ("doc.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", "not a raster image (looks like PDF)"),
        ("notes.jpg", "plain words, ünïcode too\n".encode() * 20, "(looks like plain text)"),
        ("data.webp", b'{"image": "no"}', "not a raster image (looks like JSON)"),
        ("archive.jpg", _zip(), "not a raster image (looks like a ZIP archive)"),
        ("print.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n", "not a raster image (looks like PostScript/EPS)"),
        ("clip.jpg", b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom" + b"\0" * 64, "(looks like an MP4/MOV video)"),
        ("iphone.jpg", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "truncated or corrupt HEIF data"),
        ("layers.png", b"8BPS\0\x01" + b"\0" * 64, "Photoshop PSD images are not supported"),
        ("noise.jpg", bytes(range(256)) * 4, "not a supported image format (unrecognised data)"),
        ("empty.jpg", b"", "empty file"),
    ],
)
def test_non_images_are_refused_with_what_they_look_like(name, payload, expected):
    assert expected in bad(payload, name)


def test_wrong_magic_inside_a_valid_looking_container_is_corrupt():
    # Starts like a BMP ("BM"), is not one: the BMP plugin alone gets it, and fails cleanly.
    assert bad(b"BMW is a car brand, not a bitmap.", "car.bmp") == "car.bmp: truncated or corrupt BMP data"


# --- truncated and corrupt --------------------------------------------------------------------


def test_truncated_jpeg_is_refused(coffee_rgb, photo_bytes):
    raw = photo_bytes(coffee_rgb, "JPEG")
    assert bad(raw[: len(raw) // 2], "coffee.jpg") == "coffee.jpg: truncated or corrupt JPEG data"
    assert bad(raw[:-2], "coffee.jpg") == "coffee.jpg: truncated or corrupt JPEG data"  # only EOI missing


def test_truncated_jpeg_with_end_marker_is_refused_not_decoded_grey(coffee_rgb, photo_bytes):
    # Pillow decodes this without complaint and fills the missing half with grey 128.
    raw = photo_bytes(coffee_rgb, "JPEG")
    assert "truncated or corrupt JPEG" in bad(raw[: len(raw) // 2] + b"\xff\xd9", "cut.jpg")
    prog = photo_bytes(coffee_rgb, "JPEG", progressive=True)
    assert "truncated or corrupt JPEG" in bad(prog[: len(prog) // 2] + b"\xff\xd9", "cut.jpg")


def test_jpeg_missing_a_middle_chunk_is_refused(coffee_rgb, photo_bytes):
    raw = photo_bytes(coffee_rgb, "JPEG")
    n = len(raw)
    assert "truncated or corrupt JPEG" in bad(raw[: n // 2] + raw[n // 2 + n // 10 :], "gap.jpg")


def test_jpeg_with_data_after_end_marker_loads(coffee_rgb, photo_bytes):
    raw = photo_bytes(coffee_rgb, "JPEG")  # phones append such trailers; the image is complete
    assert np.array_equal(load_bytes(raw + b"\0trailer" * 50).rgb, load_bytes(raw).rgb)


def test_truncated_png_is_refused(coffee_rgb, photo_bytes):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # nothing we import may switch it on
    raw = photo_bytes(coffee_rgb, "PNG")
    assert bad(raw[: len(raw) // 2], "coffee.png") == "coffee.png: truncated or corrupt PNG data"
    assert bad(raw[:60], "coffee.png") == "coffee.png: truncated or corrupt PNG data"


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rgb(rgb: np.ndarray, interlace: bool = False, cut: float = 1.0) -> bytes:
    """A hand-made 8-bit RGB PNG (optionally Adam7) whose pixel stream keeps only `cut` of its bytes."""
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    sub_images = [rgb[y0::dy, x0::dx] for x0, y0, dx, dy in passes]
    raw = b"".join(b"\0" + row.tobytes() for sub in sub_images for row in sub if row.size)
    return png_file(rgb.shape[1], rgb.shape[0], 2, int(interlace), raw[: int(len(raw) * cut)])


@pytest.mark.parametrize("interlace", [False, True])
def test_png_whose_pixel_stream_ends_early_is_refused(interlace, coffee_rgb):
    # Every chunk is complete, but the pixel stream stops early: Pillow pads the rest with black.
    crop = np.ascontiguousarray(coffee_rgb[:101, :77])  # odd sizes exercise every Adam7 pass
    assert np.array_equal(load_bytes(png_rgb(crop, interlace)).rgb, crop)
    assert bad(png_rgb(crop, interlace, cut=0.5), "half.png") == "half.png: truncated or corrupt PNG data"
    assert "truncated or corrupt PNG" in bad(png_rgb(crop, interlace, cut=0.999), "half.png")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader chatters about bad tags
def test_mangled_files_only_ever_raise_bad_input(photo_bytes):
    rng = np.random.default_rng(7)
    rgba = np.dstack([gradient(24, 32), np.full((24, 32), 200, np.uint8)])
    originals = [photo_bytes(rgba, fmt) for fmt in ("PNG", "WEBP", "TIFF")]
    originals += [photo_bytes(rgba[..., :3], fmt) for fmt in ("JPEG", "GIF", "BMP")]
    for raw in originals:
        for _ in range(25):
            mangled = bytearray(raw)
            for i in rng.integers(0, min(len(raw), 200), 4):
                mangled[i] = int(rng.integers(0, 256))
            try:
                load_bytes(bytes(mangled[: int(rng.integers(8, len(raw) + 1))]))
            except BadInput as exc:
                assert "\n" not in str(exc)


# --- limits -----------------------------------------------------------------------------------


def test_decompression_bomb_refused_from_the_header():
    bomb = png_header_only(30000, 30000)  # 900 Mpx claimed in < 100 bytes
    assert len(bomb) < 200
    # The bomb carries no pixel data: refusing it by size (not "truncated") proves the header decided.
    assert bad(bomb, "big.png") == ("big.png: 900 MP is over the 100 MP limit "
                                    "(PRODUCT_STUDIO_MAX_INPUT_PIXELS raises it)")


def test_pixel_limit_comes_from_settings():
    settings = Settings(max_input_pixels=1_000_000)
    msg = bad(png_header_only(2000, 1000), "big.png", settings)
    assert msg == "big.png: 2000x1000 px (2 MP) is over the 1 MP limit (PRODUCT_STUDIO_MAX_INPUT_PIXELS raises it)"
    # Under the limit the header passes and the missing pixel data is reported instead.
    assert "truncated or corrupt PNG" in bad(png_header_only(1000, 1000), "big.png", settings)


def test_byte_limit(coffee_rgb, photo_bytes, tmp_path):
    raw = photo_bytes(coffee_rgb, "PNG")
    settings = Settings(max_input_bytes=len(raw) - 1)
    assert bad(raw, "big.png", settings) == f"big.png: {len(raw)} bytes is over the {len(raw) - 1}-byte limit"
    (tmp_path / "big.png").write_bytes(raw)
    with pytest.raises(BadInput, match=r"^big\.png: \d+ bytes is over the \d+-byte limit$"):
        load_path(tmp_path / "big.png", settings)
    assert load_bytes(raw, settings=Settings(max_input_bytes=len(raw))).format == "PNG"


def test_path_problems_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match=r"^missing\.jpg: no such file$"):
        load_path(tmp_path / "missing.jpg")
    with pytest.raises(BadInput, match="is a directory"):
        load_path(tmp_path)


def test_one_pixel_image_is_refused(photo_bytes):
    assert bad(photo_bytes(np.zeros((1, 1, 3), np.uint8), "PNG"), "tiny.png") == (
        "tiny.png: 1x1 px is below the 16 px minimum side"
    )


def test_very_wide_image_loads_exactly(photo_bytes):
    wide = gradient(300, 20000)
    src = load_bytes(photo_bytes(wide, "PNG", compress_level=1), "banner.png")
    assert (src.width, src.height) == (20000, 300)
    assert np.array_equal(src.rgb, wide)


def test_2048px_jpeg_decodes_like_pillow(photo_bytes):
    """The fast strict decoder gives the same pixels as Pillow (speed is measured in bench/)."""
    big = np.ascontiguousarray(np.tile(data.astronaut(), (4, 4, 1)))  # 2048x2048 real photo
    raw = photo_bytes(big, "JPEG", quality=90)
    src = load_bytes(raw)
    assert src.rgb.shape == (2048, 2048, 3)
    assert np.array_equal(src.rgb, np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))


# --- modes, bit depth and colour --------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb(coffee_rgb, photo_bytes):
    cmyk = Image.fromarray(coffee_rgb).convert("CMYK")
    src = load_bytes(photo_bytes(cmyk, "JPEG"), "print.jpg")
    assert src.format == "JPEG" and src.rgb.shape == (400, 600, 3) and src.alpha is None
    assert np.abs(src.rgb.astype(int) - coffee_rgb).mean() < 3


def test_truncated_cmyk_jpeg_is_refused(coffee_rgb, photo_bytes):
    raw = photo_bytes(Image.fromarray(coffee_rgb).convert("CMYK"), "JPEG")
    assert "truncated or corrupt JPEG" in bad(raw[: len(raw) // 2] + b"\xff\xd9", "print.jpg")


def test_16bit_grey_png_is_rounded_to_8bit(photo_bytes):
    a16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    im = Image.fromarray(a16)
    assert im.mode == "I;16"
    src = load_bytes(photo_bytes(im, "PNG"))
    expected = np.round(a16 / 257).astype(np.uint8)
    assert np.array_equal(src.rgb, np.dstack([expected] * 3))


def test_16bit_rgb_png_becomes_8bit():
    rgb16 = (gradient(40, 50).astype(np.uint16) * 257 + 100).astype(np.uint16)
    ok, buf = cv2.imencode(".png", rgb16[..., ::-1])  # OpenCV writes 48-bit PNG; Pillow cannot
    assert ok
    src = load_bytes(buf.tobytes())
    assert src.rgb.dtype == np.uint8
    assert np.abs(src.rgb.astype(int) - np.round(rgb16 / 257)).max() <= 1


def test_greyscale_becomes_rgb(coffee_rgb, photo_bytes):
    grey = np.asarray(Image.fromarray(coffee_rgb).convert("L"))
    for fmt in ("PNG", "JPEG"):
        src = load_bytes(photo_bytes(grey, fmt))
        assert src.rgb.shape == (400, 600, 3) and src.alpha is None
        assert np.array_equal(src.rgb[..., 0], src.rgb[..., 2])
        assert np.abs(src.rgb[..., 1].astype(int) - grey).mean() < 4


def test_palette_image_with_and_without_transparency(coffee_rgb, photo_bytes):
    pal = Image.fromarray(coffee_rgb).quantize(32)
    expected = np.asarray(pal.convert("RGB"))
    plain = load_bytes(photo_bytes(pal, "PNG"))
    assert plain.alpha is None and np.array_equal(plain.rgb, expected)
    index = np.asarray(pal)
    clear = int(index[0, 0])
    see_through = load_bytes(photo_bytes(pal, "PNG", transparency=clear))
    assert np.array_equal(see_through.alpha, np.where(index == clear, 0, 255))
    assert np.array_equal(see_through.rgb, expected)


def test_grey_with_alpha(photo_bytes):
    grey = gradient(32, 40)[..., 0]
    alpha = gradient(32, 40)[..., 1]
    src = load_bytes(photo_bytes(Image.fromarray(np.dstack([grey, alpha])), "PNG"))
    assert np.array_equal(src.rgb, np.dstack([grey] * 3)) and np.array_equal(src.alpha, alpha)


def test_rgba_real_alpha_is_kept_and_opaque_alpha_dropped(coffee_rgb, photo_bytes):
    alpha = np.zeros((400, 600), np.uint8)
    cv2.circle(alpha, (300, 200), 150, 255, -1)
    src = load_bytes(photo_bytes(np.dstack([coffee_rgb, alpha]), "PNG"))
    assert np.array_equal(src.rgb, coffee_rgb) and np.array_equal(src.alpha, alpha)
    assert src.alpha.flags["C_CONTIGUOUS"]
    opaque = load_bytes(photo_bytes(np.dstack([coffee_rgb, np.full((400, 600), 255, np.uint8)]), "PNG"))
    assert opaque.alpha is None and np.array_equal(opaque.rgb, coffee_rgb)


def test_bilevel_loads_and_float_is_refused(photo_bytes):
    assert load_bytes(photo_bytes(Image.new("1", (20, 20), 1), "PNG")).rgb.min() == 255
    floats = photo_bytes(np.random.default_rng(0).random((20, 20), np.float32), "TIFF")
    assert bad(floats, "depth.tif") == "depth.tif: unsupported colour mode F"


def test_embedded_srgb_profile_changes_nothing(coffee_rgb, photo_bytes):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = load_bytes(photo_bytes(coffee_rgb, "PNG", icc_profile=srgb))
    assert np.array_equal(src.rgb, coffee_rgb)


def test_non_srgb_profile_is_converted_to_srgb(photo_bytes):
    grey = np.full((32, 32, 3), 128, np.uint8)
    linear = icc_rgb(SRGB_D50, gamma=1.0, desc="Linear test RGB")
    src = load_bytes(photo_bytes(grey, "PNG", icc_profile=linear))
    assert np.abs(src.rgb.astype(int) - 188).max() <= 1  # linear 0.502 is 188 in sRGB


def test_profile_primaries_are_honoured(photo_bytes):
    # A profile whose "red" channel means sRGB green (and vice versa): pure red must come out green.
    swapped = icc_rgb([SRGB_D50[1], SRGB_D50[0], SRGB_D50[2]], gamma=2.2, desc="Swapped RG")
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    for fmt in ("PNG", "JPEG"):
        src = load_bytes(photo_bytes(red, fmt, icc_profile=swapped))
        r, g, b = src.rgb[10, 10].astype(int)
        assert g >= 250 and r <= 8 and b <= 8, (fmt, r, g, b)


def test_broken_profile_is_ignored(coffee_rgb, photo_bytes):
    src = load_bytes(photo_bytes(coffee_rgb, "PNG", icc_profile=b"not a profile" * 10))
    assert np.array_equal(src.rgb, coffee_rgb)


# --- orientation and frames -------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation, photo_bytes):
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = photo_bytes(gradient(24, 40), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(raw))).convert("RGB"))
    src = load_bytes(raw)
    assert np.array_equal(src.rgb, expected)
    assert src.rgb.flags["C_CONTIGUOUS"]


def test_exif_orientation_6_rotates_a_phone_jpeg(coffee_rgb, photo_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned 90 degrees clockwise
    src = load_bytes(photo_bytes(coffee_rgb, "JPEG", exif=exif.tobytes()))
    assert src.rgb.shape == (600, 400, 3)
    upright = np.rot90(coffee_rgb, -1)  # the original's top-left corner ends up top-right
    assert np.abs(src.rgb.astype(int) - upright).mean() < 4


def test_orientation_also_turns_alpha(photo_bytes):
    rgba = np.dstack([gradient(20, 30), gradient(20, 30)[..., 0]])
    exif = Image.Exif()
    exif[0x0112] = 8
    src = load_bytes(photo_bytes(rgba, "PNG", exif=exif.tobytes()))
    assert np.array_equal(src.alpha, np.rot90(rgba[..., 3]))
    assert np.array_equal(src.rgb, np.rot90(rgba[..., :3]))


@pytest.mark.parametrize(("fmt", "opts"), [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_animation_keeps_only_the_first_frame(fmt, opts, photo_bytes):
    colours = [(220, 40, 40), (40, 220, 40), (40, 40, 220)]
    frames = [Image.new("RGB", (32, 24), c) for c in colours]
    raw = photo_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **opts)
    assert getattr(Image.open(io.BytesIO(raw)), "n_frames", 1) == 3  # really animated
    src = load_bytes(raw, f"anim.{fmt.lower()}")
    assert src.format == fmt and src.rgb.shape == (24, 32, 3)
    assert np.abs(src.rgb.astype(int) - colours[0]).max() <= 2


def test_multi_picture_jpeg_gives_the_main_image(coffee_rgb, photo_bytes):
    main = Image.fromarray(coffee_rgb)
    raw = photo_bytes(main, "MPO", save_all=True, append_images=[main.rotate(180)], quality=95)
    src = load_bytes(raw, "camera.jpg")
    assert src.format == "JPEG" and np.abs(src.rgb.astype(int) - coffee_rgb).mean() < 4


# --- imaging helpers --------------------------------------------------------------------------


def test_resize_long_side_keeps_aspect(coffee_rgb):
    small = resize_long_side(coffee_rgb, 300)
    assert small.shape == (200, 300, 3) and small.dtype == np.uint8
    assert np.array_equal(small, cv2.resize(coffee_rgb, (300, 200), interpolation=cv2.INTER_AREA))
    tall = resize_long_side(np.ascontiguousarray(coffee_rgb.swapaxes(0, 1)), 1200)
    assert tall.shape == (1200, 800, 3)
    assert resize_long_side(coffee_rgb, 600) is coffee_rgb
    assert resize_long_side(coffee_rgb[..., :1], 60).shape == (40, 60, 1)


def test_resize_rgba_does_not_bleed_hidden_colour():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 1] = 255  # bright green hiding under fully transparent pixels
    rgba[16:48, 16:48] = (200, 0, 0, 255)  # an opaque red product
    out = resize_long_side(rgba, 16)
    edge = out[..., 3] > 0
    assert out[edge][:, 1].max() == 0  # no green in any visible pixel
    assert np.array_equal(out[~edge][:, :3], np.zeros_like(out[~edge][:, :3]))


def test_apply_orientation_is_identity_for_1(coffee_rgb):
    assert apply_orientation(coffee_rgb, 1) is coffee_rgb


# --- HEIC/HEIF: photos straight from a phone ------------------------------------------------------

HEIC = Path(__file__).parent / "data"  # written by tests/data/make_heic.py from this reference


def _heic_reference() -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.coffee(), (150, 100), interpolation=cv2.INTER_AREA)


def test_heic_from_a_phone_decodes_like_any_photo():
    reference = _heic_reference().astype(int)
    photo = load_bytes((HEIC / "photo.heic").read_bytes(), "IMG_0001.HEIC")
    assert photo.format == "HEIF" and photo.name == "IMG_0001" and photo.rgb.shape == (100, 150, 3)
    assert np.abs(photo.rgb.astype(int) - reference).mean() < 4  # HEVC at quality 90
    # Its rotation (the HEIF irot box an iPhone writes) is applied once, like EXIF orientation 6.
    turned = load_bytes((HEIC / "rotated.heic").read_bytes(), "IMG_0002.HEIC")
    assert turned.rgb.shape == (150, 100, 3)
    assert np.abs(turned.rgb.astype(int) - np.rot90(reference, -1)).mean() < 4


def test_a_display_p3_heic_is_converted_to_srgb():
    """iPhones tag HEIC as Display P3 (nclx primaries 12): the same numbers mean more saturated
    colours, so the decoded sRGB values are further from grey than the file's own."""
    plain = load_bytes((HEIC / "photo.heic").read_bytes()).rgb.astype(float)
    p3 = load_bytes((HEIC / "display-p3.heic").read_bytes()).rgb.astype(float)
    spread = lambda a: np.abs(a - a.mean(axis=2, keepdims=True)).mean()  # noqa: E731
    assert spread(p3) > spread(plain) * 1.05


def test_nclx_conversion_matches_the_published_p3_to_srgb_matrix():
    """Display P3 -> sRGB: linear-light matrix from CSS Color Module Level 4's sample code
    (lin_P3 -> XYZ -> lin_sRGB), the sRGB curve on both sides (IEC 61966-2-1)."""
    from product_studio.imaging import nclx_to_srgb

    p3 = {"color_primaries": 12, "transfer_characteristics": 13, "color_primary_red_x": 0.680,
          "color_primary_red_y": 0.320, "color_primary_green_x": 0.265, "color_primary_green_y": 0.690,
          "color_primary_blue_x": 0.150, "color_primary_blue_y": 0.060, "color_primary_white_x": 0.3127,
          "color_primary_white_y": 0.3290}
    published = np.array([[1.2249401, -0.2249404, 0.0], [-0.0420569, 1.0420571, 0.0], [-0.0196376, -0.0786361, 1.0982735]])
    colours = np.array([[[200, 120, 60], [90, 160, 200], [128, 128, 128], [240, 230, 220]]], np.uint8)
    v = colours / 255
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4) @ published.T
    linear = np.clip(linear, 0, 1)
    expected = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055) * 255
    assert np.abs(nclx_to_srgb(colours, p3).astype(float) - expected).max() <= 1.0
    with pytest.raises(BadInput, match="HDR"):
        nclx_to_srgb(colours, p3 | {"transfer_characteristics": 16})
