"""Train the micro SD: `python -m explorer.micro.train --out my-micro`.

Two stages as Stable Diffusion was made, and a third that teaches the words where to look:

1. **the VAE** learns to compress a 64x64 image into a 16x16x4 latent and back (L1 plus squared
   reconstruction error, and a KL term weighted 1e-6 as in SD's autoencoder training). Then its scaling factor is
   measured: 1 / the standard deviation of the latents, the way SD's 0.18215 was found;
2. **the UNet and the text encoder together** learn to predict the noise added to a latent
   (the usual ε-prediction loss, SD1.5's 1000-step noise schedule), the caption replaced by the empty
   prompt one time in five so that classifier-free guidance works. EMA weights (diffusers' `EMAModel`)
   are what is saved;
3. **where the words look**: a short fine-tune that adds TokenCompose's token loss (Wang et al., CVPR
   2024) for the colour and shape words: 1 − the share of their cross-attention that falls on the
   shape, whose mask the data generator knows. SD1.5's nouns learned to attend where their object is
   from billions of images; micro's, from 6,000 steps, read the shape from everywhere.

Everything random comes from the seed: step k of a stage draws its images, captions, noise and
timesteps from a generator seeded with (seed, stage, k), so the same command gives the same weights
on the same machine, and a run resumed from a checkpoint continues exactly where it stopped.
Ctrl-C writes a checkpoint; the same command resumes from it.

The output is a diffusers folder (model_index.json; unet/, vae/, text_encoder/, tokenizer/,
scheduler/; safetensors only) that `explore generate --model FOLDER` and diffusers'
`StableDiffusionPipeline.from_pretrained` both load; plus `micro.json` (what the model learned and
how it was trained), `loss.png` and `evaluation.md`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from explorer.errors import ExplorerError

PROMPT_DROPOUT = 0.2  # share of captions replaced by "" (classifier-free guidance; SD1.5 used 0.1)
KL_WEIGHT = 1e-6  # as in SD's autoencoder (kl_weight 1e-6)
CHECKPOINT_EVERY = 250  # steps
TOKEN_STD = 1.0  # the text encoder's token embeddings start at this standard deviation (see build_models)
LATENT_CHANNELS = 4
LOGVAR_START = -8.0  # the VAE posterior's log-variance at the start of training (see build_models)


@dataclass
class Plan:
    """What a training run does. The defaults made the shipped weights."""

    out: Path
    seed: int = 0
    vae_steps: int = 1500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    unet_steps: int = 6000
    unet_batch: int = 32
    unet_lr: float = 1e-3
    ema_decay: float = 0.999
    # Where a shape goes and its colour are decided in the first, noisiest steps. SD1.5 drew timesteps
    # uniformly and weighted every step's loss alike, with a million times our compute; here the
    # noisy end gets more of both (for SD1.5's behaviour: --timestep-power 1 --loss-weight-cap 1).
    timestep_power: float = 2.0  # timesteps drawn as T·u^(1/power): 1 uniform, 2 twice as many near T as near 0
    loss_weight_cap: float = 20.0  # a step's loss weighted min(max(1, 1/SNR), cap): toward the clean image's error
    # ...for this share of the UNet steps; the rest draw timesteps uniformly and weight them alike, as SD
    # did, so that the nearly clean steps (where guidance multiplies any error by 7.5) are learned too.
    focus_share: float = 0.6
    # Stage 3, where the words look: a short fine-tune that adds a grounding loss (TokenCompose's token
    # loss) teaching the colour and shape words' cross-attention to fall on the shape they name.
    ground_steps: int = 2000
    ground_lr: float = 2e-4
    ground_weight: float = 0.05  # the grounding loss's weight beside the noise loss (0: none)
    warmup: int = 100
    evaluate_seeds: int = 1  # seeds per combination in the final evaluation (0: skip it)
    device: str = "cpu"  # where to train ("cuda" on a GPU); the data and every random draw stay on the CPU

    def check(self) -> None:
        for name in ("vae_steps", "unet_steps", "vae_batch", "unet_batch"):
            if getattr(self, name) < 1:
                raise ExplorerError(f"{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}.")
        if self.ground_steps < 0 or self.ground_weight < 0:
            raise ExplorerError("ground-steps and ground-weight must be 0 or more.")
        for name in ("vae_lr", "unet_lr", "ground_lr"):
            if not 0 < getattr(self, name) < 1:
                raise ExplorerError(f"{name.replace('_', '-')} must be between 0 and 1, got {getattr(self, name)}.")
        if not 0 <= self.focus_share <= 1:
            raise ExplorerError(f"focus-share must be between 0 and 1, got {self.focus_share}.")


@dataclass
class History:
    """Loss per step of each stage, and the seconds each stage took."""

    vae: list[float] = field(default_factory=list)
    unet: list[float] = field(default_factory=list)
    ground: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def step_generator(seed: int, stage: str, step: int):
    """The generator of one step: everything random in it comes from here."""
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + {"vae": 1, "unet": 2, "scale": 3, "ground": 4}[stage] * 100_000_007 + step)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then a cosine down to a tenth of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# -- the batches -------------------------------------------------------------------------------------


def image_batch(count: int, generator, device: str = "cpu"):
    """(images (N, 3, 64, 64) in [-1, 1], captions) of training specs."""
    from explorer.micro.data import draw, random_specs

    specs, captions = random_specs(count, generator)
    return draw(specs, generator).to(device), captions


def token_ids(captions: list[str]):
    """(N, 77) ids from the real SD1.5 tokenizer, padded as the pipeline pads them."""
    import torch

    return torch.tensor([_caption_ids(c) for c in captions])


@lru_cache(maxsize=None)
def _caption_ids(caption: str) -> list[int]:
    """One caption's ids; the captions are a few thousand sentences, each tokenized once."""
    from explorer.tokenizer import clip_tokenizer

    return clip_tokenizer()(caption, padding="max_length", max_length=77, truncation=True).input_ids


