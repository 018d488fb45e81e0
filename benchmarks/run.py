"""Side-by-side timings of sd-explorer against the plain way of doing the same thing, in one run.

    python benchmarks/run.py            # all of them, then rewrites docs/performance.md
    python benchmarks/run.py --quick    # fewer repetitions, smaller images (a smoke run)

Every comparison runs both sides on the same machine, in the same run, alternating, and reports
the median and the ratio. Each side runs in a fresh process where start-up or memory state matters.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"


def python(code: str) -> dict:
    """Run `code` in a fresh Python; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def alternate(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """a(), b(), a(), b(), ...: both sides see the same machine state over the run."""
    xs, ys = [], []
    for _ in range(repeats):
        xs.append(a())
        ys.append(b())
    return xs, ys


# -- random weights: default initialisation against fill_random -----------------------------------------

INIT_DEFAULT = """
import json, time
t = time.perf_counter()
from diffusers import UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel
from explorer.specs import SD15
imported = time.perf_counter()
unet = UNet2DConditionModel.from_config(SD15.config("unet"))
vae = AutoencoderKL.from_config(SD15.config("vae"))
clip = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in SD15.config("clip").items() if not k.startswith("_")}))
print(json.dumps({"seconds": time.perf_counter() - imported}))
"""

INIT_OURS = """
import json, time
from explorer.loading import load
import diffusers, transformers
start = time.perf_counter()
for component in ("unet", "vae", "clip"):
    load(component, "sd15", weights="random")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

TOUCH = """
import json, time, torch
start = time.perf_counter()
torch.empty(859_520_964 + 83_653_863 + 123_060_480).zero_()  # allocate and touch every byte once
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def bench_init(repeats: int) -> list[dict]:
    default, ours = alternate(lambda: python(INIT_DEFAULT)["seconds"], lambda: python(INIT_OURS)["seconds"], repeats)
    touch = [python(TOUCH)["seconds"] for _ in range(repeats)]
    d, o, t = statistics.median(default), statistics.median(ours), statistics.median(touch)
    return [
        {
            "what": "SD1.5 (UNet + VAE + text encoder) with random weights, build time",
            "peer": "diffusers / transformers default initialisation",
            "ours": o,
            "theirs": d,
            "note": f"allocating and touching the same 4.3 GB alone: {t:.1f} s",
            "target": "near the cost of allocating the memory",
        }
    ]


# -- watching: the same pipeline with and without the watchers ------------------------------------------------

WATCH = """
import json, statistics, sys, tempfile, time
from pathlib import Path
import torch
from explorer.watching import Settings, Watch, build_pipeline, watch_pipeline

size, steps, repeats = {size}, {steps}, {repeats}
settings = Settings(prompt="a lighthouse at dusk", steps=steps, height=size, width=size)
built = build_pipeline(settings)
pipe = built.pipe

def run(watched):
    undo = []
    kwargs = {{}}
    if watched:
        out = Path(tempfile.mkdtemp())
        watch = Watch(settings=settings, out=out)
        callback, undo = watch_pipeline(pipe, watch, watch.write, compare=False)
        kwargs["callback_on_step_end"] = callback
    start = time.perf_counter()
    with torch.no_grad():
        pipe(prompt=settings.prompt, num_inference_steps=steps, height=size, width=size,
             generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)
    seconds = time.perf_counter() - start
    for u in reversed(undo):
        u()
    return seconds

run(False)  # warm-up: first calls allocate
plain, watched = [], []
for _ in range(repeats):
    plain.append(run(False))
    watched.append(run(True))
print(json.dumps({{"plain": plain, "watched": watched, "steps": len(pipe.scheduler.timesteps)}}))
"""


def bench_watch(size: int, steps: int, repeats: int) -> list[dict]:
    r = python(WATCH.format(size=size, steps=steps, repeats=repeats))
    plain, watched = statistics.median(r["plain"]), statistics.median(r["watched"])
    n = r["steps"]
    return [
        {
            "what": f"explore generate, one denoising step (SD1.5, random weights, {size}x{size}, batch 2)",
            "peer": "the same diffusers pipeline, unwatched",
            "ours": watched / n,
            "theirs": plain / n,
            "note": f"median of {repeats} runs of {n} steps each",
            "target": "≤ 1.03×",
        }
    ]


# -- the report ---------------------------------------------------------------------------------------------------


def report(rows: list[dict], seconds: float, quick: bool) -> str:
    import torch

    lines = [
        "# Performance",
        "",
        "Numbers from one run of `python benchmarks/run.py`"
        + (" --quick" if quick else "")
        + f" on {date.today():%Y-%m-%d}: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}, torch {torch.__version__}. "
        f"The whole run took {seconds:.0f} s. Each comparison alternates the two sides in the same run and "
        "reports medians; ratio = ours / theirs (lower is better).",
        "",
        "| what | compared with | ours | theirs | ratio | target | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["ours"] / row["theirs"] if row["theirs"] else float("nan")
        lines.append(
            f"| {row['what']} | {row['peer']} | {row['ours']:.2f} s | {row['theirs']:.2f} s | {ratio:.2f}× | "
            f"{row['target']} | {row['note']} |"
        )
    lines += [
        "",
        "## How to reproduce",
        "",
        "```sh",
        "make install",
        ".venv/bin/python benchmarks/run.py          # rewrites this page",
        "```",
        "",
        "The machine matters more than anything here: compare ratios, not seconds, across machines.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller image")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/performance.md alone")
    args = parser.parse_args()
    repeats = 2 if args.quick else 3
    start = time.perf_counter()
    rows = []
    print("random-weights build …", flush=True)
    rows += bench_init(repeats)
    print("watching overhead …", flush=True)
    rows += bench_watch(128 if args.quick else 256, 4 if args.quick else 8, repeats)
    text = report(rows, time.perf_counter() - start, args.quick)
    print(text)
    if not args.no_write:
        DOC.write_text(text)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
