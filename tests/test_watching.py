"""Watching values, not only shapes: block activity, cross-attention maps, guidance previews, on a real
diffusers pipeline (the tiny preset: random weights, real tensors), a user's own pipeline, the limits
of each scheduler, and what happens when the pipeline fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from explorer.cli import app
from explorer.runs import load_run
from explorer.generation import GenerationError, Settings, generate

runner = CliRunner()
PROMPT = "a lighthouse at dusk"


def tiny(**kw) -> Settings:
    return Settings(**{"prompt": PROMPT, "model": "tiny", "steps": 3, "seed": 42, **kw})


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    out = tmp_path_factory.mktemp("mapped")
    generate(tiny(attention_maps=True, decode_every=2), out)
    return load_run(out)


def test_every_step_has_block_activity_and_skip_norms(mapped):
    record = mapped.record
    assert "down_blocks.1" in record["blocks"] and "down_blocks.1.resnets.0" in record["blocks"]
    assert not any(p.count(".") > 3 for p in record["blocks"])  # depth 2: blocks and their layers only
    for step in mapped.steps:
        stats = step["blocks"]["down_blocks.1"]
        assert set(stats) == {"mean", "std", "abs"} and stats["std"] > 0 and stats["abs"] >= abs(stats["mean"])
        assert step["skips"]["conv_in"] > 0 and "down_blocks.0[0]" in step["skips"]
    assert len(mapped.blocks["down_blocks.1"]["std"]) == len(mapped.steps)


def test_the_pndm_extra_call_is_explained(mapped):
    assert mapped.record["total_steps"] == 4
    assert "3 steps asked, 4 UNet calls" in mapped.record["unet_calls"]
    assert "average of the two" in mapped.record["unet_calls"]


def test_guidance_previews_and_decodes(mapped):
    for part in ("uncond", "cond", "guided"):
        assert mapped.noise(part, 1).size[0] >= 64
    assert mapped.x0(3).size == mapped.latent(3).size
    assert mapped.decoded(0).size == (64, 64) and mapped.decoded(2).size == (64, 64)
    with pytest.raises(Exception, match="decode-every"):
        mapped.decoded(1)


def test_maps_per_layer_and_word(mapped):
    tokens = mapped.map_tokens
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<padding>" and "lighthouse" in "".join(tokens)
    layers = mapped.map_layers
    assert all(layer["path"].endswith("attn2") for layer in layers)
    assert {layer["height"] for layer in layers} == {8, 4, 2, 1}  # tiny: 8x8 latents; the mid block at 1x1
    maps = mapped.maps(0)
    assert len(maps) == len(layers) and all(m.shape[0] == len(tokens) for m in maps)
    # each query's weights over the kept rows (its tokens and all padding together) sum to 1
    assert np.allclose(sum(m.sum(axis=0) for m in maps[:1]), 1.0, atol=0.02)
    word = mapped.attention("lighthouse")
    assert word.shape == (8, 8) and abs(word.sum() - 1) < 1e-5
    one = mapped.attention("dusk", step=2, resolution=4)
    assert one.shape == (8, 8) and abs(one.sum() - 1) < 1e-5
    assert not np.allclose(word, mapped.attention("dusk"))


def test_maps_errors_teach(mapped, tmp_path):
    with pytest.raises(Exception, match="its words are a, lighthouse, at, dusk"):
        mapped.attention("castle")
    with pytest.raises(Exception, match="resolution must be one of 1, 2, 4, 8"):
        mapped.attention("dusk", resolution=16)
    plain = generate(tiny(steps=1), tmp_path / "plain")
    with pytest.raises(Exception, match="--attention-maps"):
        load_run(plain.out).attention("dusk")


def test_explore_maps_figure_json_and_text(mapped, tmp_path):
    figure = tmp_path / "dusk.png"
    result = runner.invoke(app, ["maps", str(mapped.folder), "--word", "dusk", "-o", str(figure)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(figure).size[0] > 3 * 192  # overall + 4 resolutions
    result = runner.invoke(app, ["maps", str(mapped.folder), "--word", "dusk", "--json", "--step", "1"])
    data = json.loads(result.stdout)
    assert abs(sum(map(sum, data["overall"])) - 1) < 1e-3 and set(data["by_resolution"]) == {"8", "4", "2", "1"}
    assert all(v == round(v, 6) for row in data["overall"] for v in row)  # 0.000103, not float32's digits
    result = runner.invoke(app, ["maps", str(mapped.folder), "--word", "dusk"])
    assert "'dusk'" in result.stdout and "left" in result.stdout
    result = runner.invoke(app, ["maps", str(mapped.folder), "--word", "castle"])
    assert result.exit_code == 2 and "its words are" in result.stderr and "Traceback" not in result.output


def test_watching_changes_nothing_bit_for_bit(tmp_path):
    """The same pipeline, the same seed: unwatched, then with every watcher on."""
    import torch

    from explorer.generation import build_pipeline, watch

    built = build_pipeline(tiny())

    def image():
        return np.asarray(built.pipe(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(5)).images[0])

    plain = image()
    with watch(built.pipe, tmp_path / "w", attention_maps=True, decode_every=1) as run:
        watched = image()
    assert np.array_equal(plain, watched)
    assert len(run.steps) == 4 and run.has_maps
    assert not built.pipe.unet._forward_hooks and "step" not in vars(built.pipe.scheduler)
    assert not any("forward" in vars(m) for m in built.pipe.unet.modules())  # every wrapper removed


def test_maps_skipped_on_other_attention_processors_are_said_and_explained(tmp_path):
    """A pipeline whose attention runs through another library's processor: the maps cannot be taken
    beside it. Python says so at once (a warning), and asking the run for a map says why."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from explorer.errors import ExplorerError
    from explorer.generation import build_pipeline, watch

    class TheirProcessor(AttnProcessor2_0):  # what xformers' or a LoRA library's processor is to the explorer
        pass

    built = build_pipeline(tiny())
    built.pipe.unet.set_attn_processor(TheirProcessor())
    with pytest.warns(UserWarning, match="maps were skipped.*TheirProcessor"):
        with watch(built.pipe, tmp_path / "w", attention_maps=True) as run:
            built.pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(5))
    assert run.blocks and not run.has_maps
    with pytest.raises(ExplorerError, match="no cross-attention maps.*stock attention processors"):
        run.attention("lighthouse")


