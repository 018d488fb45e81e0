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


@dataclass(frozen=True)
class Preset:
    """A named set of configs (diffusers / transformers `config.json` contents), one per folder of a
    diffusers pipeline folder: the models by their folder name, then the scheduler and tokenizer."""

    name: str
    description: str
    models: Mapping[str, Mapping[str, Any]]  # "unet", "vae", "text_encoder" -> config
    scheduler: Mapping[str, Any]
    tokenizer: Mapping[str, Any]
    default_size: int = field(default=512)  # image side in pixels the model was trained at

    def config(self, component: str) -> dict[str, Any]:
        """The config of `component` ("unet", "vae", "clip"; see explorer.components), a fresh dict."""
        from explorer.components import component as entry

        return dict(self.models[entry(component).folder])


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


SD15 = Preset(
    name="sd15",
    description="Stable Diffusion 1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5)",
    default_size=512,
    models={
        "unet": _frozen(
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
        "vae": _frozen(
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
        "text_encoder": _frozen(
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
    },
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
    models={
        "unet": _frozen(
            {
                **SD15.models["unet"],
                "sample_size": 8,
                "block_out_channels": [8, 16, 32, 32],
                "norm_num_groups": 4,
                "cross_attention_dim": 16,
                "attention_head_dim": 2,  # 2 heads
            }
        ),
        "vae": _frozen(
            {
                **SD15.models["vae"],
                "sample_size": 64,
                "block_out_channels": [8, 16, 32, 32],
                "norm_num_groups": 4,
            }
        ),
        "text_encoder": _frozen(
            {
                **SD15.models["text_encoder"],
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "projection_dim": 16,
            }
        ),
    },
    scheduler=SD15.scheduler,
    tokenizer=SD15.tokenizer,
)


# The micro SD: SD1.5's classes and block types, small enough to train on a laptop CPU in under an
# hour and to ship inside the package (explorer/micro/model, trained by `python -m explorer.micro.train`).
# Its data is one coloured shape on a plain background (explorer.micro.data), so:
# - 64 px images: a 14 px triangle is still plainly a triangle, and a full 20-step generation with
#   guidance takes well under a second on a CPU;
# - a VAE of three levels (4x smaller per side, SD1.5 has 8x over four levels): 16x16x4 latents, so
#   the UNet's cross-attention maps are 16x16 and 8x8 -- fine enough to see where a word goes;
# - a UNet of three levels with SD1.5's block types (two CrossAttnDownBlock2D, a DownBlock2D, the
#   cross-attention mid block, an UpBlock2D, two CrossAttnUpBlock2D), one layer per block;
# - a text encoder of 32 channels: its token table alone (49,408 x 32, the real SD1.5 tokenizer's
#   vocabulary) is 1.6M parameters, and the whole folder must stay under 20 MB. Unlike SD1.5, whose
#   text encoder was OpenAI's pretrained CLIP, frozen, it is trained from scratch with the UNet.
# The VAE's scaling_factor is not chosen: training computes it from the trained VAE's latents
# (1 / their standard deviation), the way SD's 0.18215 was found.
MICRO = Preset(
    name="micro",
    description="a micro SD trained on coloured shapes, shipped with sd-explorer (real learned weights)",
    default_size=64,
    models={
        "unet": _frozen(
            {
                **SD15.models["unet"],
                "sample_size": 16,  # 64 px / 4
                # SD1.5's four levels and block types: 16x16 -> 8x8 -> 4x4 -> 2x2 latents. At 2x2 every
                # cell is a corner, so the bottom of the U knows where left and right are.
                "block_out_channels": [32, 48, 64, 64],
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "cross_attention_dim": 32,  # the text encoder's width
                "attention_head_dim": 2,  # as in SD1.5, read as the number of heads: 2
            }
        ),
        "vae": _frozen(
            {
                **SD15.models["vae"],
                "sample_size": 64,
                "down_block_types": ["DownEncoderBlock2D"] * 3,  # 64 -> 32 -> 16 px, the last keeps 16
                "up_block_types": ["UpDecoderBlock2D"] * 3,
                "block_out_channels": [16, 32, 64],
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "scaling_factor": 1.0,  # replaced by the one training measures
            }
        ),
        "text_encoder": _frozen(
            {
                **SD15.models["text_encoder"],
                "hidden_size": 32,
                "intermediate_size": 128,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,  # 4 heads of 8
                "projection_dim": 32,
            }
        ),
    },
    scheduler=SD15.scheduler,
    tokenizer=SD15.tokenizer,
)


# Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1): SD1.5's U, trained at 768 px, reading a
# wider text encoder (OpenCLIP ViT-H/14's text half, 1024 channels, its penultimate layer) through
# linear projections, with heads of 64 channels at every level and a v-prediction objective.
SD21 = Preset(
    name="sd21",
    description="Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1), 768 px, v-prediction",
    default_size=768,
    models={
        "unet": _frozen(
            {
                **SD15.models["unet"],
                "sample_size": 96,  # latent side: 768 px / 8
                "cross_attention_dim": 1024,  # OpenCLIP ViT-H's text width
                "attention_head_dim": [5, 10, 20, 20],  # read as heads per level: 320/5 = 640/10 = 1280/20 = 64 channels each
                "use_linear_projection": True,  # proj_in / proj_out are Linear on tokens, not 1x1 Conv2d
                "upcast_attention": True,  # attention scores in float32 (fp16 overflowed at 768 px)
            }
        ),
        "vae": _frozen({**SD15.models["vae"], "sample_size": 768}),  # SD1.5's VAE, unchanged
        "text_encoder": _frozen(
            {
                **SD15.models["text_encoder"],  # OpenCLIP ViT-H/14's text half, run by transformers' CLIPTextModel
                "hidden_size": 1024,
                "intermediate_size": 4096,  # 4 x 1024
                "num_attention_heads": 16,  # 16 heads of 64
                "num_hidden_layers": 23,  # of OpenCLIP's 24: SD2 reads the penultimate layer, so the last is left out
                "hidden_act": "gelu",  # OpenCLIP's exact GELU, not OpenAI's quick_gelu
                "projection_dim": 512,
            }
        ),
    },
    scheduler=_frozen(
        {
            **SD15.scheduler,
            "_class_name": "DDIMScheduler",
            "prediction_type": "v_prediction",  # the UNet predicts v = alpha_t * noise - sigma_t * x0, not the noise
        }
    ),
    tokenizer=_frozen({**SD15.tokenizer, "pad_token": "!"}),  # OpenCLIP pads with "!" (id 0), not the end token
)


# Stable Diffusion XL 1.0 (stabilityai/stable-diffusion-xl-base-1.0): three resolution levels, no
# attention at the highest, 1 / 2 / 10 transformer blocks per attention at the other levels, a
# 2048-channel context made of two text encoders side by side (768 + 1280), and an extra
# conditioning: the second encoder's pooled embedding and six numbers (original size, crop corner,
# target size), added to the time embedding through `add_embedding`.
SDXL = Preset(
    name="sdxl",
    description="Stable Diffusion XL 1.0 base (stabilityai/stable-diffusion-xl-base-1.0), 1024 px",
    default_size=1024,
    models={
        "unet": _frozen(
            {
                **SD15.models["unet"],
                "sample_size": 128,  # latent side: 1024 px / 8
                # Three levels: 128x128 -> 64x64 -> 32x32 latents; no attention at 128x128.
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "block_out_channels": [320, 640, 1280],
                "transformer_layers_per_block": [1, 2, 10],  # BasicTransformerBlocks per Transformer2DModel, per level
                "attention_head_dim": [5, 10, 20],  # heads of 64 channels
                "cross_attention_dim": 2048,  # 768 (CLIP ViT-L) + 1280 (OpenCLIP ViT-bigG), concatenated
                "use_linear_projection": True,
                "addition_embed_type": "text_time",  # needs text_embeds [B, 1280] and time_ids [B, 6]
                "addition_time_embed_dim": 256,  # each of the 6 time ids -> 256 sinusoidal channels
                "projection_class_embeddings_input_dim": 2816,  # 1280 pooled + 6 x 256
            }
        ),
        "vae": _frozen(
            {
                **SD15.models["vae"],
                "sample_size": 1024,
                "scaling_factor": 0.13025,  # SDXL's VAE was retrained: its latents have another spread
                "force_upcast": True,  # decoded in float32: it overflows in float16
            }
        ),
        "text_encoder": _frozen(dict(SD15.models["text_encoder"])),  # OpenAI CLIP ViT-L/14, as in SD1.5
        "text_encoder_2": _frozen(
            {
                **SD15.models["text_encoder"],
                "_class_name": "CLIPTextModelWithProjection",  # OpenCLIP ViT-bigG/14 text half, with its projection
                "hidden_size": 1280,
                "intermediate_size": 5120,
                "num_attention_heads": 20,  # 20 heads of 64
                "num_hidden_layers": 32,
                "hidden_act": "gelu",
                "projection_dim": 1280,  # the pooled embedding, projected: text_embeds [B, 1280]
            }
        ),
    },
    scheduler=_frozen(
        {
            **{k: v for k, v in SD15.scheduler.items() if k not in ("skip_prk_steps", "set_alpha_to_one", "clip_sample")},
            "_class_name": "EulerDiscreteScheduler",
            "interpolation_type": "linear",
            "timestep_spacing": "leading",
            "use_karras_sigmas": False,
        }
    ),
    tokenizer=SD15.tokenizer,
)


PRESETS: dict[str, Preset] = {SD15.name: SD15, TINY.name: TINY, SD21.name: SD21, SDXL.name: SDXL}
MODEL_NAMES = {"sd15": "SD1.5", "sd21": "SD2.1", "sdxl": "SDXL"}  # presets as a sentence writes them


def model_name(model: str) -> str:
    """How a model is written in a title or a sentence: "SD1.5" for sd15, anything else as given."""
    return MODEL_NAMES.get(model, model)
