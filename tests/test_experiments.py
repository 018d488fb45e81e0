"""Experiments: edits that change one part of a running pipeline and undo themselves, the two runs
from the same noise, what changed between them, and sweeps. Real diffusers pipelines throughout:
micro's learned weights where the effect must mean something, the tiny preset and SD1.5's random
weights for the shapes and the plumbing."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import explorer
from explorer import edits
from explorer.cli import app
from explorer.errors import ExplorerError, OptionError
from explorer.experiments import load_experiment, load_sweep
from explorer.generation import Settings, build_pipeline, call_pipeline

runner = CliRunner()
PROMPT = "a red circle on the left"


@pytest.fixture(scope="module")
def micro():
    return build_pipeline(Settings(prompt=PROMPT, model="micro")).pipe


def latents(pipe, prompt: str = PROMPT, steps: int = 6, seed: int = 3) -> torch.Tensor:
    """The final latent of a seeded run: what bit-for-bit comparisons compare."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pipe(prompt, num_inference_steps=steps, generator=generator, output_type="latent").images


def with_edits(pipe, chosen, prompt: str = PROMPT, steps: int = 6, seed: int = 3) -> torch.Tensor:
    with edits.applied(pipe, chosen, prompt=prompt, steps=steps):
        return latents(pipe, prompt, steps, seed)


def untouched(pipe) -> dict:
    """What edits may change and must put back: the instance attributes of every module (wrapped
    forwards live there), the UNet's hooks, FreeU's factors and the attention processors."""
    return {
        "attributes": {p: sorted(k for k in vars(m) if not k.startswith("_")) for p, m in pipe.unet.named_modules()},
        "forwards": [p for p, m in pipe.unet.named_modules() if "forward" in vars(m)],
        "hooks": (len(pipe.unet._forward_pre_hooks), len(pipe.unet._forward_hooks)),
        "freeu": [getattr(b, "b1", None) for b in pipe.unet.up_blocks],
        "processors": {k: type(v).__name__ for k, v in pipe.unet.attn_processors.items()},
    }


# -- the edits themselves ----------------------------------------------------------------------------------


def test_an_experiment_without_edits_is_bit_identical_to_a_plain_generation(tmp_path):
    result = explorer.experiment(PROMPT, edits=[], steps=4, seed=5, out=tmp_path / "exp")
    plain = explorer.generate(PROMPT, model="micro", steps=4, seed=5, out=tmp_path / "plain")
    for run in (result.baseline, result.edited):
        assert (run.folder / "image.png").read_bytes() == (plain.folder / "image.png").read_bytes()
        assert (run.folder / "latents.png").read_bytes() == (plain.folder / "latents.png").read_bytes()
    assert result.record["image"]["change"] == 0 and result.record["entered"] is None
    assert all(v == 0 for step in result.record["steps"] for v in (step["x0"], *step["blocks"].values()))


def test_prompt_at_every_layer_and_step_is_generating_with_that_prompt(micro):
    other = "a green square at the top"
    assert torch.equal(with_edits(micro, [edits.prompt_at(other)]), latents(micro, other))
    assert not torch.equal(latents(micro, other), latents(micro))  # the test can fail


def test_neutral_edits_change_nothing_and_real_ones_do(micro):
    plain = latents(micro)
    for neutral in (edits.scale("mid_block", 1), edits.reweight("red", 1), edits.timestep(0), edits.skips("up.2", 1)):
        assert torch.equal(with_edits(micro, [neutral]), plain), neutral
    for real in (edits.off("up_blocks.2.attentions.0"), edits.reweight("red", 3), edits.timestep(400), edits.skips("up.3", 0)):
        assert not torch.equal(with_edits(micro, [real]), plain), real