# -- stage 1: the VAE ---------------------------------------------------------------------------------


def vae_loss(vae, images, generator):
    """L1 plus squared reconstruction error per pixel value (SD adds a perceptual and an adversarial
    loss; the squared term is our simple stand-in for "a whole shape of the wrong colour is much
    worse than a soft edge"), plus the KL divergence from N(0, I) weighted as in SD's autoencoder
    (summed over the image there; here divided by its size)."""
    posterior = vae.encode(images).latent_dist  # (N, 4, 16, 16) mean and log-variance
    decoded = vae.decode(posterior.sample(generator=generator)).sample  # (N, 3, 64, 64)
    error = decoded - images
    reconstruction = error.abs().mean() + (error**2).mean()
    return reconstruction + KL_WEIGHT * posterior.kl().mean() / images[0].numel()


def train_vae(vae, plan: Plan, state: dict, history: History, progress: Callable) -> None:
    import torch

    optimizer = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)

    def loss_of(step, generator):
        images, _ = image_batch(plan.vae_batch, generator, plan.device)
        return vae_loss(vae, images, generator)

    vae.train()
    train_steps("vae", plan, state, history, progress, optimizer, loss_of)
    vae.eval()


def train_steps(stage: str, plan: Plan, state: dict, history: History, progress: Callable, optimizer,
                loss_of: Callable, clip: list | None = None, after: Callable[[], None] = lambda: None) -> None:
    """The loop every stage shares: from the step the history has reached (a resumed run) to the
    plan's last, each step seeded on its own, its learning rate set, one optimizer step taken, its
    loss kept; a checkpoint every CHECKPOINT_EVERY steps."""
    import torch

    if state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    losses = getattr(history, stage)
    total, peak = getattr(plan, f"{stage}_steps"), getattr(plan, f"{stage}_lr")
    for step in range(len(losses), total):
        generator = step_generator(plan.seed, stage, step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, peak, plan.warmup)
        loss = loss_of(step, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip, 1.0)
        optimizer.step()
        after()
        losses.append(round(loss.item(), 6))
        state["optimizer"] = optimizer.state_dict()
        progress(stage, step + 1, losses[-1])
        if (step + 1) % CHECKPOINT_EVERY == 0:
            state["save"]()


