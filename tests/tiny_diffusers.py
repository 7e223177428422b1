"""Tiny, randomly initialised SD1.5 / SDXL ControlNet-inpaint pipelines for fast tests.

Built from configs the way diffusers' own fast tests do, then written with save_pretrained so
tests load them through the same `load_pipeline` that real model ids go through. The weights are
noise, so the images are too; what the tests check is shapes, seeds, batching and loading.
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
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

_HIDDEN = 32  # text encoder width (SDXL concatenates two of them: 64)


def _tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer with no merges: every character is a token, any text encodes."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())  # the 256 printable stand-ins for bytes
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for tok in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    # Merges a few common pairs only so the merge table is exercised too.
    merges = [("t", "h"), ("th", "e</w>"), ("o", "n</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_config(**extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=1000, hidden_size=_HIDDEN,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
        hidden_act="gelu", layer_norm_eps=1e-5, **extra,
    )


def _vae() -> AutoencoderKL:
    # Four blocks: three downsamples, so latents are 1/8 of the image, as in the real models.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=32, sample_size=64,
    )


def _controlnet(unet_config: dict) -> ControlNetModel:
    # A 4-channel twin of the UNet: ControlNetModel.from_unet() on a 9-channel inpainting UNet would
    # copy its 9 input channels and fail at run time (the control net sees 4-channel latents).
    twin = UNet2DConditionModel(**{**unet_config, "in_channels": 4})
    # Three stride-2 convs in the conditioning embedding: a full-size control image -> latent size.
    return ControlNetModel.from_unet(twin, conditioning_embedding_out_channels=(16, 32, 32, 32))


def build_tiny_sd15() -> StableDiffusionControlNetInpaintPipeline:
    torch.manual_seed(0)
    unet_config = dict(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_HIDDEN, norm_num_groups=32,
    )
    unet = UNet2DConditionModel(**unet_config)
    controlnet = _controlnet(unet_config)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionControlNetInpaintPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config()), tokenizer=_tokenizer(), unet=unet,
        controlnet=controlnet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl() -> StableDiffusionXLControlNetInpaintPipeline:
    """SDXL with a 4-channel UNet (the usual SDXL base + ControlNet set-up; the pipeline blends latents)."""
    torch.manual_seed(0)
    time_dim = 8
    unet_config = dict(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 1),
        cross_attention_dim=2 * _HIDDEN,  # both text encoders' hidden states, concatenated
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        # 6 time ids (original size, crop, target size) * time_dim + the pooled text embedding
        projection_class_embeddings_input_dim=6 * time_dim + _HIDDEN, norm_num_groups=32,
    )
    unet = UNet2DConditionModel(**unet_config)
    controlnet = _controlnet(unet_config)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return StableDiffusionXLControlNetInpaintPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(projection_dim=_HIDDEN)),
        tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), unet=unet, controlnet=controlnet,
        scheduler=scheduler, add_watermarker=False,
    )


def _save(pipe, base_cls, folder: Path) -> tuple[Path, Path]:
    # Like the hub: the base model is a plain (non-ControlNet) pipeline, the ControlNet its own repo.
    model_dir, controlnet_dir = folder / "model", folder / "controlnet"
    components = {k: v for k, v in pipe.components.items() if k != "controlnet"}
    if base_cls is StableDiffusionInpaintPipeline:
        components.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    base = base_cls(**{k: v for k, v in components.items() if k in inspect.signature(base_cls).parameters})
    base.save_pretrained(model_dir)
    pipe.controlnet.save_pretrained(controlnet_dir)
    return model_dir, controlnet_dir


def save_tiny_sd15(folder: Path) -> tuple[Path, Path]:
    """Write a tiny SD1.5 inpainting model and ControlNet; returns (model_dir, controlnet_dir)."""
    return _save(build_tiny_sd15(), StableDiffusionInpaintPipeline, Path(folder))


def save_tiny_sdxl(folder: Path) -> tuple[Path, Path]:
    """Write a tiny SDXL model and ControlNet; returns (model_dir, controlnet_dir)."""
    return _save(build_tiny_sdxl(), StableDiffusionXLPipeline, Path(folder))


# The attention projections, as LoRAs trained with diffusers' own scripts target them.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def save_tiny_lora(kind: str, model_dir: Path, folder: Path, rank: int = 4) -> Path:
    """Write a random, non-zero UNet LoRA for a tiny model (as save_tiny_sd15/sdxl wrote it); returns its folder.

    peft's `init_lora_weights=False` draws both A and B at random (the default zeroes B, which
    would make the LoRA a no-op), so loading it must change the UNet. lora_alpha == rank: the
    update is exactly B @ A. Saved with the pipeline's own save_lora_weights, in the same format
    (pytorch_lora_weights.safetensors, "unet."-prefixed keys) as LoRAs on the hub.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipeline_cls = {"sd15": StableDiffusionInpaintPipeline, "sdxl": StableDiffusionXLPipeline}[kind]
    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    torch.manual_seed(1)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGETS), init_lora_weights=False))
    pipeline_cls.save_lora_weights(Path(folder), unet_lora_layers=get_peft_model_state_dict(unet))
    return Path(folder)