def test_each_kind_of_off_means_what_the_docs_say(micro):
    seen = {}

    def keep(name):
        def hook(module, args, kwargs, output):
            seen[name] = (args, kwargs, output)

        return hook

    modules = dict(micro.unet.named_modules())
    names = ("down_blocks.1.attentions.0", "down_blocks.1.attentions.0.transformer_blocks.0.attn2",
             "up_blocks.1.resnets.0", "mid_block")
    handles = [modules[n].register_forward_hook(keep(n), with_kwargs=True) for n in names]
    try:
        with_edits(micro, [edits.off(n) for n in names], steps=2)
    finally:
        for h in handles:
            h.remove()
    args, kwargs, output = seen["down_blocks.1.attentions.0"]
    assert torch.equal(output[0], args[0])  # Transformer2DModel: its input passes through
    assert not seen["down_blocks.1.attentions.0.transformer_blocks.0.attn2"][2].any()  # attention: zero
    args, _, output = seen["up_blocks.1.resnets.0"]
    resnet = modules["up_blocks.1.resnets.0"]
    assert torch.allclose(output, resnet.conv_shortcut(args[0]) / resnet.output_scale_factor)  # its shortcut
    args, _, output = seen["mid_block"]
    assert torch.equal(output, args[0])


def test_a_skip_tensor_switched_off_arrives_as_zeros(micro):
    sd15 = edits.skip_routes(explorer.load("unet").model)  # on the meta device: the structure is enough
    assert len(sd15) == 12 and sd15["conv_in[0]"] == (3, 0)  # 3 + 3 + 3 + 2 from the down blocks, conv_in the twelfth
    assert sd15["down_blocks.3[1]"] == (0, 2) and sd15["down_blocks.2[2]"] == (0, 0)
    routes = edits.skip_routes(micro.unet)
    assert len(routes) == 8 and routes["conv_in[0]"] == (3, 0)  # micro: one resnet a level
    up, position = routes["down_blocks.2[0]"]
    block = micro.unet.up_blocks[up]
    consumer = block.resnets[len(block.resnets) - 1 - position]  # each resnet pops the last skip left
    skip_channels = micro.unet.down_blocks[2].resnets[0].conv2.out_channels
    arrived = []
    handle = consumer.register_forward_pre_hook(lambda m, args: arrived.append(args[0]))  # cat(hidden, skip)
    try:
        with_edits(micro, [edits.off("down_blocks.2[0]")], steps=2)
    finally:
        handle.remove()
    assert arrived and all(not x[:, -skip_channels:].any() and x[:, :-skip_channels].any() for x in arrived)


def test_steps_limit_where_an_edit_acts(micro):
    plain = latents(micro, steps=6)
    late = with_edits(micro, [edits.off("up_blocks.3.attentions.0", steps="5-")], steps=6)
    early = with_edits(micro, [edits.off("up_blocks.3.attentions.0", steps="0-1")], steps=6)
    assert not torch.equal(late, plain) and not torch.equal(early, plain) and not torch.equal(early, late)


def test_freeu_is_diffusers_own_and_is_taken_away(micro):
    before = untouched(micro)
    micro.unet.enable_freeu(**edits.FREEU_SD15)
    theirs = latents(micro)
    micro.unet.disable_freeu()
    for block in micro.unet.up_blocks:  # disable_freeu leaves the attributes, set to None: as before
        for k in edits.FREEU_SD15:
            vars(block).pop(k, None)
    assert untouched(micro) == before
    assert torch.equal(with_edits(micro, [edits.freeu()]), theirs)
    assert untouched(micro) == before


def test_edits_are_undone_after_ctrl_c_and_after_a_failing_pipeline(micro):
    before, plain = untouched(micro), latents(micro)
    everything = [edits.off("mid_block"), edits.scale("up_blocks.1.resnets.0", 2), edits.skips("up.1", 0.5), edits.freeu(),
                  edits.prompt_at("a blue square", "8x8"), edits.swap("red", "blue"), edits.reweight("circle", 2),
                  edits.timestep(100)]
    for error in (KeyboardInterrupt, RuntimeError):
        def stop_at_step_2(module, args, calls=[0]):  # noqa: B006 - counts this generation's calls
            calls[0] += 1
            if calls[0] == 3:
                raise error("stopped")

        handle = micro.unet.register_forward_pre_hook(stop_at_step_2)
        try:
            with pytest.raises(error):
                with_edits(micro, everything)
        finally:
            handle.remove()
        assert untouched(micro) == before
    assert torch.equal(latents(micro), plain)  # a plain run afterwards: bit for bit as before


