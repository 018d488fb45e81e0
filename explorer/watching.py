"""Watching a real generation: a diffusers `StableDiffusionPipeline`, step by step.

`watch(pipe, out)` watches any pipeline a user made (their own weights too) while they call it;
`generate(settings, out)` builds the pipeline the explorer way (random weights for a preset, real
ones for a folder, a file, a hub id or the shipped micro model), traces its components for the
record, and runs it under `watch`.

What is recorded at every step (one scheduler step, one UNet call; see `explorer.runs` for the
files): the seams' shapes (the latent going in, the classifier-free-guidance batch the UNet sees,
its noise prediction, the guided prediction, the latent coming out), the timestep and time, the
latent's statistics, how active every block is (`explorer.capture.activity`), previews of the
unconditional, conditional and guided noise predictions and of the predicted clean image x0, and,
when asked, the cross-attention maps and the VAE's decode of x0.

Watching reads, never changes: wrappers around the watched modules' `forward`, around
`scheduler.step`, `encode_prompt` and `vae.decode`, two forward hooks on the UNet, and the
stock-equivalent recording attention processor; the image is the same, bit for bit, with or
without. Everything is removed afterwards, also on Ctrl-C or an error. Each step's files are written
before `trace.json` names the step, and `trace.json` is rewritten atomically at most once a second
and always when the run ends, however it ends.
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from explorer.errors import ExplorerError, OptionError
from explorer.files import check_writable, make_folder, read_json_object, write_atomic
from explorer.runs import MAPS, RECORD, SCHEMA, TILES, Run, decoded_file, preview_file
from explorer.views.format import plural

SCHEDULERS = {
    "pndm": "PNDMScheduler",  # SD1.5's own
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
}
PLMS_NOTE = (
    "{asked} steps asked, {calls} UNet calls: PNDM (PLMS) combines up to four earlier noise predictions, and "
    "before its first step it has none. So it steps from t={first} to t={second} with the first prediction alone, "
    "calls the UNet again at t={second}, and redoes that step from t={first} with the average of the two; every "
    "later step costs one call."
)


@dataclass
class Settings:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.5
    height: int | None = None  # None: the model's own size
    width: int | None = None
    seed: int = 0
    scheduler: str | None = None  # a name of SCHEDULERS; None: the model's own (PNDM for SD1.5, Euler for SDXL)
    model: str = "sd15"
    config: str | None = None
    allow_pickle: bool = False
    allow_download: bool = False
    watch_depth: int = 2  # block activity: modules down to this depth
    attention_maps: bool = False
    decode_every: int = 0  # decode x0 with the VAE every N steps (0: never)


def own_scheduler(scheduler_config: dict) -> str:
    """The name in SCHEDULERS of the model's own scheduler ("pndm" when it is none of them)."""
    found = {v: k for k, v in SCHEDULERS.items()}.get(str(scheduler_config.get("_class_name", "")))
    return found or "pndm"


def check(settings: Settings, scheduler_config: dict | None = None) -> None:
    """One sentence for each setting that cannot work, before anything is built (the scheduler
    left unset becomes the model's own)."""
    from explorer.explore import check_size

    if settings.scheduler is None:
        settings.scheduler = own_scheduler(scheduler_config or _preset_scheduler())
    if settings.scheduler not in SCHEDULERS:
        raise OptionError("scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {settings.scheduler!r}.")
    limit = max_steps(settings.scheduler, scheduler_config or _preset_scheduler())
    if not 1 <= settings.steps <= limit:
        raise OptionError(
            "steps", f"must be between 1 and {limit} for {SCHEDULERS[settings.scheduler]} with this model, got {settings.steps}."
        )
    if settings.guidance < 0:
        raise OptionError("guidance", f"must be 0 or more (7.5 is usual; 1 or less turns guidance off), got {settings.guidance}.")
    if settings.watch_depth < 0:
        raise OptionError("watch_depth", f"must be 0 or more (2: the blocks and their layers), got {settings.watch_depth}.")
    if settings.decode_every < 0:
        raise OptionError("decode_every", f"must be 0 (never) or more, got {settings.decode_every}.")
    check_size("height", settings.height)
    check_size("width", settings.width)


