"""Names: diffusers' module paths and the original CompVis / ldm checkpoint keys.

Learners meet both: diffusers calls a block `down_blocks.0.attentions.0`, the original SD1.5
checkpoint (`v1-5-pruned-emaonly.safetensors`) stores it under
`model.diffusion_model.input_blocks.1.1`. diffusers converts ldm -> diffusers when it loads a single
file; this module writes the way back, derived from the config (no fixed block counts), so it
works for any SD1.x-shaped configuration. Tests hold it to diffusers' own conversion: every
tensor must come back under its original name with its original values. (`scripts/naming_page.py`
writes docs/naming.md from it.)
"""

from __future__ import annotations

from typing import Any

from explorer.components import CLIP, UNET, VAE

UNET_PREFIX = UNET.ldm_prefix  # model.diffusion_model.
VAE_PREFIX = VAE.ldm_prefix  # first_stage_model.
CLIP_PREFIX = CLIP.ldm_prefix  # cond_stage_model.transformer.

# Inside a ResnetBlock2D (diffusers) / ResBlock (ldm).
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
# Inside the VAE's mid-block attention; ldm uses 1x1 convolutions where diffusers uses Linear.
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_module_map(config: dict[str, Any]) -> dict[str, str]:
    """diffusers UNet module path -> ldm module path, for every block of `config`."""
    layers = config["layers_per_block"]
    downs, ups = config["down_block_types"], config["up_block_types"]
    names = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    n = 1  # ldm numbers every step of the down path: input_blocks.1, .2, ... (0 is conv_in)
    for i, kind in enumerate(downs):
        for j in range(layers):
            names[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
            if "CrossAttn" in kind:
                names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
            n += 1
        if i < len(downs) - 1:
            names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            n += 1
    m = 0  # output_blocks.0, .1, ...: one per resnet of the up path, the upsampler rides on the last
    for i, kind in enumerate(ups):
        attention = "CrossAttn" in kind
        for j in range(layers + 1):
            names[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{m}.0"
            if attention:
                names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{m}.1"
            if j == layers and i < len(ups) - 1:
                names[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{m}.{2 if attention else 1}"
            m += 1
    return names


def vae_module_map(config: dict[str, Any]) -> dict[str, str]:
    """diffusers AutoencoderKL module path -> ldm module path."""
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    names = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    for part in ("encoder", "decoder"):
        names[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        names[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
        names[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
    for i in range(levels):
        for j in range(layers):
            names[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        if i < levels - 1:
            names[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
        up = levels - 1 - i  # ldm numbers the decoder's levels from the bottom
        for j in range(layers + 1):
            names[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{up}.block.{j}"
        if i < levels - 1:
            names[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{up}.upsample"
    return names


def _rename(key: str, modules: dict[str, str], inner: dict[str, dict[str, str]]) -> str:
    """Replace the longest module prefix of `key`; then rename inside it with `inner[kind]`."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in modules:
            rest = ".".join(parts[cut:])
            for kind, table in inner.items():
                if kind in prefix:
                    for old, new in table.items():
                        if rest.startswith(old + "."):
                            rest = new + rest[len(old) :]
                            break
            return f"{modules[prefix]}.{rest}"
    return key


def unet_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    return _rename(key, unet_module_map(config), {"resnets": _UNET_RESNET})


def vae_key_to_ldm(key: str, config: dict[str, Any]) -> str:
    return _rename(key, vae_module_map(config), {"resnets": _VAE_RESNET, "attentions": _VAE_ATTENTION})


def to_original_checkpoint(
    unet: dict[str, Any], vae: dict[str, Any], text_encoder: dict[str, Any], unet_config: dict, vae_config: dict
) -> dict[str, Any]:
    """One state dict in the original SD single-file layout, from the three diffusers state dicts."""
    state: dict[str, Any] = {}
    for key, value in unet.items():
        state[UNET_PREFIX + unet_key_to_ldm(key, unet_config)] = value
    for key, value in vae.items():
        new = vae_key_to_ldm(key, vae_config)
        if ".mid.attn_1." in new and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # Linear [C, C] -> 1x1 conv [C, C, 1, 1]
        state[VAE_PREFIX + new] = value
    for key, value in text_encoder.items():
        # The original file uses transformers' old layout, with everything under text_model.
        state[CLIP_PREFIX + ("" if key.startswith("text_model.") else "text_model.") + key] = value
    return state


def common_prefix(keys: list[str]) -> str:
    """The dotted prefix every key shares."""
    parts = [k.split(".") for k in keys]
    prefix = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix)


def span(owners: list[str]) -> str:
    """The original name covering these modules: their common prefix, or a numbered range of it
    ("input_blocks.1 … 3") when a diffusers block spans several original ones."""
    prefix = common_prefix(owners)
    following = sorted({o[len(prefix) + 1 :].split(".")[0] for o in owners if len(o) > len(prefix)})
    if len(following) > 1 and all(f.isdigit() for f in following):
        numbers = sorted(int(f) for f in following)
        return f"{prefix}.{numbers[0]} … {numbers[-1]}"
    return prefix
