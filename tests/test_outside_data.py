"""Outside data is hostile until checked: property-based tests (hypothesis) on every entry point
that reads it. Each bad input gets one sentence and exit 2: no traceback, nothing half-written."""

from __future__ import annotations

import json
import string
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import explore, refused_in_one_sentence

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
DTYPES = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "Q99", "", "f32"])


def answered(result) -> None:
    """Either it works (a valid input after all) or it is refused in one sentence."""
    if result.exit_code != 0:
        refused_in_one_sentence(result)


# -- safetensors files ------------------------------------------------------------------------------

def _safetensors(header: bytes, body: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + body


tensor_entries = st.dictionaries(
    st.sampled_from(["conv_in.weight", "conv_in.bias", "model.diffusion_model.input_blocks.0.0.weight", "x", "__metadata__"]),
    st.fixed_dictionaries({
        "dtype": DTYPES,
        "shape": st.lists(st.integers(-2, 400), max_size=4),
        "data_offsets": st.lists(st.integers(-8, 10**12), min_size=0, max_size=3),
    }),
    max_size=4,
)
safetensors_files = st.one_of(
    st.binary(max_size=200),                                                                 # random bytes
    st.builds(_safetensors, st.just(b"{}"), st.binary(max_size=16), st.integers(3, 2**63)),  # a length past the end
    st.builds(_safetensors, st.just(b"{}"), st.just(b""), st.just(100_000_000)),            # a header of 100 MB
    st.builds(_safetensors, st.binary(max_size=64), st.binary(max_size=64)),                 # not JSON
    st.builds(_safetensors, tensor_entries.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64)),
    st.builds(_safetensors, st.just(b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                    b'"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'), st.binary(max_size=8)),
)


@SETTINGS
@given(data=safetensors_files)
def test_hostile_safetensors_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(data)
    out = path.parent / "unet.svg"
    answered(explore("unet", "--model", str(path), "--weights", "pretrained", "--depth", "0"))
    refused_in_one_sentence(explore("diagram", "unet", "--model", str(path), "--weights", "pretrained", "-o", str(out)))
    assert not out.exists()


def test_a_checkpoint_whose_shapes_do_not_fit_the_architecture(tmp_path):
    from safetensors.torch import save_file
    import torch

    path = tmp_path / "wrong.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(3, 3)}, str(path))
    refused_in_one_sentence(explore("unet", "--model", str(path), "--weights", "pretrained"))


# -- diffusers folders ------------------------------------------------------------------------------

@SETTINGS
@given(config=JSON | st.text(max_size=40), index=JSON)
def test_hostile_diffusers_folders(tmp_path_factory, config, index):
    folder = tmp_path_factory.mktemp("folder")
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    (folder / "model_index.json").write_text(json.dumps(index))
    answered(explore("unet", "--model", str(folder), "--depth", "0"))


