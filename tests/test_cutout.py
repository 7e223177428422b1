"""The cut-out stage with the real u2netp model on small images (each inference ~0.3 s)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from product_studio.backends import cutout_rembg
from product_studio.backends.cutout_rembg import RembgBackend, backends_for
from product_studio.backends.registry import cutout_members
from product_studio.config import Settings
from product_studio.errors import ModelUnavailable
from product_studio.pipeline.cutout import (
    clean_mask,
    cut_out,
    cut_out_many,
    decontaminate,
    refine_mask,
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    s = Settings()
    for model in cutout_members(s.cutout_model):
        if not any(p.is_file() for p in cutout_rembg.model_candidates(s, model.name)):
            pytest.skip(f"{model.name} model not in {s.model_dir} (product-studio models fetch)")
    return s


def disc_scene(h: int = 384, w: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A shaded red disc (the product) on a striped, noisy background; and the disc's true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    noise = lambda: rng.normal(0, 8, (h, w))  # noqa: E731
    bg = np.dstack([150 + 40 * np.sin(xx / 9) + noise(), 140 + 30 * np.cos(yy / 13) + noise(),
                    120 + 20 * np.sin((xx + yy) / 17) + noise()])
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.3 * h) ** 2
    shade = 1 - 0.4 * ((xx - w / 2 + 40) ** 2 + (yy - h / 2 + 40) ** 2) / (0.3 * h) ** 2
    fg = np.dstack([200 * shade + 30, 30 * shade + 10, 40 * shade + 10])
    return np.clip(np.where(disc[..., None], fg, bg), 0, 255).astype(np.uint8), disc


def test_synthetic_product_is_separated_and_transparent_pixels_are_black(settings):
    rgb, disc = disc_scene()
    rgba = cut_out(rgb, settings=settings)
    assert rgba.shape == (*rgb.shape[:2], 4) and rgba.dtype == np.uint8
    mask = rgba[..., 3] >= 128
    assert (mask & disc).sum() / (mask | disc).sum() > 0.97  # measured 1.000 on seeds 0-2
    assert not rgba[rgba[..., 3] == 0, :3].any()
    assert np.array_equal(rgba[disc & (rgba[..., 3] == 255), :3], rgb[disc & (rgba[..., 3] == 255)])


def test_real_photo_keeps_the_cup_and_drops_the_table(settings, coffee_rgb):
    rgba = cut_out(coffee_rgb, settings=settings)
    alpha = rgba[..., 3]
    assert alpha[150:250, 250:350].min() == 255  # the cup's body
    assert alpha[:40, :40].max() == 0 and alpha[-40:, -40:].max() == 0  # table corners
    assert not rgba[alpha == 0, :3].any()


def test_given_alpha_is_used_as_is_without_the_model(tmp_path, monkeypatch):
    # No model exists under tmp_path and offline is on: running the model would raise.
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    cutout_rembg.clear_sessions()
    rgb, disc = disc_scene(64, 96)
    alpha = np.where(disc, 255, 0).astype(np.uint8)
    alpha[0, 0] = 77
    rgba = cut_out(rgb, alpha, settings=Settings(model_dir=tmp_path, offline=True))
    assert np.array_equal(rgba[..., 3], alpha)
    assert np.array_equal(rgba[disc, :3], rgb[disc])
    assert not rgba[alpha == 0, :3].any()


def test_missing_model_offline_names_the_path_and_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    cutout_rembg.clear_sessions()
    with pytest.raises(ModelUnavailable) as err:
        cut_out(disc_scene(64, 96)[0], settings=Settings(model_dir=tmp_path, offline=True))
    message = str(err.value)
    assert str(tmp_path / "u2netp.onnx") in message and "\n" not in message
    assert "PRODUCT_STUDIO_CUTOUT_MODEL" in message and "PRODUCT_STUDIO_MODEL_DIR" in message
    cutout_rembg.clear_sessions()


def test_one_session_per_process_across_calls_and_threads(settings, monkeypatch):
    import rembg

    made = []
    real = rembg.new_session

    def counting(*args, **kwargs):
        made.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(rembg, "new_session", counting)
    cutout_rembg.clear_sessions()
    seeds = [3, 1, 2]
    many = list(cut_out_many(seeds, load=lambda seed: disc_scene(96, 128, seed)[0],
                             save=lambda seed, rgba: (seed, rgba), workers=2, settings=settings))
    single = cut_out(disc_scene(96, 128, 1)[0], settings=settings)
    assert len(made) == len(cutout_members(settings.cutout_model))  # one session per model, made once
    assert [seed for seed, _ in many] == seeds  # in order, though two threads ran them
    assert np.array_equal(many[1][1], single)  # the batch path is the single-image path


def test_fast_path_matches_rembgs_own_predict(settings, coffee_rgb):
    from PIL import Image

    backend = RembgBackend(settings)
    ours = backend.predict(coffee_rgb)
    theirs = np.asarray(backend.session.predict(Image.fromarray(coffee_rgb))[0], np.float32) / 255
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.abs(ours - theirs).mean() < 0.01
    assert ((ours >= 0.5) == (theirs >= 0.5)).mean() > 0.995


def test_refine_off_gives_the_models_own_mask(settings, coffee_rgb):
    small = np.ascontiguousarray(coffee_rgb[::2, ::2])  # under WORK_SIDE: the model sees it as is
    raw = cut_out(small, settings=settings.model_copy(update={"cutout_refine": False}))[..., 3]
    prob = np.mean([b.predict(small) for b in backends_for(settings)], axis=0)  # the models averaged
    assert np.abs(raw / 255 - prob).max() < 1 / 255 + 1e-6


def test_refine_mask_drops_stray_blobs_and_fills_pinholes_but_not_real_holes():
    h, w = 200, 300
    yy, xx = np.mgrid[:h, :w]
    body = (yy - 100) ** 2 + (xx - 120) ** 2 < 80**2
    pinhole = (yy - 80) ** 2 + (xx - 100) ** 2 < 3**2  # 29 px: a model dropout
    handle_hole = (yy - 110) ** 2 + (xx - 150) ** 2 < 20**2  # 1257 px: real background
    speck = (yy - 20) ** 2 + (xx - 280) ** 2 < 6**2  # detached, 2% of the body
    prob = np.where((body & ~pinhole & ~handle_hole) | speck, 0.95, 0.02).astype(np.float32)
    rgb = np.full((h, w, 3), 128, np.uint8)  # one colour: the colour model stays neutral
    mask = refine_mask(rgb, prob)
    assert mask[pinhole].all() and not mask[speck].any() and not mask[handle_hole].any()
    assert np.array_equal(mask, body & ~handle_hole)
    assert np.array_equal(clean_mask(mask), mask)  # idempotent


def test_colour_model_claims_the_products_unsure_part():
    # The model is sure of a red top and unsure (0.3) of the red bottom; the background is blue.
    h, w = 120, 160
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = (30, 60, 200)
    rgb[20:100, 40:120] = (200, 30, 40)
    prob = np.full((h, w), 0.02, np.float32)
    prob[20:60, 40:120] = 0.95
    prob[60:100, 40:120] = 0.3
    mask = refine_mask(rgb, prob)
    assert mask[20:100, 40:120].all() and mask.sum() == 80 * 80


def test_decontaminate_removes_the_old_backgrounds_colour_from_the_edge_band():
    # A grey product with a soft 20 px edge, photographed on green: edge pixels are grey + green.
    h, w = 160, 200
    xx = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w))
    alpha = np.clip((140 - xx) / 20, 0, 1)  # opaque left of x=120, transparent right of x=140
    fg, bg = np.float32([120, 120, 120]), np.float32([20, 220, 30])
    rgb = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).round().astype(np.uint8)
    alpha8 = (alpha * 255).round().astype(np.uint8)
    out = decontaminate(rgb, alpha8)
    band = (alpha8 > 0) & (alpha8 < 255)
    cast = lambda img: np.abs(img[band].astype(np.float32) - fg).mean()  # noqa: E731
    assert cast(rgb) > 40 and cast(out) < 5  # measured: 48 -> 0.1
    opaque = alpha8 == 255
    assert np.array_equal(out[opaque], rgb[opaque])  # the product's own pixels are untouched