def max_steps(scheduler: str, config: dict) -> int:
    """The most steps `scheduler` can take with this scheduler config: every timestep it schedules
    must exist in the noise schedule, and they must be distinct (PNDM's repeated one aside)."""
    import diffusers

    total = int(config.get("num_train_timesteps", 1000))
    for steps in range(total, 0, -1):
        s = getattr(diffusers, SCHEDULERS[scheduler]).from_config(config)
        try:
            s.set_timesteps(steps)
        except (ValueError, IndexError):
            continue
        timesteps = [int(t) for t in s.timesteps]
        distinct = len(set(timesteps)) >= steps
        if distinct and 0 <= min(timesteps) and max(timesteps) < total:
            return steps
    return 1


def _preset_scheduler() -> dict:
    from explorer.specs import SD15

    return dict(SD15.scheduler)


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
    scheduler_config: dict = field(default_factory=dict)
    micro: dict = field(default_factory=dict)  # a micro model's micro.json: its vocabulary, its latent colours


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
    """The model's real diffusers pipeline (StableDiffusionPipeline, or StableDiffusionXLPipeline for
    the SDXL layout): random weights for a preset, the model's own otherwise."""
    import diffusers

    from explorer.loading import default_image_size, load
    from explorer.tokenizer import clip_tokenizer, pad_token_of, tokenizer_folder

    source = source or resolve(settings)
    xl = check_drivable(source)
    weights = "pretrained" if source.has_weights else "random"
    parts = {
        c: load(c, source, weights=weights, allow_pickle=settings.allow_pickle, seed=settings.seed + k)
        for k, c in enumerate(("unet", "vae", "clip"))
    }
    scheduler_config = scheduler_config_of(source)
    common = {
        "vae": parts["vae"].model,
        "tokenizer": clip_tokenizer(tokenizer_folder(source), pad_token=pad_token_of(source)),
        "unet": parts["unet"].model,
        "scheduler": getattr(diffusers, SCHEDULERS[settings.scheduler or own_scheduler(scheduler_config)]).from_config(scheduler_config),
    }
    if xl:  # the clip component holds both text encoders; the second tokenizer pads with "!"
        encoders = parts["clip"].model
        second = clip_tokenizer(tokenizer_folder(source, 2), pad_token=pad_token_of(source, 2))
        pipe = pipeline_class(xl=True)(
            text_encoder=encoders.text_encoder, text_encoder_2=encoders.text_encoder_2, tokenizer_2=second,
            add_watermarker=False, **common,
        )
    else:
        pipe = pipeline_class()(
            text_encoder=parts["clip"].model, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            **common,
        )
    pipe.set_progress_bar_config(disable=True)
    notes = [n for part in parts.values() for n in part.notes if not n.startswith("Random weights")]
    size = default_image_size(source, "unet")
    return Built(pipe, weights, source.label, size, tokenizer_folder(source), notes, scheduler_config, micro_info(source))


def check_drivable(source) -> bool:
    """`explore generate` drives StableDiffusionPipeline (SD1.x and SD2.x layouts) and
    StableDiffusionXLPipeline (a UNet with addition_embed_type = "text_time" beside a second text
    encoder). Returns whether it is the SDXL layout; any other layout is one sentence."""
    from explorer.loading import component_config, has_second_text_encoder

    kind = component_config(source, "unet").get("addition_embed_type")
    if kind is None:
        return False
    if kind == "text_time" and has_second_text_encoder(source):
        return True
    needs = "a second text encoder (text_encoder_2), which it lacks" if kind == "text_time" else "a pipeline the explorer does not drive"
    raise ExplorerError(
        f'{source.label} has a UNet with addition_embed_type = "{kind}", which needs {needs}: `explore generate` '
        "runs the SD1.x, SD2.x and SDXL layouts; explore its parts with `explore unet`, `explore vae` and `explore clip`."
    )


def pipeline_class(xl: bool = False):
    """diffusers' StableDiffusionPipeline (StableDiffusionXLPipeline with `xl`). Importing them makes
    transformers say that torchvision (for image processors SD does not use) is missing; that is not
    our users' concern."""
    from transformers.utils import logging

    from explorer.loading import library_class

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return library_class("diffusers", "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline")
    finally:
        logging.set_verbosity(level)