def test_a_forward_already_wrapped_is_seen_and_put_back():
    """accelerate (offloading, device maps) wraps a module's forward on the instance: the watcher
    wraps that in turn, sees every output, and puts it back."""
    import inspect

    import torch

    from explorer.capture.activity import after_forward

    layer = torch.nn.Linear(3, 2)
    calls, seen = [], []

    def offloaded(x):
        calls.append(x)
        return torch.nn.Linear.forward(layer, x)

    layer.forward = offloaded
    undo = after_forward(layer, {"layer": seen.append}, "layer")
    out = layer(torch.ones(1, 3))
    assert len(calls) == 1 and seen == [out]
    assert list(inspect.signature(layer.forward).parameters) == ["x"]
    undo()
    assert layer.forward is offloaded
    layer(torch.ones(1, 3))
    assert len(seen) == 1 and len(calls) == 2


def test_a_users_own_pipeline(tmp_path, tiny_folder):
    from diffusers import StableDiffusionPipeline

    import explorer

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_folder))
    pipe.set_progress_bar_config(disable=True)
    with explorer.watch(pipe, tmp_path / "mine", attention_maps=True) as run:
        pipe("a red fox", num_inference_steps=2, height=64, width=64)
    assert run.record["status"] == "done" and run.prompt == "a red fox"
    assert run.attention("fox").shape == (8, 8)
    assert explorer.trace(pipe.unet).total_params == sum(p.numel() for p in pipe.unet.parameters())
    with pytest.raises(Exception, match="StableDiffusionPipeline"):
        with explorer.watch(object(), tmp_path / "x"):
            pass


def test_maps_are_skipped_with_a_warning_for_other_processors(tmp_path):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from explorer.generation import build_pipeline, watch

    class Custom(AttnProcessor2_0):  # not one the recording processor reproduces
        pass

    built = build_pipeline(tiny())
    built.pipe.unet.set_attn_processor(Custom())
    with watch(built.pipe, tmp_path / "custom", attention_maps=True) as run:
        built.pipe(PROMPT, num_inference_steps=1)
    assert not run.has_maps and "maps were skipped" in run.record["warnings"][0]
    assert run.steps[0]["blocks"]


