"""Edges: which node's output feeds which node's input, read off tensor identity during the run."""

from __future__ import annotations



def incoming(t, path, call=0):
    return [e for e in t.edges if e.dst == path and e.dst_call == call and not e.returned]


def test_every_edge_carries_the_shape_its_consumer_received(unet_trace):
    nodes = {(n.path, n.call): n for n in unet_trace.nodes}
    assert len(unet_trace.edges) > 1000
    for e in unet_trace.edges:
        dst = nodes[(e.dst, e.dst_call)]
        if e.returned:
            assert dst.outputs[int(e.dst_port)] == e.shape
            continue
        name, _, index = e.dst_port.partition("[")
        received = dst.inputs[name]
        assert (received[int(index[:-1])] if index else received) == e.shape, e


def test_skip_connections_go_from_the_down_path_to_the_up_path(unet_trace):
    skips = [e for e in unet_trace.edges if "res_hidden_states_tuple" in e.dst_port and e.dst.count(".") == 1]
    assert len(skips) == 12  # 3 per up block
    sources = sorted({e.src for e in skips})
    assert sources == ["conv_in", "down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3"]
    # inside the up block, each skip is concatenated to the running tensor on the channel axis
    concat = unet_trace.find("up_blocks.0.concat")
    assert concat.type == "Concat" and concat.outputs == ((2, 2560, 8, 8),)
    into_concat = {e.dst_port: e.src for e in incoming(unet_trace, "up_blocks.0.concat")}
    assert into_concat == {"tensors[0]": "mid_block", "tensors[1]": "down_blocks.3"}
    feeds = [e for e in unet_trace.edges if e.src == "up_blocks.0.concat" and e.src_call == 0]
    assert ("up_blocks.0.resnets.0", "input_tensor") in {(e.dst, e.dst_port) for e in feeds}


def test_time_embedding_and_prompt_fan_out(unet_trace):
    resnets = [n for n in unet_trace.nodes if n.type == "ResnetBlock2D"]
    for r in resnets:
        assert [e.src for e in incoming(unet_trace, r.path) if e.dst_port == "temb"] == ["time_embedding"]
    to_k = [n for n in unet_trace.nodes if n.path.endswith("attn2.to_k")]
    assert len(to_k) == 16
    for n in to_k:  # cross-attention keys come straight from the component's input
        [e] = incoming(unet_trace, n.path)
        assert (e.src, e.src_port, e.shape[1:]) == ("", "encoder_hidden_states", (77, 768))


def test_residual_adds_and_reshapes_are_steps(unet_trace):
    resnet = unet_trace.find("down_blocks.1.resnets.0")
    adds = [n for n in unet_trace.subtree(resnet.path).nodes if n.type == "Add"]
    assert [a.inputs for a in adds] == [
        {"input": (2, 640, 32, 32), "other": (2, 640, 1, 1)},  # + time embedding, per channel
        {"input": (2, 640, 32, 32), "other": (2, 640, 32, 32)},  # residual, through conv_shortcut
    ]
    assert {e.src for e in incoming(unet_trace, adds[1].path, 1)} == {
        "down_blocks.1.resnets.0.conv_shortcut",
        "down_blocks.1.resnets.0.conv2",
    }
    block = unet_trace.find("down_blocks.0.attentions.0")
    reshapes = [n for n in unet_trace.subtree(block.path).nodes if n.type == "Reshape"]
    assert [(r.inputs["input"], r.outputs[0]) for r in reshapes] == [
        ((2, 320, 64, 64), (2, 4096, 320)),  # feature map -> tokens
        ((2, 4096, 320), (2, 320, 64, 64)),  # and back
    ]


def test_geglu_split_and_gate(unet_trace):
    geglu = next(n for n in unet_trace.nodes if n.type == "GEGLU")
    kids = [n for n in unet_trace.subtree(geglu.path).nodes if n.depth == geglu.depth + 1]
    assert [n.type for n in kids] == ["Linear", "Split", "GELU", "Multiply"]
    assert kids[1].outputs == ((2, 4096, 1280), (2, 4096, 1280))
    assert kids[3].outputs == ((2, 4096, 1280),)


