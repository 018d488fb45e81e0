"""Config values, checked before anything is built.

A model folder's `config.json` is outside data like any file: a well-formed JSON object can still
hold a string where a size goes, a block type diffusers does not have, a group count that does not
divide the channels, or a layer count that would take hours to build. The libraries answer such
values from deep inside their own code (a KeyError, a ZeroDivisionError, an allocator asked for
terabytes). Here every field that the explorer, diffusers or transformers reads is checked first;
a wrong one is one sentence naming the file, the field, what it holds and what is allowed.

The limits are far beyond any real Stable Diffusion model (SDXL: 3 levels of at most 1280 channels,
10 transformer layers, a text encoder of 32 layers) and still keep every architecture quick to build
on the meta device. The memory its weights would take is checked when they are made
(`explorer.loading.check_memory`). A field a config leaves out takes the library's default.

This module imports nothing heavy: the names it accepts are written here, and the tests check them
against the installed diffusers and transformers.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

from explorer.errors import ExplorerError

MAX_LEVELS = 8  # resolution levels of a UNet or VAE (SD: 4, SDXL: 3)
MAX_LAYERS = 16  # resnets per block, transformer layers per attention (SDXL: 10)
MAX_CHANNELS = 16_384  # any width: channels, embedding sizes (SDXL: 2048 at most)
MAX_LATENT_CHANNELS = 256  # a latent's channels (SD: 4, an inpainting UNet's input: 9)
MAX_IMAGE_CHANNELS = 16  # an image's channels (RGB: 3)
MAX_UNET_SAMPLE = 1024  # the UNet's latent side (SDXL: 128)
MAX_VAE_SAMPLE = 2048  # the VAE's image side in pixels (SDXL: 1024)
MAX_TEXT_LAYERS = 64  # text encoder layers (OpenCLIP ViT-bigG: 32)
MAX_POSITIONS = 1024  # tokens a text encoder reads (CLIP: 77)
MAX_VOCABULARY = 1 << 20  # tokens in a vocabulary (CLIP: 49,408)
MAX_TIMESTEPS = 10_000  # a noise schedule's steps (SD: 1000)
MAX_STEPS_OFFSET = 100  # added to every inference timestep (SD: 1); finding the most steps takes longer with each

# Block types that build inside the classes the explorer drives and run at every input size (the
# tests check each): Stable Diffusion's own. diffusers has others for other UNets; those that
# resample with pooling or plain interpolation fail on latents of odd or 1-pixel sides.
UNET_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
UNET_MID_BLOCKS = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", "UNetMidBlock2DSimpleCrossAttn")
VAE_DOWN_BLOCKS = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
VAE_UP_BLOCKS = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")
# Activations by name: diffusers' get_activation (any case), transformers' ACT2FN.
DIFFUSERS_ACTIVATIONS = ("silu", "swish", "gelu", "relu", "mish")
TRANSFORMERS_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_fast", "gelu_accurate", "gelu_pytorch_tanh",
                            "gelu_python", "gelu_10", "relu", "relu6", "leaky_relu", "silu", "swish", "mish",
                            "sigmoid", "tanh", "linear")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

_ABSENT = object()


def shown(value: Any) -> str:
    """A config value as its JSON file writes it, cut short: `"abc"`, `[320, 640]`, `null`."""
    if value is _ABSENT:
        return "nothing"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON, or an int of more digits than Python writes out
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A JSON number: an int of any size, or a finite float (JSON files may hold NaN and Infinity)."""
    return _is_whole(value) or isinstance(value, float) and math.isfinite(value)


def _between(low: int, high: int) -> str:
    return f"between {low:,} and {high:,}"


def _written(x: float) -> str:
    """A bound as a sentence writes it: 0.00085, 1, 1,000,000."""
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


