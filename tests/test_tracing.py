"""The tracer on real tensors (tiny preset): same numbers as the untraced model, the model left
exactly as found, failures that name the module, and the record's JSON contract."""

from __future__ import annotations

import json

import pytest
import torch

from explorer import SCHEMA, Trace, trace
from explorer.explore import trace_loaded
from explorer.loading import load
from explorer.capture.hooks import TraceError, instrumented, record


def _state(model):
    """Everything tracing touches, to compare before and after."""
    return {
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "training": [m.training for m in model.modules()],
        "processors": [id(m.processor) for m in model.modules() if hasattr(m, "set_processor")],
        "attn": getattr(getattr(model, "config", None), "_attn_implementation", None),
    }


def _unet_inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, cfg["in_channels"], 8, 8, generator=g),
        torch.tensor([999, 500]),
        torch.randn(2, 77, cfg["cross_attention_dim"], generator=g),
    )


def test_unet_outputs_identical_to_the_stock_attention_processor(tiny_models):
    unet = tiny_models["unet"]
    sample, t, context = _unet_inputs(unet.config)
    with torch.no_grad():
        expected = unet(sample, t, context).sample
        with instrumented(unet) as recorder:
            traced = unet(sample, t, context).sample
    assert torch.equal(expected, traced)
    assert sum(n["type"] == "AttentionScores" for n in recorder.nodes) == 32  # 16 transformers x 2
    assert not torch.isnan(traced).any()


def test_what_the_recording_processor_mirrors_is_still_there(tiny_models):
    """A future diffusers that renames what RecordingAttnProcessor reads, or changes the processor
    it mirrors, fails here with a sentence saying what moved, before any trace comes out wrong."""
    import inspect
    import re

    import diffusers

    from explorer.capture.attention import STOCK_PROCESSORS, RecordingAttnProcessor

    used = sorted(set(re.findall(r"\battn\.([a-z_]+)", inspect.getsource(RecordingAttnProcessor))))
    assert len(used) > 10  # what the mirror reads from diffusers' Attention module
    ours = set(inspect.signature(RecordingAttnProcessor.__call__).parameters)
    for component in ("unet", "vae"):
        for name, module in tiny_models[component].named_modules():
            if not hasattr(module, "set_processor"):
                continue
            stock = type(module.processor)
            where = f"diffusers {diffusers.__version__}, {component}.{name}"
            assert stock.__name__ in STOCK_PROCESSORS, (
                f"{where}: the default processor is now {stock.__name__}; explorer/capture/attention.py mirrors "
                f"{sorted(STOCK_PROCESSORS)}: compare it with the new one and update it."
            )
            missing = [a for a in used if not hasattr(module, a)]
            assert not missing, f"{where}: Attention no longer has {missing}, which the recording processor reads."
            new = set(inspect.signature(stock.__call__).parameters) - ours
            assert not new, f"{where}: {stock.__name__}.__call__ takes {sorted(new)} now; the recording processor does not."


def test_vae_outputs_identical_to_the_stock_attention_processor(tiny_models):
    vae = tiny_models["vae"]
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = vae.decode(vae.encode(image).latent_dist.mode()).sample
        with instrumented(vae) as recorder:
            traced = vae.decode(vae.encode(image).latent_dist.mode()).sample
    assert torch.equal(expected, traced)
    assert sum(n["type"] == "AttentionScores" for n in recorder.nodes) == 2  # encoder and decoder mid blocks


def test_clip_outputs_identical_with_the_recording_attention(tiny_models):
    clip = tiny_models["clip"]
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73] * 2)
    with torch.no_grad():
        expected = clip(input_ids=ids).last_hidden_state
        with instrumented(clip) as recorder:
            traced = clip(input_ids=ids).last_hidden_state
    assert torch.equal(expected, traced)
    assert any(n["type"] == "AttentionScores" for n in recorder.nodes)