def test_a_folder_never_imports_the_module_it_names(tmp_path, monkeypatch):
    (tmp_path / "sdx_planted.py").write_text("import builtins\nbuiltins.SDX_PLANTED_RAN = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "unet": ["sdx_planted", "UNet2DConditionModel"]}))
    (folder / "unet" / "config.json").write_text(json.dumps({"_class_name": "sdx_planted.Evil", "sample_size": 8}))
    answered(explore("unet", "--model", str(folder), "--depth", "0"))
    answered(explore("generate", "-p", "x", "--model", str(folder), "--steps", "1", "--out", str(tmp_path / "run")))
    assert "sdx_planted" not in sys.modules and not hasattr(__builtins__, "SDX_PLANTED_RAN")


# -- run records -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    from explorer.generation import Settings, generate

    run = tmp_path_factory.mktemp("run")
    generate(Settings(prompt="a red circle on the left", model="micro", steps=2, seed=0, attention_maps=True), run)
    return run


record_changes = st.dictionaries(
    st.sampled_from(["schema", "steps", "settings", "tokens", "maps", "status", "phases", "image", "unet_calls"]),
    JSON | st.just("../../etc/passwd"),
    max_size=3,
)


@settings(SETTINGS, max_examples=6)  # each builds a page and draws the maps: about 1.5 s an example
@given(changes=record_changes, cut=st.integers(0, 400) | st.none())
def test_hostile_run_records(tmp_path_factory, a_run, changes, cut):
    import shutil

    import explorer

    folder = tmp_path_factory.mktemp("hostile-run") / "run"
    shutil.copytree(a_run, folder)
    record = {**json.loads((a_run / "trace.json").read_text()), **changes}
    text = json.dumps(record)
    (folder / "trace.json").write_text(text if cut is None else text[:cut])
    site = folder.parent / "site"
    result = explore("html", str(site), "--run", str(folder), "--model", "tiny")
    answered(result)
    assert site.exists() == (result.exit_code == 0)  # nothing half-written
    maps = explore("maps", str(folder), "--word", "circle", "-o", str(folder.parent / "m.png"))
    answered(maps)
    try:
        run = explorer.load_run(folder)
        run.attention("circle")
    except explorer.ExplorerError:
        pass  # one sentence, as the CLI shows it


NESTED = {
    "lists": "[" * 100_000 + "]" * 100_000,
    "objects": '{"a": ' * 100_000 + "0" + "}" * 100_000,
    "300 levels": '{"schema": ' + "[" * 300 + "]" * 300 + "}",
}


@pytest.mark.parametrize("nested", NESTED.values(), ids=NESTED.keys())
def test_a_record_nested_too_deeply_is_one_sentence(tmp_path, a_run, nested):
    import shutil
    import time

    import explorer

    folder = tmp_path / "run"
    shutil.copytree(a_run, folder)
    (folder / "trace.json").write_text(nested)
    started = time.perf_counter()
    refused_in_one_sentence(explore("maps", str(folder), "--word", "circle", "-o", str(tmp_path / "m.png")))
    site = tmp_path / "site"
    refused_in_one_sentence(explore("html", str(site), "--run", str(folder), "--model", "tiny"))
    with pytest.raises(explorer.ExplorerError, match="trace.json nests deeper than 256 levels"):
        explorer.load_run(folder)
    assert time.perf_counter() - started < 5
    assert not site.exists() and not (tmp_path / "m.png").exists()


def test_json_nesting_is_limited_to_a_few_hundred_levels():
    from explorer.files import MAX_JSON_DEPTH, TooDeep, nesting, parse_json
    from explorer.record import Trace

    assert nesting(parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)) == MAX_JSON_DEPTH
    assert nesting(1) == 0 and nesting({"a": [1, {"b": []}]}) == 4
    with pytest.raises(TooDeep):
        parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper"):
        Trace.from_json("[" * 100_000 + "]" * 100_000)


# -- CLI values --------------------------------------------------------------------------------------

awkward = st.text(alphabet=string.printable + "\x00\x07\x1b<>\"'é中🙂\u202e", max_size=60)


@SETTINGS
@given(prompt=awkward | st.just(" ".join(["word"] * 10_000)), block=awkward, depth=st.integers(-3, 50),
       size=st.integers(-64, 5000), batch=st.integers(-2, 9))
def test_awkward_cli_values(prompt, block, depth, size, batch):
    answered(explore("clip", "--prompt", prompt, "--depth", "0"))
    answered(explore("unet", "--block", block, "--depth", str(depth)))
    answered(explore("unet", "--height", str(size), "--width", str(size), "--batch", str(batch), "--depth", "0"))


@pytest.mark.parametrize("name", ["with space", "quote's \"double\"", "a<b>", "new\nline", "ünïcødé 中文"])
def test_file_names_as_people_write_them(tmp_path, name):
    out = tmp_path / name / f"{name}.svg"
    result = explore("diagram", "vae", "-o", str(out))
    assert result.exit_code == 0 and out.stat().st_size > 10_000, result.output