@pytest.mark.parametrize("scheduler, limit", [("pndm", 999), ("ddim", 999), ("euler", 1000)])
def test_each_scheduler_knows_its_limit(tmp_path, scheduler, limit):
    from explorer.specs import SD15
    from explorer.generation import max_steps

    assert max_steps(scheduler, dict(SD15.scheduler)) == limit
    result = runner.invoke(app, ["generate", "-p", "x", "--model", "tiny", "--scheduler", scheduler,
                                 "--steps", str(limit + 1), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"between 1 and {limit}" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # a thousand UNet calls
def test_pndm_runs_its_maximum(tmp_path):
    result = generate(tiny(steps=999, guidance=1.0, watch_depth=0), tmp_path)
    record = json.loads((tmp_path / "trace.json").read_text())
    assert result.watch.status == "done" and len(record["steps"]) == 1000


def test_a_failing_pipeline_is_one_sentence_and_keeps_its_steps(tmp_path, monkeypatch):
    from explorer.generation import watching

    original = watching.Watcher._finish_step

    def fail_at_step_2(self, *args):
        if len(self.recording.steps) == 2:
            raise RuntimeError("the GPU caught fire\nsecond line")
        original(self, *args)

    monkeypatch.setattr(watching.Watcher, "_finish_step", fail_at_step_2)
    with pytest.raises(GenerationError, match=r"failed at step 2 \(RuntimeError: the GPU caught fire\); 2 steps were done"):
        generate(tiny(), tmp_path / "g")
    record = json.loads((tmp_path / "g" / "trace.json").read_text())
    assert record["status"] == "failed" and len(record["steps"]) == 2 and "caught fire" in record["error"]
    result = runner.invoke(app, ["generate", "-p", "x", "--model", "tiny", "--steps", "3", "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "failed at step 2" in result.stderr and "Traceback" not in result.output


# -- the numbers themselves: measured together, as each module returned them ---------------------------


def reference_stats(t, halves: int = 2) -> dict[str, float]:
    """mean, std and mean |x| of the conditional half, the direct way, in float64."""
    half = t.detach().double()
    half = half[half.shape[0] // 2 :] if halves == 2 and half.shape[0] % 2 == 0 else half  # an odd batch: all of it
    std = float(half.std()) if half.numel() > 1 else 0.0
    return {"mean": float(half.mean()), "std": std, "abs": float(half.abs().mean())}


@pytest.mark.parametrize("seed", range(4))
def test_moments_of_many_tensors_match_each_measured_alone(seed):
    """Sizes that share no large divisor, tensors with a mean far above their spread, a constant one,
    one element, bfloat16: measured together (numpy, or torch where numpy cannot view them), one by one
    and each in one torch call, they agree with float64 statistics of each tensor."""
    import torch

    from explorer.capture.activity import batch_moments, each_moments, moments

    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 3, 5, 7), (2, 320), (2, 1), (4, 6, 6), (2, 64, 8, 8), (2, 13)]
    tensors = [torch.randn(s, generator=g) * (10 ** (seed - 1)) + (k - 2) * 3 for k, s in enumerate(shapes)]
    tensors.append(torch.full((2, 9), 7.0))
    tensors.append(torch.randn(2, 5000, generator=g) * 1e-3 + 40.0)  # mean² is 10⁹ times the variance
    tensors.append(torch.randn(3, 4, generator=g))  # an odd batch: measured whole (prompt_start)
    tensors.append(torch.randn(2, 3, generator=g).bfloat16())  # no numpy view: through torch
    needing_grad = [t.clone().requires_grad_() for t in tensors[:4]]  # no numpy view either
    for halves in (1, 2):
        ways = [(tensors, batch_moments(tensors, halves)), (tensors, [moments(t, halves) for t in tensors]),
                (tensors, each_moments(tensors, halves)), (needing_grad, batch_moments(needing_grad, halves))]
        for given, found in ways:
            assert len(found) == len(given)
            for t, (n, mean, square_sum, abs_sum) in zip(given, found):
                want = reference_stats(t, halves)
                std = (square_sum / (n - 1)) ** 0.5 if n > 1 else 0.0
                assert mean == pytest.approx(want["mean"], rel=1e-6, abs=1e-7)
                assert std == pytest.approx(want["std"] if n > 1 else 0.0, rel=1e-5, abs=1e-7)
                assert abs_sum / n == pytest.approx(want["abs"], rel=1e-6)


@pytest.mark.parametrize(
    "large, hold", [(1 << 15, 64 << 20), (1, 64 << 20), (1, 0)],
    ids=["together-in-numpy", "held-and-each-in-torch", "measured-in-the-hook"],
)
def test_block_activity_is_each_modules_own_output(tmp_path, monkeypatch, large, hold):
    """Every watched module and skip tensor of every step of a real pipeline, against statistics that
    hooks of our own compute the moment each module returns; small outputs are measured together when
    the UNet call ends, large ones each by PyTorch then, or in the hook past what is held: all three."""
    import torch

    from explorer.capture.activity import BlockActivity, called_depths
    from explorer.generation import build_pipeline, watch

    monkeypatch.setattr(BlockActivity, "LARGE", large)
    monkeypatch.setattr(BlockActivity, "HOLD", hold)

    pipe = build_pipeline(tiny()).pipe
    modules = dict(pipe.unet.named_modules())
    seen: list[dict] = []

    def own_hook(path):
        def hook(module, args, output):
            t = output if isinstance(output, torch.Tensor) else output[0] if isinstance(output, tuple) else output.sample
            seen[-1][path] = reference_stats(t)
            if path.startswith("down_blocks.") and path.count(".") == 1:
                for k, skip in enumerate(output[1]):
                    seen[-1][f"{path}[{k}]"] = float(skip[skip.shape[0] // 2 :].double().pow(2).mean().sqrt())

        return hook

    handles = [modules[p].register_forward_hook(own_hook(p)) for p, d in called_depths(pipe.unet).items() if d <= 2]
    handles.append(pipe.unet.register_forward_pre_hook(lambda m, a: seen.append({})))
    with watch(pipe, tmp_path / "w") as run:
        pipe(PROMPT, num_inference_steps=3, generator=torch.Generator().manual_seed(1))
    for handle in handles:
        handle.remove()
    assert len(run.steps) == len(seen) == 4
    for step, own in zip(run.steps, seen):
        assert set(step["blocks"]) == {p for p in own if "[" not in p}
        for path, stats in step["blocks"].items():
            for key in ("mean", "std", "abs"):
                assert stats[key] == pytest.approx(own[path][key], abs=1.5e-5), (step["index"], path, key)
        for name, rms in step["skips"].items():
            if name != "conv_in":
                assert rms == pytest.approx(own[name], abs=1.5e-5), (step["index"], name)


class ChangesItsChildsOutput:
    """A parent that adds to its child's output in place (as diffusers does with a T2I-adapter's
    residuals), after the child returned it."""

    @staticmethod
    def model():
        from torch import nn

        class Parent(nn.Module):
            def __init__(self):
                super().__init__()
                self.child, self.after = nn.Linear(8, 8), nn.Linear(8, 8)

            def forward(self, x):
                y = self.child(x)
                y += 100.0  # in place, after the child's hook has seen y
                return self.after(y)

        return Parent()

    @staticmethod
    def returned(model, x) -> dict:
        return {"child": model.child(x)}


class InPlaceActivation:
    """`ReLU(inplace=True)` returns the very tensor the module before it returned, changed."""

    @staticmethod
    def model():
        from torch import nn

        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 8))

    @staticmethod
    def returned(model, x) -> dict:
        before = model[0](x)
        return {"0": before, "1": before.relu()}


@pytest.mark.parametrize("large", [1 << 15, 1], ids=["small", "large"])
@pytest.mark.parametrize("case", [ChangesItsChildsOutput, InPlaceActivation], ids=lambda c: c.__name__)
def test_an_output_changed_in_place_later_is_measured_as_returned(case, large, monkeypatch):
    """Every call measures each module's output as the module returned it, whatever changes that
    tensor in place afterwards: small outputs, and large ones, held or measured as they return."""
    import torch

    from explorer.capture.activity import BlockActivity

    monkeypatch.setattr(BlockActivity, "LARGE", large)
    model = case.model()
    inputs = [torch.randn(4, 8, generator=torch.Generator().manual_seed(seed)) for seed in range(3)]
    with torch.no_grad():
        returned = [case.returned(model, x) for x in inputs]  # before watching
        activity = BlockActivity(model, depth=1)
        undo = activity.install()
        for call, (x, outputs) in enumerate(zip(inputs, returned)):
            model(x)
            stats, _ = activity.take()
            for path, output in outputs.items():
                want = reference_stats(output)
                for key in ("mean", "std", "abs"):
                    assert stats[path][key] == pytest.approx(want[key], abs=1e-5), (call, path, key)
        undo()


def test_a_call_that_fails_leaves_nothing_for_the_next():
    """From the second call on, outputs wait in lists until the call ends; a call that raises never
    ends: what it left is forgotten, and the next call's numbers are its own."""
    import torch
    from torch import nn

    from explorer.capture.activity import BlockActivity

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Linear(8, 8), nn.Linear(8, 8)
            self.fail = self.skip_first = False

        def forward(self, x):
            if not self.skip_first:
                x = self.first(x)
            if self.fail:
                raise RuntimeError("stopped")
            return self.second(x)

    model, x = Model(), torch.randn(4, 8)
    activity = BlockActivity(model, depth=1)
    undo = activity.install()
    with torch.no_grad():
        model(x)
        assert set(activity.take()[0]) == {"first", "second"}
        model.fail = True
        with pytest.raises(RuntimeError):
            model(x)  # `first` returned, then the call stopped
        activity.take()
        model.fail, model.skip_first = False, True
        model(x)
        stats, _ = activity.take()
    undo()
    assert set(stats) == {"second"}
    assert stats["second"]["mean"] == pytest.approx(reference_stats(model.second(x))["mean"], abs=1e-5)


def test_large_outputs_past_what_is_held_are_not_kept_alive(monkeypatch):
    """Large outputs are held until the call ends only up to `HOLD` bytes; past it they are measured
    as they return and left to the model, which frees them. Here the first call is small (everything
    waits in lists from then on) and the later ones large: after one large call, no more than what
    fits in `HOLD` is alive while the call goes, and every number is still each output's own."""
    import weakref

    import torch
    from torch import nn

    from explorer.capture.activity import BlockActivity

    model = nn.Sequential(*(nn.Linear(64, 64) for _ in range(8)))  # each output freed by the next layer
    size = 1024 * 64 * 4  # bytes of one output of a large call: 65,536 elements
    monkeypatch.setattr(BlockActivity, "HOLD", 2 * size)
    outputs: list = []  # this call's outputs, weakly
    alive: list[int] = []  # how many of them were alive as the last layer began

    def keep_weakly(module, args, output) -> None:
        outputs.append(weakref.ref(output))

    def count_alive(module, args) -> None:
        alive.append(sum(o() is not None for o in outputs))

    batches = (2, 1024, 1024, 1024)
    inputs = [torch.randn(batch, 64, generator=torch.Generator().manual_seed(k)) for k, batch in enumerate(batches)]
    with torch.no_grad():
        want = []  # each layer's std, before watching
        for x in inputs:
            want.append([reference_stats(x := layer(x))["std"] for layer in model])
        handles = [layer.register_forward_hook(keep_weakly) for layer in model[:-1]]
        handles.append(model[-1].register_forward_pre_hook(count_alive))
        activity = BlockActivity(model, depth=1)
        undo = activity.install()
        for call, x in enumerate(inputs):
            outputs.clear()
            model(x)
            stats, _ = activity.take()
            assert [stats[str(k)]["std"] for k in range(len(model))] == pytest.approx(want[call], abs=1e-5), call
        undo()
    for handle in handles:
        handle.remove()
    assert alive[0] == 7 and alive[1] == 7  # the small call; the first large one, whose outputs waited
    assert alive[2:] == [3, 3]  # the two held, and the input of the last layer


def test_maps_taken_together_equal_maps_taken_one_by_one(tmp_path, monkeypatch):
    """The maps of the small layers are computed together, in numpy, when the step ends; computed one
    layer at a time in torch, in the attention call itself, they are the same maps."""
    from explorer.capture.activity import AttentionMaps

    together = generate(tiny(attention_maps=True, steps=2), tmp_path / "together")
    monkeypatch.setattr(AttentionMaps, "AT_ONCE", 0)
    alone = generate(tiny(attention_maps=True, steps=2), tmp_path / "alone")
    a, b = load_run(together.out), load_run(alone.out)
    for step in range(len(a.steps)):
        for x, y in zip(a.maps(step), b.maps(step), strict=True):
            assert x.shape == y.shape and np.allclose(x, y, atol=1e-6)


def test_maps_computed_together_match_the_softmax_in_float64(tiny_models):
    """Layers of different sizes, head counts, prompt lengths and masks (none, added to the scores,
    boolean) handed over in one UNet call: each layer's map is its softmax(QKᵀ · scale + mask)
    averaged over the heads, as float64 computes it, the padding's row the rest of each weight row."""
    import torch

    from explorer.capture.activity import AttentionMaps

    maps = AttentionMaps(tiny_models["unet"], tokens=5)
    maps.halves, maps.latent = 1, (8, 8)
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 64, 8, 77), (2, 16, 8, 77), (2, 4, 16, 77), (4, 16, 8, 77), (2, 64, 8, 90)]  # heads, N, d, keys
    layers = [(torch.randn(1, h, n, d, generator=g), torch.randn(1, h, k, d, generator=g), d**-0.5) for h, n, d, k in shapes]
    masks = [None, torch.zeros(1, 2, 1, 77).index_fill_(3, torch.tensor([2, 40]), -10000.0),
             torch.rand(1, 2, 4, 77, generator=g) > 0.3, torch.zeros(1, 4, 16, 77).index_fill_(3, torch.tensor([3]), -50.0),
             None]
    masks[2][..., 0] = True  # every row attends to something
    for sizes in (shapes[:3], shapes[:4], shapes):  # one number of heads, then two; one prompt length, then two
        for k, ((q, key, scale), mask) in enumerate(zip(layers[: len(sizes)], masks)):
            maps._take_for(f"layer{k}")(q, key, scale, mask)
        taken = maps.take()
        assert [path for path, _ in taken] == [f"layer{k}" for k in range(len(sizes))]
        for (q, key, scale), mask, (_, found) in zip(layers, masks, taken):
            scores = q.double() @ key.double().transpose(-1, -2) * scale
            if mask is not None:
                scores = scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask
            weights = torch.softmax(scores, dim=-1)[0].mean(0)  # (N, keys)
            side = int(q.shape[2] ** 0.5)
            want = torch.cat([weights[:, :5], 1 - weights[:, :5].sum(1, keepdim=True)], 1).T.reshape(6, side, side)
            assert found.shape == (6, side, side) and np.allclose(found, want.numpy(), atol=1e-6)


def test_the_maps_matmuls_keep_numpy_blas_to_one_thread(tiny_models, monkeypatch):
    """numpy's BLAS threads beside PyTorch's spin on the cores the UNet runs on (micro's maps at 256 px
    made a step 1.5 times as long): the maps' matmuls run with BLAS held to the calling thread, and
    BLAS has its threads back after."""
    import torch
    from threadpoolctl import ThreadpoolController

    from explorer.capture.activity import AttentionMaps

    def blas_threads() -> list[int]:  # each BLAS library numpy has loaded, as it is set now
        return [lib["num_threads"] for lib in ThreadpoolController().select(user_api="blas").info()]

    blas = ThreadpoolController().select(user_api="blas")
    if "accelerate" in np.__config__.CONFIG["Build Dependencies"]["blas"]["name"].lower():
        pytest.skip("numpy uses Apple's Accelerate, whose threads are not numpy's to set")
    assert blas.lib_controllers, "threadpoolctl does not see numpy's BLAS"
    threads_seen = []
    matmul = np.matmul

    def seen_matmul(*args, **kwargs):
        threads_seen.append(blas_threads())
        return matmul(*args, **kwargs)

    monkeypatch.setattr(np, "matmul", seen_matmul)
    maps = AttentionMaps(tiny_models["unet"], tokens=5)
    maps.halves, maps.latent = 1, (8, 8)
    with blas.limit(limits=2):
        for k in range(3):
            maps._take_for(f"layer{k}")(torch.randn(1, 2, 64, 8), torch.randn(1, 2, 77, 8), 8**-0.5)
        maps.take()
        after = blas_threads()
    assert len(threads_seen) == 3 and all(set(t) == {1} for t in threads_seen)
    assert set(after) == {2}


def test_maps_follow_the_prompts_attention_mask(tiny_models, monkeypatch):
    """A UNet called with an `encoder_attention_mask`: a masked token gets no weight in any layer's
    map, in the layers computed together and in those computed at once, as it gets none in the
    attention itself; unmasked, it gets some."""
    import torch

    from explorer.capture.activity import AttentionMaps

    unet = tiny_models["unet"]
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, unet.config.in_channels, 16, 16, generator=g)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    keep = torch.ones(1, 77)
    keep[0, 2] = 0  # the second word
    for at_once in (1 << 15, 0):
        monkeypatch.setattr(AttentionMaps, "AT_ONCE", at_once)
        maps = AttentionMaps(unet, tokens=4)
        maps.halves, maps.latent = 1, (16, 16)
        undo = maps.install()
        with torch.no_grad():
            for mask in (keep, None):
                unet(latent, 10, encoder_hidden_states=context, encoder_attention_mask=mask)
                taken = maps.take()
                assert taken
                for path, found in taken:
                    word = float(found[2].max())
                    assert word < 1e-6 if mask is not None else word > 1e-3, (at_once, path, mask is None)
        undo()


