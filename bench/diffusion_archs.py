"""The real SD1.5 / SDXL ControlNet-inpaint architectures, with random weights.

Configuration values are the published ones (the hub's config.json files of
stable-diffusion-v1-5/stable-diffusion-inpainting, lllyasviel/control_v11p_sd15_canny,
stabilityai/stable-diffusion-xl-base-1.0 and diffusers/controlnet-canny-sdxl-1.0); anything not
listed is a diffusers / transformers default that equals the published value. The weights are
noise, so the images are too: these models are for timing (on a GPU) and for checking that the
configurations build (on the "meta" device, anywhere). Tokenizers are tests/tiny_diffusers.py's
small in-memory one: only the token count (77) matters for shapes.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

# tests/ is on sys.path (scene_bench.py puts it there): its byte-level tokenizer and hub-like save.
from tiny_diffusers import _save, _tokenizer
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

# bos/eos/pad ids are the small tokenizer's (the real ones are 49406/49407), so pooling finds its eos.
_TOKEN_IDS = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")

SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
# force_upcast: SDXL's VAE overflows in fp16, so the pipeline decodes in fp32 (part of the overhead).
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

SD15_UNET = dict(  # the 9-channel inpainting UNet: latents 4 + mask 1 + masked-image latents 4
    sample_size=64, in_channels=9, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SDXL_UNET = dict(
    # in_channels 4: SDXL base, the model the SDXL ControlNets (e.g. controlnet-canny-sdxl-1.0) are made for,
    # and what tests/tiny_diffusers.py builds; the pipeline then blends latents with the mask each step.
    # The 9-channel inpainting-0.1 UNet differs only in conv_in (+14k weights): the same timings.
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280), layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)

# Published parameter counts (millions), to compare the random builds with.
PUBLISHED = {"unet": {"sd15": 860, "sdxl": 2567}, "controlnet": {"sd15": 361, "sdxl": 1251},
             "vae": {"sd15": 84, "sdxl": 84}, "text_encoder": {"sd15": 123, "sdxl": 123},
             "text_encoder_2": {"sdxl": 695}}


def controlnet_config(unet: dict) -> dict:
    """A ControlNet is the UNet's down path and middle block, fed 4-channel latents (not 9)."""
    accepted = inspect.signature(ControlNetModel.__init__).parameters
    return {**{k: v for k, v in unet.items() if k in accepted}, "in_channels": 4,
            "conditioning_embedding_out_channels": (16, 32, 96, 256)}


def _text(cls, config: dict):
    return cls(CLIPTextConfig(**config, **_TOKEN_IDS, layer_norm_eps=1e-5))


BUILDERS = {  # kind -> component -> builder of the random model
    "sd15": {
        "unet": lambda: UNet2DConditionModel(**SD15_UNET),
        "controlnet": lambda: ControlNetModel(**controlnet_config(SD15_UNET)),
        "vae": lambda: AutoencoderKL(**SD_VAE),
        "text_encoder": lambda: _text(CLIPTextModel, CLIP_L),
    },
    "sdxl": {
        "unet": lambda: UNet2DConditionModel(**SDXL_UNET),
        "controlnet": lambda: ControlNetModel(**controlnet_config(SDXL_UNET)),
        "vae": lambda: AutoencoderKL(**SDXL_VAE),
        "text_encoder": lambda: _text(CLIPTextModel, CLIP_L),
        "text_encoder_2": lambda: _text(CLIPTextModelWithProjection, CLIP_BIGG),
    },
}


def parameter_counts(kind: str) -> dict[str, int]:
    """Each component's parameter count, built on the meta device (no memory, no init: fast anywhere)."""
    counts = {}
    for name, build in BUILDERS[kind].items():
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in build().parameters())
    return counts


def check_archs() -> bool:
    """Print built vs published parameter counts; True if every one is within 1%."""
    ok = True
    print("real architectures on the meta device (random-weight configs vs published parameter counts)")
    for kind in BUILDERS:
        for name, n in parameter_counts(kind).items():
            published = PUBLISHED[name][kind]
            close = abs(n / 1e6 - published) <= 0.01 * published
            ok &= close
            print(f"  {kind:4s} {name:14s} {n:>13,d}  {n / 1e6:7.1f}M  published ~{published}M  {'ok' if close else 'MISMATCH'}")
    return ok


def save_real(kind: str, folder: Path, device: str, dtype: torch.dtype) -> tuple[Path, Path]:
    """Build the random real-size pipeline on `device` and save it like the hub: (model_dir, controlnet_dir)."""
    with torch.device(device):  # random init on the GPU: seconds, where the CPU takes minutes
        parts = {name: build().to(dtype) for name, build in BUILDERS[kind].items()}
    if kind == "sd15":
        pipe = StableDiffusionControlNetInpaintPipeline(
            **parts, tokenizer=_tokenizer(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
            scheduler=DDIMScheduler(**_SCHEDULER, clip_sample=False, set_alpha_to_one=False))
        return _save(pipe, StableDiffusionInpaintPipeline, Path(folder))
    pipe = StableDiffusionXLControlNetInpaintPipeline(
        **parts, tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), add_watermarker=False,
        scheduler=EulerDiscreteScheduler(**_SCHEDULER, timestep_spacing="leading"))
    return _save(pipe, StableDiffusionXLPipeline, Path(folder))