def test_swap_red_to_blue_on_micro_keeps_the_position():
    """The claim docs/experiments.md makes: swap("red", "blue") at every layer and step turns micro's red
    shapes blue in at least 80 % of the prompts naming red, the judge seeing the same position."""
    from explorer.micro.data import SHAPES, POSITIONS, Spec, prompt
    from explorer.micro.evaluate import generate, load_pipeline
    from explorer.micro.judge import judge

    pipe = load_pipeline("micro")
    specs = [Spec("red", shape, position) for shape in SHAPES for position in POSITIONS]
    baselines = generate(pipe, [prompt(s) for s in specs], [0] * len(specs), 7.5)
    turned = 0
    for spec, baseline in zip(specs, baselines):
        with edits.applied(pipe, [edits.swap("red", "blue")], prompt=prompt(spec), steps=20):
            edited = call_pipeline(pipe, Settings(prompt=prompt(spec), seed=0, steps=20, guidance=7.5))
        before, after = judge(baseline), judge(edited)
        turned += before.colour == "red" and after.colour == "blue" and after.position == before.position
    assert turned >= 0.8 * len(specs), f"{turned} of {len(specs)}"


# -- the experiment's record ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mid_off(tmp_path_factory):
    return explorer.experiment(PROMPT, edits=[edits.off("down_blocks.2.attentions.0")], steps=5, seed=3,
                               out=tmp_path_factory.mktemp("exp") / "mid")


def test_the_record_says_where_the_edit_entered(mid_off):
    record = json.loads((mid_off.folder / "experiment.json").read_text())
    assert record["schema"] == "sd-explorer/experiment@1" and record["status"] == "done"
    assert record["edits"][0]["kind"] == "off" and "passes through" in record["edits"][0]["meaning"]
    assert record["entered"] == {"step": 0, "block": "down_blocks.2.attentions.0"}
    first = record["steps"][0]["blocks"]
    order = list(first)
    before = order[: order.index("down_blocks.2.attentions.0")]
    assert before and all(first[p] == 0 for p in before)  # upstream of the edit, nothing changed at step 0
    assert first["down_blocks.2"] > 0 and first["up_blocks.3"] > 0  # downstream, it spread
    assert mid_off.baseline.record["schema"] == mid_off.edited.record["schema"] == "sd-explorer/generation@4"
    assert len(record["steps"]) == record["calls"] == 6
    assert set(record["judge"]) == {"baseline", "edited", "changed"}
    assert load_experiment(mid_off.folder).record == record


def test_the_figure_and_the_summary(mid_off):
    image = mid_off.figure()
    assert image.width >= 480 and image.height >= 400
    assert "down_blocks.2.attentions.0 off" in mid_off.summary() and "entered at step 0" in mid_off.summary()


# SD1.5's random weights (1.07 billion parameters built) under --runslow; tiny always
@pytest.mark.parametrize("model, size", [pytest.param("sd15", 64, marks=pytest.mark.slow), ("tiny", None)])
def test_runs_on_sd15_random_weights_at_64px_and_on_tiny(tmp_path, model, size):
    result = explorer.experiment("a lighthouse", model=model, steps=1, height=size, width=size, seed=1,
                                 edits=[edits.off("mid_block"), edits.swap("lighthouse", "tree", "mid"),
                                        edits.skips("up.1", 0.5), edits.timestep(50)],
                                 out=tmp_path / model)
    assert result.status == "done" and result.record["image"] is not None
    assert result.record["entered"] is not None and result.record["judge"] is None


def test_an_experiment_on_your_own_pipeline(micro, tmp_path):
    result = explorer.experiment(micro, PROMPT, edits=[edits.reweight("circle", 0)], steps=3, out=tmp_path / "own")
    assert result.status == "done" and result.edited.record["status"] == "done"
    assert (result.baseline.folder / "image.png").is_file() and result.record["image"]["change"] > 0


