"""Side-by-side timings of sd-explorer against the plain way of doing the same thing, in one run.

    python benchmarks/run.py            # all of them, then rewrites docs/performance.md
    python benchmarks/run.py --quick    # fewer repetitions, smaller images (a smoke run)
    python benchmarks/run.py --only serve,experiment   # some of them; prints the table, writes nothing

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


def alternate(a, b, repeats: int) -> tuple[list, list]:
    """a b, b a, a b, ...: both sides see the same machine state over the run, and neither always
    goes first."""
    xs, ys = [], []
    for k in range(repeats):
        if k % 2 == 0:
            xs.append(a())
            ys.append(b())
        else:
            ys.append(b())
            xs.append(a())
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
import json, tempfile, time
from pathlib import Path
import torch
from explorer.generation import Settings, build_pipeline, watch

model, size, steps, repeats, with_floor = {model!r}, {size}, {steps}, {repeats}, {with_floor}
settings = Settings(prompt="a red circle on the left", model=model, steps=steps, height=size, width=size)
pipe = build_pipeline(settings).pipe

def activity():
    # Block activity alone: the watcher's statistics on the same modules, their numbers taken
    # at every step, nothing written.
    from explorer.capture.activity import BlockActivity
    watcher = BlockActivity(pipe.unet, 2)
    def take(pipe_, i, t, kwargs):
        watcher.take()
    return watcher.install(), take

def floor():
    # The least a watcher of these statistics does, to set the targets against: every watched
    # module's output kept as it returns; when the UNet call ends, the watcher's own measuring
    # (batch_moments) of the distinct outputs' prompt halves; nothing made of the numbers.
    from explorer.capture.activity import after_forward, batch_moments, called_depths
    modules, kept = dict(pipe.unet.named_modules()), []
    paths = [p for p, d in called_depths(pipe.unet).items() if d <= 2]
    on_return = dict.fromkeys(paths, kept.append)
    undos = [after_forward(modules[p], on_return, p) for p in paths]
    def ended(module, args, output):
        distinct = {{id(t): t for t in (o if type(o) is torch.Tensor else o[0] for o in kept)}}
        kept.clear()
        batch_moments(list(distinct.values()), 2)
    undos.append(pipe.unet.register_forward_hook(ended).remove)
    return lambda: [undo() for undo in reversed(undos)], None  # nothing to take at each step

def run(side):
    # -> (the whole call's seconds, each step's after the first): a step ends where the pipeline's
    # callback runs, so the first also holds the prompt's encoding and the watchers' first call.
    ends = []
    def call(on_step=None):
        def step_ended(pipe_, i, t, kwargs):
            if on_step:
                on_step(pipe_, i, t, kwargs)
            ends.append(time.perf_counter())
            return {{}}
        start = time.perf_counter()
        with torch.no_grad():
            pipe(prompt=settings.prompt, num_inference_steps=steps, height=size, width=size,
                 generator=torch.Generator().manual_seed(0), output_type="latent", callback_on_step_end=step_ended)
        return time.perf_counter() - start, [b - a for a, b in zip(ends, ends[1:])]
    if side in ("plain", "unwatched"):  # "unwatched": the plain pipeline timed as a watched side is
        return call()
    if side in ("activity", "floor"):
        undo, on_step = activity() if side == "activity" else floor()
        timed = call(on_step)
        undo()
        return timed
    with watch(pipe, Path(tempfile.mkdtemp()), attention_maps=side == "maps") as run_:
        return call()

run("plain"); run("maps")  # warm-up: first calls allocate
sides = ("activity", "watched", "maps", "unwatched")
if with_floor:  # where block activity's target is tight: how near its floor it is
    sides = ("floor", *sides)
# Every run of a side sits between two plain runs, its ratio taken to their mean (a steady drift of the
# machine's speed cancels); the sides' order reverses every round, so the plain runs around a side do not
# always follow the same other side.
times, around = {{s: [] for s in ("plain", *sides)}}, {{s: [] for s in sides}}
times["plain"].append(run("plain"))
for k in range(repeats):
    for side in sides if k % 2 == 0 else sides[::-1]:
        times[side].append(run(side))
        times["plain"].append(run("plain"))
        around[side].append(len(times["plain"]) - 2)  # the plain runs before and after: this and the next
print(json.dumps({{**times, "around": around, "steps": len(pipe.scheduler.timesteps)}}))
"""

