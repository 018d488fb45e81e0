"""Watching a real generation: a diffusers `StableDiffusionPipeline`, step by step.

`generate(settings)` builds the real pipeline (random weights for a preset, real ones for a folder,
a file or a hub id), runs it, and records what crosses the seams of every denoising step — the
latent going in, the classifier-free-guidance batch the UNet sees, its noise prediction, the
guided prediction, the latent coming out — with the step's timestep, time and latent statistics.

Watching costs almost nothing: a forward hook on the UNet itself (not on its layers), a wrapper
around `scheduler.step`, and diffusers' own `callback_on_step_end`. Everything is removed
afterwards, also on Ctrl-C. `trace.json` is rewritten atomically after every step, so an
interrupted run leaves a valid file with the steps done.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from explorer.errors import ExplorerError
from explorer.files import check_writable, make_folder, write_atomic

SCHEMA = "sd-explorer/generation@1"
SCHEDULERS = {
    "pndm": "PNDMScheduler",  # SD1.5's own
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
}
MAX_STEPS = 1000


@dataclass
class Settings:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.5
    height: int | None = None  # None: the model's own size
    width: int | None = None
    seed: int = 0
    scheduler: str = "pndm"
    model: str = "sd15"
    config: str | None = None
    allow_pickle: bool = False
    allow_download: bool = False


def check(settings: Settings) -> None:
    """One sentence for each setting that cannot work, before anything is built."""
    from explorer.explore import check_size

    if not 1 <= settings.steps <= MAX_STEPS:
        raise ExplorerError(f"--steps must be between 1 and {MAX_STEPS}, got {settings.steps}.")
    if settings.guidance < 0:
        raise ExplorerError(f"--guidance must be 0 or more (7.5 is usual; 1 or less turns guidance off), got {settings.guidance}.")
    if settings.scheduler not in SCHEDULERS:
        raise ExplorerError(f"Unknown scheduler {settings.scheduler!r}: choose one of {', '.join(SCHEDULERS)}.")
    check_size("height", settings.height)
    check_size("width", settings.width)


def default_out(prompt: str, root: Path = Path("runs")) -> Path:
    """runs/20261124-203015-a-lighthouse-at-dusk"""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "run"
    return root / f"{datetime.now():%Y%m%d-%H%M%S}-{slug}"


# -- the pipeline ------------------------------------------------------------------------------------


@dataclass
class Built:
    pipe: Any  # diffusers.StableDiffusionPipeline
    weights: str  # "random" or "pretrained"
    source_label: str
    size: int  # the model's own image side in pixels
    tokenizer_folder: str | None = None  # a diffusers folder's own tokenizer/, if any
    notes: list[str] = field(default_factory=list)


def resolve(settings: Settings):
    from explorer.loading import resolve_source

    return resolve_source(
        settings.model,
        config=settings.config,
        allow_download=settings.allow_download,
        allow_pickle=settings.allow_pickle,
        need_weights=True,
    )


def build_pipeline(settings: Settings, source=None) -> Built:
    """The real StableDiffusionPipeline: random weights for a preset, the model's own otherwise."""
    import diffusers

    from explorer.loading import default_image_size, load
    from explorer.tokenizer import clip_tokenizer, tokenizer_folder

    source = source or resolve(settings)
    weights = "pretrained" if source.has_weights else "random"
    parts = {
        c: load(c, source, weights=weights, allow_pickle=settings.allow_pickle, seed=settings.seed + k)
        for k, c in enumerate(("unet", "vae", "clip"))
    }
    scheduler_cls = getattr(diffusers, SCHEDULERS[settings.scheduler])
    pipe = pipeline_class()(
        vae=parts["vae"].model,
        text_encoder=parts["clip"].model,
        tokenizer=clip_tokenizer(tokenizer_folder(source)),
        unet=parts["unet"].model,
        scheduler=scheduler_cls.from_config(_scheduler_config(source)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    notes = [n for part in parts.values() for n in part.notes if not n.startswith("Random weights")]
    return Built(pipe, weights, source.label, default_image_size(source, "unet"), tokenizer_folder(source), notes)


def pipeline_class():
    """diffusers' StableDiffusionPipeline. Importing it makes transformers say that torchvision (for
    image processors SD1.5 does not use) is missing; that is not our users' concern."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        logging.set_verbosity(level)
    return StableDiffusionPipeline


def _scheduler_config(source) -> dict:
    if source.path is not None and source.path.is_dir():
        config_file = source.path / "scheduler" / "scheduler_config.json"
        if config_file.is_file():
            return json.loads(config_file.read_text())
    preset = source.preset
    from explorer.specs import SD15

    return dict((preset or SD15).scheduler)


# -- watching ----------------------------------------------------------------------------------------


def _shape(t) -> list[int]:
    return [int(d) for d in t.shape]


def _stats(t) -> dict[str, float]:
    t = t.detach().float()
    return {
        "mean": round(float(t.mean()), 5),
        "std": round(float(t.std()), 5),
        "min": round(float(t.min()), 5),
        "max": round(float(t.max()), 5),
    }


@dataclass
class Step:
    index: int
    timestep: float
    seconds: float
    shapes: dict[str, list[int]]
    latent_stats: dict[str, float]


@dataclass
class Watch:
    """Everything seen so far; the live display reads it, `trace.json` is written from it."""

    settings: Settings
    out: Path
    weights: str = ""
    model: str = ""
    tokens: list[dict] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)  # static traces, as JSON-ready dicts
    phases: dict[str, float] = field(default_factory=dict)  # finished phases: seconds
    phase: str = ""  # the phase running now
    starts: dict[str, float] = field(default_factory=dict)
    total_steps: int = 0  # scheduler timesteps: PNDM runs one more than asked
    steps: list[Step] = field(default_factory=list)
    current: dict[str, Any] = field(default_factory=dict)  # the step in progress: its seams so far
    step_started: float | None = None
    status: str = "running"
    previews: list = field(default_factory=list)  # PIL images, one per step
    compare: dict | None = None  # the verdict of --compare, when it ran
    live_shapes: dict = field(default_factory=dict)  # --compare: component -> {(path, call): shapes}
    started: float = field(default_factory=time.perf_counter)
    _static_json: str = ""

    def begin(self, phase: str) -> None:
        self.phase, self.starts[phase] = phase, time.perf_counter()

    def end(self, phase: str) -> None:
        self.phases[phase] = round(time.perf_counter() - self.starts.pop(phase), 4)
        self.phase = ""

    def record(self) -> dict:
        s = asdict(self.settings)
        for private in ("allow_pickle", "allow_download", "config"):
            s.pop(private)
        s["model"] = self.model
        s["weights"] = self.weights
        if self.weights == "random":
            s["warning"] = "random weights: the architecture is real, the image is noise"
        return {
            "schema": SCHEMA,
            "status": self.status,
            "settings": s,
            "tokens": self.tokens,
            "phases": self.phases,
            "total_steps": self.total_steps or self.settings.steps,
            "steps": [asdict(step) for step in self.steps],
            "files": {"image": "image.png", "latents": "latents.png", "previews": "previews/NNN.png"},
            "compare": self.compare,
        }

    def write(self) -> None:
        """trace.json, whole: the static traces are serialized once and spliced in."""
        if not self._static_json:
            self._static_json = json.dumps(self.components, separators=(",", ":"))
        head = json.dumps(self.record(), indent=1, ensure_ascii=False)
        text = head[:-2] + ',\n "components": ' + self._static_json + "\n}\n"
        write_atomic(self.out / "trace.json", text)


def _wrap(obj: Any, name: str, wrapper_of: Callable[[Callable], Callable], undo: list) -> None:
    """Replace obj.name by a wrapper of it, on this instance only; `undo` puts it back."""
    original = getattr(obj, name)
    setattr(obj, name, wrapper_of(original))
    undo.append(lambda: delattr(obj, name) if name in vars(obj) else None)


def watch_pipeline(pipe, watch: Watch, on_step: Callable[[], None], compare: bool) -> tuple[Callable, list]:
    """Install the watchers; returns the callback for `callback_on_step_end` and the undo list."""
    import torch

    from explorer.previews import latent_preview

    undo: list[Callable[[], None]] = []

    def unet_pre(module, args, kwargs):
        if watch.step_started is None:
            watch.step_started = time.perf_counter()
        sample = args[0] if args else kwargs["sample"]
        watch.current["unet_input"] = _shape(sample)

    def unet_post(module, args, kwargs, output):
        watch.current["noise_pred"] = _shape(output[0] if isinstance(output, tuple) else output.sample)

    undo.append(pipe.unet.register_forward_pre_hook(unet_pre, with_kwargs=True).remove)
    undo.append(pipe.unet.register_forward_hook(unet_post, with_kwargs=True).remove)

    def step_of(original):
        def step(model_output, timestep, sample, *args, **kwargs):
            result = original(model_output, timestep, sample, *args, **kwargs)
            latent_out = result[0] if isinstance(result, tuple) else result.prev_sample
            watch.current.update(latent_in=_shape(sample), guided=_shape(model_output), latent_out=_shape(latent_out))
            return result

        return step

    _wrap(pipe.scheduler, "step", step_of, undo)

    def timed(phase):
        def wrapper_of(original):
            def run(*args, **kwargs):
                watch.begin(phase)
                out = original(*args, **kwargs)
                watch.end(phase)
                return out

            return run

        return wrapper_of

    _wrap(pipe, "encode_prompt", timed("encode_prompt"), undo)
    _wrap(pipe.vae, "decode", timed("vae_decode"), undo)

    if compare:
        _compare_first_calls(pipe, watch, undo)

    def callback(pipeline, i, t, callback_kwargs):
        latents = callback_kwargs["latents"]
        watch.total_steps = len(pipeline.scheduler.timesteps)
        seconds = time.perf_counter() - (watch.step_started or time.perf_counter())
        watch.steps.append(
            Step(
                index=i,
                timestep=float(t),
                seconds=round(seconds, 4),
                shapes=dict(watch.current),
                latent_stats=_stats(latents),
            )
        )
        with torch.no_grad():
            preview = latent_preview(latents)
        watch.previews.append(preview)
        buffer = io.BytesIO()
        preview.save(buffer, format="png")
        (watch.out / "previews").mkdir(exist_ok=True)
        write_atomic(watch.out / "previews" / f"{i:03d}.png", buffer.getvalue())
        watch.current = {}
        watch.step_started = None
        watch.phases["denoise"] = round(sum(step.seconds for step in watch.steps), 4)
        on_step()
        return callback_kwargs

    return callback, undo


def _compare_first_calls(pipe, watch: Watch, undo: list) -> None:
    """Trace the first call of the text encoder, the UNet and the VAE decoder with module hooks,
    to compare with the static traces afterwards."""
    from explorer.capture.hooks import instrumented

    def traced_once(component: str, module):
        def wrapper_of(original):
            def run(*args, **kwargs):
                if component in watch.live_shapes:
                    return original(*args, **kwargs)
                with instrumented(module, dataflow=False) as recorder:
                    out = original(*args, **kwargs)
                watch.live_shapes[component] = {
                    (n["path"], n["call"]): (n["inputs"], n["outputs"]) for n in recorder.nodes
                }
                return out

            return run

        return wrapper_of

    _wrap(pipe.text_encoder, "forward", traced_once("clip", pipe.text_encoder), undo)
    _wrap(pipe.unet, "forward", traced_once("unet", pipe.unet), undo)
    _wrap(pipe.vae.decoder, "forward", traced_once("vae", pipe.vae.decoder), undo)


def compare_shapes(watch: Watch, static: dict[str, Any]) -> dict:
    """Per module: the shapes seen in the real run against the static trace of the same settings."""
    differences, checked = [], 0
    for component, live in watch.live_shapes.items():
        trace = static[component]
        prefix = "decoder." if component == "vae" else ""  # the live VAE call is its decoder
        expected = {
            (n.path[len(prefix) :], n.call): (n.inputs, n.outputs)
            for n in trace.nodes
            if n.path.startswith(prefix) and n.path != prefix.rstrip(".") and n.path
        }
        for key, (inputs, outputs) in live.items():
            if key not in expected:
                continue
            checked += 1
            want_in, want_out = expected[key]
            if dict(inputs) != dict(want_in) or tuple(outputs) != tuple(want_out):
                differences.append({"component": component, "path": key[0], "call": key[1],
                                    "live": [inputs, outputs], "static": [want_in, want_out]})
    return {"checked": checked, "differences": differences}


# -- the run -------------------------------------------------------------------------------------------


def static_traces(settings: Settings, height: int, width: int) -> dict:
    """The three components traced on the meta device as the pipeline calls them (from the trace
    cache when traced before): the UNet with the batch guidance gives it, the VAE's one image, the
    text encoder's one prompt."""
    from explorer.explore import TraceRequest, trace_cached

    cfg = settings.guidance > 1  # diffusers runs the negative prompt only then
    common = {"config": settings.config, "allow_pickle": settings.allow_pickle, "allow_download": settings.allow_download}
    sizes = {"height": height, "width": width}
    requests = {
        "unet": TraceRequest("unet", settings.model, batch=2 if cfg else 1, **sizes, **common),
        "vae": TraceRequest("vae", settings.model, batch=1, **sizes, **common),
        "clip": TraceRequest("clip", settings.model, batch=1, prompt=settings.prompt, **common),
    }
    return {name: trace_cached(request)[0] for name, request in requests.items()}


@dataclass
class Result:
    out: Path
    watch: Watch
    pipe: Any  # the diffusers pipeline that ran, watchers removed
    interrupted: bool = False


def generate(
    settings: Settings,
    out: Path,
    *,
    compare: bool = False,
    on_start: Callable[[Watch], None] = lambda watch: None,
    on_step: Callable[[Watch], None] = lambda watch: None,
    on_phase: Callable[[str], None] = lambda text: None,
) -> Result:
    """Run the pipeline and watch it. Files: out/trace.json (after every step), image.png,
    latents.png. Ctrl-C stops after writing what was done; the Result says so."""
    import torch

    from explorer.previews import contact_sheet
    from explorer.tokenizer import tokenize

    check(settings)
    check_writable(out, "image.png, latents.png and trace.json")
    source = resolve(settings)
    watch = Watch(settings=settings, out=out)

    on_phase("build")
    watch.begin("build")
    built = build_pipeline(settings, source)
    watch.end("build")
    watch.weights, watch.model = built.weights, built.source_label
    height = settings.height or built.size
    width = settings.width or built.size
    settings.height, settings.width = height, width

    watch.begin("tokenize")
    _, records = tokenize(
        [settings.negative_prompt, settings.prompt], built.pipe.tokenizer.model_max_length, built.tokenizer_folder
    )
    watch.end("tokenize")
    watch.tokens = records

    on_phase("static")
    watch.begin("static traces")
    static = static_traces(settings, height, width)
    watch.components = {name: t.to_dict() for name, t in static.items()}
    watch.end("static traces")
    make_folder(out)  # only now: a failed start leaves nothing behind
    watch.write()
    on_start(watch)

    undo: list = []
    interrupted = False
    try:
        callback, undo = watch_pipeline(built.pipe, watch, lambda: (watch.write(), on_step(watch)), compare)
        generator = torch.Generator().manual_seed(settings.seed)
        watch.begin("total")
        with torch.no_grad():
            images = built.pipe(
                prompt=settings.prompt,
                negative_prompt=settings.negative_prompt or None,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                height=height,
                width=width,
                generator=generator,
                callback_on_step_end=callback,
            ).images
        watch.end("total")
        images[0].save(out / "image.png")
        watch.status = "done"
    except KeyboardInterrupt:
        interrupted = True
        watch.status = "interrupted"
    finally:
        for step in reversed(undo):
            step()
        if watch.steps:
            contact_sheet(watch.previews, [f"{s.index}: t={s.timestep:g}" for s in watch.steps]).save(out / "latents.png")
        if compare and not interrupted:
            watch.compare = compare_shapes(watch, static)
        watch.phases["wall"] = round(time.perf_counter() - watch.started, 4)
        watch.write()
    return Result(out, watch, built.pipe, interrupted)
