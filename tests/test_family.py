"""The SD family beyond SD1.5: SD2.1 and SDXL presets, their exact sizes, traces that agree with
plain forward hooks on the same diffusers / transformers classes, SDXL's extra conditioning shown
by name, folders holding configs alone, and failures that name the code that was running."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from explorer import trace
from explorer.capture.hooks import TraceError, record
from explorer.cli import app
from explorer.loading import build, load
from explorer.runs import load_run
from explorer.specs import PRESETS, TINY

# Published parameter counts (the models' model cards and `num_parameters()` of the released weights).
PUBLISHED = {
    ("sd15", "unet"): 859_520_964, ("sd15", "vae"): 83_653_863, ("sd15", "clip"): 123_060_480,
    ("sd21", "unet"): 865_910_724, ("sd21", "vae"): 83_653_863, ("sd21", "clip"): 340_387_840,
    ("sdxl", "unet"): 2_567_463_684, ("sdxl", "vae"): 83_653_863, ("sdxl", "clip"): 123_060_480,
    ("sdxl", "clip_2"): 694_659_840,  # the second text encoder, OpenCLIP ViT-bigG with its projection
}


@pytest.mark.parametrize("preset, component", sorted(PUBLISHED))
def test_every_preset_component_has_its_published_size(preset, component):
    model = build(component, PRESETS[preset].config(component))  # the real class, on the meta device
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[preset, component]


def _plain_hooks(component: str, preset: str) -> dict[str, list[tuple]]:
    """Every module's output shapes, by path, from plain forward hooks on a fresh build of the same class."""
    t = trace(component, preset)  # its inputs, to replay them
    model = build(component, PRESETS[preset].config(component))
    seen: dict[str, list[tuple]] = {}

    def hook(name):
        def record_shapes(module, args, output):
            out = output.sample if hasattr(output, "sample") else output
            out = out[0] if isinstance(out, tuple) else out
            seen.setdefault(name, []).append(tuple(out.shape))
        return record_shapes

    for name, m in model.named_modules():
        if name:
            m.register_forward_hook(hook(name))
    inputs = {k: torch.empty(v, device="meta") for k, v in t.inputs.items()}
    cfg = model.config
    added = {k: inputs.pop(k) for k in ("text_embeds", "time_ids") if k in inputs}
    with torch.no_grad():
        model(inputs["sample"], torch.full(t.inputs["timestep"], 999, device="meta"),
              encoder_hidden_states=inputs["encoder_hidden_states"], added_cond_kwargs=added or None)
    assert cfg is not None
    return t, seen


@pytest.mark.parametrize("preset", ["sd21", "sdxl"])
def test_traces_agree_with_plain_forward_hooks(preset):
    t, seen = _plain_hooks("unet", preset)
    ours = {}
    for n in t.nodes:
        if n.kind == "module" and n.path and n.outputs:
            ours.setdefault(n.path, []).append(n.outputs[0])
    assert set(seen) <= set(ours) | {k for k in seen if not seen[k]}
    for path, shapes in seen.items():
        assert ours[path] == shapes, path
    assert len(seen) > 500