def test_maps_files_of_earlier_runs_read_the_same(mapped, tmp_path):
    """Runs recorded before the maps were laid side by side hold `L<k>` and `S<k>` per layer; read
    back, they give the same maps."""
    from explorer.maps import quantize, read_maps

    maps = mapped.maps(1)
    arrays = {}
    for k, layer in enumerate(maps):
        arrays[f"L{k}"], arrays[f"S{k}"] = quantize(layer)
    np.savez_compressed(tmp_path / "001.npz", **arrays)
    earlier = read_maps(tmp_path / "001.npz", len(maps), len(mapped.map_tokens))
    for x, y in zip(earlier, maps, strict=True):
        assert x.shape == y.shape and np.allclose(x, y, atol=1e-6)


def test_maps_of_generation_3_runs_one_file_a_step_read_the_same(mapped, tmp_path):
    """generation@1 to @3 runs kept each step's maps in maps/NNN.npz (`values`, `scales`, `shapes`);
    read back, every step's maps and every word's aggregate are the same."""
    import shutil

    from explorer.maps import quantize_columns
    from explorer.runs import MAPS, maps_file

    earlier = tmp_path / "earlier"
    shutil.copytree(mapped.folder, earlier)
    (earlier / MAPS).unlink()
    (earlier / "maps").mkdir()
    for k in range(len(mapped.steps)):
        maps = mapped.maps(k)
        side_by_side = np.concatenate([m.reshape(len(m), -1) for m in maps], axis=1)
        values, scales = quantize_columns(side_by_side, [m[0].size for m in maps])
        np.savez(earlier / maps_file(k), values=values, scales=scales, shapes=np.array([m.shape for m in maps]))
    record = {**mapped.record, "schema": "sd-explorer/generation@3"}
    record["steps"] = [{key: v for key, v in step.items() if key != "maps"} for step in record["steps"]]
    record["files"] = {**record["files"], "maps": "maps/NNN.npz"}
    (earlier / "trace.json").write_text(json.dumps(record))
    before = load_run(earlier)
    for k in range(len(mapped.steps)):
        for x, y in zip(before.maps(k), mapped.maps(k), strict=True):
            assert x.shape == y.shape and np.allclose(x, y, atol=1e-6)
    for word in mapped.words():
        assert np.allclose(before.attention(word), mapped.attention(word), atol=1e-6)