class Fields:
    """The fields of one config, each read and checked: a method returns the value (`default`
    when the field is absent) or raises one sentence naming the file and the field."""

    def __init__(self, config: Mapping[str, Any], where: str):
        self.config, self.where = config, where

    def refuse(self, name: str, allowed: str, entry: Any = _ABSENT) -> ExplorerError:
        """The sentence for field `name`, which must be `allowed`: it shows the field's value, or the
        `entry` of its list that is wrong."""
        if entry is not _ABSENT:
            return ExplorerError(f"{self.where}: {name} must be {allowed}, got {shown(entry)} in it.")
        return ExplorerError(f"{self.where}: {name} must be {allowed}, got {shown(self.config.get(name, _ABSENT))}.")

    def _refuse_list(self, name: str, allowed: str, value: Any, good) -> ExplorerError:
        """The sentence for a list field: its first wrong entry when its entries are what is wrong."""
        wrong = [v for v in value if not good(v)] if isinstance(value, (list, tuple)) else []
        return self.refuse(name, allowed, wrong[0]) if wrong else self.refuse(name, allowed)

    def _value(self, name: str, default: Any, null: bool, allowed: str):
        value = self.config.get(name, default)
        if value is None and not null:
            raise self.refuse(name, allowed)
        return value

    def whole(self, name: str, default: Any, low: int, high: int, *, null: bool = False) -> int | None:
        allowed = ("null or " if null else "") + f"a whole number {_between(low, high)}"
        value = self._value(name, default, null, allowed)
        if value is not None and not (_is_whole(value) and low <= value <= high):
            raise self.refuse(name, allowed)
        return value

    def number(self, name: str, default: Any, low: float, high: float, *, null: bool = False,
               low_open: bool = False, high_open: bool = False, decimal: bool = False) -> float | None:
        """A finite number from low to high; `low_open`/`high_open` leave that end out. `decimal`:
        written with a point, as transformers' strict configs take a float there and no int."""
        if low_open or high_open:
            lower, upper = "above" if low_open else "at least", "below" if high_open else "at most"
            bounds = f"{lower} {_written(low)} and {upper} {_written(high)}"
        else:
            bounds = f"between {_written(low)} and {_written(high)}"
        allowed = ("null or " if null else "") + f"a number {bounds}"
        allowed += ", written with a decimal point" if decimal else ""
        value = self._value(name, default, null, allowed)
        if value is None:
            return None
        if decimal and not isinstance(value, float):
            raise self.refuse(name, allowed)
        if not _is_number(value):
            raise self.refuse(name, allowed)
        above = low < value if low_open else low <= value
        below = value < high if high_open else value <= high
        if not (above and below):
            raise self.refuse(name, allowed)
        return value

    def flag(self, name: str, default: Any, *, null: bool = False) -> bool | None:
        allowed = "null, true or false" if null else "true or false"
        value = self._value(name, default, null, allowed)
        if value is not None and not isinstance(value, bool):
            raise self.refuse(name, allowed)
        return value

    def choice(self, name: str, default: Any, choices: Iterable[Any], *, null: bool = False, fold_case: bool = False):
        choices = tuple(choices)
        names = ", ".join(shown(c) for c in choices)
        allowed = ("null or " if null else "") + (f"one of {names}" if len(choices) > 1 else names)
        value = self._value(name, default, null, allowed)
        if value is None:
            return None
        found = value.lower() if fold_case and isinstance(value, str) else value
        if not isinstance(value, str) or found not in choices:
            raise self.refuse(name, allowed)
        return value

    def names(self, name: str, default: Any, choices: tuple[str, ...], count: int | None = None,
              what: str = "names") -> list[str]:
        """A list of names from `choices`: `count` of them, or 1 to MAX_LEVELS."""
        size = f"{count}" if count is not None else f"1 to {MAX_LEVELS}"
        allowed = f"a list of {size} {what} from {', '.join(choices)}"
        value = self._value(name, default, False, allowed)

        def good(v: Any) -> bool:
            return isinstance(v, str) and v in choices

        if not isinstance(value, (list, tuple)) or not all(good(v) for v in value):
            raise self._refuse_list(name, allowed, value, good)
        if (count is not None and len(value) != count) or not 1 <= len(value) <= MAX_LEVELS:
            raise self.refuse(name, allowed)
        return list(value)

    def wholes(self, name: str, default: Any, low: int, high: int, count: int, per: str) -> list[int]:
        """A list of `count` whole numbers from low to high, one per `per`."""
        allowed = f"a list of {count} whole numbers {_between(low, high)} (one per {per})"
        value = self._value(name, default, False, allowed)

        def good(v: Any) -> bool:
            return _is_whole(v) and low <= v <= high

        if not (isinstance(value, (list, tuple)) and len(value) == count and all(good(v) for v in value)):
            raise self._refuse_list(name, allowed, value, good)
        return list(value)

    def whole_per_level(self, name: str, default: Any, low: int, high: int, levels: int) -> list[int]:
        """One whole number for every level, or a list of one per level; returned as the list."""
        allowed = f"a whole number {_between(low, high)}, or a list of {levels} of them (one per level)"
        value = self._value(name, default, False, allowed)
        values = [value] * levels if _is_whole(value) else value

        def good(v: Any) -> bool:
            return _is_whole(v) and low <= v <= high

        if not (isinstance(values, (list, tuple)) and len(values) == levels and all(good(v) for v in values)):
            raise self._refuse_list(name, allowed, value, good)
        return list(values)

    def flag_per_level(self, name: str, default: Any, levels: int) -> None:
        allowed = f"true, false or a list of {levels} of them (one per level)"
        value = self._value(name, default, False, allowed)
        values = [value] if isinstance(value, bool) else value
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, bool) for v in values):
            raise self.refuse(name, allowed)
        if not isinstance(value, bool) and len(values) != levels:
            raise self.refuse(name, allowed)

    def nothing(self, name: str, why: str) -> None:
        """A field the explorer cannot drive when it is set: null (or absent), or the sentence saying `why`."""
        if self.config.get(name) is not None:
            raise self.refuse(name, f"null ({why})")