# -- sweeps ----------------------------------------------------------------------------------------------


def test_a_sweep_over_micros_cross_attention(tmp_path):
    result = explorer.sweep(PROMPT, over="cross-attention", steps=6, seed=3, out=tmp_path / "sweep")
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["schema"] == "sd-explorer/sweep@1" and record["status"] == "done"
    paths = [m["path"] for m in record["modules"]]
    assert len(paths) == 10 and all(p.endswith(".attn2") for p in paths)
    assert any(m["change"] > 0 for m in record["modules"])
    assert result.image(paths[0]).size == (64, 64)
    dot = result.figure().dot
    assert "effect" not in dot or "fillcolor" in dot
    assert "image change" in dot or "image unchanged" in dot
    assert load_sweep(tmp_path / "sweep").record == record
    assert paths[0] in result.table()


def test_a_sweep_by_depth_lists_what_it_skipped(micro, tmp_path):
    result = explorer.sweep(micro, PROMPT, depth=1, steps=2, out=tmp_path / "depth")
    assert [m["path"] for m in result.modules] == ["mid_block"]
    assert {s["path"] for s in result.record["skipped"]} >= {"conv_in", "down_blocks.0", "up_blocks.3"}


# -- wrong inputs: one sentence, exit 2, nothing written ------------------------------------------------------------


@pytest.mark.parametrize("arguments, words", [
    (["--off", "mid_blok"], "the nearest: mid_block"),
    (["--swap", "green=blue"], "'green' is not in the prompt"),
    (["--swap", "red=blue@9x9"], "'9x9' matches no cross-attention layer"),
    (["--off", "mid_block", "--during", "0-40"], "21 UNet calls, 0 to 20; 21 is not one of them"),
    (["--off", "conv_in"], "has no meaning for conv_in"),
    (["--off", "down_blocks.1"], "switch off its parts instead"),
    (["--scale", "mid_block=nan"], "must be a finite number"),
    (["--reweight", "red=inf"], "must be a finite number"),
    (["--swap", "red"], "takes WORD=NEW_WORD"),
    (["--off", "mid_block", "--during", "5-2"], "ends before it starts"),
])
def test_wrong_edits_are_refused_in_one_sentence(tmp_path, arguments, words):
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", "-p", PROMPT, "-o", str(out), *arguments])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and words in " ".join(result.stderr.split()), result.stderr
    assert not out.exists()


def test_the_python_api_refuses_too(tmp_path):
    with pytest.raises(ExplorerError, match=r"reweight\('lizard', 2\): word 'lizard' is not in the prompt"):
        explorer.experiment(PROMPT, edits=[edits.reweight("lizard", 2)], steps=2, out=tmp_path / "a")
    with pytest.raises(ExplorerError, match="'red' takes 1, 'vermilion' takes 3"):
        explorer.experiment(PROMPT, edits=[edits.swap("red", "vermilion")], steps=2, out=tmp_path / "b")
    with pytest.raises(OptionError, match="must be edits made by explorer.edits"):
        explorer.experiment(PROMPT, edits=["off mid_block"], steps=2, out=tmp_path / "c")
    assert not list(tmp_path.iterdir())


