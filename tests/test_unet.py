"""The SD1.5 UNet on the meta device: every fact of SEED_GUIDE.md part 1, read off the record."""

from __future__ import annotations

from conftest import first, of_type

from explorer import trace


def shape(*dims):
    return tuple(dims)


def test_parameter_count_is_the_published_one(unet_trace):
    assert unet_trace.total_params == 859_520_964
    assert unet_trace.nodes[0].path == "" and unet_trace.nodes[0].params == 859_520_964


def test_default_inputs_follow_the_article(unet_trace):
    assert unet_trace.inputs == {
        "sample": shape(2, 4, 64, 64),
        "timestep": shape(2),
        "encoder_hidden_states": shape(2, 77, 768),
    }


def test_depth_one_lists_the_blocks_containers_add_no_level(unet_trace):
    top = [n.path for n in unet_trace.nodes if n.depth == 1]
    assert top == [
        "time_proj",
        "time_embedding",
        "conv_in",
        "down_blocks.0",
        "down_blocks.1",
        "down_blocks.2",
        "down_blocks.3",
        "mid_block",
        "up_blocks.0",
        "up_blocks.1",
        "up_blocks.2",
        "up_blocks.3",
        "conv_norm_out",
        "conv_act",
        "conv_out",
    ]
    # ModuleList `resnets` is never called: a resnet sits right under its block.
    resnet = first(unet_trace, lambda n: n.type == "ResnetBlock2D")
    assert resnet.depth == 2


def test_1_1_overall_path(unet_trace):
    out = {n.path: n.outputs[0] for n in unet_trace.nodes if n.depth == 1}
    assert out["conv_in"] == (2, 320, 64, 64)
    assert [out[f"down_blocks.{i}"] for i in range(4)] == [
        (2, 320, 32, 32),
        (2, 640, 16, 16),
        (2, 1280, 8, 8),
        (2, 1280, 8, 8),
    ]
    assert out["mid_block"] == (2, 1280, 8, 8)
    assert [out[f"up_blocks.{i}"] for i in range(4)] == [
        (2, 1280, 16, 16),
        (2, 1280, 32, 32),
        (2, 640, 64, 64),
        (2, 320, 64, 64),
    ]
    assert out["conv_out"] == (2, 4, 64, 64)
    assert unet_trace.nodes[0].outputs == ((2, 4, 64, 64),)


def test_1_2_block_types_make_the_u(unet_trace):
    types = [n.type for n in unet_trace.nodes if n.depth == 1 and ("blocks" in n.path or "mid" in n.path)]
    assert types == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D", "UNetMidBlock2DCrossAttn", "UpBlock2D"] + [
        "CrossAttnUpBlock2D"
    ] * 3


def test_1_3_time_embedding_feeds_every_resnet(unet_trace):
    proj = first(unet_trace, lambda n: n.type == "Timesteps")
    assert proj.inputs == {"timesteps": (2,)} and proj.outputs == ((2, 320),)
    emb = first(unet_trace, lambda n: n.type == "TimestepEmbedding")
    linears = [n for n in unet_trace.nodes if n.path.startswith(emb.path + ".")]
    assert [n.type for n in linears] == ["Linear", "SiLU", "Linear"]
    assert [n.outputs[0] for n in linears] == [(2, 1280)] * 3
    resnets = of_type(unet_trace, "ResnetBlock2D")
    assert len(resnets) == 22
    assert all(r.inputs["temb"] == (2, 1280) for r in resnets)


def test_1_4_cross_attn_down_block(unet_trace):
    block = unet_trace.find("down_blocks.0")
    assert block.inputs == {
        "hidden_states": (2, 320, 64, 64),
        "temb": (2, 1280),
        "encoder_hidden_states": (2, 77, 768),
    }
    # its output and the 3 skip tensors it hands to the up path
    assert block.outputs == ((2, 320, 32, 32), (2, 320, 64, 64), (2, 320, 64, 64), (2, 320, 32, 32))
    children = [n.type for n in unet_trace.nodes if n.depth == 2 and n.path.startswith("down_blocks.0.")]
    assert children == ["ResnetBlock2D", "Transformer2DModel"] * 2 + ["Downsample2D"]
    transformers = of_type(unet_trace, "Transformer2DModel")
    assert len(transformers) == 16
    assert all(t.inputs["encoder_hidden_states"] == (2, 77, 768) for t in transformers)


def test_1_4_1_resnet_conv_shortcut_when_channels_change(unet_trace):
    resnet = unet_trace.find("down_blocks.1.resnets.0")
    assert resnet.inputs["input_tensor"] == (2, 320, 32, 32) and resnet.outputs[0] == (2, 640, 32, 32)
    inside = {n.name: n for n in unet_trace.subtree(resnet.path).nodes if n.depth == resnet.depth + 1}
    assert inside["time_emb_proj"].inputs["input"] == (2, 1280)
    assert inside["time_emb_proj"].outputs[0] == (2, 640)
    assert inside["conv_shortcut"].outputs[0] == (2, 640, 32, 32)
    # same channels in and out: no shortcut conv
    same = unet_trace.find("down_blocks.0.resnets.0")
    assert not any(n.name == "conv_shortcut" for n in unet_trace.subtree(same.path).nodes)
    # nonlinearity is one module called three times
    calls = [n.call for n in unet_trace.subtree(same.path).nodes if n.name == "nonlinearity"]
    assert calls == [0, 1, 2]


