"""Shared fixtures: SD1.5 traces on the meta device (exact shapes, under a second each), and tiny
models built, saved and reloaded the real way (save_pretrained, safetensors single files)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)


# What a user may have set that changes what the explorer prints or where it looks. Every test
# starts without them (tests/test_environment.py sets them on purpose).
USER_SETTINGS = (
    "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
    "DIFFUSERS_CACHE", "HF_TOKEN", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM", "TTY_COMPATIBLE",
    "SD_EXPLORER_CACHE_DIR", "SD_EXPLORER_DEBUG", "SD_EXPLORER_MEMORY_GB",
)
SESSION_HOME: dict[str, str] = {}  # HF_HOME, set once for the session in pytest_configure


def pytest_configure(config):
    """Before anything is imported: none of the caller's settings, an empty Hugging Face home and
    an explorer cache of the session's own (libraries read some of these once, at import)."""
    import tempfile

    for name in USER_SETTINGS:
        os.environ.pop(name, None)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one of several pytest-xdist workers (make test runs one per core): one thread each, for it and
        # what it starts. The suite's torch work is many small operations, which a second thread barely
        # speeds up, and two workers each running two threads on two cores wait on each other's.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    home = Path(tempfile.mkdtemp(prefix="sd-explorer-tests-"))
    SESSION_HOME["HF_HOME"] = os.environ["HF_HOME"] = str(home / "hf")
    # matplotlib's cache (the notebooks' kernels draw with it): with a home that cannot be written,
    # matplotlib says so on stderr in the first cell that draws, which is matplotlib's, not ours to test
    os.environ["MPLCONFIGDIR"] = str(home / "matplotlib")
    os.environ["SD_EXPLORER_CACHE_DIR"] = str(home / "cache")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path_factory):
    """Every test: none of the user's settings, whatever the caller exported, and a trace cache of
    its own, so that no test sees what another left."""
    for name in USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", SESSION_HOME["HF_HOME"])
    monkeypatch.setenv("SD_EXPLORER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def unet_trace():
    from explorer import trace

    return trace("unet")


@pytest.fixture(scope="session")
def vae_trace():
    from explorer import trace

    return trace("vae")


@pytest.fixture(scope="session")
def clip_trace():
    from explorer import trace

    return trace("clip", prompt="a photo of an astronaut riding a horse")


def first(trace, predicate):
    """The first node (in call order) for which predicate(node) holds."""
    for node in trace.nodes:
        if predicate(node):
            return node
    raise AssertionError("no node matches")


def of_type(trace, type_name):
    return [n for n in trace.nodes if n.type == type_name]


# -- tiny models on disk ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_models():
    """The tiny preset's UNet, VAE and text encoder with random weights (real tensors)."""
    from explorer.loading import build
    from explorer.specs import TINY

    return {c: build(c, TINY.config(c), "random", seed=i) for i, c in enumerate(("unet", "vae", "clip"))}


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, tiny_models):
    """A diffusers pipeline folder written by StableDiffusionPipeline.save_pretrained."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from explorer.specs import TINY
    from explorer.tokenizer import clip_tokenizer

    pipe = StableDiffusionPipeline(
        vae=tiny_models["vae"],
        text_encoder=tiny_models["clip"],
        tokenizer=clip_tokenizer(),
        unet=tiny_models["unet"],
        scheduler=PNDMScheduler.from_config(dict(TINY.scheduler)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = tmp_path_factory.mktemp("tiny-pipeline")
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_original_file(tmp_path_factory, tiny_models):
    """The tiny model as one .safetensors file in the original CompVis / SD single-file layout."""
    from safetensors.torch import save_file

    from explorer.naming import to_original_checkpoint
    from explorer.specs import TINY

    state = to_original_checkpoint(
        tiny_models["unet"].state_dict(),
        tiny_models["vae"].state_dict(),
        tiny_models["clip"].state_dict(),
        TINY.config("unet"),
        TINY.config("vae"),
    )
    path = tmp_path_factory.mktemp("tiny-single") / "tiny-original.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="session")
def fake_hub_cache(tmp_path_factory, tiny_folder):
    """A Hugging Face cache holding the tiny folder as the snapshot of `sd-explorer-test/tiny`."""
    import shutil

    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / "models--sd-explorer-test--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_folder, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return cache


# -- a real browser --------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def needs_chromium():
    """The mark for tests in a browser: Debian's Chromium must be there, unless the caller knowingly
    skips them with SD_EXPLORER_NO_BROWSER=1."""
    if not Path(CHROMIUM).exists() and os.environ.get("SD_EXPLORER_NO_BROWSER") != "1":
        pytest.fail(
            "The browser tests need Chromium (apt install chromium); set SD_EXPLORER_NO_BROWSER=1 to skip them knowingly.",
            pytrace=False,
        )
    return pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium (SD_EXPLORER_NO_BROWSER=1)")


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (which downloads no browser of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def explore(*args: str):
    """`explore ARGS` in this process (typer's CliRunner: stdout and stderr apart)."""
    from typer.testing import CliRunner

    from explorer.cli import app

    return CliRunner().invoke(app, list(args))


def refused_in_one_sentence(result) -> None:
    """Exit 2, no traceback, and exactly one line "Error: ..." on stderr."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
