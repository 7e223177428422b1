"""The diffusers scene backend on tiny SD1.5 and SDXL ControlNet-inpaint pipelines (real diffusers, no mocks).

The tiny models are random, so their images are noise: these tests check geometry, seeds,
batching, loading and errors, not beauty.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from product_studio.backends import model_cache
from product_studio.backends import scene_diffusers as sd
from product_studio.config import Settings
from product_studio.errors import ModelUnavailable, UnknownName
from product_studio.pipeline.composite import composite
from product_studio.pipeline.layout import Placement
from product_studio.scenes import ScenePreset

W, H = 128, 160  # non-square; 160 is not a multiple of 64
PRESET = ScenePreset(name="marble", backend="diffusers", prompt="{product} on a marble table, soft light",
                     negative_prompt="text, watermark")


pytestmark = pytest.mark.filterwarnings(
    # diffusers' EulerDiscreteScheduler (the SDXL default) calls np.array on a tensor: numpy 2 + torch warn.
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """kind -> (model_dir, controlnet_dir) of tiny random models, built once for the module."""
    from tiny_diffusers import save_tiny_sd15, save_tiny_sdxl

    return {"sd15": save_tiny_sd15(tmp_path_factory.mktemp("sd15")),
            "sdxl": save_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))}


def settings_for(kind: str, model_dir: Path, controlnet_dir: Path) -> Settings:
    return Settings(diffusion_kind=kind, diffusion_model=str(model_dir), diffusion_controlnet=str(controlnet_dir),
                    diffusion_steps=2, diffusion_variants=1, offline=True, device="cpu", _env_file=None)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def settings(request, tiny_dirs) -> Settings:
    """Settings pointing at a tiny model on disk: loaded through load_pipeline like any model id."""
    return settings_for(request.param, *tiny_dirs[request.param])


def make_placement(width: int = W, height: int = H) -> Placement:
    """A red ellipse with a soft edge, in the middle of the canvas."""
    h, w = height // 2, width // 3
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2)
    alpha = np.clip((1 - r) * 6, 0, 1).astype(np.float32)
    premul = np.array([200, 40, 30], np.float32) * alpha[..., None]
    return Placement(width, height, (width - w) // 2, (height - h) // 2, premul, alpha, 1.0)


def make_control(p: Placement) -> np.ndarray:
    import cv2

    edges = cv2.Canny((p.canvas_alpha * 255).astype(np.uint8), 64, 192)
    return np.repeat(edges[..., None], 3, axis=2)


def run(settings: Settings, seed: int, variants: int = 1, p: Placement | None = None) -> list[sd.GeneratedScene]:
    p = p or make_placement()
    return sd.generate(p, make_control(p), PRESET, seed=seed, variants=variants, title="Red Mug", settings=settings)


def test_variants_shape_and_seeds(settings):
    out = run(settings, seed=11, variants=2)
    assert [g.seed for g in out] == [11, 12]
    for g in out:
        assert g.pixels.shape == (H, W, 3) and g.pixels.dtype == np.uint8
    assert not np.array_equal(out[0].pixels, out[1].pixels)


def test_same_seed_same_pixels_other_seed_other_pixels(settings):
    a, b, c = (run(settings, seed=s)[0].pixels for s in (21, 21, 22))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_variant_alone_reproduces_its_batch_image(settings):
    """Variant i of a batch can be regenerated alone with seed + i (the "regenerate one" button).

    Not bit-exact: a batch of 3 runs through CPU conv/matmul kernels that sum in another order
    than a batch of 1, so float32 results differ by ~1e-6 and a few pixels round to the next
    uint8 value. Seeds leaking between variants would differ by tens of levels everywhere.
    """
    batch = run(settings, seed=31, variants=3)
    for i in (1, 2):
        alone = run(settings, seed=31 + i)[0]
        assert alone.seed == batch[i].seed
        diff = np.abs(alone.pixels.astype(int) - batch[i].pixels.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05


def test_pipeline_loaded_once(settings):
    for seed in range(3):
        run(settings, seed=seed)
    assert model_cache.loads[sd.cache_key(settings)] == 1


@pytest.mark.parametrize("size", [(100, 90), (72, 200)])
def test_any_canvas_size(settings, size):
    p = make_placement(*size)
    (g,) = run(settings, seed=1, p=p)
    assert g.pixels.shape == (size[1], size[0], 3)


def test_large_canvas_is_generated_at_the_model_budget(settings, monkeypatch):
    monkeypatch.setitem(sd._MAX_PIXELS, settings.diffusion_kind, 64 * 64)
    (g,) = run(settings, seed=1)
    assert g.pixels.shape == (H, W, 3)


def test_composite_keeps_the_real_product(settings):
    """The caller's contract: generated pixels inside the product are replaced by the photo's."""
    p = make_placement()
    (g,) = run(settings, seed=5, p=p)
    out = composite(g.pixels, p)
    x0, y0, x1, y1 = p.box
    solid = p.alpha == 1
    assert np.array_equal(out[y0:y1, x0:x1][solid], np.clip(p.premul[solid] + 0.5, 0, 255).astype(np.uint8))
    # Under the product the scene holds generated background, not the grey the model was shown.
    under = p.canvas_alpha > 0
    assert np.abs(g.pixels[under].astype(int) - 128).mean() > 5


def test_scheduler_by_name(settings, monkeypatch):
    name = "DPMSolverMultistepScheduler"
    pipe = sd.load_pipeline(settings.model_copy(update={"diffusion_scheduler": name}))
    assert type(pipe.scheduler).__name__ == name
    with pytest.raises(UnknownName, match="NoSuchScheduler"):
        sd.load_pipeline(settings.model_copy(update={"diffusion_scheduler": "NoSuchScheduler"}))


def assert_missing_fails_fast(settings: Settings, field: str, ident: str) -> None:
    """Loading with `field` pointing at a missing `ident` fails at once, in one line naming the
    setting to change and offline mode."""
    t = time.monotonic()
    with pytest.raises(ModelUnavailable) as err:
        sd.load_pipeline(settings.model_copy(update={field: ident}))
    assert time.monotonic() - t < 20  # offline: no ~23 s of hub retries
    message = str(err.value)
    assert f"PRODUCT_STUDIO_{field.upper()}" in message and ident in message and "Offline" in message
    assert "\n" not in message


def test_missing_model_offline_fails_fast_and_says_what_to_set(settings, tmp_path):
    for model in (str(tmp_path / "missing"), "nobody/no-such-model"):
        assert_missing_fails_fast(settings, "diffusion_model", model)


def test_missing_controlnet_names_its_setting(settings, tmp_path):
    with pytest.raises(ModelUnavailable, match="PRODUCT_STUDIO_DIFFUSION_CONTROLNET"):
        sd.load_pipeline(settings.model_copy(update={"diffusion_controlnet": str(tmp_path / "missing")}))


def test_mismatched_kind_or_controlnet_is_refused(tiny_dirs):
    (sd15, sd15_cn), (sdxl, sdxl_cn) = tiny_dirs["sd15"], tiny_dirs["sdxl"]
    with pytest.raises(ModelUnavailable, match="not an sdxl model.*PRODUCT_STUDIO_DIFFUSION_KIND"):
        sd.load_pipeline(settings_for("sdxl", sd15, sdxl_cn))
    with pytest.raises(ModelUnavailable, match="not an sd15 model.*PRODUCT_STUDIO_DIFFUSION_KIND"):
        sd.load_pipeline(settings_for("sd15", sdxl, sd15_cn))
    with pytest.raises(ModelUnavailable, match="does not fit.*PRODUCT_STUDIO_DIFFUSION_CONTROLNET"):
        sd.load_pipeline(settings_for("sd15", sd15, sdxl_cn))


# --- LoRA and scheduler settings ------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_dir(settings, tmp_path_factory) -> Path:
    """A random, non-zero LoRA for the tiny model of `settings`' kind (peft, saved like a hub LoRA)."""
    from tiny_diffusers import save_tiny_lora

    return save_tiny_lora(settings.diffusion_kind, Path(settings.diffusion_model),
                          tmp_path_factory.mktemp(f"lora-{settings.diffusion_kind}"))