def scheduler_config_of(source) -> dict:
    """The model folder's own scheduler config, else its preset's (SD1.5's for a single file)."""
    if source.path is not None and source.path.is_dir():
        config_file = source.path / "scheduler" / "scheduler_config.json"
        if config_file.is_file():
            return read_json_object(config_file)
    return dict(source.preset.scheduler) if source.preset is not None else _preset_scheduler()


def micro_info(source) -> dict:
    """micro.json of a model trained by explorer.micro.train (the shipped micro model's too)."""
    path = source.path / "micro.json" if source.path is not None and source.path.is_dir() else None
    if path is None or not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


# -- the record, while it is made ----------------------------------------------------------------------


@dataclass
class Step:
    """One scheduler step: one UNet call."""

    index: int
    timestep: float
    seconds: float
    shapes: dict[str, list[int]]
    latent_stats: dict[str, float]
    blocks: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> mean, std, abs
    skips: dict[str, float] = field(default_factory=dict)  # skip tensor -> RMS
    maps: dict[str, Any] | None = None  # where in maps.bin its cross-attention maps are: at, bytes, zlib


@dataclass
class Recording:
    """The generation record (schema generation@4) as it grows: plain data, written as trace.json
    after every step. The static traces are serialized once (`components_json`)."""

    out: Path
    settings: dict[str, Any] = field(default_factory=dict)
    tokens: list[dict] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    total_steps: int = 0  # the scheduler's timesteps: PNDM runs one more than asked
    unet_calls: str = ""  # why the UNet ran more often than the steps asked, when it did
    steps: list[Step] = field(default_factory=list)
    status: str = "running"  # running, done, interrupted, failed
    error: str = ""
    blocks: list[str] = field(default_factory=list)  # the watched modules
    tiles: list[str] = field(default_factory=list)  # the previews in each step's file, left to right
    attention: dict | None = None  # the maps' layers and token rows, with --attention-maps
    warnings: list[str] = field(default_factory=list)
    compare: dict | None = None
    components_json: str = "{}"
    written: float = 0.0  # when trace.json was last written (perf_counter)

    WRITE_EVERY = 1.0  # seconds: a long run rewrites its growing trace.json at most this often

    def write_soon(self) -> None:
        """After a step: write unless the last write was under WRITE_EVERY seconds ago (a 1000-step
        run would otherwise rewrite a growing file a thousand times). The record is written when the
        run starts, and finish() always writes."""
        if time.perf_counter() - self.written >= self.WRITE_EVERY:
            self.write()

    def fields(self) -> dict[str, Any]:
        found = {
            "schema": SCHEMA,
            "status": self.status,
            "settings": self.settings,
            "tokens": self.tokens,
            "phases": self.phases,
            "total_steps": self.total_steps or self.settings.get("steps", 0),
            "steps": [asdict(s) for s in self.steps],
            "blocks": self.blocks,
            "attention": self.attention,
            "files": {
                "image": "image.png",
                "latents": "latents.png",
                "previews": preview_file(0).replace("000", "NNN"),
                "tiles": self.tiles,
                "guidance": None,  # generation@1 and @2 kept each preview in its own file
                "maps": MAPS if self.attention else None,
                "decoded": decoded_file(0).replace("000", "NNN") if self.settings.get("decode_every") else None,
            },
            "compare": self.compare,
        }
        for key in ("unet_calls", "error", "warnings"):
            if getattr(self, key):
                found[key] = getattr(self, key)
        return found

    def write(self) -> None:
        """trace.json, whole: every field as JSON, the static traces as serialized once."""
        parts = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.fields().items()]
        parts.append(f' "components": {self.components_json}')
        write_atomic(self.out / RECORD, "{\n" + ",\n".join(parts) + "\n}\n")
        self.written = time.perf_counter()


# -- the watchers --------------------------------------------------------------------------------------


