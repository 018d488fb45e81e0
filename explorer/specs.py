"""The architectures we explore, as plain data.

SD1.5 is fully described by five small configs. They are the ones published with
`stable-diffusion-v1-5/stable-diffusion-v1-5` (`unet/config.json`, `vae/config.json`,
`text_encoder/config.json`, `scheduler/scheduler_config.json`, `tokenizer/tokenizer_config.json`),
written out here with what each number means. The real diffusers/transformers classes build the
exact network from them; nothing else in the project types in a shape.

`TINY` keeps every block type of SD1.5 (3 CrossAttnDownBlock2D + DownBlock2D, the cross-attention
mid block, UpBlock2D + 3 CrossAttnUpBlock2D, the same VAE and CLIP layouts) with tiny widths, so a
real forward pass on real tensors takes milliseconds. Tests and quick demos use it.

This module imports nothing heavy: it is read by the CLI before torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

# CLI names of the components, and the folder each one has in a diffusers pipeline folder.
COMPONENT_FOLDERS = {"unet": "unet", "vae": "vae", "clip": "text_encoder"}


@dataclass(frozen=True)
class Preset:
    """A named set of component configs (diffusers / transformers `config.json` contents)."""

    name: str
    description: str
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_encoder: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    tokenizer: Mapping[str, Any]
    default_size: int = field(default=512)  # image side in pixels the model was trained at

    def config(self, component: str) -> dict[str, Any]:
        """The config of `component` ("unet", "vae" or "clip"), as a fresh mutable dict."""
        folder = COMPONENT_FOLDERS[component]
        return dict(getattr(self, folder))


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


SD15 = Preset(
    name="sd15",
    description="Stable Diffusion 1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5)",
    default_size=512,
    unet=_frozen(
        {
            "_class_name": "UNet2DConditionModel",
            "sample_size": 64,  # latent side: 512 px / 8 (the VAE's downscale)
            "in_channels": 4,  # the 4 latent channels the VAE produces
            "out_channels": 4,  # predicted noise, same shape as the latent
            "center_input_sample": False,
            "flip_sin_to_cos": True,  # sinusoidal time embedding as [cos, sin]
            "freq_shift": 0,
            # Four resolution levels: 64x64 -> 32x32 -> 16x16 -> 8x8 latents.
            "down_block_types": [
                "CrossAttnDownBlock2D",  # 320 channels, 64x64
                "CrossAttnDownBlock2D",  # 640 channels, 32x32
                "CrossAttnDownBlock2D",  # 1280 channels, 16x16
                "DownBlock2D",  # 1280 channels, 8x8: no attention, no downsampling
            ],
            "up_block_types": [
                "UpBlock2D",  # 8x8, no attention
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",  # back at 64x64, no upsampler
            ],
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,  # ResnetBlock2D (+ Transformer2DModel) pairs per down block; +1 on the way up
            "downsample_padding": 1,
            "mid_block_scale_factor": 1,
            "act_fn": "silu",
            "norm_num_groups": 32,  # GroupNorm(32, C) everywhere
            "norm_eps": 1e-05,
            "cross_attention_dim": 768,  # width of the CLIP text embedding every cross-attention reads
            "attention_head_dim": 8,  # historical name: SD1.5 uses it as the number of heads (8)
        }
    ),
    vae=_frozen(
        {
            "_class_name": "AutoencoderKL",
            "sample_size": 512,
            "in_channels": 3,  # RGB
            "out_channels": 3,
            "latent_channels": 4,  # the encoder outputs 2 x 4 channels: mean and log-variance
            "down_block_types": ["DownEncoderBlock2D"] * 4,  # 512 -> 256 -> 128 -> 64 px, the last keeps 64
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,  # ResnetBlock2D per encoder block; the decoder uses 3
            "act_fn": "silu",
            "norm_num_groups": 32,
            "scaling_factor": 0.18215,  # latents are multiplied by this before the UNet sees them
        }
    ),
    text_encoder=_frozen(
        {
            "_class_name": "CLIPTextModel",  # OpenAI CLIP ViT-L/14, text half
            "vocab_size": 49408,  # byte-level BPE vocabulary
            "max_position_embeddings": 77,  # start token + 75 prompt tokens + end token
            "hidden_size": 768,
            "intermediate_size": 3072,  # MLP width: 4 x 768
            "num_hidden_layers": 12,
            "num_attention_heads": 12,  # 12 heads of 64
            "hidden_act": "quick_gelu",  # x * sigmoid(1.702 x)
            "layer_norm_eps": 1e-05,
            "attention_dropout": 0.0,
            "dropout": 0.0,
            "initializer_factor": 1.0,
            "initializer_range": 0.02,
            "projection_dim": 768,
            "bos_token_id": 0,
            "eos_token_id": 2,  # as published; transformers then pools at the highest token id (the end token)
            "pad_token_id": 1,
        }
    ),
    scheduler=_frozen(
        {
            "_class_name": "PNDMScheduler",
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",  # betas linear in sqrt space
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "clip_sample": False,  # read by DDIM when the config is reused; PNDM ignores it
            "prediction_type": "epsilon",  # diffusers' default, written out: the UNet predicts the noise
        }
    ),
    tokenizer=_frozen(
        {
            "_class_name": "CLIPTokenizer",
            "model_max_length": 77,
            "bos_token": "<|startoftext|>",  # id 49406
            "eos_token": "<|endoftext|>",  # id 49407
            "pad_token": "<|endoftext|>",  # SD1.5 pads with the end token
            "unk_token": "<|endoftext|>",
            "do_lower_case": True,
        }
    ),
)


TINY = Preset(
    name="tiny",
    description="SD1.5's block layout with tiny widths, for tests and quick runs (random weights only)",
    default_size=64,  # 64 px image -> 8x8 latent -> 1x1 at the bottom of the U
    unet=_frozen(
        {
            **SD15.unet,
            "sample_size": 8,
            "block_out_channels": [8, 16, 32, 32],
            "norm_num_groups": 4,
            "cross_attention_dim": 16,
            "attention_head_dim": 2,  # 2 heads
        }
    ),
    vae=_frozen(
        {
            **SD15.vae,
            "sample_size": 64,
            "block_out_channels": [8, 16, 32, 32],
            "norm_num_groups": 4,
        }
    ),
    text_encoder=_frozen(
        {
            **SD15.text_encoder,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 16,
        }
    ),
    scheduler=SD15.scheduler,
    tokenizer=SD15.tokenizer,
)


PRESETS: dict[str, Preset] = {SD15.name: SD15, TINY.name: TINY}
