"""Experiments: one generation run twice from the same noise, as it is and with edits, both watched,
and what changed between them; sweeps: one kind of edit over every module of a selection.

An experiment folder holds:

    experiment.json   the record (schema sd-explorer/experiment@1): settings, the edits and what each
                      means, the image's change, and per step the change of x0 and of every watched
                      block's output (where the edit entered, how it spread)
    baseline/         the run as it is: a run folder, as `explore generate` writes it
    edited/           the run with the edits: a run folder

A sweep folder holds sweep.json (sd-explorer/sweep@1), baseline/ (a run folder) and images/NN.png,
one image per module edited.

What "change" means: for the image, the mean absolute difference of its pixels, 0 to 1 (1: black
against white everywhere); for x0 and a block's output, the relative difference ‖edited − baseline‖ /
‖baseline‖ of the prompt's half of the batch, outputs larger than 16x16 averaged down to 16x16 first
(every output of micro is compared whole; SD1.5's largest are pooled, which keeps a change of where
things are and loses the finest detail).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from explorer.errors import ExplorerError, OptionError
from explorer.files import check_writable, make_folder, parse_json, write_atomic
from explorer.runs import Run, load_run

SCHEMA = "sd-explorer/experiment@1"
SWEEP_SCHEMA = "sd-explorer/sweep@1"
RECORD = "experiment.json"
SWEEP_RECORD = "sweep.json"
POOLED = 16  # feature maps larger than this (per side) are averaged down to it before they are compared
CHANGED_PIXEL = 48 / 255  # a pixel changed when a channel moved by more than this (the judge's threshold)


# -- what changed, block by block --------------------------------------------------------------------------


class Changes:
    """Every watched module's output, seen in two runs of one pipeline: `keep` in the first (the
    prompt's half, pooled to 16x16 at most), `compare` in the second, which gives per UNet call and
    module ‖edited − baseline‖ / ‖baseline‖. Forward hooks, registered after the edits: they see the
    outputs as the edited modules return them. They only read."""

    def __init__(self, pipe: Any, depth: int = 2):
        from explorer.capture.activity import called_depths

        self.pipe = pipe
        self.paths = [p for p, d in called_depths(pipe.unet).items() if d <= depth]
        self.kept: dict[tuple[int, str, int], Any] = {}
        self.found: list[dict[str, float]] = []  # per UNet call: path -> change
        self.comparing = False
        self.call = -1
        self.calls: dict[str, int] = {}

    @contextmanager
    def watching(self, comparing: bool) -> Iterator[None]:
        modules = dict(self.pipe.unet.named_modules())
        self.comparing, self.call, self.found = comparing, -1, []
        handles = [self.pipe.unet.register_forward_pre_hook(self._tick)]
        handles += [modules[p].register_forward_hook(self._hook_of(p)) for p in self.paths]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _tick(self, module, args) -> None:
        self.call += 1
        self.calls = {}
        if self.comparing:
            self.found.append({})

    def _hook_of(self, path: str) -> Callable:
        def hook(module, args, output) -> None:
            from explorer.edits import first_output

            t = first_output(output)
            if not hasattr(t, "is_floating_point") or not t.is_floating_point():
                return
            n = self.calls[path] = self.calls.get(path, -1) + 1
            key = (self.call, path, n)
            seen = self._fingerprint(t)
            if not self.comparing:
                self.kept[key] = seen
            elif key in self.kept:
                base = self.kept[key]
                name = path if n == 0 else f"{path}#{n}"
                self.found[self.call][name] = relative_change(seen, base)

        return hook

    def _fingerprint(self, t):
        import torch
        import torch.nn.functional as F

        from explorer.capture.activity import prompt_start

        halves = 2 if getattr(self.pipe, "do_classifier_free_guidance", False) else 1
        with torch.no_grad():
            x = t.detach()[prompt_start(t, halves) :].float()
            if x.ndim == 4 and (x.shape[-1] > POOLED or x.shape[-2] > POOLED):
                x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], POOLED), min(x.shape[-1], POOLED)))
            return x.clone()


def relative_change(edited, baseline) -> float:
    """‖edited − baseline‖ / ‖baseline‖ (0 when both are zero), to 5 decimals."""
    import torch

    difference, size = float(torch.linalg.vector_norm(edited - baseline)), float(torch.linalg.vector_norm(baseline))
    if size == 0:
        return 0.0 if difference == 0 else float("inf")
    return round(difference / size, 5)


def image_change(a, b) -> dict[str, float]:
    """Two images' difference: the mean absolute difference of their pixels (0 to 1), the largest,
    and the share of pixels that moved by more than the judge's threshold in some channel."""
    import numpy as np

    x, y = (np.asarray(i.convert("RGB"), dtype=np.float32) / 255 for i in (a, b))
    if x.shape != y.shape:
        raise ExplorerError(f"The two images differ in size ({x.shape} and {y.shape}): they cannot be compared.")
    d = np.abs(x - y)
    return {"change": round(float(d.mean()), 5), "max": round(float(d.max()), 5),
            "changed_pixels": round(float((d.max(axis=2) > CHANGED_PIXEL).mean()), 5)}