def with_lora(settings: Settings, lora_dir: Path) -> Settings:
    return settings.model_copy(update={"diffusion_lora": str(lora_dir)})


def test_lora_is_fused_into_the_unet_and_its_adapters_dropped(settings, lora_dir):
    import torch
    from safetensors.torch import load_file
    from tiny_diffusers import LORA_TARGETS

    base = sd.get_pipeline(settings)
    pipe = sd.get_pipeline(with_lora(settings, lora_dir))  # the one generate() uses below
    lora = load_file(lora_dir / "pytorch_lora_weights.safetensors")
    before, after = base.unet.state_dict(), pipe.unet.state_dict()
    # Fused and unloaded: the same parameters as the plain UNet, no lora_A/lora_B/base_layer left.
    assert after.keys() == before.keys()
    assert not getattr(pipe.unet, "peft_config", None)
    assert not [n for n, _ in pipe.unet.named_modules() if "lora" in n.lower()]
    assert pipe.get_list_adapters() == {}
    # Every target projection, and nothing else, is now W + B @ A (lora_alpha == rank: scale 1).
    targets = [n for n, m in pipe.unet.named_modules() if n.endswith(LORA_TARGETS) and isinstance(m, torch.nn.Linear)]
    assert targets and all(type(pipe.unet.get_submodule(n)) is torch.nn.Linear for n in targets)
    assert len(lora) == 2 * len(targets)
    for name in targets:
        delta = lora[f"unet.{name}.lora_B.weight"] @ lora[f"unet.{name}.lora_A.weight"]
        assert delta.abs().max() > 0.1
        torch.testing.assert_close(after[f"{name}.weight"], before[f"{name}.weight"] + delta, rtol=1e-5, atol=1e-5)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{n}.weight" for n in targets}
    # The LoRA holds UNet weights only: the text encoders and the ControlNet are untouched.
    for part in ("text_encoder", "controlnet") + (("text_encoder_2",) if settings.diffusion_kind == "sdxl" else ()):
        ours, theirs = getattr(pipe, part).state_dict(), getattr(base, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_lora_changes_the_generated_scene(settings, lora_dir):
    lora_settings = with_lora(settings, lora_dir)
    plain, styled = run(settings, seed=7)[0].pixels, run(lora_settings, seed=7)[0].pixels
    assert styled.shape == (H, W, 3) and styled.dtype == np.uint8
    # Same seed, same pixels without the LoRA (bit-exact, above), so any difference is the LoRA's.
    # Random LoRA on random weights: the tiny SDXL moves less than SD1.5 (~2 vs ~20 levels).
    diff = np.abs(plain.astype(int) - styled.astype(int))
    assert diff.mean() > 1 and (diff > 0).mean() > 0.5
    assert np.array_equal(run(lora_settings, seed=7)[0].pixels, styled)  # still reproducible by seed
    assert model_cache.loads[sd.cache_key(lora_settings)] == 1


def test_lora_as_a_single_file_or_renamed_in_its_folder(settings, lora_dir, tmp_path):
    """What people download: one .safetensors file, under any name."""
    import shutil

    renamed = tmp_path / "my-style.safetensors"
    shutil.copy(lora_dir / "pytorch_lora_weights.safetensors", renamed)
    weight = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    expected = sd.get_pipeline(with_lora(settings, lora_dir)).unet.state_dict()[weight]
    for path in (renamed, tmp_path):
        pipe = sd.load_pipeline(with_lora(settings, path))
        assert np.array_equal(pipe.unet.state_dict()[weight].numpy(), expected.numpy())


def test_missing_lora_offline_fails_fast_and_says_what_to_set(settings, tmp_path):
    for lora in (str(tmp_path / "missing"), "nobody/no-such-lora"):
        assert_missing_fails_fast(settings, "diffusion_lora", lora)


def test_a_model_folder_is_not_a_lora(settings):
    with pytest.raises(ModelUnavailable, match="LoRA.*PRODUCT_STUDIO_DIFFUSION_LORA"):
        sd.load_pipeline(settings.model_copy(update={"diffusion_lora": settings.diffusion_model}))


@pytest.mark.parametrize("name", ["LCMScheduler", "EulerAncestralDiscreteScheduler"])
def test_chosen_scheduler_is_loaded_and_generates(settings, name):
    import diffusers

    chosen = settings.model_copy(update={"diffusion_scheduler": name})
    pipe = sd.get_pipeline(chosen)
    assert type(pipe.scheduler) is getattr(diffusers, name)
    # Built from the model's own scheduler config: its noise schedule is kept.
    base = sd.get_pipeline(settings).scheduler.config
    for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule"):
        assert pipe.scheduler.config[key] == base[key]
    (g,) = run(chosen, seed=3)
    assert g.pixels.shape == (H, W, 3) and g.pixels.std() > 1
    assert model_cache.loads[sd.cache_key(chosen)] == 1


@pytest.mark.parametrize("name", ["NoSuchScheduler", "SchedulerMixin", "AutoencoderKL", "lcmscheduler"])
def test_unknown_scheduler_lists_the_choices(tiny_dirs, name):
    """Names that are not diffusers schedulers (some are other diffusers classes) are refused before loading."""
    s = settings_for("sd15", *tiny_dirs["sd15"]).model_copy(update={"diffusion_scheduler": name})
    with pytest.raises(UnknownName) as err:
        sd.load_pipeline(s)
    message = str(err.value)
    assert repr(name) in message and "choose one of:" in message
    choices = message.split("choose one of:", 1)[1].split(", ")
    assert {"LCMScheduler", "EulerAncestralDiscreteScheduler", "DDIMScheduler"} <= {c.strip() for c in choices}
    assert all(c.strip().endswith("Scheduler") for c in choices)


# --- no models needed --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("template", "title", "category", "expected"),
    [
        ("{product} on marble", "Red Mug", "Mugs", "Red Mug on marble"),
        ("{product} on marble", None, "Mugs", "Mugs on marble"),
        ("{product} on marble", "  ", None, "product on marble"),
        ("on marble, soft light", "Red Mug", None, "a photo of Red Mug, on marble, soft light"),
        ("", "Red Mug", None, "a photo of Red Mug"),
        ("{product} {0} {{x}} {other}", "Mug {0} {product} }{", None, "Mug {0} {product} }{ {0} {{x}} {other}"),
        ("{product}\non marble", "Red\n  Mug\t12oz", None, "Red Mug 12oz on marble"),
    ],
)
def test_build_prompt(template, title, category, expected):
    prompt, negative = sd.build_prompt(ScenePreset(name="t", prompt=template, negative_prompt="blurry"), title, category)
    assert prompt == expected
    assert negative == "blurry"