def test_sdxl_layout_its_extra_conditioning_named_and_its_ten_block_levels():
    t = trace("unet", "sdxl")
    assert t.inputs["text_embeds"] == (2, 1280) and t.inputs["time_ids"] == (2, 6)
    assert t.inputs["encoder_hidden_states"] == (2, 77, 2048) and t.inputs["sample"] == (2, 4, 128, 128)
    into = {(e.src_port, e.dst) for e in t.edges if e.src == ""}
    assert ("time_ids", "reshape") in into  # six numbers per image, flattened for add_time_proj
    assert any(port == "text_embeds" and dst == "concat" for port, dst in into)
    assert t.find("add_embedding").outputs == ((2, 1280),)
    blocks = [n for n in t.nodes if n.type == "BasicTransformerBlock"]
    assert sum(n.path.startswith("mid_block.") for n in blocks) == 10
    assert sum(n.path.startswith("down_blocks.2.attentions.0.") for n in blocks) == 10
    assert [n.type for n in t.nodes if n.depth == 1 and n.path.startswith("down_blocks")] == [
        "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]


def test_sd21_reads_a_wider_text_encoder_that_pads_with_exclamation_marks():
    unet, clip = trace("unet", "sd21"), trace("clip", "sd21", prompt="a cat")
    assert unet.inputs["encoder_hidden_states"] == (2, 77, 1024) and unet.inputs["sample"] == (2, 4, 96, 96)
    assert unet.find("down_blocks.0.attentions.0.proj_in").type == "Linear"  # use_linear_projection
    assert clip.nodes[0].outputs == ((2, 77, 1024), (2, 1024))
    cat = next(r for r in clip.tokens if r["prompt"] == "a cat")
    assert cat["ids"][-1] == 0 and cat["tokens"][-1] == "!"


@pytest.mark.parametrize("layout", ["pipeline", "component"])
def test_a_folder_of_configs_alone_explores_on_the_meta_device(tmp_path, layout):
    folder = tmp_path / "configs"
    where = folder / "unet" if layout == "pipeline" else folder
    where.mkdir(parents=True)
    (where / "config.json").write_text(json.dumps(PRESETS["sdxl"].config("unet")))
    result = CliRunner().invoke(app, ["unet", "--model", str(folder), "--depth", "0"])
    assert result.exit_code == 0, result.output
    assert "2,567,463,684 params" in result.stdout and "time_ids [2,6]" in result.stdout
    assert "shapes from its config alone" in result.stderr
    pretrained = CliRunner().invoke(app, ["unet", "--model", str(folder), "--weights", "pretrained"])
    assert pretrained.exit_code == 2 and "no weights" in pretrained.stderr


def test_a_failure_in_the_unets_own_forward_names_it_and_the_missing_input():
    config = {**TINY.config("unet"), "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
              "projection_class_embeddings_input_dim": 16 + 6 * 8}
    unet = build("unet", config, "random")
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 16)

    def run():  # as a pipeline that forgot SDXL's added_cond_kwargs
        return unet(sample, torch.tensor([1, 1]), encoder_hidden_states=context)

    with pytest.raises(TraceError) as failure:
        record(unet, {"sample": sample}, run, component="unet", model="tiny-xl", weights="random")
    message = str(failure.value)
    assert "UNet2DConditionModel's own forward" in message and "time_embedding" not in message.split(":")[0]
    assert "text_embeds" in message and "addition_embed_type" in message


def test_a_conditioning_the_explorer_cannot_drive_is_one_sentence(tmp_path):
    folder = tmp_path / "unet-with-image-conditioning"
    folder.mkdir()
    config = {**TINY.config("unet"), "addition_embed_type": "image", "encoder_hid_dim": 16}
    (folder / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["unet", "--model", str(folder)])
    assert result.exit_code == 2 and 'addition_embed_type = "image"' in result.stderr
    assert "Traceback" not in result.output


def test_load_keeps_what_a_preset_is():
    assert load("unet", "sdxl").config["cross_attention_dim"] == 2048


def test_sdxl_is_drawn_as_a_u_of_three_levels():
    """The skips pair the three down blocks with the three up blocks across the U; the time
    embedding's way to the added conditioning, which also reaches past a few nodes, is no skip."""
    from explorer.views.graph import scene

    u = scene(trace("unet", "sdxl"), None, 1)
    assert u.same_rank == [["down_blocks.0", "up_blocks.2"], ["down_blocks.1", "up_blocks.1"], ["down_blocks.2", "up_blocks.0"]]
    assert not any(a.straight for a in u.arrows if a.dst == "add")
    labels = [b.label for b in u.boxes]
    assert any("text_embeds" in label for label in labels) and any("time_ids" in label for label in labels)