MAPS_SIZE = """
import json, tempfile
from pathlib import Path
from explorer.generation import Settings, generate
out = Path(tempfile.mkdtemp())
generate(Settings(prompt="a lighthouse on a cliff at dusk", steps={steps}, height=512, width=512, attention_maps=True,
                  watch_depth=0), out)
steps = json.loads((out / "trace.json").read_text())["steps"]
assert sum(s["maps"]["bytes"] for s in steps) == (out / "maps.bin").stat().st_size
print(json.dumps({{"bytes": [s["maps"]["bytes"] for s in steps]}}))
"""


def bench_watch(model: str, size: int, steps: int, repeats: int, with_floor: bool = False,
                targeted: bool = True) -> list[dict]:
    """Watching's cost per step, each side against the same pipeline unwatched; `targeted`: the
    targets apply at this size (256 px), else the rows are there for reference."""
    r = python(WATCH.format(model=model, size=size, steps=steps, repeats=repeats, with_floor=with_floor))
    # each run: its whole time, and its steps after the first, of which the median is its step
    timed = {side: runs for side, runs in r.items() if side not in ("steps", "around")}
    whole = {side: [w for w, _ in runs] for side, runs in timed.items()}
    step = {side: [statistics.median(s) for _, s in runs] for side, runs in timed.items()}
    n = r["steps"]
    rows = []
    for side, what, target in (
        ("floor", ("the measuring's floor: every watched output kept as it returns, the prompt halves "
                   "measured together at the call's end, nothing made of the numbers"), "—"),
        ("activity", "block activity alone", "≤ 1.03×"),
        ("watched", "block activity, guidance and latent previews (the default)", "—"),
        ("maps", "the same and the cross-attention maps", "≤ 1.15×"),
        ("unwatched", "nothing: the same pipeline unwatched, timed as the watched sides are (the method's noise)",
         "—"),
    ):
        if side not in step:
            continue
        ratio, spread = bracketed(step[side], step["plain"], r["around"][side])
        whole_ratio, _ = bracketed(whole[side], whole["plain"], r["around"][side])
        rows.append({
            "what": f"one denoising step watched: {what} ({model}, {size}x{size}, guidance 7.5)",
            "peer": "the same diffusers pipeline, unwatched",
            "ours": statistics.median(step[side]),
            "theirs": statistics.median(step["plain"]),
            "ratio": ratio,
            "note": (f"{repeats} runs of {n} UNet calls, each between two plain ones; {spread}; "
                     f"whole runs (the first step and the prompt's encoding included) {whole_ratio:.2f}×"),
            "target": target if targeted or target == "—" else "— (set at 256 px)",
        })
    return rows


def shown(value: float, unit: str) -> str:
    """A measurement as the table shows it: MB, seconds, or milliseconds under a second."""
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def bracketed(ours: list[float], plain: list[float], around: list[int]) -> tuple[float, str]:
    """Each of our runs against the mean of the plain runs just before and after it (`around`: the
    one before's index), so that a steady drift of the machine's speed over the three cancels: the
    median of these ratios, the row's ratio; and for its note their middle half, which says how far
    one ratio can be trusted, and the ratio of the two sides' medians, which the drift moves more."""
    ratios = sorted(x / ((plain[i] + plain[i + 1]) / 2) for x, i in zip(ours, around))
    quarter = len(ratios) // 4
    return statistics.median(ratios), (
        f"ratios: middle half {ratios[quarter]:.2f}–{ratios[len(ratios) - 1 - quarter]:.2f}×; "
        f"ratio of the medians {statistics.median(ours) / statistics.median(plain):.2f}×"
    )