def predicted_x0(scheduler, sample, model_output, timestep):
    """The clean latent the prediction implies at `timestep`, from the scheduler's own noise levels:
    x0 = (x_t − √(1−ᾱ)·ε) / √ᾱ, or x0 = x − σ·ε for schedulers that work with σ (Euler)."""
    import torch

    prediction = scheduler.config.get("prediction_type", "epsilon")
    if hasattr(scheduler, "sigmas") and hasattr(scheduler, "index_for_timestep"):
        sigma = scheduler.sigmas[scheduler.index_for_timestep(timestep)].to(sample.device)
        return sample - sigma * model_output if prediction == "epsilon" else model_output
    alpha = scheduler.alphas_cumprod[int(timestep)].to(sample.device)
    if prediction == "v_prediction":
        return torch.sqrt(alpha) * sample - torch.sqrt(1 - alpha) * model_output
    return (sample - torch.sqrt(1 - alpha) * model_output) / torch.sqrt(alpha)


def _shape(t) -> list[int]:
    return [int(d) for d in t.shape]


def _stats(t) -> dict[str, float]:
    """mean, std (unbiased, as torch.std), min and max of a latent, in numpy (a latent is small)."""
    x = t.detach().float().cpu().numpy()
    found = {"mean": x.mean(), "std": x.std(ddof=1) if x.size > 1 else float("nan"), "min": x.min(), "max": x.max()}
    return {k: round(float(v), 5) for k, v in found.items()}


def _wrap(obj: Any, name: str, wrapper_of: Callable[[Callable], Callable], undo: list) -> None:
    """Replace obj.name by a wrapper of it, on this instance only; `undo` puts back what was there."""
    from explorer.capture.activity import wrap_on_instance

    undo.append(wrap_on_instance(obj, name, wrapper_of))


