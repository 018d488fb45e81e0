"""The SD1.5 VAE on the meta device: SEED_GUIDE.md part 2."""

from __future__ import annotations

from conftest import first


def test_parameter_count_is_the_published_one(vae_trace):
    assert vae_trace.total_params == 83_653_863


def test_2_0_one_image_in_a_48x_smaller_latent(vae_trace):
    assert vae_trace.inputs == {"sample": (1, 3, 512, 512)}
    scaled = vae_trace.find("scale").outputs[0]
    assert scaled == (1, 4, 64, 64)
    image_values = 1 * 3 * 512 * 512
    latent_values = 1 * 4 * 64 * 64
    assert image_values // latent_values == 48
    assert vae_trace.nodes[0].outputs == ((1, 3, 512, 512),)


def test_2_2_encoder_outputs_a_distribution(vae_trace):
    encoder = first(vae_trace, lambda n: n.type == "Encoder")
    assert encoder.outputs == ((1, 8, 64, 64),)
    split = vae_trace.find("mean_logvar")
    assert split.kind == "step"
    assert split.inputs == {"moments": (1, 8, 64, 64)}
    assert split.outputs == ((1, 4, 64, 64), (1, 4, 64, 64))


def test_2_3_overall_paths(vae_trace):
    encoder = first(vae_trace, lambda n: n.type == "Encoder")
    decoder = first(vae_trace, lambda n: n.type == "Decoder")
    enc = [n for n in vae_trace.subtree(encoder.path).nodes if n.depth == encoder.depth + 1]
    dec = [n for n in vae_trace.subtree(decoder.path).nodes if n.depth == decoder.depth + 1]
    assert [n.type for n in enc] == ["Conv2d"] + ["DownEncoderBlock2D"] * 4 + ["UNetMidBlock2D", "GroupNorm", "SiLU", "Conv2d"]
    assert [n.outputs[0] for n in enc[:6]] == [
        (1, 128, 512, 512),
        (1, 128, 256, 256),
        (1, 256, 128, 128),
        (1, 512, 64, 64),
        (1, 512, 64, 64),
        (1, 512, 64, 64),
    ]
    assert [n.type for n in dec] == ["Conv2d", "UNetMidBlock2D"] + ["UpDecoderBlock2D"] * 4 + ["GroupNorm", "SiLU", "Conv2d"]
    assert [n.outputs[0] for n in dec] == [
        (1, 512, 64, 64),
        (1, 512, 64, 64),
        (1, 512, 128, 128),
        (1, 512, 256, 256),
        (1, 256, 512, 512),
        (1, 128, 512, 512),
        (1, 128, 512, 512),
        (1, 128, 512, 512),
        (1, 3, 512, 512),
    ]
    # quant_conv before the distribution, post_quant_conv before the decoder
    order = [n.path for n in vae_trace.nodes if n.depth == 1]
    assert order == ["encoder", "quant_conv", "mean_logvar", "sample", "scale", "unscale", "post_quant_conv", "decoder"]


def test_2_4_down_encoder_blocks(vae_trace):
    blocks = [n for n in vae_trace.nodes if n.type == "DownEncoderBlock2D"]
    for i, block in enumerate(blocks):
        kids = [n.type for n in vae_trace.subtree(block.path).nodes if n.depth == block.depth + 1]
        expected = ["ResnetBlock2D", "ResnetBlock2D"] + (["Downsample2D"] if i < 3 else [])
        assert kids == expected
    # no time embedding in the VAE
    assert all("temb" not in n.inputs for n in vae_trace.nodes if n.type == "ResnetBlock2D")


def test_2_4_2_the_vae_downsample_pads_right_and_bottom_then_convolves_unpadded(vae_trace, unet_trace):
    """Not the UNet's Downsample2D: its conv has padding 0 and the block pads (0, 1, 0, 1) itself, so the
    conv sees 513x513; the UNet's conv pads 1 on every side and sees 64x64."""
    import torch
    import torch.nn.functional as F

    from explorer import load

    conv = vae_trace.find("encoder.down_blocks.0.downsamplers.0.conv")
    assert conv.inputs["input"] == (1, 128, 513, 513) and conv.outputs[0] == (1, 128, 256, 256)
    assert unet_trace.find("down_blocks.0.downsamplers.0.conv").inputs["input"] == (2, 320, 64, 64)
    ours = load("vae").model.encoder.down_blocks[0].downsamplers[0]
    theirs = load("unet").model.down_blocks[0].downsamplers[0]
    assert (ours.padding, ours.conv.padding, ours.conv.stride) == (0, (0, 0), (2, 2))
    assert (theirs.padding, theirs.conv.padding, theirs.conv.stride) == (1, (1, 1), (2, 2))
    block = type(ours)(1, use_conv=True, padding=0)  # the same class, built as the VAE builds it, real weights
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(block(x), block.conv(F.pad(x, (0, 1, 0, 1))))
        assert not torch.allclose(block(x), block.conv(F.pad(x, (1, 0, 1, 0))))


def test_2_5_mid_block_single_head_attention(vae_trace):
    mid = first(vae_trace, lambda n: n.type == "UNetMidBlock2D")
    kids = [n.type for n in vae_trace.subtree(mid.path).nodes if n.depth == mid.depth + 1]
    assert kids == ["ResnetBlock2D", "Attention", "ResnetBlock2D"]
    attn = first(vae_trace.subtree(mid.path), lambda n: n.type == "Attention")
    steps = {n.name: n for n in vae_trace.subtree(attn.path).nodes if n.kind == "step"}
    assert steps["to_tokens"].outputs == ((1, 4096, 512),)
    assert steps["split_heads"].outputs[0] == (1, 1, 4096, 512)
    assert steps["scores"].outputs == ((1, 1, 4096, 4096),)
    assert steps["to_image"].outputs == ((1, 512, 64, 64),)


def test_2_6_sample_and_scaling_are_steps(vae_trace):
    sample = vae_trace.find("sample")
    assert sample.kind == "step" and sample.type == "Reparameterize"
    assert set(sample.inputs) == {"mean", "logvar", "eps"}
    assert sample.outputs == ((1, 4, 64, 64),)
    assert "exp(0.5·logvar)" in sample.label
    scale = vae_trace.find("scale")
    assert "0.18215" in scale.label
    assert vae_trace.find("unscale").outputs == ((1, 4, 64, 64),)


def test_2_7_up_decoder_blocks(vae_trace):
    blocks = [n for n in vae_trace.nodes if n.type == "UpDecoderBlock2D"]
    for i, block in enumerate(blocks):
        kids = [n.type for n in vae_trace.subtree(block.path).nodes if n.depth == block.depth + 1]
        assert kids == ["ResnetBlock2D"] * 3 + (["Upsample2D"] if i < 3 else [])