def test_deflated_maps_read_back_the_same(mapped, tmp_path, monkeypatch):
    """Large steps' maps are deflated in maps.bin (SD1.5 at 512 px); made to deflate tiny's, the
    file is smaller and every step reads back the same."""
    import explorer.maps
    from explorer.runs import MAPS

    monkeypatch.setattr(explorer.maps, "COMPRESS_FROM", 0)
    deflated = load_run(generate(tiny(attention_maps=True, decode_every=2), tmp_path / "deflated").out)
    assert all(step["maps"]["zlib"] for step in deflated.steps)
    assert not any(step["maps"]["zlib"] for step in mapped.steps)
    assert (deflated.folder / MAPS).stat().st_size < (mapped.folder / MAPS).stat().st_size
    for k in range(len(mapped.steps)):
        for x, y in zip(deflated.maps(k), mapped.maps(k), strict=True):
            assert np.array_equal(x, y)


@pytest.mark.parametrize("damage", ["cut short", "a place outside it", "no place", "not deflated"])
def test_damaged_maps_are_one_sentence(mapped, tmp_path, damage):
    import shutil

    from explorer.errors import ExplorerError
    from explorer.runs import MAPS

    folder = tmp_path / "damaged"
    shutil.copytree(mapped.folder, folder)
    record = json.loads((folder / "trace.json").read_text())
    last = record["steps"][-1]
    if damage == "cut short":
        (folder / MAPS).write_bytes((folder / MAPS).read_bytes()[:-10])
    elif damage == "a place outside it":
        last["maps"]["at"] = -5
    elif damage == "no place":
        last["maps"] = {"bytes": 3}
    else:
        last["maps"]["zlib"] = True
    (folder / "trace.json").write_text(json.dumps(record))
    with pytest.raises(ExplorerError, match="maps.bin is missing or damaged"):
        load_run(folder).maps(len(record["steps"]) - 1)
    assert len(load_run(folder).maps(0)) == len(mapped.map_layers)  # the steps before read as they are