class Watcher:
    """The watchers on one pipeline, and what they saw: the recording and the live state."""

    def __init__(self, pipe, recording: Recording, *, attention_maps: bool = False, watch_depth: int = 2,
                 decode_every: int = 0, latent_rgb=None, on_step: Callable[["Watcher"], None] = lambda w: None):
        from explorer.capture.activity import AttentionMaps, BlockActivity
        from explorer.previews import LATENT_RGB

        self.pipe, self.recording, self.out = pipe, recording, recording.out
        self.decode_every, self.latent_rgb = decode_every, latent_rgb or LATENT_RGB
        self.on_step = on_step
        self.activity = BlockActivity(pipe.unet, watch_depth)
        self.maps = AttentionMaps(pipe.unet) if attention_maps else None
        if self.maps is not None and not self.maps.available:
            recording.warnings.append(
                "No cross-attention of this UNet has a stock attention processor (xformers or LoRA variants?): "
                "the maps are skipped; block activity is still recorded."
            )
            self.maps = None
        recording.blocks = list(self.activity.paths)
        self.phase, self.starts = "", {}
        self.current: dict[str, Any] = {}  # the step in progress: its seams and the UNet's prediction
        self.step_started: float | None = None
        self.previews: list = []  # the latent after each step: (h, w, 3) RGB pixels
        self.last_maps: list = []  # the last step's maps, one array per layer (the live panel shows them)
        self.maps_out = None  # maps.bin, open while the run goes
        self.undo: list[Callable[[], None]] = []
        self.started = time.perf_counter()

    @property
    def status(self) -> str:
        return self.recording.status

    @property
    def steps(self) -> list[Step]:
        return self.recording.steps

    @property
    def settings(self) -> dict:
        return self.recording.settings

    # phases ------------------------------------------------------------------------------------------

    def begin(self, phase: str) -> None:
        self.phase, self.starts[phase] = phase, time.perf_counter()

    def end(self, phase: str) -> None:
        self.recording.phases[phase] = round(time.perf_counter() - self.starts.pop(phase), 4)
        self.phase = ""

    # installing ---------------------------------------------------------------------------------------

    def install(self) -> None:
        pipe = self.pipe
        self.undo.append(pipe.unet.register_forward_pre_hook(self._unet_pre, with_kwargs=True).remove)
        self.undo.append(pipe.unet.register_forward_hook(self._unet_post, with_kwargs=True).remove)
        self.undo.append(self.activity.install())
        if self.maps is not None:
            self.undo.append(self.maps.install())
        self.decode = pipe.vae.decode  # the VAE's own decode, for x0 (not timed as the pipeline's)
        _wrap(pipe.scheduler, "step", self._step_of, self.undo)
        _wrap(pipe, "encode_prompt", self._timed("encode_prompt", self._prompts_seen), self.undo)
        _wrap(pipe.vae, "decode", self._timed("vae_decode"), self.undo)

    def remove(self) -> None:
        for undo in reversed(self.undo):
            undo()
        self.undo = []
        self.close_maps()

    def _timed(self, phase: str, before: Callable[..., None] = lambda *a, **k: None):
        def wrapper_of(original):
            def run(*args, **kwargs):
                before(*args, **kwargs)
                self.begin(phase)
                out = original(*args, **kwargs)
                self.end(phase)
                return out

            return run

        return wrapper_of

    def _prompts_seen(self, prompt=None, device=None, num_images_per_prompt=1, do_classifier_free_guidance=True,
                      negative_prompt=None, *args, **kwargs) -> None:
        """The prompts as the pipeline encodes them: their tokens, and the rows the maps keep."""
        from explorer.tokenizer import tokenize_with

        if not self.recording.tokens and isinstance(prompt, str):
            tok = self.pipe.tokenizer
            self.recording.tokens = tokenize_with(tok, [negative_prompt or "", prompt], tok.model_max_length)[1]
            self.recording.settings.setdefault("prompt", prompt)
            self.recording.settings.setdefault("negative_prompt", negative_prompt or "")
        if self.maps is not None and self.recording.tokens:
            self._map_rows(self.recording.tokens[-1])

    def _map_rows(self, record: dict) -> None:
        from explorer.runs import PADDING

        length = record["length"]
        self.maps.tokens = length
        self.recording.attention = {"layers": [], "tokens": [*record["tokens"][:length], PADDING]}

    # every UNet call and scheduler step ------------------------------------------------------------------

    def _unet_pre(self, module, args, kwargs) -> None:
        if self.step_started is None:
            self.step_started = time.perf_counter()
        sample = args[0] if args else kwargs["sample"]
        halves = 2 if getattr(self.pipe, "do_classifier_free_guidance", False) else 1
        self.activity.halves = halves
        if self.maps is not None:
            self.maps.halves, self.maps.latent = halves, (int(sample.shape[-2]), int(sample.shape[-1]))
        self.current["unet_input"] = _shape(sample)

    def _unet_post(self, module, args, kwargs, output) -> None:
        prediction = output[0] if isinstance(output, tuple) else output.sample
        self.current["noise_pred"] = _shape(prediction)
        self.current["prediction"] = prediction.detach()

    def _step_of(self, original):
        def step(model_output, timestep, sample, *args, **kwargs):
            x0 = predicted_x0(self.pipe.scheduler, sample, model_output, timestep)  # before the step moves on
            result = original(model_output, timestep, sample, *args, **kwargs)
            latent_out = result[0] if isinstance(result, tuple) else result.prev_sample
            self.current.update(latent_in=_shape(sample), guided=_shape(model_output), latent_out=_shape(latent_out))
            self._finish_step(float(timestep), model_output, x0, latent_out)
            return result

        return step

    def _finish_step(self, timestep: float, guided, x0, latent_out) -> None:
        """Everything one step leaves: its record, its previews, its maps; then trace.json."""
        import torch

        index = len(self.recording.steps)
        if index == 0:
            self._first_step()
        seconds = time.perf_counter() - (self.step_started or time.perf_counter())
        prediction = self.current.pop("prediction", None)
        blocks, skips = self.activity.take()
        step = Step(index, timestep, round(seconds, 4), dict(self.current), _stats(latent_out), blocks, skips)
        with torch.no_grad():
            self._previews(index, prediction, guided, x0, latent_out)
        if self.maps is not None:
            step.maps = self._write_maps()
        self.recording.steps.append(step)
        self.recording.phases["denoise"] = round(sum(s.seconds for s in self.recording.steps), 4)
        self.current, self.step_started = {}, None
        self.recording.write_soon()
        self.on_step(self)

    def _first_step(self) -> None:
        """What is known once the loop runs: the schedule, the guidance, the size."""
        scheduler, rec = self.pipe.scheduler, self.recording
        timesteps = [int(t) for t in scheduler.timesteps]
        rec.total_steps = len(timesteps)
        asked = getattr(scheduler, "num_inference_steps", None) or len(timesteps)
        if len(timesteps) > asked and len(timesteps) > 1:
            rec.unet_calls = PLMS_NOTE.format(asked=asked, calls=len(timesteps), first=timesteps[0], second=timesteps[1])
        rec.settings.setdefault("steps", asked)
        rec.settings.setdefault("guidance", float(getattr(self.pipe, "guidance_scale", 1.0)))
        rec.settings.setdefault("scheduler", type(scheduler).__name__)
        folders = ["previews"] + ["decoded"] * bool(self.decode_every)
        for folder in folders:  # once, not per file
            (self.out / folder).mkdir(exist_ok=True)

    def _previews(self, index: int, prediction, guided, x0, latent_out) -> None:
        """The step's previews side by side in one file (`TILES`: the latent after the step, the
        unconditional, conditional and guided noise predictions, x0), each through the same
        latent -> RGB map at the latent's size; every `decode_every` steps x0 through the real VAE.
        One file a step, not five: creating a file costs more than mapping all five.

        Written as they are, not atomically: each is written once, before the record names its step."""
        import numpy as np

        from explorer.previews import latent_pixels, png, rgb_png

        latents = {"latent": latent_out, "guided": guided, "x0": x0}
        if prediction is not None:
            halves = prediction.chunk(2) if self.current.get("unet_input", [0])[0] != _shape(guided)[0] else (None, prediction)
            latents.update((part, half) for part, half in zip(("uncond", "cond"), halves) if half is not None)
        if not self.recording.tiles:  # the first step's: one pipeline call guides every step alike
            self.recording.tiles = [name for name in TILES if name in latents]
        names = [name for name in self.recording.tiles if name in latents]
        pixels = dict(zip(names, latent_pixels([latents[name] for name in names], self.latent_rgb)))  # (h, w, 3) each
        self.previews.append(pixels["latent"])
        strip = np.concatenate(  # (h, tiles·w, 3); black for a part this step lacks (a later call without guidance)
            [pixels[name] if name in pixels else np.zeros_like(pixels["latent"]) for name in self.recording.tiles], axis=1
        )
        (self.out / preview_file(index)).write_bytes(rgb_png(strip))
        if self.decode_every and index % self.decode_every == 0:
            (self.out / decoded_file(index)).write_bytes(png(self._decoded(x0), compress_level=1))

    def _decoded(self, x0):
        """x0 decoded by the VAE, as the pipeline decodes its final latent."""
        latents = x0[:1] / self.pipe.vae.config.scaling_factor
        image = self.decode(latents.to(self.pipe.vae.dtype), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image.detach(), output_type="pil")[0]

    def _write_maps(self) -> dict | None:
        """The step's maps appended to maps.bin (one file a run: creating a file a step cost more than
        a micro step's maps), before the record names the step; returns where they are."""
        from explorer.maps import maps_chunk

        taken = self.maps.take()
        if not taken or self.recording.attention is None:
            return None
        if not self.recording.attention["layers"]:
            self.recording.attention["layers"] = [
                {"path": path, "height": int(m.shape[1]), "width": int(m.shape[2])} for path, m in taken
            ]
        self.last_maps = [m for _, m in taken]
        chunk, deflated = maps_chunk(self.last_maps)
        if self.maps_out is None:
            self.maps_out = open(self.out / MAPS, "wb")  # noqa: SIM115 - open for the run, closed by close_maps
        at = self.maps_out.tell()
        self.maps_out.write(chunk)
        self.maps_out.flush()  # in the file before the record names the step
        return {"at": at, "bytes": len(chunk), "zlib": deflated}

    def close_maps(self) -> None:
        if self.maps_out is not None:
            self.maps_out.close()
            self.maps_out = None

    def finish(self, status: str, error: str = "") -> None:
        """The last write: the status, the contact sheet of every step's latent, the wall time."""
        from PIL import Image

        from explorer.previews import contact_sheet, png, upscaled

        self.recording.status, self.recording.error = status, error
        self.close_maps()
        if self.previews:
            captions = [f"{s.index}: t={s.timestep:g}" for s in self.recording.steps]
            images = [upscaled(Image.fromarray(pixels, "RGB")) for pixels in self.previews]
            write_atomic(self.out / "latents.png", png(contact_sheet(images, captions)))
        self.recording.phases["wall"] = round(time.perf_counter() - self.started, 4)
        self.recording.write()


