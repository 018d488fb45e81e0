"""The micro SD: its data and judge, the shipped weights (loaded like any user's folder, and doing what
docs/micro.md says), and training: a few steps that lower the loss, the same seed giving the same
weights, and a resume that continues exactly where Ctrl-C stopped."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from explorer.cli import app
from explorer.loading import SHIPPED
from explorer.micro import data
from explorer.micro.judge import judge

runner = CliRunner()
MICRO = SHIPPED["micro"]


# -- data and judge ----------------------------------------------------------------------------------


def test_the_judge_is_right_on_every_generated_combination():
    specs = [data.Spec(c, s, p, size) for c, s, p in data.all_combinations() for size in ("small", "large", "")]
    images = data.to_pil(data.draw(specs, torch.Generator().manual_seed(1)))
    wrong = [(spec, judge(image)) for spec, image in zip(specs, images) if
             (judge(image).colour, judge(image).shape, judge(image).position) != (spec.colour, spec.shape, spec.position)]
    assert not wrong


def test_captions_vary_and_never_show_a_held_out_combination():
    specs, captions = data.random_specs(3000, torch.Generator().manual_seed(0))
    assert not {s.combination for s in specs} & set(data.HELD_OUT)
    assert len(set(captions)) > 1000
    assert "an orange square on the left" in {data.caption(data.Spec("orange", "square", "left"))}
    words = set(data.vocabulary())
    assert {"red", "circle", "left", "middle", "small", "large"} <= words
    assert all(w in words for c in captions for w in c.replace(",", " ").split())


# -- the shipped model ---------------------------------------------------------------------------------


def test_shipped_as_a_plain_diffusers_folder_under_20_mb():
    files = [p for p in MICRO.rglob("*") if p.is_file()]
    assert (MICRO / "model_index.json").is_file()
    assert {p.parent.name for p in files if p.suffix == ".safetensors"} == {"unet", "vae", "text_encoder"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".ckpt", ".pth")]
    assert sum(p.stat().st_size for p in files) <= 20_000_000


def test_its_configs_are_the_micro_presets():
    from explorer.specs import MICRO as PRESET

    for component in ("unet", "vae", "clip"):
        folder = {"clip": "text_encoder"}.get(component, component)
        saved = json.loads((MICRO / folder / "config.json").read_text())
        for key, value in PRESET.config(component).items():
            if not key.startswith("_") and key != "scaling_factor":
                assert saved[key] == value, (component, key)
    info = json.loads((MICRO / "micro.json").read_text())
    assert info["scaling_factor"] == json.loads((MICRO / "vae" / "config.json").read_text())["scaling_factor"] != 1.0
    assert info["vocabulary"] == data.vocabulary()


def test_its_tokenizer_is_sd15s_in_sd15s_layout():
    from explorer.tokenizer import clip_tokenizer

    assert sorted(p.name for p in (MICRO / "tokenizer").iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    shipped, ours = clip_tokenizer(str(MICRO / "tokenizer")), clip_tokenizer()
    for text in ("a red circle on the left", "Naïve café, 42 <|endoftext|>!", "purple " * 90):
        assert shipped(text, padding="max_length", max_length=77, truncation=True).input_ids == \
            ours(text, padding="max_length", max_length=77, truncation=True).input_ids


@pytest.fixture(scope="module")
def pipe():
    from explorer.micro.evaluate import load_pipeline

    return load_pipeline("micro")


PROMPTS = [
    data.Spec("red", "circle", "left"),
    data.Spec("blue", "square", "right"),
    data.Spec("yellow", "triangle", "top"),
    data.Spec("green", "square", "bottom"),
    data.Spec("purple", "triangle", "middle"),
    data.Spec("orange", "circle", "right"),
]


def test_it_draws_the_colour_and_the_place_it_is_asked_for(pipe):
    """The judge of docs/micro.md on a handful of prompts and seeds: what the evaluation claims."""
    from explorer.micro.evaluate import generate

    images = generate(pipe, [data.prompt(s) for s in PROMPTS] * 2, [0] * len(PROMPTS) + [1] * len(PROMPTS), 7.5)
    verdicts = [judge(image) for image in images]
    colours = sum(v.colour == s.colour for v, s in zip(verdicts, PROMPTS * 2))
    places = sum(v.position == s.position for v, s in zip(verdicts, PROMPTS * 2))
    assert colours >= 10 and places >= 9, [(s, v) for v, s in zip(verdicts, PROMPTS * 2)]


def test_its_vae_reconstructs_a_shape():
    from explorer.loading import load

    vae = load("vae", "micro", weights="pretrained").model
    image = data.draw([data.Spec("purple", "triangle", "left", "large")], torch.Generator().manual_seed(3))
    with torch.no_grad():
        back = vae.decode(vae.encode(image).latent_dist.mode()).sample
    assert (back - image).abs().mean() < 0.05
    assert judge(data.to_pil(back)[0]).shape == "triangle"


def test_explore_works_on_it():
    result = runner.invoke(app, ["unet", "--model", "micro", "--depth", "2"])
    assert result.exit_code == 0, result.output
    assert "CrossAttnDownBlock2D" in result.stdout and "[2,4,16,16]" in result.stdout and "[2,77,32]" in result.stdout


def test_a_generation_warns_about_words_it_never_learned(tmp_path):
    result = runner.invoke(app, ["generate", "-p", "a red dragon on the left", "--model", "micro", "--steps", "2",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "never saw: dragon" in result.stderr
    record = json.loads((tmp_path / "r" / "trace.json").read_text())
    assert record["settings"]["weights"] == "pretrained" and "dragon" in record["warnings"][0]


def test_a_missing_micro_folder_is_one_sentence(tmp_path, monkeypatch):
    from explorer import loading

    monkeypatch.setitem(loading.SHIPPED, "micro", tmp_path / "gone")
    result = runner.invoke(app, ["unet", "--model", "micro"])
    assert result.exit_code == 2 and "missing or incomplete" in result.stderr and "Traceback" not in result.output


# -- training -------------------------------------------------------------------------------------------


def small_plan(out: Path, **kw):
    from explorer.micro.train import Plan

    settings = dict(vae_steps=4, vae_batch=4, unet_steps=6, unet_batch=4, ground_steps=3, evaluate_seeds=0, warmup=2)
    return Plan(out=out, **{**settings, **kw})


def weights_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {part: load_file(str(folder / part / "diffusion_pytorch_model.safetensors" if part != "text_encoder"
                                else folder / part / "model.safetensors")) for part in ("unet", "vae", "text_encoder")}


def test_a_few_steps_lower_the_loss(tmp_path):
    from explorer.micro.train import run

    info = run(small_plan(tmp_path / "a", unet_steps=30))
    unet = info["loss"]["unet"]
    assert sum(unet[-5:]) / 5 < sum(unet[:5]) / 5
    assert (tmp_path / "a" / "loss.png").is_file() and not (tmp_path / "a" / "checkpoint.pt").exists()


@pytest.mark.parametrize("where", [("unet", 3), pytest.param(("ground", 2), marks=pytest.mark.slow)])  # in stage 3 too, under --runslow
def test_ctrl_c_writes_a_checkpoint_and_the_same_command_resumes_exactly(tmp_path, where):
    """Interrupted and resumed, or run straight through: the same weights, bit for bit (so the same
    command also gives the same weights)."""
    from explorer.micro.train import Interrupted, run

    def interrupt(stage: str, step: int, loss: float) -> None:
        if (stage, step) == where:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        run(small_plan(tmp_path / "resumed"), interrupt)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    run(small_plan(tmp_path / "resumed"))
    run(small_plan(tmp_path / "straight"))
    resumed, straight = weights_of(tmp_path / "resumed"), weights_of(tmp_path / "straight")
    assert all(torch.equal(resumed[p][k], straight[p][k]) for p in resumed for k in resumed[p])


def test_training_refuses_what_cannot_work_before_any_work(tmp_path, capsys):
    from explorer.micro.train import main

    for argv, message in (
        (["--out", "/proc/no/micro"], "cannot be created"),
        (["--out", str(tmp_path / "x"), "--unet-steps", "0"], "unet-steps must be 1 or more"),
        (["--out", str(tmp_path / "x"), "--ground-steps", "-1"], "ground-steps and ground-weight must be 0 or more"),
        (["--out", str(tmp_path / "x"), "--ground-lr", "0"], "ground-lr must be between 0 and 1"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        said = capsys.readouterr().err
        assert message in said and "Traceback" not in said
    assert not (tmp_path / "x").exists()


# -- where a word goes: the claim of docs/generation.md, measured on the shipped model ------------------

MAP_PROMPTS = [
    data.Spec("red", "circle", "left"),
    data.Spec("blue", "square", "right"),
    data.Spec("yellow", "triangle", "top"),
    data.Spec("green", "circle", "bottom"),
    data.Spec("purple", "square", "left"),
    data.Spec("orange", "triangle", "right"),
]


def test_the_shape_words_map_lies_in_the_half_the_prompt_names():
    from explorer.micro.evaluate import attention_mass

    rows = attention_mass("micro", seeds=2, specs=MAP_PROMPTS)
    mean = sum(r["mass"] for r in rows) / len(rows)
    # docs/micro.md: over 90 % on average over all 144 (the aim was 65 %); 58 % before stage 3 taught
    # the words where to look. Below 80 % here, the shipped weights no longer do what the docs say.
    assert mean >= 0.80, rows


# -- stage 3: where the words look ----------------------------------------------------------------------


def test_the_grounded_tokens_are_the_colour_and_the_shape_words():
    from explorer.micro.train import grounded_tokens, token_ids

    specs = [data.Spec("red", "circle", "left"), data.Spec("orange", "triangle", "top")]
    captions = ["on the left, a red circle", ""]  # the second caption was dropped: nothing to ground
    words = grounded_tokens(specs, captions)  # (2, 77)
    ids = token_ids(captions[:1])[0]
    marked = ids[words[0].nonzero().flatten()].tolist()
    assert sorted(marked) == sorted(token_ids(["red circle"])[0, 1:3].tolist()) and words[1].sum() == 0


def test_the_grounding_loss_is_the_share_of_attention_off_the_shape():
    from explorer.micro.train import grounding_loss

    coverage = torch.zeros(1, 1, 4, 4)
    coverage[..., :, :2] = 1.0  # the shape fills the left half
    words = torch.zeros(1, 77)
    words[0, 5] = 1.0  # one grounded token
    on_the_left = torch.zeros(1, 4, 77)  # a 2x2 layer: positions 0 and 2 are the left column
    on_the_left[0, [0, 2], 5] = 0.5
    everywhere = torch.full((1, 4, 77), 1 / 77)
    assert grounding_loss([on_the_left], coverage, words).item() == pytest.approx(0.0)
    assert grounding_loss([everywhere], coverage, words).item() == pytest.approx(0.5)
    assert grounding_loss([on_the_left, everywhere], coverage, words).item() == pytest.approx(0.25)  # mean over layers
    assert grounding_loss([everywhere], coverage, torch.zeros(1, 77)).item() == 0.0
