"""`explore diff A B`: two records aligned module by module, the numbers checked against the raw
records and the published parameter counts, the summary's sentences against facts read off the
configs, the terminal, JSON, diagram and page views."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import needs_chromium
from explorer.cli import app
from explorer.compare import compare, diff
from explorer.errors import ExplorerError
from explorer.record import Node, Trace
from explorer.specs import SD15, SDXL

runner = CliRunner()


@pytest.fixture(scope="module")
def sd15_sdxl():
    return diff("sd15", "sdxl")


def _paths(trace: Trace) -> set[str]:
    return {n.path for n in trace.nodes if n.path and n.call == 0}


def test_sd15_to_sdxl_numbers_agree_with_the_records_and_the_published_counts(sd15_sdxl):
    unet = sd15_sdxl.component("unet")
    assert (unet.a.total_params, unet.b.total_params) == (859_520_964, 2_567_463_684)
    by_status = {s: {e.path for e in unet.entries if e.status == s} for s in ("added", "removed", "changed", "same")}
    # every path is accounted for exactly once, on the side it exists on
    assert by_status["added"] | by_status["changed"] | by_status["same"] >= _paths(unet.b) - _paths(unet.a)
    assert {e.a.path for e in unet.entries if e.a is not None} == _paths(unet.a)
    assert {e.b.path for e in unet.entries if e.b is not None} == _paths(unet.b)
    assert {"down_blocks.3", "up_blocks.3"} <= by_status["removed"]
    assert {"add_embedding", "add_embedding.linear_1", "down_blocks.2.attentions.0.transformer_blocks.9"} <= by_status["added"]
    first = unet.find("down_blocks.0")
    assert first.status == "changed" and (first.a.type, first.b.type) == ("CrossAttnDownBlock2D", "DownBlock2D")
    # an attention module: heads and context width compared as such
    attn2 = unet.find("down_blocks.1.attentions.0.transformer_blocks.0.attn2")
    assert (attn2.a.heads, attn2.b.heads) == ("8×80", "10×64") and (attn2.a.context, attn2.b.context) == (768, 2048)
    assert {"heads", "context"} <= set(attn2.changed)
    # the module counts are what the entries say, modules only
    counts = unet.counts()
    assert counts["removed"] == sum(1 for e in unet.entries if e.status == "removed" and e.kind == "module") > 0
    clip = sd15_sdxl.component("clip")  # SD1.5's text encoder is SDXL's first, held beside a second one
    assert clip.find("text_encoder").a.path == "" and clip.find("text_encoder.encoder.layers.11").status == "same"
    assert clip.find("text_encoder_2").status == "added" and clip.b.total_params - clip.a.total_params == 694_659_840
    assert not sd15_sdxl.component("vae").identical and sd15_sdxl.component("vae").counts()["changed"] == 0


def test_the_summary_is_read_off_the_configs(sd15_sdxl):
    text = sd15_sdxl.summary()
    a, b = SD15.config("unet"), SDXL.config("unet")
    assert f"{len(b['block_out_channels'])} resolution levels instead of {len(a['block_out_channels'])}" in text
    depths = "/".join(str(d if t.startswith("CrossAttn") else 0) for d, t in zip(b["transformer_layers_per_block"], b["down_block_types"]))
    assert f"{depths} transformer blocks in each attention layer" in text and "10 in the middle" in text
    assert f"{b['cross_attention_dim']}-channel prompt embedding instead of {a['cross_attention_dim']}" in text
    assert "text_embeds [2,1280] and time_ids [2,6] as extra inputs" in text
    assert f"latents scaled by {SDXL.config('vae')['scaling_factor']} instead of {SD15.config('vae')['scaling_factor']}" in text
    assert "2,567,463,684 parameters instead of 859,520,964 (×2.99)" in text
    assert "two text encoders instead of one" in text and "CLIPTextModelWithProjection: 32 layers, 1280 channels, heads 20×64" in text
    assert "a 2048-channel prompt embedding instead of 768 (concat channels: 768 + 1280 = 2048)" in text
    assert "both were traced at 512×512 px" in text


def test_sd21_differs_in_heads_projections_and_text_encoder():
    result = diff("sd15", "sd21")
    text = result.summary()
    assert "attention heads 5×64, 10×64, 20×64, —" in text and "Linear projections" in text
    assert "CLIPTextModel: 23 layers, 1024 channels, heads 16×64 (SD1.5: CLIPTextModel: 12 layers, 768 channels" in text
    assert result.component("vae").identical and "The VAE is the same." in text
    assert "resolution levels" not in text  # only what differs is said


def test_in_python_a_diff_displays_and_draws(sd15_sdxl):
    shown = sd15_sdxl._repr_mimebundle_()
    assert shown["text/plain"].startswith("SD1.5 → SDXL") and "down_blocks.3" in shown["text/plain"] and "<" in shown["text/html"]
    figure = sd15_sdxl.figure("vae")
    assert "#ffd98a" in figure.dot and "z × 0.13025" in figure.dot  # the changed scaling step, coloured
    with pytest.raises(ExplorerError, match="no decoder"):
        sd15_sdxl.figure("decoder")


def test_a_model_and_itself_are_identical():
    result = diff("sd15", "sd15", ["unet"])
    assert result.identical and "identical" in result.summary()
    out = runner.invoke(app, ["diff", "sd15", "sd15", "--component", "vae"])
    assert out.exit_code == 0 and "identical" in out.stdout


def test_a_fine_tune_differs_only_in_its_parameters(tiny_folder):
    """A folder saved with its own weights against the preset it was built from."""
    result = diff(str(tiny_folder), "tiny")
    assert result.identical
    assert "identical in architecture" in result.summary() and "parameters' values" in result.summary()


def _record(paths_types: list[tuple[str, str]]) -> Trace:
    nodes = [Node("", "Model", "module", 0, 0, {}, ((1, 4),), 10)]
    nodes += [Node(p, t, "module", p.count(".") + 1, 0, {"x": (1, 4)}, ((1, 4),), 5) for p, t in paths_types]
    return Trace("unet", "x", "meta", {"x": (1, 4)}, 10, tuple(nodes))


def test_paths_that_differ_are_paired_by_position_in_the_flow():
    a = _record([("blocks", "Stack"), ("blocks.conv", "Conv2d"), ("blocks.norm", "GroupNorm"), ("out", "Linear")])
    b = _record([("blocks", "Stack"), ("blocks.conv_1", "Conv2d"), ("blocks.extra", "SiLU"), ("out", "Linear")])
    d = compare(a, b)
    renamed = d.find("blocks.conv_1")
    assert renamed.renamed and renamed.a.path == "blocks.conv" and renamed.status == "changed"
    assert d.find("blocks.extra").status == "added" and d.find("blocks.norm").status == "removed"
    assert [e.path for e in d.entries] == ["blocks", "blocks.conv_1", "blocks.norm", "blocks.extra", "out"]
    assert d.find("blocks").inside == 3 and d.find("out").status == "same"


def test_cli_side_by_side_json_and_figure(tmp_path):
    out = runner.invoke(app, ["diff", "sd15", "sdxl", "--component", "unet", "-o", str(tmp_path / "diff.svg")])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].startswith("SD1.5 → SDXL") and "3 resolution levels instead of 4" in out.stdout
    row = next(line for line in lines if "down_blocks.0 " in line)
    assert row.lstrip().startswith("~") and "CrossAttnDownBlock2D" in row and "DownBlock2D" in row
    assert any(line.lstrip().startswith("−") and "down_blocks.3" in line for line in lines)
    svg = (tmp_path / "diff.svg").read_text()
    assert "only in SD1.5" in svg and "#f4b9b9" in svg and "#bfe6b5" in svg and "#ffd98a" in svg
    data = json.loads(runner.invoke(app, ["diff", "sd15", "sdxl", "--json", "-c", "unet"]).stdout)
    assert data["schema"] == "sd-explorer/diff@1" and not data["identical"]
    unet = data["components"]["unet"]
    assert unet["params"] == {"a": 859_520_964, "b": 2_567_463_684}
    assert unet["counts"]["removed"] == sum(1 for e in unet["entries"] if e["status"] == "removed" and e["a"]["kind"] == "module")


def test_bad_input(tmp_path):
    missing = runner.invoke(app, ["diff", "sd15", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr and "--model" not in missing.stderr
    wrong = runner.invoke(app, ["diff", "sd15", "sdxl", "-o", str(tmp_path / "diff.txt")])
    assert wrong.exit_code == 2 and ".txt" in wrong.stderr and not (tmp_path / "diff.txt").exists()
    size = runner.invoke(app, ["diff", "sd15", "sdxl", "--size", "100"])
    assert size.exit_code == 2 and "multiple of 8" in size.stderr
    for result in (missing, wrong, size):
        assert "Traceback" not in result.output


@pytest.mark.slow  # SD2.1's page with the diff: every figure in both languages
@needs_chromium()
def test_the_page_has_a_diff_tab_whose_blocks_open_in_the_model(browser, tmp_path):
    site = tmp_path / "site"
    result = runner.invoke(app, ["html", str(site), "--model", "sd21", "--diff", "sd15"])
    assert result.exit_code == 0, result.output
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((site / "index.html").as_uri())
    assert page.inner_text("#model-title") == "SD2.1, block by block" and "SD2.1" in page.title()
    page.click("#tabs button[data-tab=diff]")
    assert "SD2.1's UNet: attention heads 5×64" in page.inner_text("#diff .summary")
    assert page.locator('#diff .diff-figure[data-component=unet] [data-path="down_blocks.1"]').count() == 1
    assert "The VAE" in page.inner_text("#diff") and page.locator("#diff .diff-figure[data-component=vae]").count() == 0
    row = page.locator("#diff table.diff-rows tr.changed td.go", has_text="down_blocks.1.attentions.0").first
    row.click()
    assert page.locator("#tabs button.on").inner_text() == "UNet" and "attentions.0" in page.inner_text("#crumbs")
    page.click("#tabs button[data-tab=diff]")
    page.click('#diff .diff-figure[data-component=unet] [data-path="mid_block"]')
    assert "mid_block" in page.inner_text("#crumbs")
    page.screenshot(path=str(tmp_path / "diff.png"), full_page=True, caret="initial")
    assert not errors
    page.close()


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, tiny_models):
    """The tiny pipeline saved twice: as it is, and with its UNet's cross-attention projections moved
    a little, as a fine-tune of the cross-attention would (the rest bit for bit the same)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from explorer.specs import TINY
    from explorer.tokenizer import clip_tokenizer

    import copy

    def saved(unet, name):
        pipe = StableDiffusionPipeline(
            vae=tiny_models["vae"], text_encoder=tiny_models["clip"], tokenizer=clip_tokenizer(), unet=unet,
            scheduler=PNDMScheduler.from_config(dict(TINY.scheduler)), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(folder / name, safe_serialization=True)

    folder = tmp_path_factory.mktemp("fine-tune")
    saved(tiny_models["unet"], "base")
    tuned = copy.deepcopy(tiny_models["unet"])  # the session's tiny models stay as they are
    moved = []
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "attn2.to_k" in name or "attn2.to_v" in name:
                p.mul_(1.05)
                moved.append(name)
    saved(tuned, "tuned")
    return folder / "base", folder / "tuned", moved


def test_values_say_what_a_fine_tune_changed_and_by_how_much(fine_tuned):
    base, tuned, moved = fine_tuned
    result = diff(str(base), str(tuned), values=True)
    assert result.identical  # the architecture
    unet = next(v for v in result.values if v.component == "unet")
    assert sorted(name for name, _ in unet.changed) == sorted(moved) and unet.tensors == 686
    assert all(abs(change - 0.05 / 1.05) < 1e-4 for _, change in unet.changed)  # ×1.05: |b − a| / |b| = 0.05 / 1.05
    assert all(v.identical for v in result.values if v.component != "unet")
    text = result.summary()
    assert f"{len(moved)} of the UNet's 686 tensors changed (relative change: median 4.76 %" in text
    assert "the VAE and text encoder are bit for bit the same" in text
    out = runner.invoke(app, ["diff", str(base), str(tuned), "--values", "--json"])
    data = json.loads(out.stdout)
    assert data["values"]["vae"]["identical"] and len(data["values"]["unet"]["changed"]) == len(moved)
    same = diff(str(base), str(base).rstrip("/") + "/", values=True)
    assert all(v.identical for v in same.values) and "bit for bit the same" in same.summary()


def test_values_need_weights_on_both_sides(fine_tuned):
    result = runner.invoke(app, ["diff", "tiny", str(fine_tuned[0]), "--values"])
    assert result.exit_code == 2 and "tiny is a preset without weights" in result.stderr and "Traceback" not in result.output