@contextmanager
def watch(pipe, out: str | Path, *, attention_maps: bool = False, watch_depth: int = 2, decode_every: int = 0,
          latent_rgb=None) -> Iterator[Run]:
    """Watch every step of a diffusers StableDiffusionPipeline (yours, with your weights) while you
    call it inside the block; the run folder `out` is written as it goes. Yields the Run, readable
    (`run.attention("word")`, `run.blocks`...) once the block ends.

        with explorer.watch(pipe, "runs/mine", attention_maps=True) as run:
            image = pipe("a lighthouse at dusk", num_inference_steps=20).images[0]
        run.attention("lighthouse")
    """
    out = Path(out)
    run = Run(out, {})
    options = {"attention_maps": attention_maps, "watch_depth": watch_depth, "decode_every": decode_every,
               "latent_rgb": latent_rgb}
    try:
        with watching(pipe, out, **options):
            yield run
    finally:
        if (out / RECORD).is_file():
            run.record = json.loads((out / RECORD).read_text(encoding="utf-8"))


@contextmanager
def watching(pipe, out: Path, *, recording: Recording | None = None, on_start: Callable[[Watcher], None] = lambda w: None,
             on_step: Callable[[Watcher], None] = lambda w: None, **options: Any) -> Iterator[Watcher]:
    """The watchers installed on `pipe` for the block, then removed; the record finished with the
    block's outcome (done, interrupted, failed: one sentence saying where)."""
    if not all(hasattr(pipe, part) for part in ("unet", "scheduler", "vae", "encode_prompt")):
        raise ExplorerError(
            f"explorer.watch watches a diffusers StableDiffusionPipeline (with unet, vae, scheduler and "
            f"encode_prompt); got an object of type {type(pipe).__name__}. "
            "For one model, use explorer.trace(model)."
        )
    check_writable(out, "the run's files")
    make_folder(out)
    recording = recording or Recording(out, settings={"model": str(getattr(pipe, "name_or_path", "") or "your pipeline")})
    watcher = Watcher(pipe, recording, on_step=on_step, **options)
    watcher.install()
    try:
        recording.write()
        on_start(watcher)
        yield watcher
        watcher.finish("done")
    except KeyboardInterrupt:
        watcher.finish("interrupted")
        raise
    except Exception as exc:
        watcher.finish("failed", failure(watcher, exc))
        raise
    finally:
        watcher.remove()


