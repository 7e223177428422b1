"""Studio scenes: deterministic, varied by seed, consistent with the product and its light."""

import cv2
import numpy as np
import pytest

from product_studio.config import Settings
from product_studio.errors import BadInput, UnknownName
from product_studio.pipeline.composite import composite
from product_studio.pipeline.layout import place
from product_studio.pipeline.scene import frame_of, render_background, shadow_style
from product_studio.presets import TARGETS
from product_studio.scenes import SCENES, all_scenes, get_scene
from tests.test_layout_composite import textured_cutout
from tests.test_scene_geometry import SHAPES

STUDIO = [name for name, p in SCENES.items() if p.backend == "studio"]
TARGET = TARGETS["lifestyle"].model_copy(update={"width": 400, "height": 500})


@pytest.fixture(scope="module")
def placement():
    return place(textured_cutout(), TARGET)


def test_at_least_eight_studio_presets():
    assert len(STUDIO) >= 8
    assert {p.surface for p in SCENES.values() if p.backend == "studio"} >= {
        "sweep", "gradient", "marble", "wood", "concrete", "linen", "podium", "window"}


@pytest.mark.parametrize("name", STUDIO)
def test_deterministic_per_seed_and_varied_across_seeds(name, placement):
    preset = SCENES[name]
    a = render_background(TARGET, preset, placement, 7)
    b = render_background(TARGET, preset, placement, 7)
    c = render_background(TARGET, preset, placement, 8)
    assert a.shape == (500, 400, 3) and a.dtype == np.uint8
    assert (a == b).all()
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0, "seeds should give visibly different variations"


@pytest.mark.parametrize("shape", ["textured", *SHAPES])
@pytest.mark.parametrize("name", STUDIO)
def test_product_pixels_are_identical_across_all_scenes(name, shape, placement):
    """Whatever the scene (flat lays, podium, shadows, reflections included) and whatever the
    product's shape, the product's interior is the same photographed pixels."""
    if shape != "textured":
        placement = place(SHAPES[shape](), TARGET)
    reference = composite(render_background(TARGET, SCENES["studio"], placement, 0), placement)
    preset = SCENES[name]
    out = composite(render_background(TARGET, preset, placement, 3), placement, shadow_style(TARGET, preset))
    x0, y0, x1, y1 = placement.box
    interior = np.zeros(out.shape[:2], bool)
    interior[y0:y1, x0:x1] = placement.alpha >= 1.0
    assert interior.sum() > 1000
    assert (out[interior] == reference[interior]).all()
    expected = np.clip(placement.premul[placement.alpha >= 1.0] + 0.5, 0, 255).astype(np.uint8)
    assert (out[interior] == expected).all()  # the placed product's own pixels, untouched


def test_the_floor_meets_the_wall_behind_the_product(placement):
    frame = frame_of(placement)
    x0, y0, x1, y1 = placement.box
    assert y0 < frame.horizon < placement.base_y  # the product stands on the floor, not in front of it
    wood = render_background(TARGET, SCENES["wood"], placement, 0).astype(np.float32)
    detail = np.abs(wood - cv2.GaussianBlur(wood, (0, 0), 3)).mean(axis=2)  # texture, not light
    wall, floor = detail[: frame.horizon - 5], detail[frame.horizon + 5:]
    assert floor.mean() > 2 * wall.mean()  # wood grain below the horizon, a plain wall above


def test_window_light_falls_where_the_shadows_fall(placement):
    """Light through a window on the left lands on the wall to the right, like the cast shadow."""
    preset = SCENES["window"]
    img = render_background(TARGET, preset, placement, 0).astype(float)
    wall = img[: frame_of(placement).horizon - 10].mean(axis=2)
    bright = np.argwhere(wall >= np.percentile(wall, 95))[:, 1].mean()
    assert preset.light_azimuth < 0 and bright > wall.shape[1] / 2


@pytest.mark.parametrize("name", ["studio", "marble", "wood", "concrete"])
def test_key_light_comes_from_the_presets_side(name, placement):
    preset = SCENES[name]
    assert preset.light_azimuth < 0  # these presets are lit from the left
    img = render_background(TARGET, preset, placement, 0).astype(float)
    wall = img[: frame_of(placement).horizon - 10]
    half = wall.shape[1] // 2
    assert wall[:, :half].mean() > wall[:, half:].mean()
    style = shadow_style(TARGET, preset)
    assert style.light_azimuth == preset.light_azimuth  # and shadows are thrown away from it


def test_reflection_on_glossy_surfaces(placement):
    marble = SCENES["marble"]
    assert marble.reflection and shadow_style(TARGET, marble).reflection > 0
    bg = np.full((TARGET.height, TARGET.width, 3), 230, np.uint8)
    style = shadow_style(TARGET, marble)
    with_reflection = composite(bg, placement, style).astype(float)
    without = composite(bg, placement, style.__class__(**{**style.__dict__, "reflection": 0})).astype(float)
    base = placement.base_y
    x0, _, x1, _ = placement.box
    below = (slice(base + 1, base + 15), slice(x0, x1))
    assert np.abs(with_reflection[below] - without[below]).mean() > 2


def test_user_presets_from_a_toml_file(tmp_path):
    path = tmp_path / "scenes.toml"
    path.write_text('[[scene]]\nname = "mint"\ntitle = "Mint sweep"\npalette = ["#dff3ea", "#cfe9dd"]\n'
                    'surface = "sweep"\nlight_azimuth = 30\n')
    settings = Settings(scenes_file=path)
    assert get_scene("mint", settings).palette == ("#dff3ea", "#cfe9dd")
    assert "studio" in all_scenes(settings)
    path.write_text('[[scene]]\nname = "bad"\npalette = ["green"]\n')
    with pytest.raises(BadInput, match="scene #1: palette"):
        all_scenes(Settings(scenes_file=path))
    with pytest.raises(UnknownName, match="studio"):
        get_scene("nope")