def bench_maps_size(steps: int) -> list[dict]:
    """The maps of one SD1.5 step at 512 px on disk (random weights), times 50 steps."""
    r = python(MAPS_SIZE.format(steps=steps))
    per_step = statistics.median(r["bytes"])
    return [{
        "what": "cross-attention maps of a 50-step SD1.5 run at 512x512 on disk (8 tokens + padding)",
        "peer": "",
        "ours": 50 * per_step / 1e6,
        "theirs": 0.0,
        "unit": "MB",
        "target": "under 50 MB",
        "note": f"{per_step / 1e6:.2f} MB per step, measured on {len(r['bytes'])} steps (random weights), × 50",
    }]


# -- exploring: explore unet --depth 3 against torchinfo ---------------------------------------------------------

MEASURE = """
import json, resource, runpy, sys, time
start = time.perf_counter()
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__") if {module!r} else exec(compile(open({script!r}).read(), {script!r}, "exec"))
except SystemExit:
    pass
print(json.dumps({{"seconds": time.perf_counter() - start, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

TORCHINFO_META = """
import sys, torch
from diffusers import UNet2DConditionModel
from torchinfo import summary
from explorer.specs import SD15
with torch.device("meta"):
    unet = UNet2DConditionModel.from_config(SD15.config("unet"))
x, t, e = torch.empty(2, 4, 64, 64, device="meta"), torch.full((2,), 999, device="meta"), torch.empty(2, 77, 768, device="meta")
print(summary(unet, input_data=[x, t, e], depth=3, device="meta", verbose=0), file=open("/dev/null", "w"))
"""

TORCHINFO_CPU = """
import torch
from diffusers import UNet2DConditionModel
from torchinfo import summary
from explorer.specs import SD15
unet = UNet2DConditionModel.from_config(SD15.config("unet"))  # real weights on the CPU, default initialisation
x, t, e = torch.randn(2, 4, 64, 64), torch.full((2,), 999), torch.randn(2, 77, 768)
with torch.no_grad():
    print(summary(unet, input_data=[x, t, e], depth=3, device="cpu", verbose=0), file=open("/dev/null", "w"))