def verdicts(a, b) -> dict[str, Any]:
    """The judge on both images (a micro model's): colour, shape, position, and which of them changed."""
    from dataclasses import asdict

    from explorer.micro.judge import judge

    first, second = judge(a), judge(b)
    changed = [what for what in ("colour", "shape", "position") if getattr(first, what) != getattr(second, what)]
    keep = ("colour", "shape", "position", "pixels")
    return {"baseline": {k: asdict(first)[k] for k in keep}, "edited": {k: asdict(second)[k] for k in keep}, "changed": changed}


# -- an experiment ---------------------------------------------------------------------------------------


@dataclass
class Experiment:
    """An experiment read back: its record and its two runs."""

    folder: Path
    record: dict
    baseline: Run = field(repr=False)
    edited: Run | None = field(repr=False)

    @property
    def edits(self) -> list[dict]:
        return self.record.get("edits", [])

    @property
    def status(self) -> str:
        return self.record.get("status", "")

    @property
    def image_change(self) -> float | None:
        return (self.record.get("image") or {}).get("change")

    @property
    def changes(self) -> dict[str, list[float]]:
        """Block -> its output's change at each step (0 where nothing changed yet)."""
        found: dict[str, list[float]] = {}
        for step in self.record.get("steps", []):
            for path in self.record.get("blocks", []):
                found.setdefault(path, []).append(step["blocks"].get(path, 0.0))
        return found

    @property
    def x0_change(self) -> list[float]:
        return [step.get("x0") for step in self.record.get("steps", [])]

    def summary(self) -> str:
        from explorer.views.experiment import summary

        return summary(self.record)

    def figure(self):
        """Both images, x0 step by step, and the change of every block as a strip over the U (PIL)."""
        from explorer.views.experiment import figure

        return figure(self)

    def _repr_png_(self) -> bytes:
        from explorer.previews import png

        return png(self.figure())