def test_each_steps_previews_are_cut_from_one_file_in_their_places(tmp_path):
    """Without guidance the pipeline's prediction is the guided one: its tiles must be equal, the
    unconditional one absent, and the latent tile the latent after the step, mapped exactly."""
    import torch
    from PIL import Image

    from explorer.previews import latent_pixels
    from explorer.generation import build_pipeline, watch

    pipe = build_pipeline(tiny()).pipe
    latents = []

    def keep(pipe_, i, t, kwargs):
        latents.append(kwargs["latents"].clone())
        return {}

    with watch(pipe, tmp_path / "g1") as run:
        pipe(PROMPT, num_inference_steps=3, guidance_scale=1.0, callback_on_step_end=keep,
             generator=torch.Generator().manual_seed(1))
    assert run.record["files"]["tiles"] == ["latent", "cond", "guided", "x0"]
    assert sorted(p.name for p in (tmp_path / "g1").iterdir()) == ["latents.png", "previews", "trace.json"]
    for k, latent in enumerate(latents):
        assert np.array_equal(np.asarray(run.noise("cond", k)), np.asarray(run.noise("guided", k)))
        assert not np.array_equal(np.asarray(run.noise("cond", k)), np.asarray(run.x0(k)))
        with Image.open(tmp_path / "g1" / "previews" / f"{k:03d}.png") as strip:
            assert np.array_equal(np.asarray(strip)[:, :8], latent_pixels([latent])[0])  # 8: the tiny latent's side
    with pytest.raises(Exception, match="recorded latent, cond, guided, x0"):
        run.noise("uncond", 0)


