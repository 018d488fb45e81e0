"""Real loading paths, on tiny models the tests build and save: a diffusers folder
(save_pretrained), single .safetensors files in the original SD layout and in diffusers' layout,
a hub cache, pickles, and broken files."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from explorer import ExplorerError, load, trace


def _shapes(t):
    return [(n.path, n.type, n.inputs, n.outputs) for n in t.nodes]


def _same_values(model, reference):
    a, b = model.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("component", ["unet", "vae", "clip"])
def test_diffusers_folder_meta_trace_matches_the_preset(tiny_folder, component):
    from_folder = trace(component, str(tiny_folder))
    assert from_folder.model == str(tiny_folder) and from_folder.weights == "meta"
    assert _shapes(from_folder) == _shapes(trace(component, "tiny"))


@pytest.mark.parametrize("component", ["unet", "vae", "clip"])
def test_diffusers_folder_pretrained_weights_are_the_saved_ones(tiny_folder, tiny_models, component):
    loaded = load(component, str(tiny_folder), weights="pretrained")
    _same_values(loaded.model, tiny_models[component])


@pytest.mark.parametrize("component", ["unet", "vae", "clip"])
def test_original_single_file_layout(tiny_original_file, tiny_models, component):
    loaded = load(component, str(tiny_original_file), weights="pretrained", config="tiny")
    _same_values(loaded.model, tiny_models[component])
    meta = trace(component, str(tiny_original_file), config="tiny")
    assert _shapes(meta) == _shapes(trace(component, "tiny"))


def test_single_file_is_sd15_unless_config_says_otherwise(tiny_original_file):
    with pytest.raises(ExplorerError, match="--config"):
        load("unet", str(tiny_original_file))


def test_single_component_file_in_diffusers_layout(tiny_folder, tiny_models):
    path = tiny_folder / "unet" / "diffusion_pytorch_model.safetensors"
    loaded = load("unet", str(path), weights="pretrained", config="tiny")
    _same_values(loaded.model, tiny_models["unet"])
    with pytest.raises(ExplorerError, match="holds no vae weights"):
        load("vae", str(path), config="tiny")


def test_pretrained_trace_runs_real_tensors(tiny_folder):
    t = trace("unet", str(tiny_folder), weights="pretrained")
    assert t.weights == "pretrained"
    assert _shapes(t) == _shapes(trace("unet", "tiny"))


def test_truncated_safetensors_is_one_clear_sentence(tmp_path, tiny_original_file):
    broken = tmp_path / "broken.safetensors"
    data = tiny_original_file.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExplorerError, match="truncated or corrupt"):
        load("unet", str(broken), config="tiny")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ExplorerError, match="truncated or corrupt"):
        load("vae", str(garbage), config="tiny")


def test_a_folder_with_a_corrupt_weight_file(tmp_path, tiny_folder):
    folder = tmp_path / "pipe"
    shutil.copytree(tiny_folder, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ExplorerError, match="truncated or corrupt"):
        load("vae", str(folder))
    trace("unet", str(folder))  # the other components are fine


def test_pickle_is_refused_unless_allowed(tmp_path, tiny_original_file, tiny_models):
    from safetensors.torch import load_file

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(tiny_original_file)), "global_step": 1}, ckpt)
    with pytest.raises(ExplorerError, match="pickle.*--allow-pickle"):
        load("unet", str(ckpt), config="tiny")
    loaded = load("unet", str(ckpt), config="tiny", allow_pickle=True, weights="pretrained")
    _same_values(loaded.model, tiny_models["unet"])


def test_folder_with_only_pickle_weights_is_refused(tmp_path, tiny_folder):
    folder = tmp_path / "pipe"
    shutil.copytree(tiny_folder, folder)
    from safetensors.torch import load_file

    st = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(st)), folder / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    with pytest.raises(ExplorerError, match="pickle"):
        load("unet", str(folder))
    assert load("unet", str(folder), allow_pickle=True).model is not None


def test_missing_weights_are_named(tmp_path, tiny_models):
    state = {k: v for k, v in tiny_models["unet"].state_dict().items() if not k.startswith("conv_out")}
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ExplorerError, match="conv_out"):
        load("unet", str(path), config="tiny")


def test_presets_have_no_pretrained_weights():
    with pytest.raises(ExplorerError, match="no weights"):
        load("unet", "sd15", weights="pretrained")


def test_nonexistent_path_and_bad_names():
    with pytest.raises(ExplorerError, match="does not exist"):
        load("unet", "./no/such/folder")
    with pytest.raises(ExplorerError, match="Unknown component"):
        load("text", "sd15")
    with pytest.raises(ExplorerError, match="not a preset"):
        load("unet", "sd15", config="sd99")
