"""A generation the explorer's way: build the pipeline, trace its components for the record, and
run it watched (`generate`). `prepare` and `run_prepared` are the two halves, for callers that run
one built pipeline more than once (an experiment runs it twice from the same noise)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from explorer.files import check_writable, make_folder, write_atomic
from explorer.generation.building import Built, build_pipeline, resolve, scheduler_config_of
from explorer.generation.recording import Recording
from explorer.generation.settings import Settings, check
from explorer.generation.shapes import compare_first_calls, compare_shapes
from explorer.generation.watching import Watcher, watched


class GenerationError(RuntimeError):
    """The pipeline failed; the message names the phase and the step (the record keeps the steps done)."""


@dataclass
class Result:
    out: Path
    watch: Watcher  # the watchers (removed) and what they recorded
    pipe: Any  # the diffusers pipeline that ran
    interrupted: bool = False


@dataclass
class Prepared:
    """A pipeline built, its settings completed (the size, the scheduler) and its components traced:
    ready to run watched, once or more (an experiment runs it twice from the same noise)."""

    settings: Settings
    built: Built
    static: dict[str, Any]  # component -> Trace, on the meta device, as the pipeline calls it
    tokens: list[dict]  # the negative prompt's and the prompt's, as the pipeline's tokenizer splits them
    phases: dict[str, float]  # build, tokenize, static traces: seconds
    warnings: list[str]
    started: float  # perf_counter when preparing began

    def recording(self, out: Path) -> Recording:
        """A fresh record of one run of this pipeline, holding what preparing found."""
        recording = Recording(out)
        recording.settings = settings_record(self.settings, self.built)
        recording.tokens = self.tokens
        recording.warnings = list(self.warnings)
        recording.phases = dict(self.phases)
        recording.components_json = json.dumps({name: t.to_dict() for name, t in self.static.items()}, separators=(",", ":"))
        return recording


_KEPT: dict[tuple, tuple[int, Built]] = {}  # the last pipeline `prepare(reuse=True)` built: key -> (seed, Built)


def _build_key(settings: Settings) -> tuple:
    """What a built pipeline depends on besides the seed: the model and its loading, the scheduler."""
    return (settings.model, settings.config, settings.allow_pickle, settings.allow_download, settings.scheduler)


def prepare(settings: Settings, *, on_phase: Callable[[str], None] = lambda text: None, reuse: bool = False) -> Prepared:
    """Check the settings, build the pipeline and trace its components for the record; one sentence for
    a setting that cannot work, before anything is built. `reuse`: take the pipeline the last such call
    built when the model and scheduler are the same (and the seed, for a preset's random weights) — an
    experiment, a sweep or the live page run one model many times; edits and watchers leave it as it was."""
    started = time.perf_counter()
    source = resolve(settings)
    check(settings, scheduler_config_of(source))
    phases: dict[str, float] = {}
    on_phase("build")
    key = _build_key(settings)
    seed, built = _KEPT.get(key, (None, None)) if reuse else (None, None)
    if built is not None and built.weights == "random" and seed != settings.seed:
        built = None
    built = built or _timed(phases, "build", lambda: build_pipeline(settings, source))
    if reuse:
        _KEPT.clear()
        _KEPT[key] = (settings.seed, built)
    settings.height, settings.width = settings.height or built.size, settings.width or built.size
    tokens = _timed(phases, "tokenize", lambda: prompt_tokens(settings, built))
    on_phase("static")
    static = _timed(phases, "static traces", lambda: static_traces(settings, settings.height, settings.width, kept=reuse))
    return Prepared(settings, built, static, tokens, phases, micro_warnings(built, tokens), started)


def generate(settings: Settings, out: Path, *, compare: bool = False,
             on_start: Callable[[Watcher], None] = lambda w: None,
             on_step: Callable[[Watcher], None] = lambda w: None,
             on_phase: Callable[[str], None] = lambda text: None) -> Result:
    """Build the pipeline, trace its components for the record, and run it watched. Files: see
    explorer.runs. Ctrl-C stops after writing what was done (the Result says so); a failure raises
    GenerationError with one sentence, after writing what was done."""
    check_writable(out, "image.png, latents.png and trace.json")
    prepared = prepare(settings, on_phase=on_phase)
    return run_prepared(prepared, out, compare=compare, on_start=on_start, on_step=on_step, started=prepared.started)


def run_prepared(prepared: Prepared, out: Path, *, compare: bool = False,
                 on_start: Callable[[Watcher], None] = lambda w: None,
                 on_step: Callable[[Watcher], None] = lambda w: None,
                 started: float | None = None) -> Result:
    """Run a prepared pipeline once, watched, into the run folder `out` (created only now: a failed
    start leaves nothing behind). `started`: when the wall time counts from (default: now)."""
    settings, pipe = prepared.settings, prepared.built.pipe
    check_writable(out, "image.png, latents.png and trace.json")
    started = time.perf_counter() if started is None else started
    recording = prepared.recording(out)
    make_folder(out)
    options = {"attention_maps": settings.attention_maps, "watch_depth": settings.watch_depth,
               "decode_every": settings.decode_every, "latent_rgb": prepared.built.micro.get("latent_rgb"),
               "adds": settings.adds}
    live_shapes: dict = {}
    watcher = None
    try:
        with watched(pipe, out, recording=recording, on_step=on_step, on_start=on_start, **options) as watcher:
            if compare:
                compare_first_calls(pipe, live_shapes, watcher.undo)
            _run_pipeline(pipe, settings, watcher)
    except KeyboardInterrupt:
        return Result(out, watcher, pipe, interrupted=True)
    except Exception as exc:
        raise GenerationError(recording.error or str(exc)) from exc
    if compare:
        recording.compare = compare_shapes(live_shapes, prepared.static)
    recording.phases["wall"] = round(time.perf_counter() - started, 4)
    recording.write()
    return Result(out, watcher, pipe)


def _timed(phases: dict[str, float], phase: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    phases[phase] = round(time.perf_counter() - started, 4)
    return result


def _run_pipeline(pipe, settings: Settings, watcher: Watcher) -> None:
    """The pipeline's own call, seeded; the image saved when it finishes."""
    from explorer.previews import png

    watcher.begin("total")
    image = call_pipeline(pipe, settings)
    watcher.end("total")
    write_atomic(watcher.out / "image.png", png(image))


def call_pipeline(pipe, settings: Settings):
    """The pipeline called with these settings, its noise seeded by `settings.seed`: the image (PIL)."""
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        return pipe(
            prompt=settings.prompt,
            negative_prompt=settings.negative_prompt or None,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            height=settings.height,
            width=settings.width,
            generator=generator,
        ).images[0]


def settings_record(settings: Settings, built: Built) -> dict:
    """The settings as the record keeps them: what was asked, the model and its weights."""
    found = asdict(settings)
    for private in ("allow_pickle", "allow_download", "config"):
        found.pop(private)
    found["model"], found["weights"] = built.source_label, built.weights
    if built.weights == "random":
        found["warning"] = "random weights: the architecture is real, the image is noise"
    return found


def prompt_tokens(settings: Settings, built: Built) -> list[dict]:
    """The negative prompt's and the prompt's tokens, as the pipeline's tokenizer splits them."""
    from explorer.tokenizer import tokenize

    max_length = built.pipe.tokenizer.model_max_length
    return tokenize([settings.negative_prompt, settings.prompt], max_length, built.tokenizer_folder)[1]


def micro_warnings(built: Built, tokens: list[dict]) -> list[str]:
    """A micro model learned a few dozen words: name the prompt's others (they still run)."""
    from explorer.maps import words_of

    known = set(built.micro.get("vocabulary") or [])
    if not known:
        return []
    unknown = [w for t in tokens for w in words_of(t["tokens"][: t["length"]]) if w.strip(",.").lower() not in known]
    unknown = [w for w in dict.fromkeys(unknown) if w.strip(",.")]
    if not unknown:
        return []
    return [f"{built.source_label} learned only its own vocabulary ({len(known)} words); it never saw: "
            f"{', '.join(unknown)}. They run, but mean nothing to it."]


@lru_cache(maxsize=8)
def _kept_trace(request):
    """A static trace kept in this process, for prepare(reuse=True): the last few asked for."""
    from explorer.explore import trace_cached

    return trace_cached(request)[0]


def static_traces(settings: Settings, height: int, width: int, *, kept: bool = False) -> dict:
    """The three components traced on the meta device as the pipeline calls them (from the trace
    cache when traced before): the UNet with the batch guidance gives it, the VAE's one image, the
    text encoder's one prompt. `kept`: the traces of the last few such calls are kept in memory, as
    the pipeline is (the live page's next click needs the same UNet and VAE traces again)."""
    from explorer.explore import TraceRequest, trace_cached

    cfg = settings.guidance > 1  # diffusers runs the negative prompt only then
    common = {"config": settings.config, "allow_pickle": settings.allow_pickle, "allow_download": settings.allow_download}
    sizes = {"height": height, "width": width}
    requests = {
        "unet": TraceRequest("unet", settings.model, batch=2 if cfg else 1, **sizes, **common),
        "vae": TraceRequest("vae", settings.model, batch=1, **sizes, **common),
        "clip": TraceRequest("clip", settings.model, batch=1, prompt=settings.prompt, **common),
    }
    trace = _kept_trace if kept else (lambda request: trace_cached(request)[0])
    return {name: trace(request) for name, request in requests.items()}