def test_previews_of_earlier_runs_one_file_each_read_the_same(mapped, tmp_path):
    """generation@1 and @2 runs kept each preview in its own file: previews/NNN.png the latent,
    guidance/NNN-PART.png the others. Read back, and on the page, they are the same images."""
    import shutil

    from PIL import Image

    from explorer.runs import cut_tiles, guidance_file, preview_file
    from explorer.site import _copy_run

    earlier = tmp_path / "earlier"
    shutil.copytree(mapped.folder, earlier)
    (earlier / "guidance").mkdir()
    tiles = mapped.record["files"]["tiles"]
    assert tiles == ["latent", "uncond", "cond", "guided", "x0"]
    for k in range(len(mapped.steps)):
        with Image.open(earlier / preview_file(k)) as strip:
            cut = cut_tiles(strip.convert("RGB"), tiles)
        for part, image in cut.items():
            image.save(earlier / (preview_file(k) if part == "latent" else guidance_file(k, part)))
    record = {**mapped.record, "schema": "sd-explorer/generation@2"}
    record["files"] = {**record["files"], "guidance": "guidance/NNN-PART.png"}
    del record["files"]["tiles"]
    (earlier / "trace.json").write_text(json.dumps(record))
    before = load_run(earlier)
    for k in range(len(mapped.steps)):
        pairs = [(before.latent(k), mapped.latent(k)), (before.x0(k), mapped.x0(k))]
        pairs += [(before.noise(p, k), mapped.noise(p, k)) for p in ("uncond", "cond", "guided")]
        for a, b in pairs:
            assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    pages = [_copy_run(json.loads((f / "trace.json").read_text()), f, tmp_path / name)
             for f, name in ((earlier, "a"), (mapped.folder, "b"))]
    assert pages[0]["previews"] == pages[1]["previews"] and pages[0]["guidance"] == pages[1]["guidance"]
    for relative in [*pages[0]["previews"].values(), *pages[0]["guidance"][1].values()]:
        a, b = (np.asarray(Image.open(tmp_path / side / relative.removeprefix("run/"))) for side in "ab")
        assert np.array_equal(a, b)