def measure_scaling(vae, plan: Plan, count: int = 1024) -> float:
    """1 / the standard deviation of the VAE's latents over `count` images: what makes the latents
    the UNet sees about unit variance (SD1.5's 0.18215 was measured the same way)."""
    import torch

    generator = step_generator(plan.seed, "scale", 0)
    latents = []
    with torch.no_grad():
        for _ in range(count // 64):
            images, _ = image_batch(64, generator, plan.device)
            latents.append(vae.encode(images).latent_dist.sample(generator=generator))
    return round(1.0 / float(torch.cat(latents).std()), 5)


# -- stage 2: the UNet and the text encoder -----------------------------------------------------------


def drop_captions(captions: list[str], generator) -> list[str]:
    """The captions with a PROMPT_DROPOUT share of them replaced by "": the unconditional prediction
    that classifier-free guidance needs is learned from those."""
    import torch

    drop = torch.rand(len(captions), generator=generator) < PROMPT_DROPOUT
    return ["" if d else c for c, d in zip(captions, drop.tolist())]


def unet_loss(unet, text_encoder, vae, noise_schedule, images, captions, generator, power=1.0, cap=1.0):
    """ε-prediction loss of one batch (captions already through drop_captions)."""
    import torch

    device = images.device
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        latents = posterior.sample(generator=generator) * vae.config.scaling_factor  # (N, 4, 16, 16)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    total = noise_schedule.config.num_train_timesteps
    u = torch.rand(len(captions), generator=generator)
    steps = (total * u ** (1 / power)).long().clamp(max=total - 1)
    noisy = noise_schedule.add_noise(latents, noise, steps.to(device))
    context = text_encoder(token_ids(captions).to(device)).last_hidden_state  # (N, 77, 32)
    predicted = unet(noisy, steps.to(device), encoder_hidden_states=context).sample
    alpha = noise_schedule.alphas_cumprod[steps]
    weight = ((1 - alpha) / alpha).clamp(min=1, max=cap).to(device)  # 1/SNR, capped
    return (weight.view(-1, 1, 1, 1) * (predicted - noise) ** 2).mean()



def train_unet(unet, text_encoder, vae, plan: Plan, state: dict, history: History, progress: Callable) -> None:
    schedule = noise_schedule()
    focused = round(plan.focus_share * plan.unet_steps)  # steps that favour the noisy end

    def loss_of(step, generator):
        images, captions = image_batch(plan.unet_batch, generator, plan.device)
        power, cap = (plan.timestep_power, plan.loss_weight_cap) if step < focused else (1.0, 1.0)
        return unet_loss(unet, text_encoder, vae, schedule, images, drop_captions(captions, generator), generator, power, cap)

    train_together("unet", unet, text_encoder, plan, state, history, progress, loss_of)


def train_together(stage: str, unet, text_encoder, plan: Plan, state: dict, history: History, progress: Callable,
                   loss_of: Callable) -> None:
    """The UNet and the text encoder trained as one (stages 2 and 3): AdamW, gradients clipped, the
    exponential moving averages updated after every step."""
    import torch

    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=getattr(plan, f"{stage}_lr"), weight_decay=0.01)

    def averages() -> None:
        for ema, model in zip(state["ema"], (unet, text_encoder)):
            ema.step(model.parameters())

    unet.train()
    text_encoder.train()
    train_steps(stage, plan, state, history, progress, optimizer, loss_of, clip=params, after=averages)
    unet.eval()
    text_encoder.eval()


# -- stage 3: where the words look ----------------------------------------------------------------------


class WordAttention:
    """While the UNet trains: every cross-attention's weights, (B, N, 77) averaged over heads, kept with
    their gradients. The recording processor hands over each layer's query and key; the attention
    itself stays the stock computation."""

    def __init__(self, unet):
        from explorer.capture.attention import cross_attention

        self.layers = cross_attention(unet)
        self.maps: list = []

    def install(self) -> Callable[[], None]:
        from explorer.capture.attention import hand_over_cross_attention

        return hand_over_cross_attention(self.layers, lambda path: self._keep)

    def _keep(self, query, key, scale, mask) -> None:
        from explorer.capture.attention import attention_weights

        self.maps.append(attention_weights(query, key, scale, mask))  # (B, N, 77)


@lru_cache(maxsize=None)
def _word_ids(word: str) -> frozenset[int]:
    from explorer.tokenizer import clip_tokenizer

    return frozenset(clip_tokenizer()(word, add_special_tokens=False).input_ids)


def grounded_tokens(specs, captions: list[str]):
    """(N, 77): 1 at the tokens of each caption's colour and shape words; a dropped caption has none."""
    import torch

    rows = []
    for spec, caption in zip(specs, captions):
        words = _word_ids(spec.colour) | _word_ids(spec.shape) if caption else frozenset()
        rows.append([float(t in words) for t in _caption_ids(caption)])
    return torch.tensor(rows)


