"""explore stats: FLOPs from PyTorch's own counter, attributed to the record's nodes."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from explorer import trace
from explorer.analysis import flops_by_work, own_flops, scaling
from explorer.cli import app
from explorer.loading import load

runner = CliRunner()


@pytest.fixture(scope="module")
def unet_flops():
    return trace("unet", flops=True)


def test_total_is_what_flopcountermode_counts(unet_flops):
    model = load("unet").model
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(2, 4, 64, 64, device="meta"), torch.full((2,), 999, device="meta"),
              torch.empty(2, 77, 768, device="meta"))
    assert unet_flops.total_flops == counter.get_total_flops()
    assert round(unet_flops.total_flops / 1e9, 1) == 1606.5  # one SD1.5 UNet call, 512x512, batch 2


def test_attention_matmuls_are_counted(unet_flops):
    """The first self-attention: QKᵀ and scores·V are 2 · (2·B·heads·N·N·d) FLOPs. If scaled-dot-
    product attention were not counted on this path, the attention layer would hold only its
    projections and this would fail."""
    attn = unet_flops.find("down_blocks.0.attentions.0.transformer_blocks.0.attn1")
    projections = sum(n.flops for n in unet_flops.nodes if n.path.startswith(attn.path + ".to_"))
    b, heads, n, d = 2, 8, 4096, 40
    assert attn.flops - projections == 2 * (2 * b * heads * n * n * d)
    cross = unet_flops.find("down_blocks.0.attentions.0.transformer_blocks.0.attn2")
    projections = sum(x.flops for x in unet_flops.nodes if x.path.startswith(cross.path + ".to_"))
    assert cross.flops - projections == 2 * (2 * b * heads * n * 77 * d)


def test_flops_add_up_the_tree(unet_flops):
    top = [n for n in unet_flops.nodes if n.depth == 1]
    assert sum(n.flops for n in top) == unet_flops.total_flops
    assert all(own >= 0 for own in own_flops(unet_flops))
    kinds = flops_by_work(unet_flops)
    assert sum(kinds.values()) == unet_flops.total_flops
    assert kinds["convolution"] > kinds["self-attention"] > kinds["cross-attention"] > 0


def test_the_vae_is_attributed_by_its_own_names():
    vae = trace("vae", flops=True)
    depth1 = {n.path: n.flops for n in vae.nodes if n.depth == 1}
    assert depth1["encoder"] > 0 and depth1["decoder"] > depth1["encoder"]
    assert depth1["encoder"] + depth1["decoder"] + depth1["quant_conv"] + depth1["post_quant_conv"] == vae.total_flops


def test_self_attention_grows_quadratically_convolutions_linearly():
    small, base, big = scaling("unet", [256, 512, 768])
    assert big.total / base.total == pytest.approx(2.67, abs=0.01)  # "why does 768 px cost 2.7x 512 px?"
    positions = (768 / 512) ** 2
    assert big.flops["convolution"] / base.flops["convolution"] == pytest.approx(positions, rel=0.01)
    assert big.flops["self-attention"] / base.flops["self-attention"] == pytest.approx(positions**2, rel=0.01)
    assert big.flops["cross-attention"] / base.flops["cross-attention"] == pytest.approx(positions, rel=0.01)
    assert (base.tokens, big.tokens) == (4096, 9216)


def test_cli_stats_tree_sorted_and_json():
    result = runner.invoke(app, ["stats", "unet"])
    assert result.exit_code == 0, result.output
    assert "1,606.5 GFLOPs per call" in result.stdout and "up_blocks.3" in result.stdout
    ranked = runner.invoke(app, ["stats", "unet", "--sort", "flops", "--depth", "1"])
    lines = [l for l in ranked.stdout.splitlines() if l.startswith(("up_", "down_", "mid_"))]
    assert lines[0].startswith("up_blocks.3")  # the block that costs most: full resolution, 3 transformers
    data = json.loads(runner.invoke(app, ["stats", "unet", "--json", "--depth", "1"]).stdout)
    assert data["total_flops"] == 1_606_546_882_560 and data["total_params"] == 859_520_964
    node = next(n for n in data["nodes"] if n["path"] == "down_blocks.0")
    assert node["flops"] > 0 and node["params"] == 10_524_480 and node["activation_bytes"] == 2 * 320 * 32 * 32 * 4 + 2 * (2 * 320 * 64 * 64 * 4) + 2 * 320 * 32 * 32 * 4
    assert set(data["flops_by_kind"]) == {"convolution", "self-attention", "cross-attention", "linear / other"}


def test_cli_sizes_and_plot(tmp_path):
    plot = tmp_path / "cost.png"
    result = runner.invoke(app, ["stats", "unet", "--sizes", "256,512", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "self-attention" in result.stdout and "0.22×" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["stats", "unet", "--sizes", "500"], "multiple of 8"),
        (["stats", "unet", "--sizes", "a,b"], "separated by commas"),
        (["stats", "clip", "--sizes", "512"], "applies to unet and vae"),
        (["stats", "unet", "--plot", "x.png"], "give --sizes too"),
        (["stats", "unet", "--sizes", "512", "--plot", "x.jpg"], "ending in .png"),
        (["stats", "unet", "--block", "nope"], "names no module"),
    ],
)
def test_bad_input(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