# -- the components ---------------------------------------------------------------------------------


def check_unet(config: Mapping[str, Any], where: str) -> None:
    """diffusers' UNet2DConditionModel: what its __init__ reads, and what the explorer's driver feeds it."""
    f = Fields(config, where)
    downs, ups = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    levels = len(f.names("down_block_types", downs, UNET_DOWN_BLOCKS, what="block types"))
    f.names("up_block_types", ups, UNET_UP_BLOCKS, levels, "block types (one per down block)")
    channels = f.wholes("block_out_channels", [320, 640, 1280, 1280], 1, MAX_CHANNELS, levels, "level")
    f.choice("mid_block_type", "UNetMidBlock2DCrossAttn", UNET_MID_BLOCKS, null=True)
    layers = f.whole_per_level("layers_per_block", 2, 1, MAX_LAYERS, levels)
    _transformer_layers(f, layers)
    groups = f.whole("norm_num_groups", 32, 1, MAX_CHANNELS)
    _divides(f, "norm_num_groups", [groups] * levels, channels, "GroupNorm splits the channels into equal groups")
    heads = f.whole_per_level("attention_head_dim", 8, 1, MAX_CHANNELS, levels)
    _divides(f, "attention_head_dim", heads, channels, "the heads share each level's channels")
    f.nothing("num_attention_heads", "diffusers reads the heads from attention_head_dim")
    f.whole("sample_size", 64, 1, MAX_UNET_SAMPLE)
    padding = config.get("downsample_padding", 1)
    if not _is_whole(padding) or padding != 1:  # without it, a latent of 1 px would downsample to nothing
        raise f.refuse("downsample_padding", "1 (each downsampling pads by a pixel, so that any size can be halved)")
    f.whole("in_channels", 4, 1, MAX_LATENT_CHANNELS)
    f.whole("out_channels", 4, 1, MAX_LATENT_CHANNELS)
    cross = f.whole("cross_attention_dim", 1280, 1, MAX_CHANNELS)
    f.choice("act_fn", "silu", DIFFUSERS_ACTIVATIONS, fold_case=True)
    f.choice("time_embedding_act_fn", None, DIFFUSERS_ACTIVATIONS, null=True, fold_case=True)
    f.choice("timestep_post_act", None, DIFFUSERS_ACTIVATIONS, null=True, fold_case=True)
    f.number("norm_eps", 1e-5, 0, 1, low_open=True)
    f.number("dropout", 0.0, 0, 1, high_open=True)
    f.number("mid_block_scale_factor", 1, 0, 1e3, low_open=True)
    f.number("resnet_out_scale_factor", 1.0, 0, 1e3, low_open=True)
    f.number("freq_shift", 0, 0, 1)
    for name in ("conv_in_kernel", "conv_out_kernel"):
        if f.whole(name, 3, 1, 7) % 2 == 0:
            raise f.refuse(name, "an odd whole number between 1 and 7 (the padding keeps the size)")
    for name in ("center_input_sample", "flip_sin_to_cos", "upcast_attention", "use_linear_projection",
                 "resnet_skip_time_act"):
        f.flag(name, False)
    f.flag_per_level("only_cross_attention", False, levels)
    f.flag("mid_block_only_cross_attention", None, null=True)
    f.choice("resnet_time_scale_shift", "default", ("default", "scale_shift"))
    f.choice("attention_type", "default", ("default",))
    if f.choice("cross_attention_norm", None, ("layer_norm", "group_norm"), null=True) == "group_norm" and cross % 32:
        raise f.refuse("cross_attention_norm", 'null or "layer_norm" when cross_attention_dim is no multiple of 32 '
                       "(the group norm has 32 groups)")
    f.whole("time_cond_proj_dim", None, 1, MAX_CHANNELS, null=True)
    time_dim = f.whole("time_embedding_dim", None, 1, MAX_CHANNELS, null=True)
    fourier = f.choice("time_embedding_type", "positional", ("positional", "fourier")) == "fourier"
    if fourier and (time_dim or 2 * channels[0]) % 2:
        raise f.refuse("time_embedding_dim", "an even whole number for Fourier time embeddings (sines, cosines)")
    f.whole("addition_embed_type_num_heads", 64, 1, MAX_CHANNELS)
    _added_conditioning(f)
    no_labels = "the explorer gives the UNet no class labels, as SD does"
    direct = "the explorer feeds the text encoder's states to the attention directly, as SD does"
    f.nothing("class_embed_type", no_labels)
    f.nothing("num_class_embeds", no_labels)
    f.nothing("encoder_hid_dim_type", direct)
    f.nothing("encoder_hid_dim", direct)
    if f.flag("class_embeddings_concat", False):
        raise f.refuse("class_embeddings_concat", f"false ({no_labels})")
    if f.flag("dual_cross_attention", False):
        raise f.refuse("dual_cross_attention", "false (the explorer feeds one prompt embedding)")