"""


def whole_process(argv=None, module=None, script_text=None, env=None) -> dict:
    """A fresh interpreter runs a command (or a script) and reports its wall time and peak memory.
    The time is measured from outside, interpreter start-up included."""
    import os
    import tempfile

    script = ""
    if script_text is not None:
        script = tempfile.mktemp(suffix=".py")
        Path(script).write_text(textwrap.dedent(script_text))
    code = MEASURE.format(argv=argv or ["script"], module=module or "", script=script)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = seconds
    return result


def bench_explore(repeats: int) -> list[dict]:
    import tempfile

    explore = ["explore", "unet", "--depth", "3"]

    def cold():
        return whole_process(explore, module="explorer.cli", env={"SD_EXPLORER_CACHE_DIR": tempfile.mkdtemp()})

    warm_dir = tempfile.mkdtemp()
    whole_process(explore, module="explorer.cli", env={"SD_EXPLORER_CACHE_DIR": warm_dir})  # fills the cache

    def warm():
        return whole_process(explore, module="explorer.cli", env={"SD_EXPLORER_CACHE_DIR": warm_dir})

    def peer():
        return whole_process(script_text=TORCHINFO_META)

    ours, theirs = alternate(cold, peer, repeats)
    again = [warm() for _ in range(repeats)]
    cpu = whole_process(script_text=TORCHINFO_CPU)
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    return [
        {
            "what": "`explore unet --depth 3`, whole process, first run",
            "peer": "a script printing `torchinfo.summary(depth=3)` of the same UNet on the meta device",
            "ours": med(ours, "seconds"),
            "theirs": med(theirs, "seconds"),
            "target": "≤ 0.9×",
            "note": "both import torch and diffusers and build the UNet on the meta device; `explore` pauses the "
                    "garbage collector's walks over what they import",
        },
        {
            "what": "the same, repeated",
            "peer": "the same torchinfo script",
            "ours": med(again, "seconds"),
            "theirs": med(theirs, "seconds"),
            "target": "≤ 0.25×, and under 1 s",
            "note": "the record comes from the trace cache: no torch import",
        },
        {
            "what": "the same, first run, peak memory",
            "peer": "torchinfo on real CPU weights (default initialisation)",
            "ours": med(ours, "maxrss_mb"),
            "theirs": cpu["maxrss_mb"],
            "unit": "MB",
            "target": "≤ 0.25×",
            "note": f"torchinfo on the meta device peaks at {med(theirs, 'maxrss_mb'):.0f} MB",
        },
    ]


# -- a whole random-weights generation against a plain diffusers script ----------------------------------------

PLAIN_GENERATION = """
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from explorer.specs import SD15
from explorer.tokenizer import clip_tokenizer
torch.manual_seed(0)
pipe = StableDiffusionPipeline(
    vae=AutoencoderKL.from_config(SD15.config("vae")),
    text_encoder=CLIPTextModel(CLIPTextConfig(**{k: v for k, v in SD15.config("clip").items() if not k.startswith("_")})),
    tokenizer=clip_tokenizer(),
    unet=UNet2DConditionModel.from_config(SD15.config("unet")),
    scheduler=PNDMScheduler.from_config(dict(SD15.scheduler)),
    safety_checker=None, feature_extractor=None, requires_safety_checker=False,
)
with torch.no_grad():
    image = pipe("a lighthouse at dusk", num_inference_steps=1, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
image.save("/dev/null", format="png")
"""


def bench_generation_process(repeats: int) -> list[dict]:
    import tempfile

    def ours():
        out = tempfile.mkdtemp()
        argv = ["explore", "generate", "-p", "a lighthouse at dusk", "--steps", "1", "--height", "64", "--width", "64",
                "--out", out]
        return whole_process(argv, module="explorer.cli")

    mine, plain = alternate(ours, lambda: whole_process(script_text=PLAIN_GENERATION), repeats)
    return [
        {
            "what": "SD1.5 random-weights generation, whole process (64x64, 1 step)",
            "peer": "a plain diffusers script doing the same, default initialisation",
            "ours": statistics.median(r["seconds"] for r in mine),
            "theirs": statistics.median(r["seconds"] for r in plain),
            "target": "≤ 0.7×",
            "note": "ours also traces the three components for trace.json and writes three files",
        }
    ]


# -- experiments: two watched runs from the same noise, and a sweep -------------------------------------------------


def bench_experiment(repeats: int, steps: int = 20) -> list[dict]:
    import tempfile

    prompt = "a red circle on the left"

    def experiment():
        argv = ["explore", "experiment", "-p", prompt, "--swap", "red=blue@8x8", "--steps", str(steps), "-o",
                tempfile.mkdtemp() + "/exp"]
        return whole_process(argv, module="explorer.cli")

    def generation():
        argv = ["explore", "generate", "--model", "micro", "-p", prompt, "--steps", str(steps), "-o", tempfile.mkdtemp()]
        return whole_process(argv, module="explorer.cli")

    def sweep():
        argv = ["explore", "sweep", "-p", prompt, "--steps", str(steps), "-o", tempfile.mkdtemp() + "/sweep"]
        return whole_process(argv, module="explorer.cli")

    mine, plain = alternate(experiment, generation, repeats)
    sweeps = [sweep() for _ in range(max(1, repeats - 1))]
    return [
        {
            "what": f"`explore experiment` on micro, one edit, whole process (64x64, {steps} steps)",
            "peer": "`explore generate`, the same settings, whole process",
            "ours": statistics.median(r["seconds"] for r in mine),
            "theirs": statistics.median(r["seconds"] for r in plain),
            "target": "≤ 2.1×",
            "note": "two watched runs, every block's output compared step by step, and the comparison figure; "
                    "the pipeline is built once",
        },
        {
            "what": f"`explore sweep` over micro's 10 cross-attention layers, whole process ({steps} steps)",
            "peer": "",
            "ours": statistics.median(r["seconds"] for r in sweeps),
            "theirs": 0.0,
            "target": "under 30 s",
            "note": "a watched baseline, then one unwatched run per layer, each judged; the U coloured by effect",
        },
    ]


# -- the live page: a click, the steps on screen, the frames ------------------------------------------------------

# In the page: the time of the click, every change of the status line (state, text) and every frame's start
# (requestAnimationFrame), so that what is on screen when is read from the browser itself.
PAGE_WATCH = """
() => {
  const seen = window.__bench = { click: 0, states: [], frames: [] };
  const tick = (now) => { window.__bench.frames.push(now); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  const status = document.getElementById('live-status');
  new MutationObserver(() => window.__bench.states.push([performance.now(), status.dataset.state]))
    .observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
  document.getElementById('live-go').addEventListener('click', () => { window.__bench.click = performance.now(); }, true);
}
"""


def served_page(runs: str):
    """`explore serve` in its own process, as a learner starts it: (the process, the URL with its token)."""
    import re
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "explorer.cli", "serve", "--port", str(port), "--runs", runs],
                              cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in server.stderr:
        found = re.search(r"http://\S+token=[\w-]+", line)
        if found:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
            for _ in range(600):  # the URL is printed just before uvicorn listens
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return server, found.group(0)
                except OSError:
                    time.sleep(0.05)
            break
    server.kill()
    raise RuntimeError(f"explore serve gave no URL it listens on (exit {server.wait()})")


def page_run(page) -> dict:
    """One click on Generate, read back from the page: click → first step on screen, click → done,
    the longest frame while the steps arrived."""
    page.evaluate("() => { window.__bench.states = []; window.__bench.frames = []; window.__bench.click = 0; }")
    page.click("#live-go")
    page.wait_for_function("() => window.__bench.states.some(([at, state]) => state === 'done')", timeout=300_000)
    page.wait_for_timeout(100)  # a few frames after the end
    seen = page.evaluate("() => window.__bench")
    running = [at for at, state in seen["states"] if state == "running"]
    done = next(at for at, state in seen["states"] if state == "done")
    first_shown = next(at for at in seen["frames"] if at > running[0])  # the frame that paints the first step
    during = [at for at in seen["frames"] if running[0] <= at <= running[-1]]
    gaps = [b - a for a, b in zip(during, during[1:])]
    return {"first": (first_shown - seen["click"]) / 1000, "whole": (done - seen["click"]) / 1000,
            "frame": max(gaps) / 1000 if gaps else 0.0, "frames": len(during)}


def bench_serve(repeats: int, steps: int = 20) -> list[dict]:
    """The live page on micro, in Chromium, against `explore generate`'s own pipeline time (its record's
    `total`: the watched pipeline call), the same settings, alternating."""
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright

    prompt = "a red circle on the left"

    def generation():
        out = Path(tempfile.mkdtemp()) / "run"
        subprocess.run([sys.executable, "-m", "explorer.cli", "generate", "--model", "micro", "-p", prompt, "--steps",
                        str(steps), "--seed", "0", "--attention-maps", "-o", str(out)], cwd=ROOT, check=True,
                       capture_output=True)
        return json.loads((out / "trace.json").read_text())["phases"]["total"]  # the pipeline call

    server, url = served_page(tempfile.mkdtemp())
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium,
                                        args=["--no-sandbox", "--headless", "--disable-background-networking"])
            rows = []
            for tab in ("run", "unet"):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{url}#{tab}")
                page.wait_for_selector("#live-go")
                page.evaluate(PAGE_WATCH)
                page.fill("#live-prompt", prompt)
                page.fill("#live-steps", str(steps))
                if tab == "unet":
                    page.hover('#diagram [data-path="up_blocks.1"]')  # a block's panel open, as a learner has it
                first = page_run(page)  # the first click of a page: also reads the model's first calls
                clicks, pipeline = alternate(lambda: page_run(page), generation, repeats)
                page.close()
                median = lambda key: statistics.median(c[key] for c in clicks)  # noqa: E731
                rows += [
                    {"what": f"live page ({tab} tab): click → first step on screen (micro, 64x64, {steps} steps)",
                     "peer": "", "ours": median("first"), "theirs": 0.0, "target": "under 0.3 s",
                     "note": f"Chromium, `explore serve` in its own process; the page's first click: {first['first']:.2f} s"},
                    {"what": f"live page ({tab} tab): click → the whole run on screen",
                     "peer": "`explore generate --attention-maps`: its pipeline's own time (the record's `total`)",
                     "ours": median("whole"), "theirs": statistics.median(pipeline), "target": "≤ 2×",
                     "note": "ours: every step sent, drawn, the run read back and listed; theirs: the watched pipeline call"},
                    {"what": f"live page ({tab} tab): the longest frame while the steps arrive",
                     "peer": "", "ours": max(c["frame"] for c in clicks + [first]), "theirs": 0.0,
                     "target": "no frame over 100 ms",
                     "note": f"requestAnimationFrame in the page, every run; {median('frames'):.0f} frames a run"},
                ]
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    return rows


# -- all the figures ----------------------------------------------------------------------------------------------


def bench_diagrams(repeats: int) -> list[dict]:
    import tempfile

    def draw():
        return whole_process(["explore", "diagrams", tempfile.mkdtemp()], module="explorer.cli",
                             env={"SD_EXPLORER_CACHE_DIR": tempfile.mkdtemp()})

    runs = [draw() for _ in range(repeats)]
    return [
        {
            "what": "`explore diagrams` (all 26 figures, .svg and .dot), whole process, cold cache",
            "peer": "",
            "ours": statistics.median(r["seconds"] for r in runs),
            "theirs": 0.0,
            "target": "under 20 s",
            "note": "traces the three components, then Graphviz draws each figure",
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
        "reports medians; ratio = ours / theirs (lower is better). Watching times a step: a run's step is",
        "the median of its steps after the first (which also encodes the prompt and holds the watchers'",
        "first call; the notes give whole runs' ratios too). Every watched run sits between two unwatched",
        "ones and is compared with their mean, so that a steady drift of the machine's speed over the",
        "three cancels; the ratio is the median of these over the rounds, and the sides' order reverses",
        "every round. The rows \"nothing\" time the unwatched pipeline as one more side: how far this",
        "machine alone moves a ratio from 1.00×.",
        "",
        "| what | compared with | ours | theirs | ratio | target | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        unit = row.get("unit", "s")
        theirs = shown(row["theirs"], unit) if row["theirs"] else "—"
        ratio = f"{row.get('ratio') or row['ours'] / row['theirs']:.2f}×" if row["theirs"] else "—"
        lines.append(
            f"| {row['what']} | {row['peer'] or '—'} | {shown(row['ours'], unit)} | {theirs} | {ratio} | "
            f"{row['target']} | {row['note']} |"
        )
    lines += [
        "",
        "## How to reproduce",
        "",
        "```sh",
        "make install",
        ".venv/bin/pip install -e \".[bench]\"        # torchinfo, the peer",
        ".venv/bin/python benchmarks/run.py          # rewrites this page",
        "```",
        "",
        "The machine matters more than anything here: compare ratios, not seconds, across machines.",
        "",
        "## Reading the numbers",
        "",
        "- A first `explore` spends most of its time importing torch and diffusers, as the torchinfo",
        "  script does. Importing them creates millions of objects that live as long as the process;",
        "  with Python's default settings the cyclic garbage collector walks all of them again each time",
        "  the heap has grown by a quarter, and once more at exit: about a third of the torchinfo",
        "  script's time. `explore` collects its young generation every 10,000 allocations instead of",
        "  700 (garbage cycles are still collected) and freezes what is left when the command is done,",
        "  so the exit skips that walk. Every later identical command reads the record from the trace",
        "  cache and imports no torch at all.",
        "- Peak memory: sd-explorer never allocates the weights (the meta device); torchinfo on the CPU",
        "  holds the whole float32 UNet and its activations.",
        "- Watching a generation costs a wrapper around the forward of each of the UNet's watched",
        "  modules, which from the second UNet call on only appends the output to a list, all of them",
        "  measured when the call ends (the small ones together: their prompt halves end to end as numpy",
        "  views, Σx, Σ|x| and Σx² per tensor in a few numpy operations; the large ones each by PyTorch),",
        "  a wrapper around `scheduler.step`, one small PNG per step (the latent and the four guidance",
        "  previews side by side, at the latent's own size) and, with maps, the cross-attention weights",
        "  of the prompt's first image, computed together for all the layers (a matmul each into one",
        "  array, one softmax, one mean over the heads) and appended to one `maps.bin` a run: a few per",
        "  cent of an SD1.5 step. The targets are set at 256 px, for SD1.5 and for micro.",
        "- The rows \"nothing\" say how far a ratio can be trusted. Micro's, in 24 and 31 rounds, read",
        "  1.00× (middle halves within 0.98–1.01×). SD1.5's, in 6 rounds (a run there takes 12 s), read",
        "  0.97× (0.96–0.99×), as its block activity alone does: there a ratio is good to about three",
        "  points, and what SD1.5's rows say is that watching costs less than that, maps apart.",
        "- Micro at its own 64 px, for reference: a step takes about 20 ms, and the same work is a large",
        "  share of it. Timed inside the watchers, per step: block activity about 0.7 ms (looking at the",
        "  outputs 0.1, measuring them 0.35, the numbers 0.08; looked at as each module returned, the",
        "  outputs cost 0.24 ms, and forward hooks instead of the wrappers another 2 % of the step, which",
        "  is why both went); the previews about 0.5 ms (mapping 0.11, the PNG 0.05, stored rather than",
        "  deflated at that size, creating the file 0.3: this disk takes 55 to 650 µs to create a file,",
        "  depending on the moment, which is why the five previews share one); the maps about 0.75 ms",
        "  (computing them 0.58, packing them in 8 bits 0.13, appending them 0.05; one `.npz` a step cost",
        "  0.5 ms more). An operation costs more there than in a loop that repeats it (one and a half to",
        "  three times as much): its code and data are no longer in the caches after the UNet's work, so",
        "  fewer operations count for more than cheaper ones. The end-to-end ratios are higher than these",
        "  parts add up to: the watchers' calls and the data they read also slow the UNet around them.",
        "  What is left is the number of operations, not their arithmetic: a micro tensor at 64 px is a",
        "  few kB, and each operation costs 1 to 20 µs whatever its size. Block activity alone measures",
        "  38 tensors a UNet call there, about 1 ms of a 22 ms step. The floor row times the least a",
        "  watcher of these numbers does in this design: the wrappers keeping the outputs and, when the",
        "  call ends, the measuring of their prompt halves (`batch_moments`: one concatenation, three",
        "  numpy passes), nothing made of the numbers. At 64 px that alone costs about 4 % of a step; the",
        "  rest of block activity's work (which output is which module's, a tensor returned twice or",
        "  changed in place, the numbers in the record's form) adds at most 1 %. Tried and measured without",
        "  gain: a writer thread for the previews, the measuring done tensor by tensor, into a kept",
        "  buffer, or by BLAS on rows, and a plan that takes each tensor from the lists without looking it",
        "  up. This machine's speed drifts by a third within minutes (micro's plain step has gone from 19",
        "  to 34 ms within one run), hence each run's ratio to the unwatched runs on either side of it.",
        "- Micro at 256 px (a 64x64 latent, as SD1.5's at 512 px): 26 of its outputs have 32,768",
        "  elements or more (15 MB a UNet call). Measured by PyTorch as each returned, they cost 7 to 10",
        "  ms of a 183 ms step, and block activity alone 1.04× (middle half 1.04–1.05×): there the cost",
        "  was the operations' code run cold after each module's work (slicing a tensor took 20 to 100 µs",
        "  there, 3 in a loop), and a skip tensor was measured twice, its module's output being no longer",
        "  kept. Held until the call ends and measured there, one after the other, they take 2 ms (0.7 of",
        "  it the first pass over the 7.6 MB of prompt halves, which no way of measuring avoids). Paired",
        "  in one run, the old way against the new: 1.044× against 1.005× (12 rounds). The benchmark used",
        "  to rotate the sides in rounds and compare each with its round's plain run, up to three runs",
        "  (7 s) away; there full runs of the new way read 1.01×, 1.04× and 1.04×, this machine's drift at",
        "  that scale. Between two plain runs, as now, block activity alone reads 1.02× (middle half",
        "  1.01–1.02×) and the unwatched pipeline timed the same way 1.00× (0.99–1.00×). Past 64 MB a call",
        "  (SD1.5 at 512 px, SDXL) outputs are measured as they return again, so watching holds no more.",
        "  The maps of micro's smaller layers are a numpy matmul each, and at that size OpenBLAS, numpy's",
        "  BLAS, splits such a matmul over threads of its own, which then spin a while waiting for more",
        "  work on the cores where PyTorch runs the UNet: one such matmul made the next micro UNet call",
        "  at 256 px 35 % slower (307 ms against 227), and the maps cost 1.58× a step. The maps' matmuls",
        "  run with BLAS held to the calling thread (threadpoolctl, 9 µs a step); at 64 px that measures",
        "  no difference.",
        "- An experiment is two watched runs from the same noise, every block's output compared step by",
        "  step and the comparison drawn; the pipeline is built once for both (`prepare(reuse=True)`), so",
        "  what it costs beyond two generations is the comparing. A sweep runs the baseline watched and",
        "  each layer's run unwatched (only its image is judged).",
        "- The live page is timed in Chromium from the page's own clock: the click (a listener on the",
        "  Generate button), each change of the status line (a MutationObserver) and the start of every",
        "  frame (requestAnimationFrame), against `explore generate --attention-maps`'s pipeline call with",
        "  the same settings, alternating. \"First step on screen\" is the first frame after the status",
        "  says step 0; the whole run ends when the run has been read back and listed. The server and the",
        "  browser share this machine's two cores, as on a learner's laptop: PyTorch's threads wait for one",
        "  another at every operation, and with the page drawing beside them a step of micro took 150 ms",
        "  (30 alone); on one thread, 100 ms, so `explore serve` leaves one core to the browser. Per step",
        "  the Generation tab fetches five previews (the latent and the four guidance tiles, cut from the",
        "  one file the run wrote) and draws them; the UNet tab paints the U, which is why its run is",
        "  close to the pipeline's own time. The page's first click also reads the model's first calls.",
        "- Random weights: PyTorch's default initialisation draws a fresh random number for every one of",
        "  the 1.07 billion parameters; sd-explorer draws 2^24 and copies slices of them, so building",
        "  costs little more than touching the memory once.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller image")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/performance.md alone")
    parser.add_argument("--only", default="", metavar="NAMES",
                        help=f"only these, comma-separated ({', '.join(SECTIONS)}); prints, writes nothing")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}: the sections are {', '.join(SECTIONS)}")
    start = time.perf_counter()
    rows = []
    for name in chosen:
        title, bench = SECTIONS[name]
        print(f"{title} …", flush=True)
        rows += bench(args.quick)
    text = report(rows, time.perf_counter() - start, args.quick)
    print(text)
    if not args.no_write and not args.only:
        DOC.write_text(text)
        print(f"wrote {DOC.relative_to(ROOT)}")


# name: (what it measures, the benchmark with its repetitions, --quick or not)
SECTIONS = {
    "explore": ("explore unet --depth 3 against torchinfo", lambda quick: bench_explore(2 if quick else 3)),
    "watch": ("watching overhead", lambda quick: (
        bench_watch("sd15", 128 if quick else 256, 2 if quick else 4, 3 if quick else 6)
        + bench_watch("micro", 64, 20, 3 if quick else 31, with_floor=True, targeted=False)  # 0.5 s a run
        + bench_watch("micro", 256, 10, 2 if quick else 24))),  # a 64x64 latent: drift needs the rounds
    "maps": ("the maps' size on disk", lambda quick: bench_maps_size(1 if quick else 2)),
    "generation": ("a whole random-weights generation", lambda quick: bench_generation_process(2 if quick else 3)),
    "init": ("random-weights build", lambda quick: bench_init(2 if quick else 3)),
    "experiment": ("experiments and sweeps", lambda quick: bench_experiment(2 if quick else 3, 10 if quick else 20)),
    "serve": ("the live page", lambda quick: bench_serve(2 if quick else 5, 10 if quick else 20)),
    "diagrams": ("all the figures", lambda quick: bench_diagrams(1 if quick else 2)),
}


if __name__ == "__main__":
    main()