@pytest.mark.parametrize("size", [(1, 1), (16, 16), (7, 13), (128, 96)])
def test_previews_are_pngs_any_reader_reads_back_exactly(size):
    from io import BytesIO

    from PIL import Image

    from explorer.previews import rgb_png

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    with Image.open(BytesIO(rgb_png(pixels))) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == size[::-1]
        assert np.array_equal(np.asarray(image), pixels)


def test_what_each_block_adds_is_its_own_contribution(tmp_path):
    """With adds, every watched module whose output has its input's shape says ‖output − input‖ /
    ‖input‖: a transformer or a resnet that keeps its channels, not one that changes them."""
    import torch

    from explorer.generation import build_pipeline, watch

    built = build_pipeline(tiny())
    seen = {}
    resnet = dict(built.pipe.unet.named_modules())["down_blocks.0.resnets.0"]

    def keep_first(module, args, out) -> None:  # returns None: the output stays what it was
        seen.setdefault("first", (args[0], out))

    handle = resnet.register_forward_hook(keep_first)
    try:
        with watch(built.pipe, tmp_path / "adds", adds=True) as run:
            built.pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(1))
    finally:
        handle.remove()
    adds = run.steps[0]["blocks"]["down_blocks.0.resnets.0"]["adds"]
    given, made = (t[t.shape[0] // 2:] for t in seen["first"])  # the prompt's half
    assert adds == pytest.approx(float((made - given).norm() / given.norm()), rel=1e-4)
    changing = [p for p, m in built.pipe.unet.named_modules() if type(m).__name__ == "ResnetBlock2D" and m.conv_shortcut is not None]
    assert changing and all("adds" not in run.steps[0]["blocks"].get(p, {}) for p in changing)
    assert "adds" in run.steps[0]["blocks"]["mid_block"] and "adds" not in run.steps[0]["blocks"]["down_blocks.0"]
    with watch(built.pipe, tmp_path / "plain") as plain:
        built.pipe(PROMPT, num_inference_steps=1)
    assert not any("adds" in stats for stats in plain.steps[0]["blocks"].values())  # only on request


def test_kept_static_traces_are_the_same_and_follow_the_prompt():
    """prepare(reuse=True) keeps the last traces in memory: the same request gives the same trace;
    another prompt another text-encoder trace."""
    from explorer.generation import prepare

    first = prepare(tiny(), reuse=True).static
    again = prepare(tiny(), reuse=True).static
    other = prepare(tiny(prompt="a blue square at the top"), reuse=True).static
    assert all(again[name] is first[name] for name in first)
    assert other["unet"] is first["unet"] and other["clip"] is not first["clip"]
    assert prepare(tiny()).static["unet"] is not first["unet"]  # without reuse, from the trace cache
