"""Layout and composite: the product's own pixels, on the right canvas, on the right background."""

import cv2
import numpy as np
import pytest

from product_studio.errors import BadInput
from product_studio.pipeline.composite import ShadowStyle, composite
from product_studio.pipeline.layout import FLOOR_MARGIN, alpha_box, place, product_box, product_pixels
from product_studio.pipeline.scene import render_background, shadow_style
from product_studio.presets import TARGETS
from product_studio.scenes import get_scene


def textured_cutout(w=600, h=400, seed=1):
    """A product with real texture inside a soft-edged ellipse, off-centre on a transparent frame."""
    rng = np.random.default_rng(seed)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2 + 40, h // 2), (w // 3, h // 3), 0, 0, 360, 255, -1, cv2.LINE_AA)
    rgb[alpha == 0] = 0
    return np.dstack([rgb, alpha])


@pytest.mark.parametrize("name", ["amazon-main", "ebay", "lifestyle"])
def test_interior_pixels_are_the_source_resampled_only_by_scaling(name):
    cutout = textured_cutout()
    target = TARGETS[name]
    placement = place(cutout, target)
    preset = get_scene("studio")
    bg = render_background(target, preset, placement, seed=3)
    out = composite(bg, placement, shadow_style(target, preset))

    x0, y0, x1, y1 = alpha_box(cutout[..., 3])
    crop = cutout[y0:y1, x0:x1, :3].astype(np.float32)
    h, w = placement.alpha.shape
    interp = cv2.INTER_AREA if placement.scale < 1 else cv2.INTER_CUBIC
    expected = np.clip(cv2.resize(crop, (w, h), interpolation=interp) + 0.5, 0, 255).astype(np.uint8)
    # Interior: opaque and further inside than the resampling kernel reaches (2 source px for
    # cubic), so no transparent neighbour takes part. That ring is the edge band.
    r = int(np.ceil(2 * max(placement.scale, 1))) + 1
    solid = cv2.erode((placement.alpha >= 1.0).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    bx0, by0, bx1, by1 = placement.box
    got = out[by0:by1, bx0:bx1][solid].astype(int)
    diff = np.abs(got - expected[solid].astype(int))
    assert solid.sum() > 10_000
    assert diff.max() <= 1, f"interior differs from the resampled source by up to {diff.max()}"


def test_white_target_background_is_exactly_255_and_fill_is_met():
    cutout = textured_cutout()
    for name in ("amazon-main", "walmart-main", "google-shopping"):
        target = TARGETS[name]
        placement = place(cutout, target)
        out = composite(render_background(target, get_scene("studio"), placement, 0), placement,
                        shadow_style(target, get_scene("studio")))
        assert out.shape == (target.height, target.width, 3)
        outside = placement.canvas_alpha == 0
        assert (out[outside] == 255).all(), name
        x0, y0, x1, y1 = placement.box
        span = max((x1 - x0) / target.width, (y1 - y0) / target.height)
        assert span >= target.min_fill, name


def test_shadows_only_where_the_target_allows_them():
    assert shadow_style(TARGETS["amazon-main"], get_scene("studio")) is None
    style = shadow_style(TARGETS["lifestyle"], get_scene("studio"))
    assert style is not None
    placement = place(textured_cutout(), TARGETS["lifestyle"])
    bg = np.full((placement.height, placement.width, 3), 200, np.uint8)
    lit = composite(bg, placement, None).astype(int)
    shaded = composite(bg, placement, style).astype(int)
    base = placement.base_y
    x0, _, x1, _ = placement.box
    under = (slice(base - 5, base + 5), slice(x0, x1))
    floor_mask = placement.canvas_alpha[under] == 0
    assert (shaded[under][floor_mask] < lit[under][floor_mask] - 10).mean() > 0.5, "no contact shadow at the base"
    far = (slice(0, 20), slice(0, 20))
    assert (shaded[far] == lit[far]).all(), "shadow leaked to the far corner"


def test_cast_shadow_follows_the_light():
    placement = place(textured_cutout(), TARGETS["lifestyle"])
    bg = np.full((placement.height, placement.width, 3), 200, np.uint8)
    cx = (placement.box[0] + placement.box[2]) / 2

    def shadow_centroid_x(azimuth):
        shaded = composite(bg, placement, ShadowStyle(contact=0, cast=0.5, light_azimuth=azimuth))
        dark = (shaded[..., 0] < 195) & (placement.canvas_alpha == 0)
        return np.argwhere(dark)[:, 1].mean()

    assert shadow_centroid_x(-45) > cx  # light from the left throws the shadow right
    assert shadow_centroid_x(45) < cx


def test_empty_cutout_is_a_clear_error():
    empty = np.zeros((50, 50, 4), np.uint8)
    with pytest.raises(BadInput, match="no product found"):
        place(empty, TARGETS["amazon-main"], "blank.jpg")


def test_extreme_aspect_products_still_fit_the_canvas():
    cutout = np.zeros((30, 20000, 4), np.uint8)
    cutout[5:25, 100:19900] = (40, 80, 120, 255)
    for target in TARGETS.values():
        p = place(cutout, target)
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= target.width and 0 <= y0 < y1 <= target.height


def soft_cutout(side=400, blur=4.0):
    """A flat-coloured disc whose alpha edge is blurred (fur, hair, motion blur look like this)."""
    alpha = np.zeros((side, side), np.uint8)
    cv2.circle(alpha, (side // 2, side // 2), round(side * 0.3125), 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    rgb = np.zeros((side, side, 3), np.uint8)
    rgb[alpha > 0] = (240, 200, 60)
    return np.dstack([rgb, alpha])


def test_layout_scales_the_half_opaque_product_to_fill_and_keeps_its_soft_rim():
    cutout = soft_cutout()
    for target in TARGETS.values():
        p = place(cutout, target)
        x0, y0, x1, y1 = product_box(p.canvas_alpha)
        span = max((x1 - x0) / target.width, (y1 - y0) / target.height)
        assert span == pytest.approx(target.fill, abs=3 / min(target.width, target.height)), target.name
        # the rim below half opacity is drawn around that box, not dropped
        rim = (p.canvas_alpha > 0) & ~product_pixels(p.canvas_alpha)
        assert rim[:, :x0].any() and rim[:, x1:].any() and rim[:y0].any() and rim[y1:].any(), target.name
        if target.align == "bottom":
            assert p.base_y == y1 and abs(y1 - (target.height - round(target.height * FLOOR_MARGIN))) <= 1, target.name
        else:
            assert abs((x0 + x1) - target.width) <= 2 and abs((y0 + y1) - target.height) <= 2, target.name


def test_a_soft_rim_wider_than_the_margin_is_cut_at_the_canvas_edge():
    target = TARGETS["amazon-main"].model_copy(update={"fill": 1.0})
    p = place(soft_cutout(blur=12), target)
    x0, y0, x1, y1 = p.box
    assert (x0, y0, x1, y1) == (0, 0, target.width, target.height) and p.alpha.shape == (target.height, target.width)
    bx0, by0, bx1, by1 = product_box(p.canvas_alpha)
    assert max(bx1 - bx0, by1 - by0) >= target.width - 2


def test_a_cutout_with_nothing_half_opaque_has_no_product():
    faint = soft_cutout()
    faint[..., 3] = faint[..., 3] // 3  # at most 85/255
    with pytest.raises(BadInput, match="no product found"):
        place(faint, TARGETS["amazon-main"], "ghost.png")


def test_a_faint_haze_around_a_tiny_product_is_not_enlarged_whole():
    """A cut-out with a faint haze over the whole frame and a 20 px product: only the part of the
    crop that lands on the canvas is resampled (enlarged whole it would need ~100 GB)."""
    rgba = np.zeros((2000, 2000, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 20  # haze: above matting noise, far below half opaque
    rgba[990:1010, 990:1010, 3] = 255
    placement = place(rgba, TARGETS["amazon-main"])
    assert placement.alpha.shape[0] <= 2000 and placement.alpha.shape[1] <= 2000
    x0, y0, x1, y1 = placement.box
    assert 0 <= x0 < x1 <= 2000 and 0 <= y0 < y1 <= 2000
    product = placement.canvas_alpha >= 0.5
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    assert abs((rows[-1] - rows[0] + 1) - 1800) <= 18 and abs((cols[-1] - cols[0] + 1) - 1800) <= 18  # 1%