def test_1_4_1_temb_goes_through_silu_before_time_emb_proj(unet_trace):
    """In every ResnetBlock2D, temb enters the block's `nonlinearity` (its second call) and from there
    `time_emb_proj`: SiLU, then the projection, as the figure and unet.md draw it."""
    resnets = of_type(unet_trace, "ResnetBlock2D")
    for resnet in resnets:
        silu = [e for e in unet_trace.edges if e.src == "time_embedding" and e.dst == f"{resnet.path}.nonlinearity"]
        proj = [e for e in unet_trace.edges if e.dst == f"{resnet.path}.time_emb_proj"]
        assert [(e.dst_call, e.shape) for e in silu] == [(1, (2, 1280))]
        assert [(e.src, e.src_call, e.shape) for e in proj] == [(f"{resnet.path}.nonlinearity", 1, (2, 1280))]
    assert len(resnets) == 22


def test_1_4_2_transformer_reshapes_to_tokens(unet_trace):
    t = unet_trace.find("down_blocks.0.attentions.0")
    block = first(unet_trace, lambda n: n.type == "BasicTransformerBlock" and n.path.startswith(t.path))
    assert t.inputs["hidden_states"] == (2, 320, 64, 64) and t.outputs[0] == (2, 320, 64, 64)
    assert block.inputs["hidden_states"] == (2, 4096, 320) and block.outputs[0] == (2, 4096, 320)


def test_1_4_2_1_basic_transformer_block_layers(unet_trace):
    block = first(unet_trace, lambda n: n.type == "BasicTransformerBlock")
    kids = [n for n in unet_trace.subtree(block.path).nodes if n.depth == block.depth + 1]
    assert [n.type for n in kids] == [
        "LayerNorm", "Attention", "Add", "LayerNorm", "Attention", "Add", "LayerNorm", "FeedForward", "Add"
    ]  # each sub-layer: norm, then the layer, then its residual add
    assert all(n.outputs[0] == (2, 4096, 320) for n in kids)


def _steps(trace, attention_path):
    return {n.name: n for n in trace.subtree(attention_path).nodes if n.kind == "step"}


def test_1_4_2_1_1_self_attention_heads_and_scores(unet_trace):
    attn1 = first(unet_trace, lambda n: n.type == "Attention" and "encoder_hidden_states" not in n.inputs)
    steps = _steps(unet_trace, attn1.path)
    assert steps["split_heads"].inputs["query"] == (2, 4096, 320)
    assert steps["split_heads"].outputs == ((2, 8, 4096, 40),) * 3
    assert steps["scores"].outputs == ((2, 8, 4096, 4096),)
    assert steps["scores"].label == "softmax(QKᵀ/√40)"
    assert steps["weighted_sum"].outputs == ((2, 8, 4096, 40),)
    assert steps["merge_heads"].outputs == ((2, 4096, 320),)
    order = [n.path[len(attn1.path) + 1 :] for n in unet_trace.subtree(attn1.path).nodes if n.depth == attn1.depth + 1]
    assert order == ["to_q", "to_k", "to_v", "split_heads", "scores", "weighted_sum", "merge_heads", "to_out.0", "to_out.1"]


def test_1_4_2_1_2_cross_attention_reads_the_prompt(unet_trace):
    attn2 = first(unet_trace, lambda n: n.type == "Attention" and "encoder_hidden_states" in n.inputs)
    kids = {n.name: n for n in unet_trace.subtree(attn2.path).nodes if n.depth == attn2.depth + 1}
    assert kids["to_q"].outputs[0] == (2, 4096, 320)
    assert kids["to_k"].inputs["input"] == (2, 77, 768) and kids["to_k"].outputs[0] == (2, 77, 320)
    assert kids["to_v"].outputs[0] == (2, 77, 320)
    assert kids["scores"].outputs == ((2, 8, 4096, 77),)


def test_1_4_2_1_3_feed_forward_geglu(unet_trace):
    ff = first(unet_trace, lambda n: n.type == "FeedForward")
    nodes = unet_trace.subtree(ff.path).nodes
    proj = first(unet_trace.subtree(ff.path), lambda n: n.type == "Linear")
    geglu = first(unet_trace.subtree(ff.path), lambda n: n.type == "GEGLU")
    last = [n for n in nodes if n.type == "Linear"][-1]
    assert proj.outputs[0] == (2, 4096, 2560)
    assert geglu.outputs[0] == (2, 4096, 1280)
    assert last.inputs["input"] == (2, 4096, 1280) and last.outputs[0] == (2, 4096, 320)


