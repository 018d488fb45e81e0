"""Hostile values inside well-formed configs: each is one sentence naming the file and the field,
exit 2, before anything is built; weights that would not fit are refused before they are allocated.

The property-based tests draw values for every config field the explorer, diffusers or transformers
reads, for the UNet, the VAE, the text encoders and the scheduler. By default a few dozen examples
each; `pytest --runslow tests/test_config_values.py -k thoroughly` draws 2,000 per component.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import explore, refused_in_one_sentence
from explorer import configs
from explorer.components import component as entry
from explorer.loading import SHIPPED, Source, available_memory, check_seed, scheduler_config
from explorer.specs import PRESETS, TINY

FEW, MANY = 15, 2000  # examples per component: the default suite, and --runslow


def fuzzing(examples: int):
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def model_folder(root: Path, **configs_by_folder) -> Path:
    """A diffusers folder holding the given configs (folder name -> config), and no weights."""
    for folder, config in configs_by_folder.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        name = "scheduler_config.json" if folder == "scheduler" else "config.json"
        (root / folder / name).write_text(json.dumps(config))
    return root


def tiny(folder: str, **changes) -> dict:
    return {**TINY.models[folder], **changes}


def generate(model: Path | str, out: Path, *options: str):
    return explore("generate", "-p", "a red circle", "--model", str(model), "--steps", "1", "--out", str(out), *options)


def only_error(result) -> str:
    refused_in_one_sentence(result)
    return next(line for line in result.stderr.splitlines() if line.startswith("Error:"))


@pytest.fixture
def micro_copy(tmp_path) -> Path:
    """The shipped micro model, copied: real weights to spoil."""
    folder = tmp_path / "micro"
    shutil.copytree(SHIPPED["micro"], folder)
    return folder


# -- hostile values, one by one ------------------------------------------------------------------------

# (field, value, how the sentence shows what is wrong)
UNET_CASES = [
    ("block_out_channels", "abc", 'got "abc".'),
    ("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "NoSuchDownBlock2D", "DownBlock2D"],
     'got "NoSuchDownBlock2D" in it.'),
    ("block_out_channels", [10**12, 10**12, 10**12, 10**12], "got 1000000000000 in it."),
    ("layers_per_block", 10**9, "got 1000000000."),
    ("sample_size", 10**9, "got 1000000000."),
    ("norm_num_groups", 0, "got 0."),
]
CLIP_CASES = [("hidden_act", "no_such_activation", 'got "no_such_activation".'), ("hidden_size", -16, "got -16.")]


@pytest.mark.parametrize("field, value, got", UNET_CASES + CLIP_CASES, ids=lambda v: str(v)[:30])
def test_a_hostile_config_value_is_one_sentence_naming_the_field(tmp_path, field, value, got):
    component, folder = ("unet", "unet") if (field, value, got) in UNET_CASES else ("clip", "text_encoder")
    model_folder(tmp_path, **{folder: tiny(folder, **{field: value})})
    started = time.perf_counter()
    for weights in ("meta", "random"):
        error = only_error(explore(component, "--model", str(tmp_path), "--weights", weights, "--depth", "0"))
        assert f"{folder}/config.json: {field} must be" in error and error.endswith(got)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("field, value, got", UNET_CASES[:2] + CLIP_CASES, ids=lambda v: str(v)[:30])
def test_generate_refuses_a_hostile_config_value_before_it_builds_anything(micro_copy, tmp_path, field, value, got):
    folder = "unet" if (field, value, got) in UNET_CASES else "text_encoder"
    config = json.loads((micro_copy / folder / "config.json").read_text())
    (micro_copy / folder / "config.json").write_text(json.dumps({**config, field: value}))
    out = tmp_path / "run"
    error = only_error(generate(micro_copy, out))
    assert f"{folder}/config.json: {field} must be" in error and error.endswith(got) and not out.exists()


def test_a_group_count_must_divide_the_channels(tmp_path):
    model_folder(tmp_path, unet=tiny("unet", norm_num_groups=3))
    error = only_error(explore("unet", "--model", str(tmp_path)))
    assert "norm_num_groups must divide the channels of every level" in error and "[8, 16, 32, 32]" in error


def test_a_scheduler_value_is_one_sentence_naming_the_field(tmp_path):
    folder = model_folder(tmp_path, scheduler={**PRESETS["sd15"].scheduler, "num_train_timesteps": "abc"})
    with pytest.raises(configs.ExplorerError, match=r"scheduler_config.json: num_train_timesteps must be a whole"):
        scheduler_config(Source("folder", str(folder), path=folder))


def test_generate_refuses_a_hostile_scheduler_value(micro_copy, tmp_path):
    path = micro_copy / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_train_timesteps": "abc"}))
    error = only_error(generate(micro_copy, tmp_path / "run"))
    assert "num_train_timesteps must be" in error and not (tmp_path / "run").exists()


def test_generate_refuses_a_seed_torch_does_not_take(tmp_path):
    error = only_error(generate("micro", tmp_path / "run", "--seed", str(2**70)))
    assert error.startswith("Error: --seed must be a whole number") and not (tmp_path / "run").exists()


def test_generate_takes_the_largest_seed(tmp_path):
    result = generate("micro", tmp_path / "run", "--seed", str(2**64 - 1))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("dtype", ["int8", "bool"])
def test_a_weight_of_integers_is_one_sentence_naming_the_tensor(micro_copy, dtype):
    import torch
    from safetensors.torch import load_file, save_file

    path = micro_copy / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["conv_in.weight"] = state["conv_in.weight"].to(getattr(torch, dtype))
    save_file(state, str(path))
    for weights in ("pretrained", "meta"):  # the header alone says it
        error = only_error(explore("unet", "--model", str(micro_copy), "--weights", weights, "--depth", "0"))
        assert f"conv_in.weight is stored as {dtype}" in error and "floating-point" in error


@pytest.mark.parametrize("command", ["unet", "vae", "clip"])
@pytest.mark.parametrize("seed", [2**70, 2**64, -1])
def test_a_seed_torch_does_not_take_is_an_option_error(command, seed):
    error = only_error(explore(command, "--weights", "random", "--model", "tiny", "--seed", str(seed)))
    assert error.startswith("Error: --seed must be a whole number between 0 and 18446744073709551615")
    assert error.endswith(f"got {seed}.")


def test_the_largest_seed_works_for_both_text_encoders(tmp_path):
    """SDXL's second text encoder takes the seed after the first's: past 2**64 - 1 it wraps around."""
    check_seed(2**64 - 1)
    second = {**tiny("text_encoder"), "_class_name": "CLIPTextModelWithProjection"}
    model_folder(tmp_path, text_encoder=tiny("text_encoder"), text_encoder_2=second)
    result = explore("clip", "--model", str(tmp_path), "--weights", "random", "--seed", str(2**64 - 1), "--depth", "0")
    assert result.exit_code == 0, result.output


# -- memory --------------------------------------------------------------------------------------------


def peak_memory_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: kB


def test_random_weights_that_do_not_fit_are_refused_before_they_are_allocated(tmp_path, monkeypatch):
    model_folder(tmp_path, unet=tiny("unet", block_out_channels=[4096, 4096, 8192, 8192], norm_num_groups=32))
    monkeypatch.setenv("SD_EXPLORER_MEMORY_GB", "2")
    before, started = peak_memory_gb(), time.perf_counter()
    error = only_error(explore("unet", "--model", str(tmp_path), "--weights", "random"))
    assert "Random weights for the unet need 155.8 GB" in error and "only 2.0 GB are available" in error
    assert peak_memory_gb() - before < 1 and time.perf_counter() - started < 10


def test_pretrained_weights_that_do_not_fit_are_refused_before_they_are_read(monkeypatch):
    monkeypatch.setenv("SD_EXPLORER_MEMORY_GB", "0.001")
    error = only_error(explore("unet", "--model", "micro", "--weights", "pretrained"))
    assert "The pretrained unet weights of micro need" in error and "only 0.0 GB are available" in error
    monkeypatch.setenv("SD_EXPLORER_MEMORY_GB", "1")
    assert explore("unet", "--model", "micro", "--weights", "pretrained", "--depth", "0").exit_code == 0


def test_the_available_memory_is_what_the_system_says_unless_set(monkeypatch):
    found = available_memory()
    assert found is None or found > 0
    monkeypatch.setenv("SD_EXPLORER_MEMORY_GB", "1.5")
    assert available_memory() == 1_500_000_000
    monkeypatch.setenv("SD_EXPLORER_MEMORY_GB", "lots")
    error = only_error(explore("unet", "--model", "tiny", "--weights", "random"))
    assert "SD_EXPLORER_MEMORY_GB must be a number of gigabytes" in error


# -- what the checks accept -----------------------------------------------------------------------------


def test_every_shipped_config_passes_the_checks():
    parts = {"unet": "unet", "vae": "vae", "text_encoder": "clip", "text_encoder_2": "clip_2"}
    for name, preset in PRESETS.items():
        for folder, config in preset.models.items():
            configs.check_config(parts[folder], dict(config), f"{name}/{folder}")
        configs.check_scheduler(dict(preset.scheduler), f"{name}/scheduler")
    micro = SHIPPED["micro"]
    for folder in ("unet", "vae", "text_encoder"):
        configs.check_config(parts[folder], json.loads((micro / folder / "config.json").read_text()), folder)
    configs.check_scheduler(json.loads((micro / "scheduler" / "scheduler_config.json").read_text()), "scheduler")


def test_the_names_accepted_are_the_libraries_own():
    from diffusers.models.activations import ACT2CLS as diffusers_activations
    from transformers.activations import ACT2CLS as transformers_activations

    assert set(configs.DIFFUSERS_ACTIVATIONS) <= set(diffusers_activations)
    assert set(configs.TRANSFORMERS_ACTIVATIONS) <= set(transformers_activations)


def test_every_block_type_accepted_runs(tmp_path):
    """The block types the checks accept, mixed in one U (each mid block in turn), build and run a
    forward pass at every size, odd latents and 1-pixel ones too: on the meta device, which
    computes every shape, what a wrong block type breaks."""
    unet = tiny("unet", down_block_types=[*configs.UNET_DOWN_BLOCKS] * 2, up_block_types=[*configs.UNET_UP_BLOCKS] * 2)
    vae = tiny("vae", down_block_types=[*configs.VAE_DOWN_BLOCKS] * 2, up_block_types=[*configs.VAE_UP_BLOCKS] * 2)
    cases = [("unet", {**unet, "mid_block_type": name}) for name in (*configs.UNET_MID_BLOCKS, None)] + [("vae", vae)]
    for k, (component, config) in enumerate(cases):
        root = model_folder(tmp_path / str(k), **{entry(component).folder: config})
        size = "72" if component == "unet" else "64"  # a latent of 9: odd at every level
        result = explore(component, "--model", str(root), "--depth", "0", "--height", size, "--width", size)
        assert result.exit_code == 0, (config, result.output)
    root = model_folder(tmp_path / "smallest", unet={**unet, "sample_size": 1})  # a latent of 1 px
    assert explore("unet", "--model", str(root), "--depth", "0").exit_code == 0


def test_every_activation_accepted_builds():
    """Activations are looked up when the model is built."""
    from explorer.loading import build

    for name in configs.TRANSFORMERS_ACTIVATIONS:
        build("clip", tiny("text_encoder", hidden_act=name))
    for name in configs.DIFFUSERS_ACTIVATIONS:
        build("unet", tiny("unet", act_fn=name, time_embedding_act_fn=name))
        build("vae", tiny("vae", act_fn=name))


def test_an_image_larger_than_the_explorer_traces_asks_for_a_size(tmp_path):
    model_folder(tmp_path, unet=tiny("unet", sample_size=1000))
    error = only_error(explore("unet", "--model", str(tmp_path)))
    assert "unet/config.json: sample_size 1000 means images of 8000 px" in error and "--height" in error
    assert explore("unet", "--model", str(tmp_path), "--height", "64", "--width", "64", "--depth", "0").exit_code == 0


def test_a_vocabulary_smaller_than_the_tokenizers_is_refused_for_real_weights(tmp_path):
    model_folder(tmp_path, text_encoder=tiny("text_encoder", vocab_size=100))
    assert explore("clip", "--model", str(tmp_path), "--depth", "0").exit_code == 0  # shapes alone: no lookup
    error = only_error(explore("clip", "--model", str(tmp_path), "--weights", "random"))
    assert "vocab_size must be at least 49,408" in error


def test_the_second_text_encoder_reads_as_many_positions_as_the_first(tmp_path):
    second = {**tiny("text_encoder"), "_class_name": "CLIPTextModelWithProjection", "max_position_embeddings": 16}
    model_folder(tmp_path, text_encoder=tiny("text_encoder"), text_encoder_2=second)
    error = only_error(explore("clip", "--model", str(tmp_path)))
    assert "text_encoder_2/config.json: max_position_embeddings must be at least the first text encoder's 77" in error


# -- every field, drawn ----------------------------------------------------------------------------------

PLANTED = "sdx_planted"  # a module that must never be imported, whatever a config names
HOSTILE = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["abc", "", "Nope2D", PLANTED, f"{PLANTED}.Evil", "SILU", "gelu ", "../x", "None"]),
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, -1, -16, 10**9, 10**12, 2**63, 2**64, 2**70, 10**100]),
    st.floats(),
    st.sampled_from([2.0, 8.0, 0.5, -0.0, 1e308]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-2, 10**6) | st.text(max_size=5) | st.none() | st.floats(), max_size=6),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

BLOCKS_DOWN = [["CrossAttnDownBlock2D"] * 4, ["DownBlock2D"] * 4, ["CrossAttnDownBlock2D", "DownBlock2D"],
               ["AttnDownBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D"],
               ["KDownBlock2D"] * 4, ["SkipDownBlock2D"] * 4, ["DownEncoderBlock2D"] * 4]
BLOCKS_UP = [["CrossAttnUpBlock2D"] * 4, ["UpBlock2D"] * 4, ["UpBlock2D", "CrossAttnUpBlock2D"],
             ["AttnUpBlock2D", "ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D", "UpBlock2D"],
             ["KUpBlock2D"] * 4, ["SkipUpBlock2D"] * 4, ["UpDecoderBlock2D"] * 4]
FLAGS = [True, False]
UNET_FIELDS = {
    "_class_name": ["UNet2DConditionModel", "UNet2DModel", f"{PLANTED}.Evil", None],
    "down_block_types": BLOCKS_DOWN,
    "up_block_types": BLOCKS_UP,
    "mid_block_type": ["UNetMidBlock2DCrossAttn", "UNetMidBlock2D", "UNetMidBlock2DSimpleCrossAttn", None, "Mid2D"],
    "block_out_channels": [[8, 16, 32, 32], [4, 4, 4, 4], [8, 8], [12, 16, 32, 32], [8, 16, 32, 32, 64], [16] * 8],
    "layers_per_block": [1, 2, 3, [1, 2, 1, 2], [1, 2], 16],
    "transformer_layers_per_block": [1, 2, [1, 2, 1, 2], [1, [1, 1], [2, 2], 1], [[1, 2]] * 4, [1, 2]],
    "reverse_transformer_layers_per_block": [None, [[1, 1, 1]] * 4, [[1, 1]] * 4],
    "norm_num_groups": [1, 2, 4, 8, 3, 32],
    "attention_head_dim": [1, 2, 4, 8, [1, 2, 4, 8], [2, 2], 64],
    "num_attention_heads": [None, 2],
    "sample_size": [1, 2, 8, 16, 64, 256, 300],
    "in_channels": [1, 4, 9],
    "out_channels": [1, 4],
    "cross_attention_dim": [16, 32, 8, 1, [16, 16, 16, 16]],
    "act_fn": ["silu", "gelu", "mish", "relu", "swish", "SiLU", "tanh", "quick_gelu"],
    "time_embedding_act_fn": [None, "silu", "gelu", "tanh"],
    "timestep_post_act": [None, "silu", "mish"],
    "norm_eps": [1e-6, 1e-5, 0.1, 1],
    "dropout": [0.0, 0.1, 0.5],
    "mid_block_scale_factor": [1, 0.5, 2],
    "resnet_out_scale_factor": [1.0, 2.0],
    "freq_shift": [0, 1, 0.5],
    "downsample_padding": [0, 1],
    "conv_in_kernel": [1, 3, 5, 7, 2],
    "conv_out_kernel": [1, 3, 5, 7, 4],
    "center_input_sample": FLAGS,
    "flip_sin_to_cos": FLAGS,
    "upcast_attention": FLAGS,
    "use_linear_projection": FLAGS,
    "resnet_skip_time_act": FLAGS,
    "class_embeddings_concat": FLAGS,
    "only_cross_attention": [True, False, [True, False, True, False], [True]],
    "mid_block_only_cross_attention": [None, True, False],
    "resnet_time_scale_shift": ["default", "scale_shift", "ada_group", "spatial"],
    "attention_type": ["default", "gated"],
    "cross_attention_norm": [None, "layer_norm", "group_norm"],
    "time_cond_proj_dim": [None, 4, 16],
    "time_embedding_dim": [None, 16, 17, 64],
    "time_embedding_type": ["positional", "fourier", "learned"],
    "addition_embed_type_num_heads": [64, 1],
    "addition_embed_type": [None, "text_time", "text", "image"],
    "addition_time_embed_dim": [None, 8, 4],
    "projection_class_embeddings_input_dim": [None, 64, 48, 16],
    "class_embed_type": [None, "timestep"],
    "num_class_embeds": [None, 10],
    "encoder_hid_dim_type": [None, "text_proj"],
    "encoder_hid_dim": [None, 16],
    "dual_cross_attention": FLAGS,
}
VAE_FIELDS = {
    "_class_name": ["AutoencoderKL", "AutoencoderTiny", f"{PLANTED}.Evil", None],
    "down_block_types": [["DownEncoderBlock2D"] * 4, ["AttnDownEncoderBlock2D"] * 4, ["DownEncoderBlock2D"] * 2,
                         ["DownEncoderBlock2D"] * 8, ["DownBlock2D"] * 4],
    "up_block_types": [["UpDecoderBlock2D"] * 4, ["AttnUpDecoderBlock2D"] * 4, ["UpDecoderBlock2D"] * 2,
                       ["UpBlock2D"] * 4],
    "block_out_channels": [[8, 16, 32, 32], [4, 4], [8, 16, 32, 32, 32, 32, 32, 32], [6, 16, 32, 32]],
    "layers_per_block": [1, 2, [1, 2, 1, 2]],
    "norm_num_groups": [1, 2, 4, 3],
    "in_channels": [1, 3, 4],
    "out_channels": [1, 3],
    "latent_channels": [1, 4, 16],
    "sample_size": [1, 8, 32, 64, 128],
    "act_fn": ["silu", "gelu", "relu", "Mish", "tanh"],
    "scaling_factor": [0.18215, 1.0, 0, -1],
    "shift_factor": [None, 0.1],
    "latents_mean": [None, [0.0] * 4, [0.0] * 3],
    "latents_std": [None, [1.0] * 4, [0.0] * 4],
    "force_upcast": FLAGS,
    "use_quant_conv": FLAGS,
    "use_post_quant_conv": FLAGS,
    "mid_block_add_attention": FLAGS,
}
CLIP_FIELDS = {
    "architectures": [["CLIPTextModel"], ["CLIPTextModelWithProjection"], [f"{PLANTED}.Evil"], [], None],
    "vocab_size": [49408, 50000, 100],
    "hidden_size": [16, 32, 12, 15],
    "intermediate_size": [32, 1, 64],
    "projection_dim": [16, 8, None],
    "num_hidden_layers": [1, 2, 5],
    "num_attention_heads": [1, 2, 4, 3],
    "max_position_embeddings": [77, 100, 16, 2, 1],
    "hidden_act": ["quick_gelu", "gelu", "relu", "gelu_new", "silu", "tanh", "xielu", "prelu"],
    "layer_norm_eps": [1e-5, 0.5, None, 1],
    "attention_dropout": [0.0, 0.5],
    "initializer_range": [0.02, 1.0],
    "initializer_factor": [1.0, 0.5, 0, 1],
    "pad_token_id": [1, 0, None, 49407],
    "bos_token_id": [0, 49406, None],
    "eos_token_id": [2, 49407, 0],
    "output_hidden_states": [None, True, False],
    "output_attentions": [None, True, False],
    "return_dict": [None, True, False],
    "is_encoder_decoder": FLAGS,
    "chunk_size_feed_forward": [0, 1],
    "dtype": [None, "float32", "float16", "bfloat16", "int8"],
    "torch_dtype": [None, "float32", "float16"],
}
SCHEDULER_FIELDS = {
    "_class_name": ["PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", f"{PLANTED}.Evil"],
    "num_train_timesteps": [2, 10, 1000, 10_000],
    "beta_start": [0.00085, 0.0001, 0.5],
    "beta_end": [0.012, 0.02, 0.9, 0.0001],
    "beta_schedule": list(configs.BETA_SCHEDULES) + ["cosine"],
    "trained_betas": [None, [0.01] * 1000, [0.01] * 10],
    "prediction_type": ["epsilon", "v_prediction", "sample"],
    "timestep_spacing": ["linspace", "leading", "trailing"],
    "steps_offset": [0, 1, 100],
    "set_alpha_to_one": FLAGS,
    "skip_prk_steps": FLAGS,
    "clip_sample": FLAGS,
    "thresholding": FLAGS,
    "rescale_betas_zero_snr": FLAGS,
    "clip_sample_range": [1.0, 0.5],
    "sample_max_value": [1.0, 2.0],
    "dynamic_thresholding_ratio": [0.995, 0.5],
    "interpolation_type": ["linear", "log_linear"],
    "timestep_type": ["discrete", "continuous"],
    "final_sigmas_type": ["zero", "sigma_min"],
    "sigma_min": [None, 0.01],
    "sigma_max": [None, 10.0, 0.001],
    "use_karras_sigmas": [None, True, False],
    "use_exponential_sigmas": [None, True, False],
    "use_beta_sigmas": [None, True, False],
}


def changes(fields: dict[str, list], max_size: int = 4):
    """A few fields of a config, each given a plausible value (often valid, sometimes not) or a hostile one."""
    def value_of(name: str):
        return st.tuples(st.just(name), st.sampled_from(fields[name]) | HOSTILE)

    return st.lists(st.sampled_from(sorted(fields)).flatmap(value_of), min_size=1, max_size=max_size).map(dict)


@pytest.fixture
def planted(tmp_path_factory, monkeypatch):
    """A module named like a value the strategies draw: importing it would leave a mark."""
    folder = tmp_path_factory.mktemp("planted")
    (folder / f"{PLANTED}.py").write_text("import builtins\nbuiltins.SDX_PLANTED_RAN = True\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("SD_EXPLORER_MEMORY_GB", "1")  # random weights of a drawn config: 1 GB at most
    yield
    assert PLANTED not in sys.modules and not hasattr(__builtins__, "SDX_PLANTED_RAN")


def explored_safely(component: str, folder: Path, weights: str, *extra: str) -> None:
    """`explore COMPONENT --model FOLDER`: works, or one sentence from the checks (exit 2) in a
    few seconds, writing nothing, with no traceback and without memory growing by a gigabyte."""
    from explorer.cache import cache_dir

    files, cached = sorted(folder.rglob("*")), set(cache_dir().glob("*"))
    before, started = peak_memory_gb(), time.perf_counter()
    result = explore(component, "--model", str(folder), "--weights", weights, "--depth", "0", *extra)
    if result.exit_code != 0:
        error = only_error(result)
        assert "cannot be built as a" not in error, f"the checks let through what the library refused: {error}"
        assert set(cache_dir().glob("*")) == cached  # nothing half-written
    assert sorted(folder.rglob("*")) == files
    assert time.perf_counter() - started < 20, f"{time.perf_counter() - started:.1f} s"
    assert peak_memory_gb() - before < 1


def _unet(tmp_path_factory, examples: int) -> None:
    @fuzzing(examples)
    @given(drawn=changes(UNET_FIELDS), random=st.booleans())
    def one(drawn, random):
        folder = model_folder(tmp_path_factory.mktemp("unet"), unet=tiny("unet", **drawn))
        sizes = ("--height", "72", "--width", "72") if random else ()  # random weights: a small size, odd latents
        explored_safely("unet", folder, "random" if random else "meta", *sizes)

    one()


def _vae(tmp_path_factory, examples: int) -> None:
    @fuzzing(examples)
    @given(drawn=changes(VAE_FIELDS), random=st.booleans())
    def one(drawn, random):
        folder = model_folder(tmp_path_factory.mktemp("vae"), vae=tiny("vae", **drawn))
        sizes = ("--height", "128", "--width", "128") if random else ()  # room for 8 levels' downsampling
        explored_safely("vae", folder, "random" if random else "meta", *sizes)

    one()


def _text_encoders(tmp_path_factory, examples: int) -> None:
    second = {**TINY.models["text_encoder"], "_class_name": "CLIPTextModelWithProjection"}

    @fuzzing(examples)
    @given(first=changes(CLIP_FIELDS, 3), other=changes(CLIP_FIELDS, 2) | st.none(), random=st.booleans())
    def one(first, other, random):
        parts = {"text_encoder": tiny("text_encoder", **first)}
        if other is not None:  # SDXL's layout: both encoders, run together
            parts["text_encoder_2"] = {**second, **other}
        folder = model_folder(tmp_path_factory.mktemp("clip"), **parts)
        explored_safely("clip", folder, "random" if random else "meta")

    one()


def _scheduler(tmp_path_factory, examples: int) -> None:
    """What `explore generate` does with a model's scheduler config: read it (checked), find the most
    steps each scheduler can take, and run a few steps."""
    import torch
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    from explorer.errors import ExplorerError
    from explorer.generation.settings import max_steps

    @fuzzing(examples)
    @given(drawn=changes(SCHEDULER_FIELDS))
    def one(drawn):
        folder = model_folder(tmp_path_factory.mktemp("scheduler"), scheduler={**PRESETS["sd15"].scheduler, **drawn})
        started = time.perf_counter()
        try:
            config = scheduler_config(Source("folder", str(folder), path=folder))
        except ExplorerError as refused:
            assert "scheduler_config.json: " in str(refused) and str(refused).count("\n") == 0
            assert time.perf_counter() - started < 1
            return
        for name, cls in (("pndm", PNDMScheduler), ("ddim", DDIMScheduler), ("euler", EulerDiscreteScheduler)):
            scheduler = cls.from_config(config)
            # The most steps `explore generate` allows; Euler's search for them takes seconds with Karras
            # or exponential sigmas, and any count up to num_train_timesteps shows its schedule.
            steps = max_steps(name, config) if name != "euler" else min(config.get("num_train_timesteps", 1000), 20)
            scheduler.set_timesteps(steps)
            latent = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
            for t in scheduler.timesteps[:3]:  # the first steps of that schedule
                latent = scheduler.step(torch.zeros_like(latent), t, scheduler.scale_model_input(latent, t)).prev_sample
            assert latent.shape == (1, 4, 2, 2)
        assert time.perf_counter() - started < 20

    one()


FUZZED = {"unet": _unet, "vae": _vae, "text encoders": _text_encoders, "scheduler": _scheduler}


@pytest.mark.parametrize("part", FUZZED)
def test_drawn_config_values(part, tmp_path_factory, planted):
    FUZZED[part](tmp_path_factory, FEW)


@pytest.mark.slow
@pytest.mark.parametrize("part", FUZZED)
def test_drawn_config_values_thoroughly(part, tmp_path_factory, planted):
    FUZZED[part](tmp_path_factory, MANY)


def test_shown_values_are_short_and_json():
    assert configs.shown("abc") == '"abc"' and configs.shown(None) == "null" and configs.shown(math.inf) == "Infinity"
    assert len(configs.shown(list(range(1000)))) == 60