def test_generate_refuses_a_text_time_unet_without_a_second_text_encoder(tmp_path):
    from explorer.specs import SDXL

    folder = tmp_path / "half-xl"
    for name in ("unet", "vae", "text_encoder"):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps(dict(SDXL.models[name])))
    result = CliRunner().invoke(app, ["generate", "-p", "a cat", "--model", str(folder), "--steps", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and 'addition_embed_type = "text_time"' in result.stderr and "text_encoder_2" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_pipeline_overview_reads_each_models_own_numbers():
    from explorer.views.figures import pipeline_scene

    xl = pipeline_scene(trace("unet", "sdxl"), trace("vae", "sdxl"), trace("clip", "sdxl"))
    text = xl.title + " ".join(a.label for a in xl.arrows) + " ".join(b.label for b in xl.boxes)
    assert "SDXL" in xl.title and "[2, 77, 2048] (768 + 1280 = 2048)" in text
    assert "CLIPTextModel + CLIPTextModelWithProjection" in text and "2 text encoders · 817,720,320 params" in text
    assert "text_embeds [2, 1280]" in text and "÷ 0.13025" in text and "EulerDiscrete" in text
    assert "0.18215" not in text and "PNDM" not in text


@pytest.fixture(scope="module")
def tiny_sd21_folder(tmp_path_factory):
    """An SD2.1-layout pipeline at a tiny size (linear projections, heads per level, GELU text
    encoder, padding with "!", a v-prediction DDIM scheduler), saved the real way."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from explorer.specs import SD21
    from explorer.tokenizer import clip_tokenizer

    unet = {**TINY.config("unet"), "use_linear_projection": True, "upcast_attention": True, "attention_head_dim": [1, 2, 2, 2]}
    pipe = StableDiffusionPipeline(
        vae=build("vae", TINY.config("vae"), "random"),
        text_encoder=build("clip", {**TINY.config("clip"), "hidden_act": "gelu"}, "random"),
        tokenizer=clip_tokenizer(None, 77, "!"),
        unet=build("unet", unet, "random"),
        scheduler=DDIMScheduler.from_config(dict(SD21.scheduler)),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    folder = tmp_path_factory.mktemp("tiny-sd21")
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def test_an_sd21_layout_model_generates_through_its_pipeline(tiny_sd21_folder, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["generate", "-p", "a cat", "--model", str(tiny_sd21_folder), "--steps", "2",
                                      "--scheduler", "ddim", "--out", str(run)])
    assert result.exit_code == 0, result.output
    record = json.loads((run / "trace.json").read_text())
    assert record["status"] == "done" and len(record["steps"]) == 2
    assert record["tokens"][-1]["tokens"][-1] == "!"  # its own tokenizer, padding with "!"
    assert load_run(run).x0(1).size[0] >= 64  # x0 from a v-prediction, by the scheduler's alphas


def test_an_sdxl_layout_traces_on_real_tensors_with_its_size_conditioning(tmp_path):
    """Random weights: text_embeds are random, time_ids are the sizes SDXL is told (original size,
    crop corner, target size), and the trace runs through add_embedding."""
    from explorer.capture.drivers import denoiser
    from explorer.explore import TraceRequest

    config = {**TINY.config("unet"), "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
              "projection_class_embeddings_input_dim": 16 + 6 * 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load("unet", str(tmp_path), weights="random")
    drive = denoiser(loaded, TraceRequest(), 64, 48, 2)
    assert drive.inputs["time_ids"].tolist() == [[64, 48, 0, 0, 64, 48]] * 2 and drive.inputs["text_embeds"].shape == (2, 16)
    t = trace("unet", str(tmp_path), weights="random")
    assert t.find("add_embedding").outputs == ((2, 32),) and t.inputs["time_ids"] == (2, 6)


@pytest.fixture(scope="module")
def tiny_sdxl_folder(tmp_path_factory):
    """An SDXL-layout pipeline at a tiny size: two text encoders (the second with its projection,
    its tokenizer padding with "!"), a UNet with addition_embed_type "text_time" reading their
    joined 16 + 16 channels, Euler; saved by StableDiffusionXLPipeline.save_pretrained."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from explorer.specs import SDXL
    from explorer.tokenizer import clip_tokenizer

    unet = {**TINY.config("unet"), "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 16 + 6 * 8, "cross_attention_dim": 32}
    second = {**TINY.config("clip"), "_class_name": "CLIPTextModelWithProjection", "hidden_act": "gelu"}
    pipe = StableDiffusionXLPipeline(
        vae=build("vae", {**TINY.config("vae"), "scaling_factor": 0.13025}, "random", seed=1),
        text_encoder=build("clip", TINY.config("clip"), "random", seed=2),
        text_encoder_2=build("clip_2", second, "random", seed=3),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=build("unet", unet, "random", seed=4),
        scheduler=EulerDiscreteScheduler.from_config(dict(SDXL.scheduler)),
        add_watermarker=False,
    )
    folder = tmp_path_factory.mktemp("tiny-sdxl")
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder, pipe


def test_the_two_text_encoders_give_what_the_sdxl_pipeline_encodes(tiny_sdxl_folder):
    """Bit for bit: the clip component of an SDXL-layout folder against the pipeline's own encode_prompt."""
    from explorer.capture.drivers import text
    from explorer.explore import TraceRequest

    folder, pipe = tiny_sdxl_folder
    loaded = load("clip", str(folder), weights="pretrained")
    drive = text(loaded, TraceRequest("clip", prompt="a red circle"), 64, 64, 1)
    assert drive.inputs["input_ids_2"][0, -1].item() == 0  # the second tokenizer pads with "!"
    with torch.no_grad():
        ours = loaded.model(drive.inputs["input_ids"], drive.inputs["input_ids_2"])
        embeds, _, pooled, _ = pipe.encode_prompt("a red circle", device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(ours["prompt_embeds"], embeds) and torch.equal(ours["pooled_prompt_embeds"], pooled)
    t = trace("clip", str(folder), weights="pretrained", prompt="a red circle")
    assert t.nodes[0].outputs == ((2, 77, 32), (2, 16)) and t.nodes[0].output_names == ("prompt_embeds", "pooled_prompt_embeds")
    assert [n.type for n in t.nodes if n.depth == 1] == [
        "CLIPTextModel", "CLIPTextModelWithProjection", "PenultimateLayer", "PenultimateLayer", "Concat"]
    assert t.total_params == sum(p.numel() for p in pipe.text_encoder.parameters()) + sum(
        p.numel() for p in pipe.text_encoder_2.parameters())


def test_sdxl_both_text_encoders_at_their_published_sizes():
    t = trace("clip", "sdxl")
    second = t.find("text_encoder_2")
    assert (t.total_params, second.params) == (817_720_320, 694_659_840)  # 123,060,480 + 694,659,840
    assert t.find("concat").label == "concat channels: 768 + 1280 = 2048" and t.nodes[0].outputs == ((2, 77, 2048), (2, 1280))
    assert t.find("penultimate_2").label == "hidden_states[-2]: layer 31 of 32"
    assert sum(n.path.endswith("split_heads") for n in t.nodes) == 12 + 32  # both encoders' attention recorded


def test_an_sdxl_layout_model_generates_through_its_pipeline(tiny_sdxl_folder, tmp_path):
    folder, _ = tiny_sdxl_folder
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["generate", "-p", "a red circle", "--model", str(folder), "--steps", "2",
                                      "--scheduler", "euler", "--attention-maps", "--out", str(run)])
    assert result.exit_code == 0, result.output
    record = json.loads((run / "trace.json").read_text())
    assert len(record["steps"]) == 2 and record["settings"]["weights"] == "pretrained"
    assert record["steps"][0]["shapes"]["unet_input"] == [2, 4, 8, 8]
    assert record["components"]["clip"]["nodes"][0]["type"] == "TextEncoders"
    assert (run / "image.png").exists() and record["steps"][1]["maps"]["bytes"] > 0
    from explorer import load_run

    assert load_run(run).attention("circle").shape == (8, 8)


def test_sdxl_text_encoders_agree_with_plain_forward_hooks_and_draw_their_join():
    from explorer.specs import SDXL
    from explorer.views.graph import scene

    t = trace("clip", "sdxl")
    for name, part in (("text_encoder", "clip"), ("text_encoder_2", "clip_2")):
        model = build(part, SDXL.config(part))
        seen: dict[str, tuple] = {}

        def first_shape(out) -> tuple:
            while not isinstance(out, torch.Tensor):
                out = out[0]  # a tuple, or a ModelOutput (indexable too)
            return tuple(out.shape)

        def hook(path):
            def note(module, args, out) -> None:  # returns None: the output is left as it is
                seen.setdefault(path, first_shape(out))
            return note

        for path, m in model.named_modules():
            if path:
                m.register_forward_hook(hook(path))
        with torch.no_grad():
            model(input_ids=torch.zeros((2, 77), dtype=torch.long, device="meta"), output_hidden_states=True)
        ours = {n.path.removeprefix(name + "."): n.outputs[0] for n in t.nodes if n.path.startswith(name + ".") and n.kind == "module" and n.call == 0}
        assert len(seen) > 100 and all(ours[path] == shape for path, shape in seen.items()), name
    figure = scene(t, None, 1)
    into_concat = {a.src for a in figure.arrows if a.dst == "concat"}
    assert into_concat == {"penultimate", "penultimate_2"}
    labels = " ".join(b.label for b in figure.boxes)
    assert "prompt_embeds" in labels and "pooled_prompt_embeds" in labels