def failure(watcher: Watcher, exc: BaseException) -> str:
    """One sentence: which phase and step failed, and how."""
    done = len(watcher.recording.steps)
    where = f"in {watcher.phase}" if watcher.phase else (f"at step {done}" if done or watcher.current else "before the first step")
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"The pipeline failed {where} ({type(exc).__name__}{': ' + message if message else ''}); {plural(done, 'step was', 'steps were')} done."


# -- the run, the explorer's way ---------------------------------------------------------------------------


class GenerationError(RuntimeError):
    """The pipeline failed; the message names the phase and the step (the record keeps the steps done)."""


@dataclass
class Result:
    out: Path
    watch: Watcher  # the watchers (removed) and what they recorded
    pipe: Any  # the diffusers pipeline that ran
    interrupted: bool = False


def generate(settings: Settings, out: Path, *, compare: bool = False,
             on_start: Callable[[Watcher], None] = lambda w: None,
             on_step: Callable[[Watcher], None] = lambda w: None,
             on_phase: Callable[[str], None] = lambda text: None) -> Result:
    """Build the pipeline, trace its components for the record, and run it watched. Files: see
    explorer.runs. Ctrl-C stops after writing what was done (the Result says so); a failure raises
    GenerationError with one sentence, after writing what was done."""
    source = resolve(settings)
    check(settings, scheduler_config_of(source))
    check_writable(out, "image.png, latents.png and trace.json")
    recording, started = Recording(out), time.perf_counter()
    on_phase("build")
    built = _timed_phase(recording, "build", lambda: build_pipeline(settings, source))
    settings.height, settings.width = settings.height or built.size, settings.width or built.size
    recording.settings = settings_record(settings, built)
    recording.tokens = _timed_phase(recording, "tokenize", lambda: prompt_tokens(settings, built))
    recording.warnings += micro_warnings(built, recording.tokens)
    on_phase("static")
    static = _timed_phase(recording, "static traces", lambda: static_traces(settings, settings.height, settings.width))
    recording.components_json = json.dumps({name: t.to_dict() for name, t in static.items()}, separators=(",", ":"))
    make_folder(out)  # only now: a failed start leaves nothing behind
    options = {"attention_maps": settings.attention_maps, "watch_depth": settings.watch_depth,
               "decode_every": settings.decode_every, "latent_rgb": built.micro.get("latent_rgb")}
    live_shapes: dict = {}
    watcher = None
    try:
        with watching(built.pipe, out, recording=recording, on_step=on_step, on_start=on_start, **options) as watcher:
            if compare:
                _compare_first_calls(built.pipe, live_shapes, watcher.undo)
            _run_pipeline(built.pipe, settings, watcher)
    except KeyboardInterrupt:
        return Result(out, watcher, built.pipe, interrupted=True)
    except Exception as exc:
        raise GenerationError(recording.error or str(exc)) from exc
    if compare:
        recording.compare = compare_shapes(live_shapes, static)
    recording.phases["wall"] = round(time.perf_counter() - started, 4)
    recording.write()
    return Result(out, watcher, built.pipe)


