"""Studio scenes: products stand on their support, shadows lie on it and can be seen, flat lays
are seen from above. Three product shapes: tall (a bottle), wide (a bowl), top-down (a disc)."""

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from product_studio.backends import scene_studio
from product_studio.config import Settings
from product_studio.errors import BadInput
from product_studio.pipeline.composite import ShadowStyle, composite, shadow_map
from product_studio.pipeline.layout import place, product_pixels
from product_studio.pipeline.scene import frame_of, render_background, shadow_style, support_mask
from product_studio.presets import TARGETS
from product_studio.scenes import SCENES, get_scene

TARGET = TARGETS["lifestyle"].model_copy(update={"width": 400, "height": 500})
STUDIO = [name for name, p in SCENES.items() if p.backend == "studio"]
SUPPORTED = [name for name in STUDIO if SCENES[name].has_support]
FLAT_LAYS = [name for name in STUDIO if SCENES[name].view == "top"]


def _textured(alpha: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, alpha.shape + (3,), dtype=np.uint8), (0, 0), 2)
    rgb[alpha == 0] = 0
    return np.dstack([rgb, alpha])


def bottle(w=160, h=520) -> np.ndarray:
    """Tall: a bottle's silhouette (neck, shoulders, body, a base flattened by perspective)."""
    alpha = np.zeros((h + 40, w + 40), np.uint8)
    cv2.rectangle(alpha, (20 + w // 2 - 22, 20), (20 + w // 2 + 22, 20 + h // 3), 255, -1)
    cv2.rectangle(alpha, (20, 20 + h // 3), (20 + w, 20 + h - 12), 255, -1)
    cv2.ellipse(alpha, (20 + w // 2, 20 + h - 12), (w // 2, 12), 0, 0, 180, 255, -1, cv2.LINE_AA)
    return _textured(alpha, 1)


def bowl(w=600, h=240) -> np.ndarray:
    """Wide: a bowl, its bottom a curve that touches the floor only in the middle."""
    alpha = np.zeros((h + 40, w + 40), np.uint8)
    cv2.ellipse(alpha, (20 + w // 2, 20 + 30), (w // 2, 30), 0, 0, 360, 255, -1, cv2.LINE_AA)
    cv2.ellipse(alpha, (20 + w // 2, 20 + 30), (w // 2, h - 30), 0, 0, 180, 255, -1, cv2.LINE_AA)
    return _textured(alpha, 2)


def disc(d=420) -> np.ndarray:
    """Top-down: a round product photographed from above."""
    alpha = np.zeros((d + 40, d + 40), np.uint8)
    cv2.circle(alpha, (20 + d // 2, 20 + d // 2), d // 2, 255, -1, cv2.LINE_AA)
    return _textured(alpha, 3)


SHAPES = {"tall": bottle, "wide": bowl, "top-down": disc}


@pytest.fixture(scope="module")
def placements():
    return {name: place(make(), TARGET) for name, make in SHAPES.items()}


def contact_columns(placement) -> tuple[int, np.ndarray]:
    """The product's lowest row (canvas) and the canvas columns where it reaches that row."""
    product = product_pixels(placement.canvas_alpha)
    row = placement.base_y - 1
    return row, np.flatnonzero(product[row])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SUPPORTED)
def test_the_products_base_row_lies_on_the_support(name, shape, placements):
    placement = placements[shape]
    mask = support_mask(SCENES[name], frame_of(placement))
    row, cols = contact_columns(placement)
    assert cols.size > 0
    assert mask[row, cols].all() and mask[min(row + 1, TARGET.height - 1), cols].all(), \
        f"{name}: the base row {row} is not on the support"


def test_every_scene_but_the_floating_ones_has_a_support():
    assert set(STUDIO) - set(SUPPORTED) == {"gradient"}
    assert support_mask(SCENES["gradient"], scene_studio.Frame(400, 500, 400, 100, 100, 300)) is None


def _column(img: np.ndarray, col: int) -> np.ndarray:
    return img[:, col - 3:col + 4].astype(float).mean(axis=1).mean(axis=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_on_the_podium_the_product_stands_mid_way_across_its_top(shape, placements):
    """Read from the rendered pixels: in the column under the product's middle, the podium's top
    is a band of even colour between the sweep behind and the podium's darker side in front; the
    product's base row lies within it, at its front-to-back centre (the front half a little
    taller: it is nearer)."""
    placement = placements[shape]
    preset = SCENES["podium"]
    frame = frame_of(placement)
    background = render_background(TARGET, preset, placement, 0)
    row, cols = contact_columns(placement)
    col = int(np.median(cols))
    mask = support_mask(preset, frame)
    top_rows = np.flatnonzero(mask[:, col])
    back, front = top_rows[0], top_rows[-1]
    assert back < row < front
    middle = (back + front) / 2
    assert abs(row - middle) <= 0.15 * (front - back) + 1, (back, row, front)
    # The pixels agree with the mask: the top is even, the sweep above it and the side below differ.
    line = _column(background, col)
    top = line[back + 2:front - 1]
    assert top.std() < 3
    assert abs(line[max(0, back - 6)] - top.mean()) > 2, "no edge between the podium's back rim and the sweep"
    assert top.mean() - line[min(TARGET.height - 1, front + 6)] > 4, "the podium's side is not darker than its top"


@pytest.mark.parametrize("name", ["wood", "marble", "concrete", "linen", "studio", "window"])
def test_the_table_meets_the_wall_behind_the_product(name, placements):
    placement = placements["wide"]
    frame = frame_of(placement)
    x0, y0, x1, y1 = placement.box
    assert y0 < frame.horizon < placement.base_y - 0.05 * TARGET.height
    if SCENES[name].surface in scene_studio.MATERIALS:
        img = render_background(TARGET, SCENES[name], placement, 0).astype(float)
        above = img[frame.horizon - 8:frame.horizon - 2].mean(axis=(0, 1))
        below = img[frame.horizon + 2:frame.horizon + 8].mean(axis=(0, 1))
        assert np.abs(above - below).max() > 3, f"{name}: no visible edge where the table meets the wall"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SUPPORTED)
def test_the_contact_shadow_lies_on_the_support(name, shape, placements):
    placement = placements[shape]
    preset = SCENES[name]
    style = shadow_style(TARGET, preset)
    contact_only = ShadowStyle(**{**style.__dict__, "cast": 0.0, "reflection": 0.0})
    shade = shadow_map(placement, contact_only)
    outside = placement.canvas_alpha == 0
    dark = (shade > 0.15) & outside
    assert dark.sum() > 20, f"{name}: no contact shadow"
    mask = cv2.dilate(support_mask(preset, frame_of(placement)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert mask[dark].mean() > 0.99, f"{name}: the contact shadow falls off its support"


@pytest.mark.parametrize("shape", ["tall", "wide"])
def test_on_the_podium_the_cast_shadow_ends_at_its_top(shape, placements):
    placement = placements[shape]
    preset = SCENES["podium"]
    shade = shadow_map(placement, shadow_style(TARGET, preset))
    mask = support_mask(preset, frame_of(placement))
    assert shade[~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)].max() < 0.02


def _darkening(placement, style) -> np.ndarray:
    grey = np.full((TARGET.height, TARGET.width, 3), 200, np.uint8)
    return 1 - composite(grey, placement, style)[..., 0].astype(float) / 200


@pytest.mark.parametrize("name", [n for n in SUPPORTED if SCENES[n].view == "front"])
def test_shadows_can_be_seen_a_dark_tight_contact_and_a_longer_softer_cast(name, placements):
    placement = placements["tall"]
    style = shadow_style(TARGET, SCENES[name])
    row, cols = contact_columns(placement)
    mid = cols[len(cols) // 4: 3 * len(cols) // 4]
    contact = _darkening(placement, ShadowStyle(**{**style.__dict__, "cast": 0.0, "reflection": 0.0}))
    just_below = contact[row + 1:row + 3, mid].mean()
    assert just_below > 0.45, f"{name}: contact shadow only {just_below:.2f} dark under the base"
    assert contact[row + 12:, :].max() < 0.6 * just_below, f"{name}: the contact shadow is not tight"
    cast = _darkening(placement, ShadowStyle(**{**style.__dict__, "contact": 0.0, "reflection": 0.0}))
    cast[placement.canvas_alpha > 0] = 0
    assert cast.max() > 0.12, f"{name}: no visible cast shadow"
    x0, _, x1, _ = placement.box
    away = cast[:, x1 + 2:] if style.light_azimuth < 0 else cast[:, :x0 - 2]
    assert away.max() > 0.08, f"{name}: the cast shadow does not fall away from the light"
    # Softer: away from the product, its steepest edge is gentler than the contact shadow's.
    gy_c, gx_c = np.gradient(contact)
    contact_edge = np.hypot(gx_c, gy_c)[placement.canvas_alpha == 0].max()
    gy, gx = np.gradient(away)
    assert np.hypot(gx, gy)[:, 8:].max() < 0.8 * contact_edge


def test_shadow_strength_and_softness_per_preset_overridable_in_the_scenes_file(tmp_path, placements):
    path = tmp_path / "scenes.toml"
    path.write_text('[[scene]]\nname = "wood"\ncontact_shadow = 0.2\nshadow_softness = 0.9\n'
                    '[[scene]]\nname = "oak-hard"\nextends = "wood"\ncast_shadow = 0.6\nshadow_softness = 0.1\n')
    settings = Settings(scenes_file=path)
    light, hard = get_scene("wood", settings), get_scene("oak-hard", settings)
    assert (light.surface, light.palette, light.contact_shadow, light.shadow_softness) == \
        ("wood", SCENES["wood"].palette, 0.2, 0.9)
    assert (hard.surface, hard.contact_shadow, hard.cast_shadow) == ("wood", 0.2, 0.6)  # from the wood above
    placement = placements["tall"]
    row, cols = contact_columns(placement)
    built_in = _darkening(placement, shadow_style(TARGET, SCENES["wood"]))[row + 1, cols].mean()
    lighter = _darkening(placement, shadow_style(TARGET, light))[row + 1, cols].mean()
    assert lighter < 0.6 * built_in
    path.write_text('[[scene]]\nname = "x"\nextends = "nope"\n')
    with pytest.raises(BadInput, match="extends: no scene 'nope'"):
        get_scene("x", Settings(scenes_file=path))
    path.write_text('[[scene]]\nextends = "wood"\ncontact_shadow = 0.1\n')
    with pytest.raises(BadInput, match="scene #1: name"):
        get_scene("wood", Settings(scenes_file=path))


@pytest.mark.parametrize("name", FLAT_LAYS)
def test_flat_lays_fill_the_frame_seen_from_above_with_no_horizon(name, placements):
    preset = SCENES[name]
    placement = placements["top-down"]
    frame = frame_of(placement)
    assert support_mask(preset, frame).all()
    img = render_background(TARGET, preset, placement, 0).astype(float).mean(axis=2)
    rows = cv2.GaussianBlur(img.mean(axis=1)[:, None], (0, 0), 2)[:, 0]
    assert np.abs(np.diff(rows)).max() < 1.5, f"{name}: a horizontal edge (a horizon?) across the frame"


@pytest.mark.parametrize("name", FLAT_LAYS)
def test_a_flat_lays_drop_shadow_is_offset_away_from_the_light(name, placements):
    preset = SCENES[name]
    placement = placements["top-down"]
    style = shadow_style(TARGET, preset)
    assert style.view == "top" and style.reflection == 0
    shade = shadow_map(placement, style)
    shade[placement.canvas_alpha > 0.5] = 0
    ys, xs = np.nonzero(shade > 0.05)
    weights = shade[ys, xs]
    py, px = np.nonzero(placement.canvas_alpha > 0.5)
    offset = np.array([np.average(xs, weights=weights) - px.mean(), np.average(ys, weights=weights) - py.mean()])
    az = np.radians(preset.light_azimuth)
    away = np.array([-np.sin(az), np.cos(az)])
    assert offset @ away > 3, f"{name}: shadow offset {offset} is not away from the light {away}"
    assert shade.max() > 0.3


def test_flat_lays_are_offered_by_name_in_every_door():
    assert len(FLAT_LAYS) >= 5
    assert {SCENES[n].surface for n in FLAT_LAYS} >= {"marble", "wood", "linen", "paper", "sweep"}
    from product_studio.cli import app

    listing = CliRunner().invoke(app, ["scenes"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    for name in FLAT_LAYS:
        assert name in listing.output
        assert get_scene(name) is SCENES[name]  # what the API, upload page and store settings look up
