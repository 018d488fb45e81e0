"""Diagrams: built from the record by pure functions, drawn by the real Graphviz, kept fresh."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from explorer import diagram
from explorer.cli import app
from explorer.diagrams import figure_diagrams
from explorer.views.figures import FIGURES, figure_scene
from explorer.views.graph import scene, to_dot

DIAGRAMS = Path(__file__).resolve().parent.parent / "diagrams"
ARTICLE_SHAPE = re.compile(r"\[\d+(, \d+)*\]")  # [2, 320, 64, 64], as the article writes it


@pytest.fixture(scope="module")
def traces(unet_trace, vae_trace, clip_trace):
    return {"unet": unet_trace, "vae": vae_trace, "clip": clip_trace}


@pytest.fixture(scope="module")
def figures(traces):
    return {f.name: figure_scene(f, traces[f.component]) for f in FIGURES}


def labels(s):
    return [a.label for a in s.arrows] + [b.label for b in s.boxes]


def test_the_committed_diagrams_are_what_the_code_draws(traces):
    fresh = {d.name: d.dot for d in figure_diagrams(traces)}
    assert len(fresh) == 26 and len(FIGURES) == 25  # the article's 25 figures and the pipeline overview
    for name, dot in fresh.items():
        committed = DIAGRAMS / f"{name}.dot"
        assert committed.exists(), f"{committed} is missing: run `explore diagrams diagrams`"
        assert committed.read_text() == dot, f"{committed.name} is stale: run `explore diagrams diagrams`"
        assert (DIAGRAMS / f"{name}.svg").exists()


def test_dot_is_deterministic(unet_trace):
    assert to_dot(scene(unet_trace, depth=1)) == to_dot(scene(unet_trace, depth=1))


def test_shapes_are_written_like_the_article(figures):
    for name, s in figures.items():
        shapes = [a.label for a in s.arrows if a.label]
        assert shapes, name
        assert all(ARTICLE_SHAPE.search(label) for label in shapes), name


def test_unet_overall_is_a_u_with_skips_across(figures):
    u = figures["unet-1.1-overall"]
    assert u.same_rank == [
        ["down_blocks.0", "up_blocks.3"],
        ["down_blocks.1", "up_blocks.2"],
        ["down_blocks.2", "up_blocks.1"],
        ["down_blocks.3", "up_blocks.0"],
    ]
    skips = {(a.src, a.dst, a.label) for a in u.arrows if a.straight}
    assert ("down_blocks.0", "up_blocks.3", "[2, 320, 64, 64] ×2") in skips
    assert ("conv_in", "up_blocks.3", "[2, 320, 64, 64]") in skips
    assert any(a.back for a in u.arrows if a.dst.startswith("up_blocks"))  # the up path is drawn going up
    text = " ".join(labels(u))
    assert "into every ResnetBlock2D (22)" in text and "into every Transformer2DModel (16)" in text


def test_each_figure_shows_what_its_section_names(figures):
    def has(name, *texts):
        joined = " ".join(labels(figures[name]))
        for text in texts:
            assert text in joined, (name, text)

    has("unet-1.3-time-embedding", "[2, 320]", "[2, 1280]", "into every ResnetBlock2D (22)")
    has("unet-1.4-CrossAttnDownBlock2D", "[2, 77, 768]", "[2, 1280]", "[2, 320, 32, 32]")
    has("unet-1.4.1-ResnetBlock2D", "conv_shortcut", "[2, 640, 1, 1]", "[2, 320, 32, 32]")
    has("unet-1.4.2-Transformer2DModel", "[2, 4096, 320]", "reshape")
    has("unet-1.4.2.1.1-SelfAttention", "[2, 8, 4096, 40]", "[2, 8, 4096, 4096]", "softmax(QKᵀ/√40)")
    has("unet-1.4.2.1.2-CrossAttention", "[2, 77, 768]", "[2, 77, 320]", "[2, 8, 4096, 77]")
    has("unet-1.4.2.1.3-FeedForward", "[2, 4096, 2560]", "[2, 4096, 1280]", "GELU")
    has("unet-1.4.3-Downsample2D", "[2, 320, 32, 32]")
    has("unet-1.7-UpBlock2D", "[2, 2560, 8, 8]", "concat on dim 1")
    has("unet-1.7.1-Upsample2D", "nearest ×2", "[2, 1280, 16, 16]")
    has("unet-1.8-CrossAttnUpBlock2D", "[2, 960, 64, 64]")
    has("vae-2.3-overall", "[1, 8, 64, 64]", "[1, 3, 512, 512]")
    has("vae-2.5-UNetMidBlock2D", "[1, 1, 4096, 4096]", "split into 1 head of 512")
    has("vae-2.6-sample", "exp(0.5·logvar)", "0.18215", "mean [1, 4, 64, 64]", "logvar [1, 4, 64, 64]", "eps")
    has("clip-3-overall", "CLIPEncoderLayer ×12", "[2, 77, 768]")
    has("clip-3.1-CLIPTextEmbeddings", "position_ids", "[1, 77, 768]")
    has("clip-3.2-CLIPEncoderLayer", "[2, 12, 77, 77]", "causal mask", "[2, 77, 3072]")
    assert not any(b.label.startswith("<b>Upsample2D") for b in figures["unet-1.8-CrossAttnUpBlock2D"].boxes)


def test_another_unet_layout_draws_itself():
    """Three layers per block: the U pairs and the skip counts come from the data, not from SD1.5."""
    from explorer.explore import trace_loaded
    from explorer.loading import Loaded, Source, build
    from explorer.specs import TINY

    config = {**TINY.config("unet"), "layers_per_block": 3}
    t = trace_loaded(Loaded("unet", build("unet", config), Source("preset", "tiny", preset=TINY), "meta", config))
    u = scene(t, depth=1)
    assert [pair for pair in u.same_rank] == [
        ["down_blocks.0", "up_blocks.3"],
        ["down_blocks.1", "up_blocks.2"],
        ["down_blocks.2", "up_blocks.1"],
        ["down_blocks.3", "up_blocks.0"],
    ]
    up = scene(t, "up_blocks.0", 1)
    assert sum(b.id.startswith("in/res_hidden_states_tuple") for b in up.boxes) == 4  # 4 skips, 4 concats
    assert sum("concat" in b.label for b in up.boxes) == 4


def test_every_committed_figure_fits_its_frame():
    """At 100 %, no committed figure is wider than 1100 pt or taller than 1500 pt."""
    svgs = sorted(DIAGRAMS.glob("*.svg"))
    assert len(svgs) == 26
    for path in svgs:
        root = ET.parse(path).getroot()
        width, height = (float(root.get(k).removesuffix("pt")) for k in ("width", "height"))
        assert width <= 1100 and height <= 1500, f"{path.name} is {width:.0f} x {height:.0f} pt"


def test_the_vae_overall_is_a_compact_u(figures):
    """Encoder down, the latent distribution and its sample along the bottom, decoder up: the bottom
    row holds only the sample and the scaling, the rest stands in the two columns."""
    vae = figures["vae-2.3-overall"]
    assert vae.same_rank == [["sample", "scale"]]
    assert all(a.back for a in vae.arrows if a.dst.startswith(("decoder", "post_quant_conv", "unscale")))


def test_output_names_come_from_the_models_output_classes(unet_trace, vae_trace, clip_trace, figures):
    assert clip_trace.nodes[0].output_names == ("last_hidden_state", "pooler_output")
    assert unet_trace.nodes[0].output_names == ("sample",)  # UNet2DConditionOutput
    assert vae_trace.nodes[0].output_names == ("sample",)  # DecoderOutput
    assert clip_trace.find("encoder").output_names == ("last_hidden_state",)  # BaseModelOutput
    assert unet_trace.find("conv_out").output_names == ()  # a bare tensor has no name
    outputs = [b.label for b in figures["clip-3-overall"].boxes if b.id.startswith("out/")]
    assert any("last_hidden_state" in label and "[2, 77, 768]" in label for label in outputs)
    assert any("pooler_output" in label and "[2, 768]" in label for label in outputs)
    whole = [figures[name] for name in ("unet-1.1-overall", "vae-2.3-overall", "clip-3-overall")]
    assert not any(label.startswith("<b>output") for f in whole for label in labels(f))


def test_graphviz_draws_an_svg(tmp_path, unet_trace):
    d = diagram(unet_trace, "down_blocks.1.resnets.0")
    svg = d._repr_svg_()  # what Jupyter shows
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "conv_shortcut" in svg and "[2, 640, 32, 32]" in svg


@pytest.mark.parametrize("wide", [True, False])
def test_notebook_svgs_take_the_cells_width_never_more(unet_trace, wide):
    """Wide figures give up their fixed size for the cell's width (at most their own); narrow ones
    keep it; both can be scaled down, and carry the links to full size and back."""
    from explorer.diagrams import Diagram

    d = diagram(unet_trace) if wide else Diagram("small", "digraph { a -> b }")
    natural = float(re.search(r'<svg width="([\d.]+)pt"', d.render("svg").decode()).group(1))
    root = ET.fromstring(d._repr_svg_())
    assert (natural > 540) == wide
    if wide:
        assert root.get("width") == "100%" and root.get("height") is None
        assert f"max-width:{natural:g}pt" in root.get("style")
    else:
        assert root.get("width") == f"{natural:g}pt" and "max-width:100%" in root.get("style")
    links = [a.get("href") for a in root.iter("{http://www.w3.org/2000/svg}a")]
    assert links == [f"#{root.get('id')}", f"#{root.get('id')}-fit"]


def test_cli_diagram_formats_and_bad_input(tmp_path):
    runner = CliRunner()
    for ext in ("svg", "png", "pdf", "dot"):
        out = tmp_path / f"vae.{ext}"
        result = runner.invoke(app, ["diagram", "vae", "--block", "encoder.mid_block", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 500
    assert (tmp_path / "vae.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "vae.pdf").read_bytes()[:4] == b"%PDF"

    def bad(args, message):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1

    bad(["diagram", "unet", "-o", str(tmp_path / "x.gif")], ".gif is not one of")
    bad(["diagram", "unet", "-b", "mid_blok", "-o", str(tmp_path / "x.svg")], "did you mean mid_block")
    bad(["diagram", "unet", "-b", "down_blocks", "-o", str(tmp_path / "x.svg")], "container that never runs")
    bad(["diagram", "unet", "-o", "/proc/none/x.svg"], "cannot be")
    bad(["diagrams", str(tmp_path / "vae.svg")], "is a file, not a folder")
    assert not (tmp_path / "x.svg").exists() and not (tmp_path / "x.gif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temporaries


def test_without_graphviz_the_dot_is_written_and_one_sentence_says_why(tmp_path):
    """`dot` hidden from PATH: the .dot file is still written, then exit 2 with the install hint."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {**os.environ, "PATH": str(bin_dir)}
    out = tmp_path / "unet.svg"
    result = subprocess.run(
        [sys.executable, "-m", "explorer.cli", "diagram", "unet", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "apt install graphviz" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "unet.dot").exists() and not out.exists()
    assert shutil.which("dot", path=str(bin_dir)) is None


# -- the figures in Chinese ---------------------------------------------------------------------------------


def test_the_committed_chinese_diagrams_are_what_the_code_draws(traces):
    fresh = {d.name: d.dot for d in figure_diagrams(traces, lang="zh")}
    for name, dot in fresh.items():
        committed = DIAGRAMS / "zh" / f"{name}.dot"
        assert committed.read_text() == dot, f"{committed} is stale: run `explore diagrams diagrams/zh --lang zh`"
        assert (DIAGRAMS / "zh" / f"{name}.svg").exists()


def test_chinese_figures_say_in_chinese_what_they_say_and_keep_names_and_shapes(traces):
    from explorer.views import zh

    zh_dot = {d.name: d.dot for d in figure_diagrams(traces, lang="zh")}
    en_dot = {d.name: d.dot for d in figure_diagrams(traces)}
    resnet = zh_dot["unet-1.4.1-ResnetBlock2D"]
    assert "1.4.1 ResnetBlock2D" in resnet and "时间步编码按通道加上去" in resnet and zh.FONT in resnet
    assert "[2, 1280]" in resnet and "conv_shortcut" in resnet  # names and shapes as they are
    assert "送入每个 ResnetBlock2D（共 22 个）" in zh_dot["unet-1.3-time-embedding"]
    assert "拆成 8 个头，每头 40 维" in zh_dot["unet-1.4.2.1.1-SelfAttention"]
    for name, dot in zh_dot.items():  # no English phrase the Chinese figures should have said otherwise
        for english in ("into every", "one of ", " alike", "normalization", "input / output", "convolution</font>"):
            assert english not in dot, f"{name}: {english!r}"
        assert dot != en_dot[name]
    assert set(zh.FIGURES) == {f.name for f in FIGURES}


def test_chinese_characters_are_drawn_not_tofu(tmp_path):
    """Graphviz finds the CJK font: two different Chinese captions of the same length draw differently
    (with no font for them, both would be the same row of empty boxes)."""
    from explorer.diagrams import Diagram
    from explorer.views import zh

    def drawn(text: str):
        import io

        from PIL import Image

        dot = f'digraph g {{ node [fontname="{zh.FONT}" shape=plaintext]; a [label="{text}"] }}'
        return Image.open(io.BytesIO(Diagram("t", dot).render("png"))).convert("L")

    first, second, again = drawn("时间步编码"), drawn("交叉注意力"), drawn("时间步编码")
    assert first.size == second.size and first.tobytes() != second.tobytes()
    assert first.tobytes() == again.tobytes()
