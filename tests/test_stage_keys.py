"""Every input that changes a stage's output changes its key (pipeline/plan.py), so nothing stale is
served: each input is changed in turn and a new key must come out; what does not change the output
(an unrelated setting, a model list's spelling) keeps the key."""

from __future__ import annotations

import pytest

from product_studio.config import Settings
from product_studio.pipeline.plan import (
    CUTOUT,
    control_key,
    cutout_key,
    generator_inputs,
    variant_key,
)
from product_studio.presets import get_target
from product_studio.scenes import get_scene

SHA = "ab" * 32
BASE = Settings(cutout_model="u2netp+u2net")


def _changed(value):
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if value is None:
        return "something"
    if isinstance(value, tuple):
        return (*value, value[-1] if value else "x")
    return f"{value}-other"


@pytest.mark.parametrize("field", ["cutout_model", "cutout_refine", "cutout_flip_tta", "cutout_decontaminate"])
def test_every_cutout_setting_is_in_the_cutout_key(field):
    value = "u2netp" if field == "cutout_model" else _changed(getattr(BASE, field))
    assert cutout_key(SHA, BASE.model_copy(update={field: value})) != cutout_key(SHA, BASE)


def test_the_photo_and_its_chosen_mask_are_in_the_cutout_key():
    assert cutout_key("cd" * 32, BASE) != cutout_key(SHA, BASE)
    masked = cutout_key(SHA, BASE, "masks/aa/one.png")
    assert masked != cutout_key(SHA, BASE) and masked != cutout_key(SHA, BASE, "masks/bb/two.png")
    # With a mask no model runs: the model settings no longer matter.
    assert cutout_key(SHA, BASE.model_copy(update={"cutout_model": "u2netp"}), "masks/aa/one.png") == masked


def test_what_does_not_change_the_cutout_keeps_its_key():
    assert cutout_key(SHA, BASE.model_copy(update={"cutout_model": "u2netp + u2net"})) == cutout_key(SHA, BASE)
    assert cutout_key(SHA, BASE.model_copy(update={"max_upload_files": 7})) == cutout_key(SHA, BASE)


def test_a_stage_key_takes_exactly_its_declared_inputs():
    with pytest.raises(ValueError, match="takes source_sha256, params"):
        CUTOUT.key("png", source_sha256=SHA)
    with pytest.raises(ValueError):
        CUTOUT.key("png", source_sha256=SHA, params={}, extra="x")


def _key(target, preset, seed=0, settings=BASE, cut="cutouts/aa/x.png", title="Mug", category="Kitchen"):
    return variant_key(cut, target, preset, seed, generator_inputs(target, preset, title, category, settings))


def test_every_variant_input_is_in_its_key():
    target, preset = get_target("lifestyle"), get_scene("ai-studio")
    base = _key(target, preset)
    assert _key(target, preset, cut="cutouts/bb/y.png") != base
    assert _key(target, preset, seed=1) != base
    assert _key(target, preset, title="Teapot") != base  # the prompt names the product
    assert _key(target, preset, category="Garden") != base
    for field, value in target.model_dump().items():
        other = {"format": "png"}.get(field, _changed(value))  # the format must stay a known one
        assert _key(target.model_copy(update={field: other}), preset) != base, field
    for field, value in preset.model_dump().items():
        other = {"backend": "studio"}.get(field, _changed(value))  # the backend must stay a known one
        assert _key(target, preset.model_copy(update={field: other})) != base, field
    # Every diffusion setting that is part of the settings (a retired one, excluded from them, is not).
    generative = [f for f, info in Settings.model_fields.items()
                  if f.startswith("diffusion_") and not info.exclude] + ["edge_detector", "device"]
    for field in generative:
        changed = BASE.model_copy(update={field: _changed(getattr(BASE, field))})
        assert _key(target, preset, settings=changed) != base, field


def test_a_painted_variant_ignores_what_only_generators_read():
    target = get_target("shopify-square")
    preset = get_scene(target.default_scene)
    base = _key(target, preset)
    assert _key(target, preset, title="Teapot") == base
    assert _key(target, preset, settings=BASE.model_copy(update={"diffusion_steps": 4})) == base


def test_the_control_key_follows_the_cutout_the_canvas_and_the_detector():
    target = get_target("lifestyle")
    base = control_key("cutouts/aa/x.png", target, "canny")
    assert control_key("cutouts/bb/y.png", target, "canny") != base
    assert control_key("cutouts/aa/x.png", target, "lineart") != base
    assert control_key("cutouts/aa/x.png", target.model_copy(update={"width": 999}), "canny") != base