def test_the_command_line(tmp_path):
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", "-p", PROMPT, "--swap", "red=blue", "--steps", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "swap red → blue" in result.stdout and "the judge:" in result.stdout
    assert {p.name for p in out.iterdir()} == {"experiment.json", "comparison.png", "baseline", "edited"}
    result = runner.invoke(app, ["sweep", "-p", PROMPT, "--steps", "3", "--layers", "up.3", "-o", str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    assert "up_blocks.3.attentions.1.transformer_blocks.0.attn2" in result.stdout
    assert (tmp_path / "sweep" / "sweep.svg").read_text().startswith("<?xml")


def test_guidance_at_some_steps(micro):
    plain = latents(micro)
    assert torch.equal(with_edits(micro, [edits.guidance(7.5)]), plain)  # the run's own scale: nothing moves
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        at_one = micro(PROMPT, num_inference_steps=6, guidance_scale=1.01, generator=generator, output_type="latent").images
    edited = with_edits(micro, [edits.guidance(1.01)])
    assert torch.allclose(edited, at_one, atol=1e-4)  # the same as running at that scale, up to rounding
    assert not torch.allclose(edited, plain, atol=1e-2)


def test_a_sweep_on_tiny(tmp_path):
    result = explorer.sweep("a lighthouse", model="tiny", over="resnets", steps=1, out=tmp_path / "tiny")
    assert result.record["status"] == "done" and all(m["type"] == "ResnetBlock2D" for m in result.modules)
    assert all("judge" not in m for m in result.modules)  # the judge reads micro's shapes only


def test_the_pages_figures_are_what_the_code_makes(tmp_path):
    """docs/experiments.md's two figures, made again: the same comparison (pixels within a few levels:
    PyTorch's thread count moves the last bits of a float sum) and the same sweep (every layer's image
    change as the figure prints it)."""
    import re

    import numpy as np
    from PIL import Image

    from explorer.micro.studies import example_figures

    docs = __import__("pathlib").Path(__file__).resolve().parent.parent / "docs"
    made = example_figures(tmp_path)
    fresh, old = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (made["swap"], docs / "experiments-swap.png"))
    difference = np.abs(fresh - old)
    assert fresh.shape == old.shape and difference.max() <= 12 and difference.mean() < 0.2, "run scripts/experiment_docs.py"
    changes = [re.findall(r"image ([\d.]+) %", p.read_text()) for p in (made["sweep"], docs / "experiments-sweep.svg")]
    assert changes[0] and changes[0] == changes[1], "run scripts/experiment_docs.py"


def test_the_pages_tables_are_the_committed_results():
    """docs/experiments.md's tables are what scripts/experiment_docs.py makes from
    docs/experiments-results.json (the run of explorer.micro.studies the page quotes)."""
    import importlib.util
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("experiment_docs", root / "scripts" / "experiment_docs.py")
    pages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pages)
    results = json.loads((root / "docs" / "experiments-results.json").read_text())
    for page, lang in ((root / "docs" / "experiments.md", "en"), (root / "docs" / "zh" / "experiments.md", "zh")):
        text = page.read_text()
        assert text == pages.filled(text, results, lang), f"run scripts/experiment_docs.py --tables ({page.name}, {lang})"
    assert pages.tables(results["summary"], "zh")["resolutions"].splitlines()[2].startswith("| 16x16 | 0 % |")


def test_p_plus_on_micro_does_what_the_page_says(micro):
    """The page's finding, on a few prompts: the 8x8 layers decide the colour, the 4x4 layers the shape
    and the position."""
    from explorer.micro.data import Spec, prompt
    from explorer.micro.judge import judge
    from explorer.micro.studies import other

    specs = [Spec("red", "circle", "left"), Spec("green", "square", "top"), Spec("purple", "triangle", "right"),
             Spec("yellow", "circle", "bottom"), Spec("blue", "square", "middle"), Spec("orange", "triangle", "left")]
    followed = {"8x8": [], "4x4": []}
    for spec in specs:
        second = other(spec)
        for size in followed:
            with edits.applied(micro, [edits.prompt_at(prompt(second), size)], prompt=prompt(spec), steps=20):
                seen = judge(call_pipeline(micro, Settings(prompt=prompt(spec), seed=0, steps=20)))
            followed[size].append((seen.colour == second.colour, seen.shape == second.shape, seen.position == second.position))
    colour, shape, position = (sum(x) for x in zip(*followed["8x8"]))
    assert colour >= 5 and shape == 0 and position == 0, followed["8x8"]
    colour, shape, position = (sum(x) for x in zip(*followed["4x4"]))
    assert colour == 0 and shape >= 5 and position >= 5, followed["4x4"]