def _transformer_layers(f: Fields, layers: list[int]) -> None:
    """transformer_layers_per_block: one count for every level, one per level, or (an asymmetric
    UNet, such as SSD-1B) per level a list of one per layer, with reverse_transformer_layers_per_block
    giving the up blocks' own."""
    name, levels = "transformer_layers_per_block", len(layers)
    value = f.config.get(name, 1)
    allowed = (f"a whole number {_between(1, MAX_LAYERS)}, or a list of {levels} (one per level), each a whole number "
               "or a list of one per layer")

    def count(v: Any) -> bool:
        return _is_whole(v) and 1 <= v <= MAX_LAYERS

    def per_layer(v: Any, n: int) -> bool:
        return isinstance(v, list) and len(v) == n and all(count(x) for x in v)

    unread = "it is read only with a list of lists in transformer_layers_per_block"
    if _is_whole(value):
        if not count(value):
            raise f.refuse(name, allowed)
        f.nothing("reverse_transformer_layers_per_block", unread)
        return
    if not (isinstance(value, list) and len(value) == levels
            and all(count(v) or per_layer(v, n) for v, n in zip(value, layers))):
        raise f.refuse(name, allowed)
    if not any(isinstance(v, list) for v in value):
        f.nothing("reverse_transformer_layers_per_block", unread)
        return
    reverse = f.config.get("reverse_transformer_layers_per_block")
    up_layers = [n + 1 for n in reversed(layers)]
    if not (isinstance(reverse, list) and len(reverse) == levels
            and all(per_layer(v, n) for v, n in zip(reverse, up_layers))):
        raise f.refuse("reverse_transformer_layers_per_block",
                       f"a list of {levels} lists, one per up block, of {', '.join(map(str, up_layers))} whole numbers "
                       f"{_between(1, MAX_LAYERS)} (transformer_layers_per_block has lists)")


def _divides(f: Fields, name: str, divisors: list[int], channels: list[int], why: str) -> None:
    for divisor, width in zip(divisors, channels):
        if width % divisor:
            value = f.config.get(name, divisor)
            raise ExplorerError(
                f"{f.where}: {name} must divide the channels of every level ({why}), got {shown(value)} "
                f"for block_out_channels {shown(channels)}."
            )