def grounding_loss(maps: list, coverage, words):
    """TokenCompose's token loss (Wang et al., CVPR 2024), averaged over the cross-attention layers:
    for each grounded word, 1 − the share of its attention that falls on its shape.

    maps: (B, N, 77) per layer, N = h·w; coverage: (B, 1, H, W), each pixel's share covered by the
    shape; words: (B, 77), the tokens to ground. A layer's mask is the coverage averaged over the
    patch each of its N positions sees (soft edges at every resolution)."""
    import torch
    import torch.nn.functional as F

    count = words.sum()
    if not maps or count == 0:
        return torch.zeros((), device=words.device)
    losses = []
    for probs in maps:
        side = round(probs.shape[1] ** 0.5)  # square images: a (side, side) feature map
        mask = F.adaptive_avg_pool2d(coverage, side).flatten(1)  # (B, N)
        inside = torch.einsum("bnt,bn->bt", probs, mask)  # (B, 77): attention on the shape
        share = inside / probs.sum(dim=1).clamp(min=1e-12)  # (B, 77)
        losses.append(((1 - share) * words).sum() / count)
    return torch.stack(losses).mean()


def train_ground(unet, text_encoder, vae, plan: Plan, state: dict, history: History, progress: Callable) -> None:
    """Stage 3: the noise loss as in stage 2's last part (uniform timesteps, unweighted), plus
    `ground_weight` × the grounding loss of the colour and shape words."""
    from explorer.micro.data import draw_with_coverage, random_specs

    schedule = noise_schedule()
    words = WordAttention(unet)

    def loss_of(step, generator):
        specs, captions = random_specs(plan.unet_batch, generator)
        images, coverage = draw_with_coverage(specs, generator)
        captions = drop_captions(captions, generator)
        words.maps.clear()
        noise = unet_loss(unet, text_encoder, vae, schedule, images.to(plan.device), captions, generator)
        grounding = grounding_loss(words.maps, coverage.to(plan.device), grounded_tokens(specs, captions).to(plan.device))
        return noise + plan.ground_weight * grounding

    undo = words.install()
    try:
        train_together("ground", unet, text_encoder, plan, state, history, progress, loss_of)
    finally:
        undo()


def noise_schedule():
    """SD1.5's training noise schedule (1000 steps, scaled-linear betas), from its scheduler config."""
    from diffusers import DDPMScheduler

    from explorer.specs import MICRO

    return DDPMScheduler.from_config(dict(MICRO.scheduler))


# -- building, checkpoints, output --------------------------------------------------------------------