def _timed_phase(recording: Recording, phase: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    recording.phases[phase] = round(time.perf_counter() - started, 4)
    return result


def _run_pipeline(pipe, settings: Settings, watcher: Watcher) -> None:
    """The pipeline's own call, seeded; the image saved when it finishes."""
    import torch

    from explorer.previews import png

    generator = torch.Generator().manual_seed(settings.seed)
    watcher.begin("total")
    with torch.no_grad():
        image = pipe(
            prompt=settings.prompt,
            negative_prompt=settings.negative_prompt or None,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            height=settings.height,
            width=settings.width,
            generator=generator,
        ).images[0]
    watcher.end("total")
    write_atomic(watcher.out / "image.png", png(image))


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


# -- --compare: the real run's module shapes against the static traces ----------------------------------


def _compare_first_calls(pipe, live_shapes: dict, undo: list) -> None:
    """Trace the first call of the text encoder, the UNet and the VAE decoder with module hooks,
    to compare with the static traces afterwards."""
    from explorer.capture.hooks import instrumented

    def traced_once(component: str, module, prefix: str = ""):
        """`prefix`: the module's path in the static trace ("decoder." for the VAE's decoder,
        "text_encoder_2." for SDXL's second text encoder)."""
        def wrapper_of(original):
            def run(*args, **kwargs):
                if (component, prefix) in live_shapes:
                    return original(*args, **kwargs)
                with instrumented(module, dataflow=False) as recorder:
                    out = original(*args, **kwargs)
                live_shapes[component, prefix] = {(n["path"], n["call"]): (n["inputs"], n["outputs"]) for n in recorder.nodes}
                return out

            return run

        return wrapper_of

    encoders = ["text_encoder", "text_encoder_2"] if getattr(pipe, "text_encoder_2", None) is not None else ["text_encoder"]
    for name in encoders:  # SDXL's clip component holds both, under their names
        prefix = f"{name}." if len(encoders) > 1 else ""
        _wrap(getattr(pipe, name), "forward", traced_once("clip", getattr(pipe, name), prefix), undo)
    _wrap(pipe.unet, "forward", traced_once("unet", pipe.unet), undo)
    _wrap(pipe.vae.decoder, "forward", traced_once("vae", pipe.vae.decoder, "decoder."), undo)


def compare_shapes(live_shapes: dict, static: dict[str, Any]) -> dict:
    """Per module: the shapes seen in the real run against the static trace of the same settings."""
    differences, checked = [], 0
    for (component, prefix), live in live_shapes.items():
        expected = {
            (n.path[len(prefix) :], n.call): (n.inputs, n.outputs)
            for n in static[component].nodes
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