def test_1_4_3_downsample_and_1_5_down_block(unet_trace):
    down = first(unet_trace, lambda n: n.type == "Downsample2D")
    assert down.inputs["hidden_states"] == (2, 320, 64, 64) and down.outputs[0] == (2, 320, 32, 32)
    plain = first(unet_trace, lambda n: n.type == "DownBlock2D")
    assert plain.inputs["hidden_states"] == (2, 1280, 8, 8) and plain.outputs[0] == (2, 1280, 8, 8)
    kids = [n.type for n in unet_trace.subtree(plain.path).nodes if n.depth == plain.depth + 1]
    assert kids == ["ResnetBlock2D", "ResnetBlock2D"]


def test_1_6_mid_block(unet_trace):
    mid = first(unet_trace, lambda n: n.type == "UNetMidBlock2DCrossAttn")
    kids = [n for n in unet_trace.subtree(mid.path).nodes if n.depth == mid.depth + 1]
    assert [n.type for n in kids] == ["ResnetBlock2D", "Transformer2DModel", "ResnetBlock2D"]
    assert all(n.outputs[0] == (2, 1280, 8, 8) for n in kids)


def test_1_7_up_blocks_concatenate_the_skips(unet_trace):
    up0 = first(unet_trace, lambda n: n.type == "UpBlock2D")
    assert up0.inputs["res_hidden_states_tuple"] == ((2, 1280, 8, 8),) * 3
    resnets = [n for n in unet_trace.subtree(up0.path).nodes if n.type == "ResnetBlock2D"]
    assert resnets[0].inputs["input_tensor"] == (2, 2560, 8, 8)  # 1280 + 1280 skip
    assert resnets[0].outputs[0] == (2, 1280, 8, 8)
    up = first(unet_trace.subtree(up0.path), lambda n: n.type == "Upsample2D")
    assert up.inputs["hidden_states"] == (2, 1280, 8, 8) and up.outputs[0] == (2, 1280, 16, 16)


def test_1_7_twelve_skips_eleven_from_the_down_blocks_and_one_from_conv_in(unet_trace):
    """The up path's 12 resnets take 12 skip tensors; the down blocks hand over 3 + 3 + 3 + 2 = 11, and
    the twelfth is conv_in's output, concatenated by up block 3's last resnet (the tuple is used from its end)."""
    skips = [e for e in unet_trace.edges if e.dst.startswith("up_blocks.") and e.dst.count(".") == 1
             and e.dst_port.startswith("res_hidden_states_tuple")]
    handed = [len(n.outputs) - 1 for n in unet_trace.nodes if n.depth == 1 and n.path.startswith("down_blocks.")]
    up_resnets = [n for n in of_type(unet_trace, "ResnetBlock2D") if n.path.startswith("up_blocks.")]
    assert len(skips) == len(up_resnets) == 12 and handed == [3, 3, 3, 2]
    from_conv_in = [(e.dst, e.dst_port, e.shape) for e in skips if e.src == "conv_in"]
    assert from_conv_in == [("up_blocks.3", "res_hidden_states_tuple[0]", (2, 320, 64, 64))]
    concats = [n for n in unet_trace.subtree("up_blocks.3").nodes if n.type == "Concat"]
    assert concats[-1].inputs["tensors"][1] == (2, 320, 64, 64)


def test_1_8_cross_attn_up_blocks(unet_trace):
    ups = [n for n in unet_trace.nodes if n.type == "CrossAttnUpBlock2D"]
    assert len(ups) == 3
    last = ups[-1]
    kids = [n.type for n in unet_trace.subtree(last.path).nodes if n.depth == last.depth + 1]
    assert kids == ["Concat", "ResnetBlock2D", "Transformer2DModel"] * 3  # the last one has no Upsample2D
    first_resnet = first(unet_trace.subtree(last.path), lambda n: n.type == "ResnetBlock2D")
    assert first_resnet.inputs["input_tensor"] == (2, 960, 64, 64)  # 640 + 320 skip
    for up in ups[:-1]:
        assert any(n.type == "Upsample2D" for n in unet_trace.subtree(up.path).nodes)


def test_params_are_counted_once_and_add_up(unet_trace):
    top = [n for n in unet_trace.nodes if n.depth == 1]
    assert sum(n.params for n in top) == unet_trace.total_params


def test_other_sizes_and_batch():
    t = trace("unet", height=768, width=512, batch=1)
    assert t.inputs["sample"] == (1, 4, 96, 64)
    assert t.inputs["encoder_hidden_states"] == (1, 77, 768)
    attn = first(t, lambda n: n.name == "scores")
    assert attn.outputs == ((1, 8, 96 * 64, 96 * 64),)
    assert t.nodes[0].outputs == ((1, 4, 96, 64),)
