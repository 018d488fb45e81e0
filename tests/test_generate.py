"""Generation watched step by step: a real diffusers StableDiffusionPipeline on the tiny preset
(random weights, real tensors), the files it leaves, Ctrl-C, and the full SD1.5 architecture once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from explorer.cli import app
from explorer.runs import SCHEMA, load_run
from explorer.generation import Settings, generate

runner = CliRunner()


def tiny(**kw) -> Settings:
    return Settings(**{"prompt": "a lighthouse at dusk", "model": "tiny", "steps": 3, "seed": 42, **kw})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return generate(tiny(), tmp_path_factory.mktemp("run"))


def test_the_three_files(tiny_run):
    out = tiny_run.out
    assert Image.open(out / "image.png").size == (64, 64)
    assert Image.open(out / "latents.png").size[0] > 64
    record = json.loads((out / "trace.json").read_text())
    assert record["schema"] == SCHEMA == "sd-explorer/generation@4"
    assert record["status"] == "done"
    assert record["settings"]["weights"] == "random" and "noise" in record["settings"]["warning"]
    assert record["settings"]["scheduler"] == "pndm" and record["settings"]["seed"] == 42
    assert [t["prompt"] for t in record["tokens"]] == ["", "a lighthouse at dusk"]
    assert set(record["components"]) == {"unet", "vae", "clip"}
    assert record["components"]["unet"]["schema"] == "sd-explorer/trace@1"
    assert {"encode_prompt", "denoise", "vae_decode"} <= set(record["phases"])


def test_every_step_records_its_seams(tiny_run):
    record = json.loads((tiny_run.out / "trace.json").read_text())
    steps = record["steps"]
    assert len(steps) == record["total_steps"] == 4  # PNDM runs one step more than asked
    assert [s["index"] for s in steps] == [0, 1, 2, 3]
    timesteps = [s["timestep"] for s in steps]
    assert timesteps == sorted(timesteps, reverse=True) and timesteps[0] > 500
    for s in steps:
        assert s["shapes"] == {
            "unet_input": [2, 4, 8, 8],  # classifier-free guidance doubles the batch
            "noise_pred": [2, 4, 8, 8],
            "latent_in": [1, 4, 8, 8],
            "guided": [1, 4, 8, 8],
            "latent_out": [1, 4, 8, 8],
        }
        assert s["seconds"] > 0
        assert all(abs(v) < 1e6 for v in s["latent_stats"].values())


def test_watchers_are_removed(tiny_run):
    pipe = tiny_run.pipe
    assert not pipe.unet._forward_hooks and not pipe.unet._forward_pre_hooks
    assert "step" not in vars(pipe.scheduler) and "encode_prompt" not in vars(pipe) and "decode" not in vars(pipe.vae)


def test_same_seed_same_image_bit_for_bit(tmp_path, tiny_run):
    again = generate(tiny(), tmp_path / "again")
    assert (again.out / "image.png").read_bytes() == (tiny_run.out / "image.png").read_bytes()
    other = generate(tiny(seed=7), tmp_path / "other")
    assert (other.out / "image.png").read_bytes() != (tiny_run.out / "image.png").read_bytes()


@pytest.mark.parametrize("scheduler, steps", [("ddim", 3), ("euler", 3)])
def test_other_schedulers(tmp_path, scheduler, steps):
    result = generate(tiny(scheduler=scheduler, steps=steps, guidance=1.0), tmp_path)
    record = json.loads((tmp_path / "trace.json").read_text())
    assert len(record["steps"]) == steps
    assert record["steps"][0]["shapes"]["unet_input"] == [1, 4, 8, 8]  # guidance off: no doubled batch
    assert result.watch.status == "done"


def test_cli_compare_agrees_and_summary(tmp_path):
    result = runner.invoke(app, ["generate", "-p", "a red fox", "--model", "tiny", "--steps", "2", "--out", str(tmp_path), "--compare"])
    assert result.exit_code == 0, result.output
    assert "modules match" in result.stdout and "all " in result.stdout
    assert "Random weights" in result.stderr
    assert "where the time went" in result.stdout
    assert result.stderr.endswith("╯\n")  # the panel's last line ended: a log (2>&1) goes on below it
    record = json.loads((tmp_path / "trace.json").read_text())
    assert record["compare"]["differences"] == [] and record["compare"]["checked"] > 500


def test_long_prompt_runs_with_a_warning(tmp_path):
    prompt = "a red apple, " * 30 + "and a purple elephant"
    result = runner.invoke(app, ["generate", "-p", prompt, "--model", "tiny", "--steps", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "tokens too long" in result.stderr and "purple elephant" in result.stderr
    record = json.loads((tmp_path / "trace.json").read_text())
    assert record["tokens"][1]["dropped_count"] == 49


def test_pretrained_folder_generates(tmp_path, tiny_folder):
    result = generate(Settings(prompt="a fox", model=str(tiny_folder), steps=2, seed=1), tmp_path)
    record = json.loads((tmp_path / "trace.json").read_text())
    assert record["settings"]["weights"] == "pretrained" and "warning" not in record["settings"]
    assert (tmp_path / "image.png").exists() and result.watch.status == "done"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps must be between 1"),
        (["--height", "100"], "multiple of 8"),
        (["--model", "./missing"], "does not exist"),
        (["--guidance", "-1"], "--guidance must be 0 or more"),
    ],
)
def test_bad_input(tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", "-p", "x", "--model", "tiny", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_a_wrong_model_on_a_terminal_leaves_no_spinner_and_shows_the_cursor(tmp_path):
    """On a terminal the spinner hides the cursor while the pipeline is built: a wrong --model, found
    then, stops it first, so the sentence is the last thing on the screen and the cursor shows again."""
    import os
    import pty

    main, side = pty.openpty()
    exe = Path(sys.executable).parent / "explore"
    process = subprocess.Popen([str(exe), "generate", "-p", "x", "--model", "./missing", "--out", str(tmp_path / "run")],
                               stdin=side, stdout=side, stderr=side, env={**os.environ, "TERM": "xterm"})
    os.close(side)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # Linux: the terminal's other end has closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    text = seen.decode()
    assert process.wait(timeout=120) == 2, text
    assert "\x1b[?25l" in text, "no spinner shown: this terminal was not taken for one"
    after = text[text.index("Error:"):]
    assert "does not exist" in after and "Building the pipeline" not in after
    assert text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l")  # the cursor shown again after it was hidden


def test_bad_scheduler_pickle_and_unwritable_out(tmp_path):
    result = runner.invoke(app, ["generate", "-p", "x", "--scheduler", "dpm"])
    assert result.exit_code == 2 and "dpm" in result.output
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    result = runner.invoke(app, ["generate", "-p", "x", "--model", str(ckpt), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--allow-pickle" in result.stderr
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["generate", "-p", "x", "--model", "tiny", "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.stderr


def test_ctrl_c_stops_cleanly_and_keeps_the_steps_done(tmp_path):
    """A real SIGINT to a real process, mid-run: exit 130, no traceback, a valid trace.json, and every
    step it names there with its maps."""
    out = tmp_path / "run"
    exe = Path(sys.executable).parent / "explore"
    # A suite started in the background (`make test &`, nohup) runs with SIGINT ignored, and a child
    # inherits an ignored signal: it would never see the one sent below. While the child starts, the
    # signal is handled here, and a handled signal is reset to its default in a new program, as a
    # command started from a terminal has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [str(exe), "generate", "-p", "a slow run", "--model", "tiny", "--steps", "999", "--attention-maps", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    trace = out / "trace.json"
    started, deadline, seen = time.time(), time.time() + 120, 0
    while time.time() < deadline and process.poll() is None:
        if trace.exists() and (seen := len(json.loads(trace.read_text())["steps"])):
            break
        time.sleep(0.1)
    waited = f"SIGINT after {time.time() - started:.1f} s, {seen} steps in trace.json, the run still going: {process.poll() is None}"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, f"{waited}\n{stderr}"
    assert "Traceback" not in stderr + stdout
    record = json.loads(trace.read_text())
    assert record["status"] == "interrupted"
    assert 1 <= len(record["steps"]) < 1000
    assert "Interrupted after" in stdout
    assert not (out / "image.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written temporaries
    run = load_run(out)
    assert all(len(run.maps(k)) == len(run.map_layers) for k in range(len(run.steps)))


def test_full_sd15_architecture_with_random_weights_offline(tmp_path):
    """The real SD1.5 classes at full width, random weights, a 64x64 image and one step."""
    result = generate(Settings(prompt="a lighthouse", steps=1, height=64, width=64, seed=3), tmp_path)
    record = json.loads((tmp_path / "trace.json").read_text())
    assert record["settings"]["model"] == "sd15" and record["settings"]["weights"] == "random"
    assert record["steps"][0]["shapes"]["unet_input"] == [2, 4, 8, 8]
    assert record["components"]["unet"]["total_params"] == 859_520_964
    assert Image.open(tmp_path / "image.png").size == (64, 64)
    assert result.watch.status == "done"


def test_single_file_checkpoint_generates(tmp_path, tiny_original_file):
    """The original SD single-file layout, converted by diffusers' own functions, into a real pipeline."""
    result = generate(Settings(prompt="a fox", model=str(tiny_original_file), config="tiny", steps=1), tmp_path)
    record = json.loads((tmp_path / "trace.json").read_text())
    assert record["settings"]["weights"] == "pretrained"
    assert result.watch.status == "done" and (tmp_path / "image.png").exists()
