"""Watching a diffusers pipeline while it runs: every step's seams, block activity, previews and
(when asked) cross-attention maps, written to a run folder as it goes.

`watch(pipe, out)` watches any pipeline a user made (their own weights too) while they call it.
Watching reads, never changes: wrappers around the watched modules' `forward`, around
`scheduler.step`, `encode_prompt` and `vae.decode`, two forward hooks on the UNet, and the
stock-equivalent recording attention processor; the image is the same, bit for bit, with or
without. Everything is removed afterwards, also on Ctrl-C or an error. Each step's files are written
before `trace.json` names the step, and `trace.json` is rewritten atomically at most once a second
and always when the run ends, however it ends.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from explorer.errors import ExplorerError
from explorer.files import check_writable, make_folder, parse_json, write_atomic
from explorer.generation.recording import Recording, Step
from explorer.runs import MAPS, RECORD, TILES, Run, decoded_file, preview_file
from explorer.views.format import plural

MAPS_SKIPPED = (
    "The cross-attention maps were skipped: they are taken beside diffusers' stock attention processors "
    "(AttnProcessor2_0, AttnProcessor), and no cross-attention of this UNet has one (it has {processors}: xformers, "
    "LoRA or another library's?). Block activity is still recorded; for the maps, set the stock processor first "
    "(pipe.unet.set_attn_processor(AttnProcessor2_0()))."
)
PLMS_NOTE = (
    "{asked} steps asked, {calls} UNet calls: PNDM (PLMS) combines up to four earlier noise predictions, and "
    "before its first step it has none. So it steps from t={first} to t={second} with the first prediction alone, "
    "calls the UNet again at t={second}, and redoes that step from t={first} with the average of the two; every "
    "later step costs one call."
)


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


def processor_names(unet) -> list[str]:
    """The kinds of attention processor the UNet's attention modules have."""
    return sorted({type(p).__name__ for p in getattr(unet, "attn_processors", {}).values()})


def wrap(obj: Any, name: str, wrapper_of: Callable[[Callable], Callable], undo: list) -> None:
    """Replace obj.name by a wrapper of it, on this instance only; `undo` puts back what was there."""
    from explorer.capture.activity import wrap_on_instance

    undo.append(wrap_on_instance(obj, name, wrapper_of))


class Watcher:
    """The watchers on one pipeline, and what they saw: the recording and the live state."""

    def __init__(self, pipe, recording: Recording, *, attention_maps: bool = False, watch_depth: int = 2,
                 decode_every: int = 0, latent_rgb=None, adds: bool = False,
                 on_step: Callable[["Watcher"], None] = lambda w: None):
        from explorer.capture.activity import AttentionMaps, BlockActivity, BlockAdds
        from explorer.previews import LATENT_RGB

        self.pipe, self.recording, self.out = pipe, recording, recording.out
        self.decode_every, self.latent_rgb = decode_every, latent_rgb or LATENT_RGB
        self.on_step = on_step
        self.activity = BlockActivity(pipe.unet, watch_depth)
        self.adds = BlockAdds(pipe.unet, watch_depth) if adds else None  # what each block adds: on request
        self.maps = AttentionMaps(pipe.unet) if attention_maps else None
        if self.maps is not None and not self.maps.available:
            recording.maps_skipped = MAPS_SKIPPED.format(processors=", ".join(processor_names(pipe.unet)) or "none")
            recording.warnings.append(recording.maps_skipped)
            self.maps = None
        recording.blocks = list(self.activity.paths)
        self.phase, self.starts = "", {}
        self.current: dict[str, Any] = {}  # the step in progress: its seams and the UNet's prediction
        self.latest: dict[str, Any] = {}  # the last step's x0 and latent, as tensors
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
        if self.adds is not None:
            self.undo.append(self.adds.install())
        if self.maps is not None:
            self.undo.append(self.maps.install())
        self.decode = pipe.vae.decode  # the VAE's own decode, for x0 (not timed as the pipeline's)
        wrap(pipe.scheduler, "step", self._step_of, self.undo)
        wrap(pipe, "encode_prompt", self._timed("encode_prompt", self._prompts_seen), self.undo)
        wrap(pipe.vae, "decode", self._timed("vae_decode"), self.undo)

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
        if self.adds is not None:
            self.adds.halves = halves
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
            self.latest = {"x0": x0, "latent": latent_out}  # for on_step callbacks (an experiment compares them)
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
        for path, added in (self.adds.take() if self.adds is not None else {}).items():
            blocks.setdefault(path, {})["adds"] = added
        step = Step(index, timestep, round(seconds, 4), dict(self.current), _stats(latent_out), blocks, skips)
        with torch.no_grad():
            self._previews(index, prediction, guided, x0, latent_out)
        if self.maps is not None:
            step.maps = self._write_maps()
        self.recording.steps.append(step)
        self.recording.phases["denoise"] = round(sum(s.seconds for s in self.recording.steps), 4)
        self.current, self.step_started = {}, None
        if index == 0:  # the first step says what each step's previews hold (files.tiles): readable from now on
            self.recording.write()
        else:
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
          latent_rgb=None, adds: bool = False) -> Iterator[Run]:
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
               "latent_rgb": latent_rgb, "adds": adds}
    try:
        with watched(pipe, out, **options) as watcher:
            if watcher.recording.maps_skipped:  # said to whoever asked for the maps, not only kept in trace.json
                warnings.warn(watcher.recording.maps_skipped, UserWarning, stacklevel=3)
            yield run
    finally:
        if (out / RECORD).is_file():
            run.record = parse_json((out / RECORD).read_text(encoding="utf-8"))


@contextmanager
def watched(pipe, out: Path, *, recording: Recording | None = None, on_start: Callable[[Watcher], None] = lambda w: None,
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
