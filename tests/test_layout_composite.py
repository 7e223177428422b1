"""Layout and composite: the product's own pixels, on the right canvas, on the right background."""

import cv2
import numpy as np
import pytest

from product_studio.errors import BadInput
from product_studio.pipeline.composite import ShadowStyle, composite
from product_studio.pipeline.layout import alpha_box, place
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