@pytest.mark.parametrize("component", ["unet", "vae", "clip"])
def test_the_model_is_left_exactly_as_found(component):
    loaded = load(component, "tiny", weights="random")
    loaded.model.train()  # tracing switches to eval; it must switch back
    before = _state(loaded.model)
    t = trace_loaded(loaded)
    assert len(t.nodes) > 10
    assert _state(loaded.model) == before


def test_a_failing_forward_names_the_module_and_still_cleans_up():
    loaded = load("unet", "tiny", weights="random")
    before = _state(loaded.model)
    wrong = torch.randn(2, 3, 8, 8)  # 3 channels where conv_in expects 4

    def run():
        return loaded.model(wrong, torch.tensor([1, 1]), torch.randn(2, 77, 16))

    with pytest.raises(TraceError, match=r"conv_in \(Conv2d\)"):
        record(loaded.model, {"sample": wrong}, run, component="unet", model="tiny", weights="random")
    assert _state(loaded.model) == before


def test_random_weights_trace_matches_the_meta_trace():
    """Shapes read off real tensors equal those read off the meta device."""
    real = trace("unet", "tiny", weights="random")
    meta = trace("unet", "tiny")
    strip = lambda t: [(n.path, n.inputs, n.outputs) for n in t.nodes]  # noqa: E731
    assert strip(real) == strip(meta)
    assert real.weights == "random" and meta.weights == "meta"


def test_tiny_keeps_every_block_type_of_sd15(unet_trace, vae_trace, clip_trace):
    for component, full in (("unet", unet_trace), ("vae", vae_trace), ("clip", clip_trace)):
        tiny = trace(component, "tiny")
        assert [(n.path, n.type) for n in tiny.nodes if n.depth <= 2 and "layers." not in n.path] == [
            (n.path, n.type) for n in full.nodes if n.depth <= 2 and "layers." not in n.path
        ]


def test_json_contract(unet_trace):
    data = json.loads(unet_trace.to_json())
    assert data["schema"] == SCHEMA == "sd-explorer/trace@1"
    assert data["component"] == "unet" and data["weights"] == "meta"
    assert data["inputs"]["sample"] == [2, 4, 64, 64]
    assert data["total_params"] == 859_520_964
    node = next(n for n in data["nodes"] if n["path"] == "down_blocks.0")
    assert {"path", "type", "kind", "depth", "call", "inputs", "outputs", "params"} <= set(node)
    assert node["type"] == "CrossAttnDownBlock2D" and node["kind"] == "module" and node["depth"] == 1
    assert node["inputs"] == {
        "hidden_states": [2, 320, 64, 64],
        "temb": [2, 1280],
        "encoder_hidden_states": [2, 77, 768],
    }
    assert node["outputs"] == [[2, 320, 32, 32], [2, 320, 64, 64], [2, 320, 64, 64], [2, 320, 32, 32]]
    assert node["params"] == 10_524_480
    up = next(n for n in data["nodes"] if n["path"] == "up_blocks.0")
    assert up["inputs"]["res_hidden_states_tuple"] == [[2, 1280, 8, 8]] * 3
    # a parent comes before its children
    index = {(n["path"], n["call"]): i for i, n in enumerate(data["nodes"])}
    for (path, call), i in index.items():
        if path and "." in path:
            parent = path.rsplit(".", 1)[0]
            while parent and (parent, 0) not in index:
                parent = parent.rsplit(".", 1)[0] if "." in parent else ""
            assert index[(parent, 0)] < i


def test_json_round_trip(vae_trace):
    again = Trace.from_json(vae_trace.to_json())
    assert again == vae_trace


def test_notebook_display_renders_the_tree(unet_trace):
    bundle = unet_trace.upto(1)._repr_mimebundle_()
    assert "down_blocks.0" in bundle["text/plain"] and "CrossAttnDownBlock2D" in bundle["text/plain"]
    assert "<pre" in bundle["text/html"] and "down_blocks.0" in bundle["text/html"]
    big = unet_trace._repr_mimebundle_()  # 793 nodes: shows the top levels and says how to see more
    assert "trace.upto(" in big["text/plain"]
    assert big["text/plain"].count("\n") < 400