def build_models(seed: int) -> dict[str, Any]:
    """The micro preset's three models with their default initialisation, seeded."""
    import torch

    from explorer.loading import build_fresh
    from explorer.specs import MICRO

    torch.manual_seed(seed)
    models = {c: build_fresh(c, MICRO.config(c)) for c in ("vae", "unet", "clip")}  # on the CPU; run() moves them
    # SD's text encoder came pretrained (OpenAI's CLIP): "left" and "right" are far apart in it from
    # the start. Ours starts from token embeddings of standard deviation TOKEN_STD (CLIP draws them at
    # 0.02): words then stand out from the start, and the UNet can learn what "left" means instead of
    # waiting for two nearly equal states to drift apart (at 0.02 it never learned the positions).
    models["clip"].get_input_embeddings().weight.data.normal_(0.0, TOKEN_STD)
    # A trained SD VAE encodes with a narrow posterior: a sample barely differs from the mean. A fresh
    # one starts at log-variance 0 (standard deviation 1, larger than its latents), and with a KL
    # weight of 1e-6 nothing pushes that down fast: the decoder learned from such noisy samples to
    # blur red, orange and yellow into one another. Ours starts narrow: standard deviation e^-4 ≈ 0.02.
    models["vae"].quant_conv.bias.data[LATENT_CHANNELS:] = LOGVAR_START
    return models


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: Path, stage: str, models: dict, state: dict, history: History, plan: Plan) -> None:
    """Everything needed to resume, written whole or not at all (a plain dict of tensors and numbers:
    it loads with torch.load(weights_only=True))."""
    import io

    import torch

    from explorer.files import write_atomic

    payload = {
        "stage": stage,
        "plan": _settings(plan),
        "history": asdict(history),
        "models": {name: model.state_dict() for name, model in models.items()},
        "optimizer": state.get("optimizer"),
        "ema": [ema.state_dict() for ema in state.get("ema") or []],
        "scaling": models["vae"].config.scaling_factor if stage != "vae" else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(folder / CHECKPOINT, buffer.getvalue())


def _settings(plan: Plan) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint."""
    return {k: v for k, v in asdict(plan).items() if k not in ("out", "device", "evaluate_seeds")}


def load_checkpoint(folder: Path, plan: Plan) -> dict | None:
    import torch

    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExplorerError(f"{path} is not a readable checkpoint ({exc.__class__.__name__}); delete it to start over.") from None
    saved = payload["plan"]
    mine = _settings(plan)
    if saved != mine:
        changed = ", ".join(k for k in mine if saved.get(k) != mine[k])
        raise ExplorerError(
            f"{path} was written by a run with other settings ({changed}); resume with the same settings, "
            "or delete it to start over."
        )
    return payload


def restore(saved: dict, models: dict, history: History, state: dict, decay: float) -> str:
    """Put a checkpoint back into the models, the history and the training state; its stage."""
    for name, weights in saved["models"].items():
        models[name].load_state_dict(weights)
    for key, value in saved["history"].items():
        setattr(history, key, value)
    if saved.get("scaling") is not None:
        models["vae"].register_to_config(scaling_factor=saved["scaling"])
    state["optimizer"] = saved["optimizer"]
    if saved["stage"] in ("unet", "ground"):
        state["ema"] = new_ema(models, decay)
        for ema, weights in zip(state["ema"], saved["ema"]):
            ema.load_state_dict(weights)
    return saved["stage"]


def new_ema(models: dict, decay: float) -> list:
    """Exponential moving averages of the UNet's and the text encoder's weights, warming up (diffusers'
    EMAModel): early on the average follows the weights closely, later it smooths over ~1/(1-decay) steps."""
    from diffusers.training_utils import EMAModel

    return [EMAModel(models[name].parameters(), decay=decay, use_ema_warmup=True, power=3 / 4) for name in ("unet", "clip")]


class StopAfterStep:
    """Ctrl-C during training: finish the step running, write a checkpoint, stop. A second Ctrl-C
    stops at once (the last checkpoint stays)."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        import signal

        if self.requested:
            signal.signal(signal.SIGINT, self.previous)
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class Interrupted(Exception):
    """Training stopped on Ctrl-C after writing a checkpoint."""


def check_output(folder: Path) -> None:
    from explorer.files import check_writable, make_folder

    check_writable(folder, "the trained model")
    if (folder / "model_index.json").is_file() and not (folder / CHECKPOINT).is_file():
        raise ExplorerError(f"{folder} already holds a trained model: choose another folder, or delete it to train again.")
    make_folder(folder)


def run(plan: Plan, progress: Callable[[str, int, float], None] = lambda stage, step, loss: None) -> dict:
    """Train (or resume), write the model folder, and return what micro.json records."""
    plan.check()
    check_output(plan.out)
    models = build_models(plan.seed)
    history, state = History(), {}
    saved = load_checkpoint(plan.out, plan)
    stage = restore(saved, models, history, state, plan.ema_decay) if saved else "vae"
    for done in STAGES:  # a resumed run shows how far each stage got
        if getattr(history, done):
            progress(done, len(getattr(history, done)), getattr(history, done)[-1])
    for model in models.values():
        model.to(plan.device)
    for ema in state.get("ema") or []:
        ema.to(plan.device)
    stop = StopAfterStep()

    def save() -> None:
        save_checkpoint(plan.out, stage, models, state, history, plan)
        if stop.requested:
            raise Interrupted()

    state["save"] = save
    with stop:
        wrapped = _stopping(progress, stop, save)
        if stage == "vae":
            _timed(history, "vae", lambda: train_vae(models["vae"], plan, state, history, wrapped))
            models["vae"].register_to_config(scaling_factor=measure_scaling(models["vae"], plan))
            stage, state["optimizer"], state["ema"] = "unet", None, new_ema(models, plan.ema_decay)
            save()
        if stage == "unet":
            _timed(history, "unet", lambda: train_unet(models["unet"], models["clip"], models["vae"], plan, state, history, wrapped))
            keep_averages(state, models)  # stage 3 starts from stage 2's averaged weights
            stage, state["optimizer"], state["ema"] = "ground", None, new_ema(models, plan.ema_decay)
            save()
        _timed(history, "ground", lambda: train_ground(models["unet"], models["clip"], models["vae"], plan, state, history, wrapped))
    keep_averages(state, models)
    return finish(plan, models, history)


def keep_averages(state: dict, models: dict) -> None:
    """The exponential moving averages become the UNet's and the text encoder's weights."""
    for ema, name in zip(state["ema"], ("unet", "clip")):
        ema.copy_to(models[name].parameters())


def _stopping(progress: Callable, stop: StopAfterStep, save: Callable) -> Callable:
    """The progress callback, which also writes a checkpoint and stops once Ctrl-C was pressed."""

    def report(stage: str, step: int, loss: float) -> None:
        progress(stage, step, loss)
        if stop.requested:
            save()

    return report


def _timed(history: History, stage: str, work: Callable[[], None]) -> None:
    started = time.perf_counter()
    try:
        work()
    finally:
        history.seconds[stage] = round(history.seconds.get(stage, 0.0) + time.perf_counter() - started, 1)


# -- the output folder ---------------------------------------------------------------------------------

SCHEMA = "sd-explorer/micro@1"
STAGES = ("vae", "unet", "ground")


def finish(plan: Plan, models: dict, history: History) -> dict:
    """Write the diffusers folder, micro.json, loss.png and (unless asked not to) evaluation.md."""
    from explorer.micro import data

    for model in models.values():
        model.to("cpu")
    write_pipeline(plan.out, models)
    info = {
        "schema": SCHEMA,
        "image_size": data.IMAGE_SIZE,
        "vocabulary": data.vocabulary(),
        "held_out": [list(c) for c in data.HELD_OUT],
        "scaling_factor": models["vae"].config.scaling_factor,
        "plan": _settings(plan),
        "command": command_line(plan),
        "seconds": history.seconds,
        "final_loss": {stage: _tail_mean(getattr(history, stage)) for stage in STAGES},
        "loss": {stage: getattr(history, stage) for stage in STAGES},
    }
    from explorer.versions import package_versions

    info["versions"] = package_versions()
    info["latent_rgb"] = latent_colours(models["vae"], plan)
    write_json(plan.out / "micro.json", info)
    plot_loss(history, plan.out / "loss.png")
    if plan.evaluate_seeds:
        from explorer.micro.evaluate import evaluate, to_markdown

        result = evaluate(str(plan.out), seeds=plan.evaluate_seeds, guidances=(7.5,), device=plan.device)
        (plan.out / "evaluation.md").write_text(to_markdown(result))
        info["evaluation"] = result.summary()
        write_json(plan.out / "micro.json", info)
    (plan.out / CHECKPOINT).unlink(missing_ok=True)
    return info


def latent_colours(vae, plan: Plan) -> list[list[float]]:
    """The latent -> RGB map for previews, fitted on this VAE's latents (SD1.x's does not fit ours)."""
    import torch

    from explorer.previews import fit_latent_rgb

    generator = step_generator(plan.seed, "scale", 1)
    images, _ = image_batch(256, generator)
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    return fit_latent_rgb(latents, images)


def write_pipeline(folder: Path, models: dict) -> None:
    """The models as a diffusers StableDiffusionPipeline folder, with SD1.5's tokenizer and PNDM."""
    from diffusers import PNDMScheduler

    from explorer.specs import MICRO
    from explorer.tokenizer import clip_tokenizer
    from explorer.generation import pipeline_class

    pipe = pipeline_class()(
        vae=models["vae"],
        text_encoder=models["clip"],
        tokenizer=clip_tokenizer(),
        unet=models["unet"],
        scheduler=PNDMScheduler.from_config(dict(MICRO.scheduler)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    as_in_sd15(folder / "tokenizer")


def as_in_sd15(tokenizer: Path) -> None:
    """The tokenizer folder laid out as SD1.5's own: vocab.json and merges.txt (1.5 MB) instead of the
    tokenizers library's tokenizer.json (3.6 MB, the same vocabulary and merges, which transformers
    rebuilds from the two files when it loads them)."""
    from explorer.files import write_atomic

    fast = json.loads((tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    write_atomic(tokenizer / "vocab.json", json.dumps(fast["model"]["vocab"], ensure_ascii=False).encode("utf-8"))
    merges = [" ".join(pair) for pair in fast["model"]["merges"]]
    write_atomic(tokenizer / "merges.txt", ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8"))
    config = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("backend", None)
    write_atomic(tokenizer / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    (tokenizer / "tokenizer.json").unlink()


def write_json(path: Path, data: dict) -> None:
    from explorer.files import write_atomic

    write_atomic(path, json.dumps(data, indent=1) + "\n")


def _tail_mean(values: list[float], last: int = 100) -> float:
    tail = values[-last:]
    return round(sum(tail) / len(tail), 5) if tail else 0.0


def command_line(plan: Plan) -> str:
    """The command that trains with `plan`, naming only what differs from the defaults."""
    default = Plan(out=plan.out)
    words = ["python -m explorer.micro.train", f"--out {plan.out}"]
    for key, value in asdict(plan).items():
        if key != "out" and value != getattr(default, key):
            words.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(words)


def smooth(values: list[float], window: int) -> list[float]:
    """The running mean over `window` steps (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss(history: History, path: Path) -> bool:
    """loss.png: every stage's loss per step, smoothed. False when matplotlib is not installed."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return False
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from explorer.files import write_atomic

    stages = [stage for stage in STAGES if getattr(history, stage)]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), dpi=110, squeeze=False)
    titles = {"vae": "1. VAE: L1 + squared reconstruction (+ KL)", "unet": "2. UNet + text encoder: noise MSE",
              "ground": "3. Where words look: noise MSE + grounding"}
    axes = axes[0]
    for ax, stage in zip(axes, stages):
        values = getattr(history, stage)
        ax.plot(values, color="#c8d3e0", linewidth=0.6, label="per step")
        ax.plot(smooth(values, 50), color="#2f6db5", linewidth=1.6, label="mean of 50 steps")
        ax.set_title(titles[stage], fontsize=11)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False)
    minutes = sum(history.seconds.values()) / 60
    fig.suptitle(f"Training the micro SD ({minutes:.0f} min)", fontsize=12)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return True


# -- the command ---------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> Plan:
    import argparse

    default = Plan(out=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m explorer.micro.train",
        description="Train the micro SD (a VAE, then the UNet and text encoder, then where their words look) on "
        "generated shapes; "
        "write a diffusers folder that `explore generate --model FOLDER` uses. Ctrl-C writes a checkpoint: "
        "the same command resumes.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder to write the model into")
    for key, value in asdict(default).items():
        if key != "out":
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value, help=f"[{value}]")
    return Plan(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    try:
        plan = parse(argv)
        plan.check()
        check_output(plan.out)  # before anything is built: a folder that cannot be written costs nothing
        info = _run_with_progress(plan, err)
    except ExplorerError as exc:
        err.print(f"[bold red]Error:[/] {exc}")
        raise SystemExit(2) from None
    except Interrupted:
        err.print(f"[yellow]Stopped; checkpoint written to {plan.out / CHECKPOINT}. The same command resumes.[/]")
        raise SystemExit(130) from None
    minutes = sum(info["seconds"].values()) / 60
    err.print(f"[green]Done[/] in {minutes:.1f} min: {plan.out} (scaling factor {info['scaling_factor']}).")
    if "evaluation" in info:
        err.print((plan.out / "evaluation.md").read_text())


def _run_with_progress(plan: Plan, err) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err) as bar:
        tasks = {
            "vae": bar.add_task("1. VAE", total=plan.vae_steps, loss="…"),
            "unet": bar.add_task("2. UNet + text encoder", total=plan.unet_steps, loss="…"),
            "ground": bar.add_task("3. Where words look", total=plan.ground_steps, loss="…"),
        }
        recent: dict[str, list[float]] = {stage: [] for stage in STAGES}

        def progress(stage: str, step: int, loss: float) -> None:
            recent[stage] = (recent[stage] + [loss])[-50:]
            mean = sum(recent[stage]) / len(recent[stage])
            bar.update(tasks[stage], completed=step, loss=f"{mean:.4f}")

        return run(plan, progress)


if __name__ == "__main__":
    main()