def test_attention_steps_are_connected(unet_trace):
    attn = next(n for n in unet_trace.nodes if n.path.endswith("attn2"))
    chain = [
        ("to_q", "split_heads", "query"),
        ("to_k", "split_heads", "key"),
        ("split_heads", "scores", "query"),
        ("scores", "weighted_sum", "scores"),
        ("split_heads", "weighted_sum", "value"),
        ("weighted_sum", "merge_heads", "heads"),
        ("merge_heads", "to_out.0", "input"),
    ]
    for src, dst, port in chain:
        edges = incoming(unet_trace, f"{attn.path}.{dst}")
        assert any(e.src == f"{attn.path}.{src}" and e.dst_port == port for e in edges), (src, dst)
    scores_edge = next(e for e in incoming(unet_trace, f"{attn.path}.weighted_sum") if e.dst_port == "scores")
    assert scores_edge.shape == (2, 8, 4096, 77)


def test_blocks_return_what_their_children_made(unet_trace):
    returned = {(e.dst, e.dst_port): e.src for e in unet_trace.edges if e.returned}
    assert returned[("down_blocks.0", "0")] == "down_blocks.0.downsamplers.0"
    assert returned[("down_blocks.0", "1")] == "down_blocks.0.attentions.0"
    assert returned[("", "0")] == "conv_out"


def test_vae_sample_path(vae_trace):
    def sources(path):
        return {e.dst_port: e.src for e in incoming(vae_trace, path)}

    assert sources("mean_logvar") == {"moments": "quant_conv"}
    assert sources("sample") == {"mean": "mean_logvar", "logvar": "mean_logvar"}  # ε comes from nowhere: noise
    assert sources("scale") == {"z": "sample"}
    assert sources("post_quant_conv") == {"input": "unscale"}
    assert not [n for n in vae_trace.nodes if n.depth == 1 and n.type in ("Split", "Add", "Multiply")]


def test_clip_embeddings_add_token_and_position(clip_trace):
    add = next(n for n in clip_trace.nodes if n.type == "Add")
    assert add.inputs == {"input": (2, 77, 768), "other": (1, 77, 768)}
    assert {e.src.rsplit(".", 1)[-1] for e in incoming(clip_trace, add.path)} == {"token_embedding", "position_embedding"}
    first_layer = next(n for n in clip_trace.nodes if n.type == "CLIPEncoderLayer")
    attn = next(n for n in clip_trace.subtree(first_layer.path).nodes if n.type == "CLIPAttention")
    [e] = [e for e in incoming(clip_trace, f"{attn.path}.split_heads") if e.dst_port == "query"]
    assert e.src.endswith("q_proj") and e.shape == (2, 77, 768)
    [out_proj] = incoming(clip_trace, f"{attn.path}.out_proj")
    assert out_proj.src == f"{attn.path}.merge_heads"


def test_another_layout_records_its_own_flow():
    """Nothing about SD1.5 is assumed: three layers per block gives three skips per down block."""
    from explorer.explore import trace_loaded
    from explorer.loading import Loaded, Source, build
    from explorer.specs import TINY

    config = {**TINY.config("unet"), "layers_per_block": 3}
    model = build("unet", config)
    t = trace_loaded(Loaded("unet", model, Source("preset", "tiny", preset=TINY), "meta", config))
    down0 = t.find("down_blocks.0")
    assert len(down0.outputs) == 1 + 4  # output + 3 resnets/attentions + downsampler
    skips = [e for e in t.edges if "res_hidden_states_tuple" in e.dst_port and e.dst.count(".") == 1]
    assert len(skips) == 16  # 4 per up block


def test_a_buffer_used_by_its_module_is_a_source(clip_trace):
    """CLIP's position ids are a buffer: a Buffer step makes them, the position embedding reads them."""
    buffer = next(n for n in clip_trace.nodes if n.type == "Buffer")
    assert buffer.path.endswith("position_ids") and buffer.outputs == ((1, 77),)
    position = next(n for n in clip_trace.nodes if n.path.endswith("position_embedding"))
    assert [e.src for e in incoming(clip_trace, position.path)] == [buffer.path]
