"""Bad inputs from public bug reports (issue 11), each rebuilt here in code and run through the real
pipeline (ingest, the u2netp cut-out, layout, composite, export, check): the variants `process`
writes, and what `check` says of those very files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from product_studio.backends import cutout_rembg
from product_studio.config import Settings
from product_studio.pipeline.check import check_bytes
from product_studio.pipeline.ingest import load_bytes
from product_studio.pipeline.layout import place
from product_studio.pipeline.process import process_photo
from product_studio.presets import TARGETS


@pytest.fixture(scope="module")
def settings() -> Settings:
    s = Settings(cutout_model="u2netp")
    if not any(p.is_file() for p in cutout_rembg.model_candidates(s, s.cutout_model)):
        pytest.skip(f"{s.cutout_model} model not in {s.model_dir} (product-studio models fetch)")
    return s


def encoded(pixels: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kw)
    return buf.getvalue()


def soft_disc() -> bytes:
    """An already cut-out 800 px product with a soft (blurred) alpha edge, black under transparent
    pixels (layout used to measure it at alpha 8/255, check at 0.5: 84.9% < 85%)."""
    yy, xx = np.mgrid[0:800, 0:800]
    disc = Image.fromarray((((xx - 400) ** 2 + (yy - 400) ** 2 <= 250 ** 2) * 255).astype(np.uint8))
    alpha = np.asarray(disc.filter(ImageFilter.GaussianBlur(8)))
    rgba = np.zeros((800, 800, 4), np.uint8)
    rgba[..., :3] = (240, 200, 60)
    rgba[..., 3] = alpha
    rgba[alpha == 0, :3] = 0
    return encoded(rgba, "PNG")


def white_card() -> bytes:
    """A white card printed with thin red lines on a mid-grey table: the reported 2000 px case at
    half the size (the lines span 700 of the card's 750 px, as 1400 of 1500 there)."""
    card = np.full((1000, 1000, 3), 128, np.uint8)
    card[125:875, 125:875] = 255
    for y in range(150, 850, 50):
        card[y:y + 2, 150:850] = (255, 0, 0)
    return encoded(card, "PNG")


def tiny() -> bytes:
    """A 64x64 product photo: a red disc of radius 20 on light grey."""
    yy, xx = np.mgrid[0:64, 0:64]
    t = np.full((64, 64, 3), 240, np.uint8)
    t[(xx - 32) ** 2 + (yy - 32) ** 2 <= 400] = (200, 30, 30)
    return encoded(t, "JPEG", quality=95)


def run(data: bytes, name: str, targets: list[str], settings: Settings, out):
    source = load_bytes(data, name, settings)
    return process_photo(source, [TARGETS[t] for t in targets], out, settings=settings)


def test_soft_edged_product_passes_its_own_check_and_a_recheck_of_the_file(settings, tmp_path):
    result = run(soft_disc(), "soft_disc.png", ["amazon-main", "google-shopping", "lifestyle"], settings, tmp_path)
    assert [v.target for v in result.variants] == ["amazon-main", "google-shopping", "lifestyle"]
    for v in result.variants:
        target = TARGETS[v.target]
        assert v.check.ok, f"{v.target}: {v.check.summary()}"
        assert not any("pixels alone" in w for w in v.check.warnings), v.check.warnings
        recheck = check_bytes(v.path.read_bytes(), target, v.path.name)
        assert recheck.ok, f"{v.target}: check on the file: {recheck.summary()}"
        if target.min_fill:
            # Layout scaled the half-opaque product to `fill`; check measured the same pixels.
            assert v.check.fill == pytest.approx(target.fill, abs=3 / target.width)
            assert recheck.fill >= target.min_fill


def test_white_card_on_white_gets_the_same_verdict_from_check_or_an_explicit_cannot_judge(settings, tmp_path):
    target = TARGETS["amazon-main"]
    (v,) = run(white_card(), "white_card.png", [target.name], settings, tmp_path).variants
    assert v.check.ok, v.check.summary()
    recheck = check_bytes(v.path.read_bytes(), target, v.path.name)
    assert recheck.ok == v.check.ok, f"process: {v.check.summary()}; check: {recheck.summary()}"
    if "fill" not in {r.name for r in recheck.rules}:
        # pixels alone cannot tell the white card from the white background: check says so...
        assert recheck.fill is None
        assert any(w.startswith("fill not judged") and "white on white" in w for w in recheck.warnings), \
            recheck.warnings
        # ...and process, which knew where the card ends, said what a check of its file concludes
        assert any("pixels alone" in w and "fill not judged" in w for w in v.check.warnings), v.check.warnings


def test_tiny_photo_enlargement_is_named_and_forbidden_where_the_target_needs_detail(settings, tmp_path):
    result = run(tiny(), "tiny.jpg", ["amazon-main", "ebay"], settings, tmp_path)
    with Image.open(result.folder / "cutout.png") as im:
        cutout = np.asarray(im)
    by_target = {v.target: v for v in result.variants}
    for name, v in by_target.items():
        target = TARGETS[name]
        factor = place(cutout, target).scale
        assert factor > 20
        warning = v.check.warnings_line()
        assert warning is not None and f"enlarged {factor:.1f}x" in warning, warning
        assert f"sharp {max(target.width, target.height)} px image" in warning
    amazon = by_target["amazon-main"].check
    assert [r.name for r in amazon.failures] == ["source resolution"], amazon.summary()
    assert "needs >= 500" in amazon.summary()
    assert by_target["ebay"].check.summary() == "pass"  # a warning, not a failure, where no rule forbids it
    # A plain file cannot tell how it was made: check on it says nothing about enlargement, and
    # agrees on everything else (its 40x-wide soft edge included).
    for name, v in by_target.items():
        recheck = check_bytes(v.path.read_bytes(), TARGETS[name], v.path.name)
        assert recheck.ok, f"{name}: check on the file: {recheck.summary()}"
        assert "source resolution" not in {r.name for r in recheck.rules}
        assert not any("enlarged" in w for w in recheck.warnings)