def _added_conditioning(f: Fields) -> None:
    """addition_embed_type: none (SD1.x, SD2.x) or SDXL's "text_time", whose pooled text embedding
    is what projection_class_embeddings_input_dim leaves beside the six time ids."""
    kind = f.config.get("addition_embed_type")
    f.whole("projection_class_embeddings_input_dim", None, 1, MAX_CHANNELS, null=True)
    if kind is None:
        f.whole("addition_time_embed_dim", None, 1, MAX_CHANNELS, null=True)
        return
    if kind != "text_time":
        raise ExplorerError(
            f"{f.where}: addition_embed_type = {shown(kind)} is an extra conditioning the explorer cannot drive yet "
            '(it drives none, as SD1.5 and SD2.x, and "text_time", as SDXL); its VAE and text encoder explore as usual.'
        )
    time_dim = f.whole("addition_time_embed_dim", None, 1, MAX_CHANNELS)
    total = f.config.get("projection_class_embeddings_input_dim")
    if total is None or total <= 6 * time_dim:
        raise f.refuse("projection_class_embeddings_input_dim",
                       f"more than 6 x addition_time_embed_dim = {6 * time_dim} for \"text_time\" "
                       "(the pooled text embedding, then the six time ids)")


def check_vae(config: Mapping[str, Any], where: str) -> None:
    """diffusers' AutoencoderKL: its encoder, decoder and the numbers the explorer's driver reads."""
    f = Fields(config, where)
    down = f.names("down_block_types", ["DownEncoderBlock2D"], VAE_DOWN_BLOCKS, what="block types")
    levels = len(down)
    f.names("up_block_types", ["UpDecoderBlock2D"], VAE_UP_BLOCKS, levels, "block types (one per down block)")
    channels = f.wholes("block_out_channels", [64], 1, MAX_CHANNELS, levels, "level")
    f.whole("layers_per_block", 1, 1, MAX_LAYERS)
    groups = f.whole("norm_num_groups", 32, 1, MAX_CHANNELS)
    _divides(f, "norm_num_groups", [groups] * levels, channels, "GroupNorm splits the channels into equal groups")
    f.whole("in_channels", 3, 1, MAX_IMAGE_CHANNELS)
    f.whole("out_channels", 3, 1, MAX_IMAGE_CHANNELS)
    latent = f.whole("latent_channels", 4, 1, MAX_LATENT_CHANNELS)
    # The encoder downsamples without padding: a side of 1 px would become none, so each of the
    # levels - 1 downsamplings needs 2 px at least.
    smallest = 2 ** (levels - 1)
    if f.whole("sample_size", 512, 1, MAX_VAE_SAMPLE) < smallest:
        raise f.refuse("sample_size", f"a whole number between {smallest} and {MAX_VAE_SAMPLE:,} (the image side in "
                       f"pixels: each of the encoder's {levels - 1} downsamplings halves it)")
    f.choice("act_fn", "silu", DIFFUSERS_ACTIVATIONS, fold_case=True)
    f.number("scaling_factor", 0.18215, 0, 1e6, low_open=True)
    f.number("shift_factor", None, -1e6, 1e6, null=True)
    for name, low in (("latents_mean", -1e6), ("latents_std", 0)):
        value = config.get(name)
        if value is not None and not (isinstance(value, list) and len(value) == latent
                                      and all(_is_number(v) and v > low for v in value)):
            positive = "positive " if low == 0 else ""
            raise f.refuse(name, f"null or a list of {latent} {positive}numbers (one per latent channel)")
    for name in ("force_upcast", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention"):
        f.flag(name, True)


def check_text_encoder(config: Mapping[str, Any], where: str, projection: bool = False) -> None:
    """transformers' CLIPTextModel (CLIPTextModelWithProjection with `projection`): the fields of
    CLIPTextConfig its modules read, and the positions the explorer's tokenizer pads to."""
    f = Fields(config, where)
    f.whole("vocab_size", 49408, 1, MAX_VOCABULARY)
    hidden = f.whole("hidden_size", 512, 1, MAX_CHANNELS)
    f.whole("intermediate_size", 2048, 1, 4 * MAX_CHANNELS)
    f.whole("num_hidden_layers", 12, 1, MAX_TEXT_LAYERS)
    heads = f.whole("num_attention_heads", 8, 1, MAX_CHANNELS)
    if hidden % heads:
        raise f.refuse("num_attention_heads", f"a whole number dividing hidden_size {hidden} (the heads share it)")
    f.whole("max_position_embeddings", 77, 2, MAX_POSITIONS)
    f.whole("projection_dim", 512, 1, MAX_CHANNELS, null=not projection)
    f.choice("hidden_act", "quick_gelu", TRANSFORMERS_ACTIVATIONS)
    f.number("layer_norm_eps", 1e-5, 0, 1, low_open=True, decimal=True)
    f.number("attention_dropout", 0.0, 0, 1, high_open=True)
    f.number("initializer_range", 0.02, 0, 1e3, decimal=True)
    f.number("initializer_factor", 1.0, 0, 1e3, decimal=True)
    for name, default in (("pad_token_id", 1), ("bos_token_id", 49406), ("eos_token_id", 49407)):
        f.whole(name, default, 0, MAX_VOCABULARY, null=name != "eos_token_id")
    for name in ("output_hidden_states", "output_attentions"):
        f.flag(name, False, null=True)
    f.flag("is_encoder_decoder", False)
    f.whole("chunk_size_feed_forward", 0, 0, MAX_POSITIONS)
    for name in ("dtype", "torch_dtype"):
        f.choice(name, None, ("float32", "float16", "bfloat16", "float64"), null=True)
    if config.get("return_dict", True) is not True:
        raise f.refuse("return_dict", "true (the explorer reads the outputs by name)")


def check_scheduler(config: Mapping[str, Any], where: str) -> None:
    """A noise schedule for diffusers' PNDM, DDIM and Euler schedulers (`explore generate --scheduler`
    may give the model's config to any of the three)."""
    from importlib.util import find_spec

    f = Fields(config, where)
    if not isinstance(config.get("_class_name", ""), str):
        raise f.refuse("_class_name", "a class name, a string (PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler)")
    total = f.whole("num_train_timesteps", 1000, 2, MAX_TIMESTEPS)
    start = f.number("beta_start", 0.0001, 0, 1, low_open=True, high_open=True)
    f.number("beta_end", 0.02, start, 1, high_open=True)
    f.choice("beta_schedule", "linear", BETA_SCHEDULES)
    betas = config.get("trained_betas")
    if betas is not None and not (isinstance(betas, list) and len(betas) == total
                                  and all(_is_number(b) and 0 < b < 1 for b in betas)):
        raise f.refuse("trained_betas", f"null or a list of num_train_timesteps = {total} numbers above 0 and below 1")
    f.choice("prediction_type", "epsilon", ("epsilon", "v_prediction"))
    f.choice("timestep_spacing", "leading", ("linspace", "leading", "trailing"))
    f.whole("steps_offset", 0, 0, min(MAX_STEPS_OFFSET, total - 1))
    for name in ("set_alpha_to_one", "skip_prk_steps", "clip_sample", "thresholding", "rescale_betas_zero_snr"):
        f.flag(name, False)
    f.number("clip_sample_range", 1.0, 0, 1e6, low_open=True)
    f.number("sample_max_value", 1.0, 0, 1e6, low_open=True)
    f.number("dynamic_thresholding_ratio", 0.995, 0, 1, low_open=True)
    f.choice("interpolation_type", "linear", ("linear", "log_linear"))
    f.choice("timestep_type", "discrete", ("discrete", "continuous"))
    f.choice("final_sigmas_type", "zero", ("zero", "sigma_min"))
    low = f.number("sigma_min", None, 0, 1e6, null=True, low_open=True)
    f.number("sigma_max", None, low or 0, 1e6, null=True, low_open=True)
    spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
    sigmas = [name for name in spacings if f.flag(name, False)]
    if len(sigmas) > 1:
        raise f.refuse(sigmas[1], f"false when {sigmas[0]} is true (one way of spacing the sigmas)")
    if sigmas == ["use_beta_sigmas"] and find_spec("scipy") is None:
        raise f.refuse("use_beta_sigmas", "false here: beta sigmas need scipy, which is not installed")


CHECKS = {"unet": check_unet, "vae": check_vae, "clip": check_text_encoder}


def check_config(component: str, config: Mapping[str, Any], where: str) -> None:
    """One sentence for the first value of `config` that the component (a name of
    explorer.components, "clip_2" too) cannot be built or driven with; nothing when all are fine."""
    if component == "clip_2":
        check_text_encoder(config, where, projection=True)
    else:
        CHECKS[component](config, where)