def test_build_prompt_long_title_and_default_negative():
    prompt, negative = sd.build_prompt(ScenePreset(name="t", prompt="{product}, studio"), "word " * 50)
    assert prompt.endswith(", studio") and len(prompt) <= 80 + len(", studio")
    assert negative  # a sensible default when the preset has none


def test_keep_mask_covers_product_in_whole_latent_cells():
    alpha = np.zeros((64, 128), np.float32)
    alpha[20:30, 50:53] = 0.1
    keep = sd._keep_mask(alpha)
    assert keep[alpha > 0].all()
    cells = keep.reshape(8, 8, 16, 8).transpose(0, 2, 1, 3).reshape(8, 16, 64)
    assert np.all(cells.all(axis=2) == cells.any(axis=2))  # every 8x8 cell is all kept or all repainted
    assert keep.sum() < alpha.size / 4


def test_fill_from_background_copies_nearest_generated_pixel():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = 10
    image[:, 4:] = 200
    keep = np.zeros((8, 8), bool)
    keep[2:6, 2:6] = True
    image[keep] = 128
    filled = sd._fill_from_background(image, keep)
    assert (filled[2:6, 2:4] == 10).all() and (filled[2:6, 4:6] == 200).all()
    assert np.array_equal(filled[~keep], image[~keep])


def test_import_does_not_import_torch():
    code = "import product_studio.backends.scene_diffusers, sys; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "False"]


def test_process_stage_composites_the_real_product_over_a_generated_scene(settings):
    """The scene stage's generative path: real product on top, AI-labelled, seed recorded."""
    from product_studio.pipeline.check import check_bytes
    from product_studio.pipeline.export import encode
    from product_studio.pipeline.plan import render_variant
    from product_studio.presets import TARGETS
    from product_studio.scenes import get_scene

    target = TARGETS["lifestyle"].model_copy(update={"width": 128, "height": 160})
    cutout = np.zeros((80, 60, 4), np.uint8)
    cutout[10:70, 10:50] = (200, 40, 30, 255)
    variant = render_variant(cutout, target, get_scene("ai-studio"), 5, title="Red mug", settings=settings)
    assert variant.ai_generated and variant.seed == 5 and variant.control is not None
    p = variant.placement
    x0, y0, x1, y1 = p.box
    inside = variant.pixels[y0:y1, x0:x1][p.alpha >= 1.0]
    assert (inside == (200, 40, 30)).all()
    report = check_bytes(encode(variant.pixels, target, ai_generated=variant.ai_generated), target)
    assert report.ai_labelled
