"""The `explore` command: the tree, the JSON record, and one clear sentence for every wrong input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from explorer import trace
from explorer.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def test_unet_depth_3_tree():
    result = run("unet", "--depth", "3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    lines = out.splitlines()
    # the one-line header (two physical lines: what, then inputs and params)
    assert lines[0].startswith("unet UNet2DConditionModel · sd15 · meta")
    assert "sample [2,4,64,64]" in lines[1] and "859,520,964 params" in lines[1]
    # block -> ResnetBlock2D / Transformer2DModel -> their layers
    assert any("down_blocks.0" in l and "CrossAttnDownBlock2D" in l and "[2,320,64,64] → [2,320,32,32]" in l for l in lines)
    assert any("conv_shortcut" in l and "[2,320,32,32] → [2,640,32,32]" in l for l in lines)
    assert any("transformer_blocks.0" in l and "[2,4096,320] → [2,4096,320]" in l for l in lines)
    # side inputs are shown where they enter
    assert "+ temb [2,1280]" in out
    assert "+ encoder_hidden_states [2,77,768]" in out
    assert "res_hidden_states_tuple ([2,1280,8,8]×3)" in out
    # readable at 100 columns at this depth
    assert max(len(l.rstrip()) for l in lines) <= 100
    # depth 3 stops above the attention layers
    assert "to_q" not in out and "deeper nodes not shown" in out


def test_block_subtree():
    result = run("unet", "--block", "down_blocks.1", "--depth", "4")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(l.startswith("down_blocks.1 ") and "CrossAttnDownBlock2D" in l for l in lines)
    assert not any("down_blocks.0" in l or "mid_block" in l for l in lines)
    assert any("softmax(QKᵀ/√80)" in l and "[2,10,1024,77]" not in l for l in lines)  # 8 heads of 80
    assert any("scores" in l and "[2,8,1024,77]" in l for l in lines)


def test_vae_and_clip_trees():
    vae = run("vae", "--depth", "2")
    assert vae.exit_code == 0
    assert "z = mean + exp(0.5·logvar)·ε" in vae.stdout and "z × 0.18215" in vae.stdout
    clip = run("clip", "--depth", "2", "--prompt", "a photo of an astronaut riding a horse")
    assert clip.exit_code == 0
    assert "astronaut</w>" in clip.stdout and "18376" in clip.stdout
    assert "10–76: <|endoftext|> 49407 × 67" in clip.stdout
    assert "CLIPEncoderLayer" in clip.stdout


def test_clip_warns_about_dropped_tokens():
    result = run("clip", "--depth", "0", "--prompt", "a red apple, " * 30 + "and a purple elephant")
    assert result.exit_code == 0
    assert "49 tokens too long" in result.stdout and "purple elephant" in result.stdout


def test_json_is_the_record_and_only_the_record():
    result = run("unet", "--height", "768", "--width", "512", "--batch", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing else on stdout
    assert data["schema"] == "sd-explorer/trace@1"
    assert data["inputs"] == {"sample": [1, 4, 96, 64], "timestep": [1], "encoder_hidden_states": [1, 77, 768]}
    assert len(data["nodes"]) == len(trace("unet", height=768, width=512, batch=1).nodes)  # no --depth: all
    depth1 = json.loads(run("unet", "--json", "--depth", "1").stdout)
    assert [n["path"] for n in depth1["nodes"]][:4] == ["", "time_proj", "time_embedding", "conv_in"]
    assert all(n["depth"] <= 1 for n in depth1["nodes"])


def test_every_shape_of_the_guide_is_reachable_at_depth_99():
    out = run("unet", "--depth", "99").stdout
    for text in ("[2,8,4096,40]", "[2,8,4096,4096]", "[2,8,4096,77]", "[2,4096,2560]", "[2,2560,8,8]", "[2,960,64,64]"):
        assert text in out, text


@pytest.mark.parametrize(
    "args, message",
    [
        (["unet", "--depth", "-1"], "--depth must be 0 or more"),
        (["unet", "--height", "500"], "multiple of 8"),
        (["unet", "--width", "4096"], "between 64 and 2048"),
        (["unet", "--batch", "0"], "--batch must be between 1 and 64"),
        (["unet", "--block", "down_block.1"], "did you mean down_blocks.1"),
        (["unet", "--block", "nothing"], "top-level names are"),
        (["unet", "--model", "./missing-folder"], "does not exist"),
        (["unet", "--model", "weights.ckpt"], "does not exist"),
        (["unet", "--config", "tiny"], "--config names the architecture of a single"),
        (["vae", "--weights", "pretrained"], "has no weights"),
        (["text_encoder"], "unknown component or command 'text_encoder'"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_pickle_and_corrupt_files(tmp_path, tiny_original_file):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pretend pickle")
    refused = run("unet", "--model", str(ckpt))
    assert refused.exit_code == 2 and "--allow-pickle" in refused.stderr
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(tiny_original_file.read_bytes()[:5000])
    corrupt = run("unet", "--model", str(broken), "--config", "tiny")
    assert corrupt.exit_code == 2 and "truncated or corrupt" in corrupt.stderr


def test_real_weights_from_a_folder(tiny_folder):
    result = run("unet", "--model", str(tiny_folder), "--weights", "pretrained", "--depth", "1")
    assert result.exit_code == 0, result.output
    assert "pretrained weights" in result.stdout and "[2,32,1,1]" in result.stdout


def test_command_list_shows_each_commands_first_paragraph_on_one_line():
    """rich keeps a docstring's line breaks: the list would break `explore html`'s summary mid-sentence."""
    import typer

    result = runner.invoke(app, ["--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name, command in typer.main.get_command(app).commands.items():
        summary = " ".join(command.help.split("\n\n")[0].split())
        assert any(name in line and summary in line for line in lines), (name, summary)


def _explore(*args, env=None):
    """The installed console script, in a fresh process."""
    exe = Path(sys.executable).parent / "explore"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_console_script_and_hub_ids(fake_hub_cache):
    ok = _explore("unet", "--model", "sd-explorer-test/tiny", "--depth", "1", env={"HF_HUB_CACHE": str(fake_hub_cache)})
    assert ok.returncode == 0, ok.stderr
    assert "sd-explorer-test/tiny" in ok.stdout and "[2,4,8,8] → [2,4,8,8]" in ok.stdout

    offline = _explore(
        "unet", "--model", "nobody/missing", env={"HF_HUB_CACHE": str(fake_hub_cache), "HF_HUB_OFFLINE": "1"}
    )
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr and "Traceback" not in offline.stderr

    not_allowed = _explore("unet", "--model", "nobody/missing", env={"HF_HUB_CACHE": str(fake_hub_cache)})
    assert not_allowed.returncode == 2 and "--allow-download" in not_allowed.stderr

    help_text = _explore("--help")
    assert help_text.returncode == 0 and "unet" in help_text.stdout and "clip" in help_text.stdout


def test_hub_id_with_only_its_configs_cached(tmp_path, fake_hub_cache):
    """A hub id explored on the meta device needs its configs, not its weights."""
    import shutil

    cache = tmp_path / "hub"
    shutil.copytree(fake_hub_cache, cache)
    for weights in cache.glob("models--*/snapshots/*/*/*.safetensors"):
        weights.unlink()
    result = _explore("unet", "--model", "sd-explorer-test/tiny", "--depth", "0", env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "not in the local cache" in result.stderr
    pretrained = _explore("unet", "--model", "sd-explorer-test/tiny", "--weights", "pretrained",
                          env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert pretrained.returncode == 2 and "no weights" in pretrained.stderr