def load_experiment(folder: str | Path) -> Experiment:
    folder = Path(folder)
    try:
        record = parse_json((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ExplorerError(f"{folder} has no valid {RECORD}: give the --out folder of an `explore experiment` run.") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ExplorerError(f"{folder / RECORD} is not an experiment record (schema {SCHEMA}).")
    edited = load_run(folder / "edited") if (folder / "edited" / "trace.json").is_file() else None
    return Experiment(folder, record, load_run(folder / "baseline"), edited)


def _settings(prompt: str, model: str, seed: int, steps: int, guidance: float, **more):
    from explorer.generation import Settings

    if not isinstance(prompt, str):
        raise OptionError("prompt", f"must be text, got {prompt!r}.")
    return Settings(prompt=prompt, model=model, seed=seed, steps=steps, guidance=guidance, **more)


def experiment(pipe_or_prompt: Any, prompt: str | None = None, *, edits: Iterable = (), model: str = "micro",
               seed: int = 0, steps: int = 20, guidance: float = 7.5, negative_prompt: str = "",
               height: int | None = None, width: int | None = None, scheduler: str | None = None,
               attention_maps: bool = False, watch_depth: int = 2, out: str | Path | None = None,
               on_phase: Callable[[str], None] = lambda text: None,
               on_run: Callable[[str], dict] = lambda name: {}) -> Experiment:
    """Generate twice from the same seed: `baseline` as the model is, `edited` with `edits`
    (explorer.edits: off, scale, skips, freeu, prompt_at, swap, reweight, timestep), both watched;
    and measure what changed. The model defaults to micro: on random weights an experiment shows
    nothing. Give a diffusers pipeline first to run it on yours (`experiment(pipe, "a prompt", ...)`).

    `on_run(name)` may give callbacks for each run (on_start, on_step), as `explore experiment`'s
    live panel does. Returns the Experiment, read back from its folder."""
    from explorer import edits as editing

    pipe, prompt = _pipe_and_prompt(pipe_or_prompt, prompt)
    settings = _settings(prompt, model, seed, steps, guidance, negative_prompt=negative_prompt, height=height,
                         width=width, scheduler=scheduler, attention_maps=attention_maps, watch_depth=watch_depth)
    folder = _folder(out, prompt, "experiment", RECORD)
    runner = _OwnPipeline(pipe, settings) if pipe is not None else _Prepared(settings, on_phase)
    target, bound = editing.bind(runner.pipe, edits, prompt=prompt, steps=settings.steps, height=runner.height,
                                 width=runner.width)
    make_folder(folder)
    record = {"schema": SCHEMA, "status": "running", "settings": runner.settings_record(),
              "edits": [b.record for b in bound], "runs": {"baseline": "baseline", "edited": "edited"},
              "calls": target.calls, "image": None, "judge": None, "blocks": [], "steps": [], "entered": None,
              "seconds": {}}
    write_atomic(folder / RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    changes = Changes(runner.pipe, depth=max(watch_depth, 1))
    x0: dict[str, list] = {"baseline": [], "edited": []}
    try:
        record["status"] = "interrupted" if _two_runs(runner, target, bound, folder, record, changes, x0, on_run) else "done"
    except Exception as exc:
        record["status"], record["error"] = "failed", str(exc)
        raise
    finally:
        _finish(record, folder, changes, x0, runner.micro)
    return load_experiment(folder)


def _pipe_and_prompt(pipe_or_prompt: Any, prompt: str | None) -> tuple[Any, str]:
    """(None, the prompt) for the explorer's way; (the pipeline, the prompt) for a user's own."""
    if isinstance(pipe_or_prompt, str):
        if prompt is not None:
            raise OptionError("prompt", "is given twice: give the prompt first, or a pipeline first and then the prompt.")
        return None, pipe_or_prompt
    if prompt is None:
        raise OptionError("prompt", "is needed after a pipeline: experiment(pipe, \"a red circle\", edits=[...]).")
    return pipe_or_prompt, prompt


def _folder(out: str | Path | None, prompt: str, kind: str, record: str) -> Path:
    """The folder to write: `out`, or a new one under runs/ named after the prompt; checked writable."""
    from explorer.generation import default_out

    folder = Path(out) if out is not None else default_out(prompt).with_name(default_out(prompt).name + "-" + kind)
    check_writable(folder, record)
    return folder


def _two_runs(runner, target, bound, folder: Path, record: dict, changes: Changes, x0: dict[str, list],
              on_run: Callable[[str], dict]) -> bool:
    """The baseline, then the edited run with the edits installed, both watched, every block's output
    compared between them; returns whether one was interrupted."""
    from explorer import edits as editing

    for name in ("baseline", "edited"):
        callbacks = dict(on_run(name))
        step_callback = callbacks.pop("on_step", lambda w: None)

        def on_step(watcher, name=name, step_callback=step_callback):
            x0[name].append(_prompt_image(watcher.latest["x0"]))
            step_callback(watcher)

        started = time.perf_counter()
        with (editing.installed(target, bound) if name == "edited" else _nothing()), changes.watching(name == "edited"):
            interrupted = runner.run(folder / name, on_step=on_step, **callbacks)
        record["seconds"][name] = round(time.perf_counter() - started, 4)
        if interrupted:
            return True
    return False


def _prompt_image(t):
    return t.detach()[-1:].float().clone()  # the prompt's (or only) image of the batch


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _finish(record: dict, folder: Path, changes: Changes, x0: dict[str, list], micro: bool) -> None:
    """What changed, from what the two runs left: written whatever happened."""
    from PIL import Image

    record["blocks"] = list(dict.fromkeys(p for step in changes.found for p in step))
    record["steps"] = [
        {"index": k, "x0": relative_change(e, b), "blocks": blocks}
        for k, (b, e, blocks) in enumerate(zip(x0["baseline"], x0["edited"], changes.found))
    ]
    record["entered"] = next(({"step": s["index"], "block": p} for s in record["steps"] for p, v in s["blocks"].items() if v > 0), None)
    images = [folder / name / "image.png" for name in ("baseline", "edited")]
    if all(p.is_file() for p in images):
        with Image.open(images[0]) as a, Image.open(images[1]) as b:
            record["image"] = image_change(a, b)
            record["judge"] = verdicts(a, b) if micro else None
    write_atomic(folder / RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


class _Prepared:
    """The explorer's way: the pipeline built once, both runs watched into run folders. The last one
    built is kept for the next experiment with the same model (`prepare(reuse=True)`): a notebook's
    experiments after the first start at once."""

    def __init__(self, settings, on_phase: Callable[[str], None]):
        from explorer.generation import prepare

        self.prepared = prepare(settings, on_phase=on_phase, reuse=True)
        self.pipe = self.prepared.built.pipe
        self.height, self.width = settings.height, settings.width
        self.micro = bool(self.prepared.built.micro)

    def settings_record(self) -> dict:
        from explorer.generation import settings_record

        return settings_record(self.prepared.settings, self.prepared.built)

    def run(self, out: Path, **callbacks) -> bool:
        """One run, watched, into the run folder `out`: whether it was interrupted."""
        from explorer.generation import run_prepared

        return run_prepared(self.prepared, out, **callbacks).interrupted

    def image(self):
        """One run, unwatched: the image."""
        from explorer.generation import call_pipeline

        return call_pipeline(self.pipe, self.prepared.settings)


class _OwnPipeline:
    """A user's own pipeline: each run watched (explorer.watch) while it is called, seeded."""

    def __init__(self, pipe: Any, settings):
        if not all(hasattr(pipe, part) for part in ("unet", "scheduler", "vae", "encode_prompt", "tokenizer")):
            raise ExplorerError(f"explorer.experiment runs a diffusers StableDiffusionPipeline; got {type(pipe).__name__}.")
        self.pipe, self.settings = pipe, settings
        factor = getattr(pipe, "vae_scale_factor", 8)
        self.height = settings.height or pipe.unet.config.sample_size * factor
        self.width = settings.width or pipe.unet.config.sample_size * factor
        self.micro = False

    def settings_record(self) -> dict:
        s = self.settings
        return {"prompt": s.prompt, "negative_prompt": s.negative_prompt, "steps": s.steps, "guidance": s.guidance,
                "height": self.height, "width": self.width, "seed": s.seed,
                "model": str(getattr(self.pipe, "name_or_path", "") or "your pipeline"), "weights": "yours"}

    def run(self, out: Path, on_start=lambda w: None, on_step=lambda w: None) -> bool:
        """One run, watched (explorer.watch), into the run folder `out`: whether it was interrupted."""
        from explorer.generation import watched
        from explorer.previews import png

        s = self.settings
        try:
            with watched(self.pipe, out, on_start=on_start, on_step=on_step, attention_maps=s.attention_maps,
                         watch_depth=s.watch_depth) as watcher:
                write_atomic(watcher.out / "image.png", png(self.image()))
        except KeyboardInterrupt:
            return True
        return False

    def image(self):
        """One run, unwatched: the image."""
        from dataclasses import replace

        from explorer.generation import call_pipeline

        return call_pipeline(self.pipe, replace(self.settings, height=self.height, width=self.width))


# -- a sweep -------------------------------------------------------------------------------------------

OVER = {
    "cross-attention": "every cross-attention layer (attn2)",
    "self-attention": "every self-attention layer (attn1)",
    "feed-forward": "every feed-forward (ff)",
    "resnets": "every ResnetBlock2D",
    "transformers": "every Transformer2DModel",
}


@dataclass
class Sweep:
    """A sweep read back: its record, the baseline run and one image per module."""

    folder: Path
    record: dict
    baseline: Run = field(repr=False)

    @property
    def modules(self) -> list[dict]:
        return self.record.get("modules", [])

    def image(self, path: str):
        from PIL import Image

        for k, m in enumerate(self.modules):
            if m["path"] == path:
                with Image.open(self.folder / sweep_image(k)) as image:
                    return image.convert("RGB")
        raise OptionError("path", f"{path!r} was not swept: the sweep edited {', '.join(m['path'] for m in self.modules)}.")

    def table(self) -> str:
        from explorer.views.experiment import sweep_table

        return sweep_table(self.record)

    def figure(self, depth: int = 2):
        """The U, each block coloured by how much editing it (or what was swept inside it) changed the
        image: an explorer.Diagram, drawn from the UNet trace the baseline run recorded."""
        from explorer.record import Trace
        from explorer.views.experiment import sweep_diagram

        unet = (self.baseline.record.get("components") or {}).get("unet")
        if not isinstance(unet, dict):
            raise ExplorerError(f"{self.folder / 'baseline'} holds no trace of the UNet (a sweep on your own pipeline): "
                                "the table says the same, `sweep.table()`.")
        return sweep_diagram(self.record, Trace.from_dict(unet), depth)

    def _repr_html_(self) -> str:
        from explorer.views.format import esc

        return f"<pre>{esc(self.table())}</pre>"


def sweep_image(k: int) -> str:
    return f"images/{k:02d}.png"


def load_sweep(folder: str | Path) -> Sweep:
    folder = Path(folder)
    try:
        record = parse_json((folder / SWEEP_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ExplorerError(f"{folder} has no valid {SWEEP_RECORD}: give the --out folder of an `explore sweep` run.") from None
    if not isinstance(record, dict) or record.get("schema") != SWEEP_SCHEMA:
        raise ExplorerError(f"{folder / SWEEP_RECORD} is not a sweep record (schema {SWEEP_SCHEMA}).")
    return Sweep(folder, record, load_run(folder / "baseline"))


def swept_modules(target, over: str | None, depth: int | None) -> list[str]:
    """The modules a sweep edits, in the U's order."""
    from explorer.capture.activity import called_depths
    from explorer.edits import select_layers, u_order

    if depth is not None:
        if over is not None:
            raise OptionError("over", "and depth each choose the modules: give one of them.")
        if not isinstance(depth, int) or depth < 1:
            raise OptionError("depth", f"must be 1 or more (1: the blocks), got {depth!r}.")
        found = [p for p, d in called_depths(target.pipe.unet).items() if d == depth]
        if not found:
            raise OptionError("depth", f"{depth} is deeper than this UNet's modules go.")
        return sorted(found, key=u_order)
    over = over or "cross-attention"
    kinds = {"self-attention": "attn1", "feed-forward": "ff", "resnets": "ResnetBlock2D", "transformers": "Transformer2DModel"}
    if over in kinds:
        want = kinds[over]
        found = [p for p, m in target.modules.items() if (p.endswith("." + want) if want.islower() else type(m).__name__ == want)]
        if not found:
            raise OptionError("over", f"this UNet has no {over} layer.")
        return sorted(found, key=u_order)
    if over == "cross-attention":
        over = "all"
    try:
        return select_layers(target, over)
    except OptionError as exc:
        raise OptionError("over", f"must be one of {', '.join(OVER)} or a selection of cross-attention layers; {exc.rest}") from None


def sweep(pipe_or_prompt: Any, prompt: str | None = None, *, edit: str = "off", over: str | None = None,
          depth: int | None = None, factor: float | None = None, model: str = "micro", seed: int = 0, steps: int = 20,
          guidance: float = 7.5, out: str | Path | None = None, on_phase: Callable[[str], None] = lambda text: None,
          on_progress: Callable[[int, int, str], None] = lambda done, total, path: None) -> Sweep:
    """One kind of edit ("off", or "scale" with `factor`) over every module of a selection, one run
    each from the same noise: `over` "cross-attention" (the default), "self-attention", "feed-forward",
    "resnets", "transformers" or a selection of cross-attention layers ("8x8", "up.1"...); or every
    module at `depth` where the edit has a meaning (the others are listed as skipped, with why).
    Returns the Sweep: how much each edit changed the image and, on micro, what the judge saw change."""
    from explorer import edits as editing

    if edit not in ("off", "scale"):
        raise OptionError("edit", f"must be off or scale, got {edit!r}.")
    if edit == "scale" and factor is None:
        raise OptionError("factor", "is needed with edit scale: how much each module's contribution is multiplied by.")
    if edit == "off" and factor not in (None, 0):
        raise OptionError("factor", "goes with edit scale; off multiplies by 0.")
    pipe, prompt = _pipe_and_prompt(pipe_or_prompt, prompt)
    settings = _settings(prompt, model, seed, steps, guidance)
    folder = _folder(out, prompt, "sweep", SWEEP_RECORD)
    runner = _OwnPipeline(pipe, settings) if pipe is not None else _Prepared(settings, on_phase)
    target = editing.bind(runner.pipe, [], prompt=prompt, steps=settings.steps, height=runner.height, width=runner.width)[0]
    bound, skipped = _swept(target, edit, factor, over, depth)
    make_folder(folder / "images")
    started = time.perf_counter()
    runner.run(folder / "baseline")
    record = {"schema": SWEEP_SCHEMA, "status": "running", "settings": runner.settings_record(), "edit": edit,
              "factor": 0.0 if edit == "off" else float(factor), "over": over if depth is None else None, "depth": depth,
              "baseline": "baseline", "modules": [], "skipped": skipped,
              "seconds": {"baseline": round(time.perf_counter() - started, 4)}}
    try:
        _each_module(runner, target, bound, folder, record, on_progress)
        record["status"] = "done"
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        raise
    finally:
        record["seconds"]["total"] = round(time.perf_counter() - started, 4)
        write_atomic(folder / SWEEP_RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return load_sweep(folder)


def _swept(target, edit: str, factor: float | None, over: str | None, depth: int | None) -> tuple[list, list[dict]]:
    """The edit bound to each module of the selection; with `depth`, those where it means nothing are
    skipped (with why) instead of refused."""
    from explorer import edits as editing

    chosen, skipped, bound = swept_modules(target, over, depth), [], []
    for path in chosen:
        try:
            bound.append((editing.off(path) if edit == "off" else editing.scale(path, factor)).bind(target))
        except ExplorerError as exc:
            if depth is None:
                raise
            skipped.append({"path": path, "why": str(exc)})
    if not bound:
        raise ExplorerError(f"`{edit}` has a meaning for none of the {len(chosen)} modules at depth {depth}: choose another depth.")
    return bound, skipped


def _each_module(runner, target, bound: list, folder: Path, record: dict, on_progress) -> None:
    """One unwatched run per bound edit, its image saved and compared with the baseline's."""
    from PIL import Image

    from explorer import edits as editing

    with Image.open(folder / "baseline" / "image.png") as image:
        baseline = image.convert("RGB")
    for k, one in enumerate(bound):
        on_progress(k, len(bound), one.record.get("path", ""))
        with editing.installed(target, [one]):
            image = runner.image()
        image.save(folder / sweep_image(k))
        path = one.record["path"]
        entry = {"path": path, "type": one.record["type"], "level": target.level(path), "size": "%dx%d" % target.size(path),
                 "edit": one.record, "image": sweep_image(k), **image_change(baseline, image)}
        if runner.micro:
            entry["judge"] = verdicts(baseline, image)
        record["modules"].append(entry)
    on_progress(len(bound), len(bound), "")
