"""The explorer under a hostile environment, on purpose: settings a user may have exported change
nothing they should not, and a read-only home or an unwritable cache stops nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPLORE = Path(sys.executable).parent / "explore"


@pytest.fixture
def hostile(tmp_path):
    """The settings a user may have exported, and a home and a cache that cannot be written: they
    lie under a file, so not even root can create them."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(blocked / "hf"),
        "HF_HUB_CACHE": str(blocked / "hub"),
        "NO_COLOR": "1",
        "FORCE_COLOR": "1",
        "COLUMNS": "40",
        "TERM": "dumb",
        "HOME": str(blocked / "home"),
        "SD_EXPLORER_CACHE_DIR": str(blocked / "cache"),
    }


def explore(env, *args, cwd=None):
    return subprocess.run([str(EXPLORE), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_explorer_works_under_a_hostile_environment(hostile, tmp_path):
    env = hostile
    tree = explore(env, "unet", "--depth", "1")
    assert tree.returncode == 0, tree.stderr
    assert "[2,4,64,64] → [2,320,64,64]" in tree.stdout and "\x1b[" not in tree.stdout  # NO_COLOR wins, full lines
    diagram = explore(env, "diagram", "vae", "-o", str(tmp_path / "vae d.svg"))
    assert diagram.returncode == 0 and (tmp_path / "vae d.svg").stat().st_size > 10_000, diagram.stderr
    hub = explore(env, "unet", "--model", "nobody/missing")
    assert hub.returncode == 2 and "HF_HUB_OFFLINE" in hub.stderr and "Traceback" not in hub.stderr
    generated = explore(env, "generate", "-p", "a red circle on the left", "--model", "micro", "--steps", "2",
                        "--out", str(tmp_path / "run"))
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "run" / "trace.json").exists() and (tmp_path / "run" / "image.png").exists()
