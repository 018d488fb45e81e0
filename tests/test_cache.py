"""The trace cache: a hit costs no torch import; nothing stale is ever served; corrupt entries heal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from explorer import cache


def explore(*args, cache_dir: Path):
    env = {**os.environ, "SD_EXPLORER_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "explorer.cli", *args], capture_output=True, text=True, env=env
    )


def imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_second_run_is_served_without_torch(tmp_path):
    first = explore("unet", "--depth", "2", cache_dir=tmp_path)
    second = explore("unet", "--depth", "2", cache_dir=tmp_path)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert "torch" in imported(first.stderr)
    assert "torch" not in imported(second.stderr) and "diffusers" not in imported(second.stderr)
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_corrupt_entry_is_ignored_and_rewritten(tmp_path, monkeypatch):
    from conftest import explore as explore_here  # in this process: what is tested is the cache's files

    monkeypatch.setenv("SD_EXPLORER_CACHE_DIR", str(tmp_path))
    good = explore_here("vae", "--depth", "1")
    [entry] = tmp_path.glob("*.json")
    entry.write_text('{"trace": {"schema": "sd-explor')  # truncated
    again = explore_here("vae", "--depth", "1")
    assert again.exit_code == 0 and again.stdout == good.stdout
    assert json.loads(entry.read_text())["trace"]["component"] == "vae"
    entry.write_text("garbage")
    bypass = explore_here("vae", "--depth", "1", "--no-cache")
    assert bypass.exit_code == 0 and bypass.stdout == good.stdout
    assert entry.read_text() == "garbage"  # --no-cache neither reads nor writes


def test_every_part_of_the_key_matters():
    base = dict(component="unet", source={"config": {"a": 1}}, height=512, width=512, batch=2, flops=False)
    reference = cache.key(**base)
    assert cache.key(**base) == reference
    for change in (
        {"component": "vae"},
        {"source": {"config": {"a": 2}}},
        {"height": 768},
        {"batch": 1},
        {"flops": True},
    ):
        assert cache.key(**{**base, **change}) != reference, change


def test_changed_weights_are_traced_again(tmp_path, tiny_folder):
    cache_dir = tmp_path / "cache"
    folder = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_folder, folder)
    assert explore("unet", "--model", str(folder), "--depth", "0", cache_dir=cache_dir).returncode == 0
    assert explore("unet", "--model", str(folder), "--depth", "0", cache_dir=cache_dir).returncode == 0
    assert len(list(cache_dir.glob("*.json"))) == 1
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    again = explore("unet", "--model", str(folder), "--depth", "0", cache_dir=cache_dir)
    assert again.returncode == 0 and "torch" in imported(again.stderr)
    assert len(list(cache_dir.glob("*.json"))) == 2
