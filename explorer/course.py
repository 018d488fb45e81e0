"""The course's computations: diffusion in one page, and the VAE's theory, on micro's real weights.

docs/diffusion.md with notebooks/00_diffusion.ipynb (part 0) and docs/vae.md with
notebooks/02_vae.ipynb (part 2) show what these functions compute. Each is small and returns plain
things — tensors, numbers, PIL images — so that a notebook can call them one cell at a time:

    >>> from explorer import course
    >>> pipe = course.micro_pipeline()                  # micro's real StableDiffusionPipeline
    >>> z0 = course.encode(pipe, course.draw("red", "circle", "left"))   # its latent, (1, 4, 16, 16)
    >>> eps = course.noise(z0.shape, seed=0)            # ε ~ N(0, I)
    >>> x_t = course.add_noise(z0, eps, 500)            # √ᾱ_t·z0 + √(1−ᾱ_t)·ε
    >>> course.decode(pipe, x_t)[0]                     # what the VAE's decoder makes of it

The symbols, as the docs define them: t the timestep (0: clean, 999: almost pure noise); ε the noise,
drawn from N(0, I); ᾱ_t ("alpha bar") the share of x_t's variance that is signal; z0 the clean
latent; x_t the noisy one; ε̂ the UNet's prediction of ε, and x̂0 the clean latent it implies.

`FIGURES` makes the pictures of docs/figures/: each figure computes its data here, keeps the numbers
it is drawn from (`Figure.numbers`, quoted in the docs and compared by the tests) and draws itself
with matplotlib (`Figure.draw()`, a PIL image). `scripts/course_figures.py` writes them (`make diagrams`).
"""

from __future__ import annotations

import functools
import io
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

PROMPT = "a red circle on the left"  # the running example, as in docs/generation.md
SEED = 3  # the seed of its generation
TIMESTEPS = (100, 500, 900)  # where the course looks at a noisy latent


# -- micro, loaded the explorer's way ------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def micro_pipeline():
    """micro's real diffusers StableDiffusionPipeline: its UNet, VAE and text encoder, SD1.5's tokenizer
    and SD1.5's scheduler (PNDM). Built once per process."""
    from explorer.generation import Settings, build_pipeline

    return build_pipeline(Settings(prompt=PROMPT, model="micro")).pipe


def draw(colour: str, shape: str, position: str, size: str = "large", seed: int = 3) -> torch.Tensor:
    """One of micro's training images, (1, 3, 64, 64) in [-1, 1], drawn from what it shows."""
    from explorer.micro import data

    return data.draw([data.Spec(colour, shape, position, size)], torch.Generator().manual_seed(seed))


def training_images(count: int, seed: int = 0) -> torch.Tensor:
    """`count` of micro's training images (random colours, shapes, positions, sizes), (count, 3, 64, 64)."""
    from explorer.micro import data

    specs, _ = data.random_specs(count, torch.Generator().manual_seed(seed))
    return data.draw(specs, torch.Generator().manual_seed(seed))


def to_pil(images: torch.Tensor) -> list:
    """(B, 3, H, W) in [-1, 1] -> B PIL images."""
    from explorer.micro import data

    return data.to_pil(images)


def noise(shape, seed: int) -> torch.Tensor:
    """ε ~ N(0, I): every value independent, mean 0, standard deviation 1, from a seeded generator."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def encode(pipe, images: torch.Tensor) -> torch.Tensor:
    """The latent the UNet works on: the VAE encoder's mean (no sampling) times the scaling factor."""
    with torch.no_grad():
        return pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor


def decode(pipe, latents: torch.Tensor) -> list:
    """What the VAE's decoder makes of (scaled) latents: divided by the scaling factor, decoded, as PIL images."""
    with torch.no_grad():
        return to_pil(pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample)


def embed(pipe, prompt: str | list[str], negative: str = "") -> torch.Tensor:
    """The text encoder's output for the negative prompt and the prompt, (2, 77, C), by the pipeline's
    own `encode_prompt`, stacked the way the pipeline stacks them: the negative prompt first. For B
    prompts, (2B, 77, C): the B negative prompts, then the B prompts."""
    negatives = negative if isinstance(prompt, str) else [negative] * len(prompt)
    with torch.no_grad():
        positive, negative_embeds = pipe.encode_prompt(prompt, "cpu", 1, True, negatives)
    return torch.cat([negative_embeds, positive])


# -- diffusion ------------------------------------------------------------------------------------------


def sd15_scheduler():
    """SD1.5's own scheduler from its config: PNDM, 1000 training steps, scaled-linear β from 0.00085 to 0.012."""
    import diffusers

    from explorer.specs import SD15

    return diffusers.PNDMScheduler.from_config(dict(SD15.scheduler))


@functools.lru_cache(maxsize=1)
def alpha_bar() -> torch.Tensor:
    """ᾱ_t for t = 0 … 999, (1000,): the product of (1 − β_s) for every s ≤ t, SD1.5's schedule."""
    return sd15_scheduler().alphas_cumprod


def add_noise(z0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """x_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε: the clean latent z0 noised to timestep t, in one go (what training does)."""
    a = alpha_bar()[t]
    return a.sqrt() * z0 + (1 - a).sqrt() * eps


def x0_from_noise(x_t: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t: the clean latent a noise prediction implies (x_t's formula solved for z0)."""
    a = alpha_bar()[t]
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
    """One step from t down to t_next: the clean latent the prediction implies, noised again to the lower
    level t_next with the same predicted noise, √ᾱ_t_next·x̂0 + √(1−ᾱ_t_next)·ε̂."""
    a_next = alpha_bar()[t_next]
    return a_next.sqrt() * x0_from_noise(x_t, eps, t) + (1 - a_next).sqrt() * eps


def predict_noise(pipe, x_t: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
    """ε̂: the UNet's prediction of the noise in x_t (B, 4, h, w) at timestep t, for each row of
    `embeddings`; the latents are repeated to match, so one latent and (2, 77, C) embeddings make one
    call of batch 2, as the pipeline's torch.cat([latents] * 2) does."""
    batch = embeddings.shape[0]
    with torch.no_grad():
        return pipe.unet(x_t.repeat(batch // len(x_t), 1, 1, 1), torch.full((batch,), int(t)),
                         encoder_hidden_states=embeddings).sample


def guide(uncond: torch.Tensor, cond: torch.Tensor, guidance) -> torch.Tensor:
    """Classifier-free guidance: ε̂ = ε̂_uncond + w·(ε̂_cond − ε̂_uncond), w the guidance scale."""
    return uncond + guidance * (cond - uncond)


@dataclass
class Denoising:
    """The loop, written out: what each UNet call saw, and the clean latent its prediction implied."""

    timesteps: list[int]  # one per UNet call (PNDM repeats its second one)
    latents: list  # x_t going into each call, and at the end the final latent
    x0: list  # x̂0 of each call's guided prediction
    final: torch.Tensor  # the last latent, (B, 4, h, w): what the VAE decodes


def denoise(pipe, prompt: str | list[str] = PROMPT, seed: int = SEED, steps: int = 20, guidance=7.5,
            negative: str = "", start: torch.Tensor | None = None) -> Denoising:
    """Text-to-image by hand, the way StableDiffusionPipeline does it: pure noise, then `steps` steps
    of the scheduler (PNDM's PLMS), each after one UNet call on the latent doubled for classifier-free
    guidance. `start`: the noise to start from, (B, 4, h, w); by default the pipeline's own for `seed`.
    Several prompts (and a guidance scale per prompt, shaped (B, 1, 1, 1)) run side by side in one batch."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # a fresh one: PLMS keeps state
    scheduler.set_timesteps(steps)
    embeddings = embed(pipe, prompt, negative)  # (2B, 77, C): the negative prompts, then the prompts
    if start is None:  # the pipeline's own noise for this seed
        size, count = pipe.unet.config.sample_size, 1 if isinstance(prompt, str) else len(prompt)
        start = noise((count, pipe.unet.config.in_channels, size, size), seed)
    x = start * scheduler.init_noise_sigma  # pure noise (PNDM's sigma is 1)
    timesteps, latents, x0 = [], [], []
    for t in scheduler.timesteps:
        uncond, cond = predict_noise(pipe, x, t, embeddings).chunk(2)  # one UNet call, the latents doubled
        eps = guide(uncond, cond, guidance)  # classifier-free guidance
        timesteps.append(int(t))
        latents.append(x)
        x0.append(x0_from_noise(x, eps, int(t)))
        x = scheduler.step(eps, t, x).prev_sample  # PLMS: to the next, lower timestep
    return Denoising(timesteps, latents + [x], x0, x)


def timestep_errors(pipe, z0: torch.Tensor, eps: torch.Tensor, true_t: int, told: list[int],
                    prompt: str = PROMPT) -> list[float]:
    """How far the UNet's noise prediction is from the noise (mean squared error) when x_t was noised to
    `true_t` and the UNet is told each timestep of `told` instead (one call, a batch of len(told))."""
    x_t = add_noise(z0, eps, true_t)
    embeddings = embed(pipe, prompt)[1:].expand(len(told), -1, -1)
    with torch.no_grad():
        predicted = pipe.unet(x_t.expand(len(told), -1, -1, -1), torch.tensor(told),
                              encoder_hidden_states=embeddings).sample
    return [float(((p - eps[0]) ** 2).mean()) for p in predicted]


# -- the VAE's theory -----------------------------------------------------------------------------------


def posterior(pipe, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's distribution for each image: its mean and its log-variance, (B, 4, h, w) each,
    before the scaling factor."""
    with torch.no_grad():
        dist = pipe.vae.encode(images).latent_dist
    return dist.mean, dist.logvar


def kl_to_prior(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, σ²) ‖ N(0, 1)) per latent value, ½·(mean² + σ² − 1 − log σ²): the VAE's KL term before
    it is summed over the latent and weighted."""
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar)


def reparameterized(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + σ·ε with σ = exp(0.5·logvar): a sample of N(mean, σ²) whose randomness is all in ε."""
    return mean + torch.exp(0.5 * logvar) * eps


def walk(a: torch.Tensor, b: torch.Tensor, count: int = 8) -> torch.Tensor:
    """`count` latents on the straight line from a to b, both ends included, (count, ...)."""
    return torch.cat([a + (b - a) * k / (count - 1) for k in range(count)])


# -- drawing --------------------------------------------------------------------------------------------

DPI = 100
WIDTH = 8.4  # a chart's width in inches: 840 px, readable in the docs and in a notebook's cell


def _figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure  # not pyplot: nothing global, no window

    return MplFigure(figsize=(width, height), dpi=DPI, layout="constrained")


def _image(fig) -> Image.Image:
    """The matplotlib figure as a PIL image (RGB), cropped to what it draws."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.08)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def pictures(rows: list[list], titles: list[list[str]], row_labels: list[str] | None = None, title: str = "",
             size: float = 1.5) -> Image.Image:
    """A grid of pictures with their titles: PIL images, or 2-D tensors (a latent channel) drawn in a
    diverging map, red positive and blue negative, all on the same scale (−3 to 3)."""
    columns = max(len(r) for r in rows)
    fig = _figure(columns * size + (1.0 if row_labels else 0), len(rows) * (size + 0.4) + (0.3 if title else 0))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for i, row in enumerate(rows):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(row):
                continue
            if isinstance(row[j], Image.Image):
                ax.imshow(np.asarray(row[j].convert("RGB")), interpolation="nearest")
            else:
                ax.imshow(np.asarray(row[j]), cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
            ax.set_title(titles[i][j], fontsize=9)
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=9, rotation=0, ha="right", va="center", labelpad=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return _image(fig)


def _chart(height: float = 3.2):
    fig = _figure(WIDTH, height)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


# -- the figures ----------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One picture of docs/figures/: the numbers it is drawn from, and how to draw it."""

    name: str  # the file's name without .png: "diffusion-0.1-noising"
    numbers: dict[str, Any]  # what the docs quote (by key) and the tests compare; "pictures": each panel's mean colour
    draw: Callable[[], Image.Image] = field(repr=False)


def _mean_colours(images: list) -> list[list[float]]:
    """Each picture's mean R, G, B (0–255), one decimal: how the tests tell that a picture is still the same."""
    return [[round(float(v), 1) for v in np.asarray(image, dtype=np.float64).mean(axis=(0, 1))] for image in images]


def _example(pipe):
    """The running example: an image of a red circle on the left, its latent z0, and the noise ε (seed 0)."""
    image = draw("red", "circle", "left")
    z0 = encode(pipe, image)
    return image, z0, noise(z0.shape, seed=0)


def figure_noising(pipe) -> Figure:
    image, z0, eps = _example(pipe)
    decoded = decode(pipe, torch.cat([z0] + [add_noise(z0, eps, t) for t in TIMESTEPS]))
    a = alpha_bar()
    numbers = {"z0_std": round(float(z0.std()), 2)}
    for t in TIMESTEPS:
        numbers.update({f"alpha_bar_{t}": round(float(a[t]), 3), f"signal_{t}": round(float(a[t].sqrt()), 3),
                        f"noise_{t}": round(float((1 - a[t]).sqrt()), 3)})
    numbers["pictures"] = _mean_colours(decoded)
    titles = ["the image", "t = 0: z0, decoded"] + [f"t = {t}: ᾱ_t = {float(a[t]):.3f}" for t in TIMESTEPS]
    return Figure("diffusion-0.1-noising", numbers, lambda: pictures(
        [to_pil(image) + decoded], [titles],
        title="x_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε: the noise is added to the latent; each x_t is shown decoded by micro's VAE"))


def figure_schedule(pipe=None) -> Figure:
    a = alpha_bar().numpy()
    numbers = {"alpha_bar_0": round(float(a[0]), 5), "alpha_bar_999": round(float(a[999]), 5),
               "signal_999": round(float(np.sqrt(a[999])), 3), "half_signal_at": int(np.argmin(np.abs(a - 0.5)))}

    def render():
        fig, ax = _chart()
        t = np.arange(len(a))
        ax.plot(t, a, color="black", label="ᾱ_t: the share of x_t's variance that is signal")
        ax.plot(t, np.sqrt(a), color="tab:blue", ls="--", label="√ᾱ_t: how much of z0 is in x_t")
        ax.plot(t, np.sqrt(1 - a), color="tab:red", ls="--", label="√(1−ᾱ_t): how much of ε is in x_t")
        for s in TIMESTEPS:
            ax.plot([s], [a[s]], "o", color="black")
            ax.annotate(f"t = {s}: ᾱ_t = {a[s]:.3f}", (s, a[s]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_xlabel("timestep t"), ax.set_xlim(0, 999), ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, frameon=False, loc="center right")
        ax.set_title("SD1.5's noise schedule, micro's too: scaled-linear β from 0.00085 to 0.012", fontsize=10)
        return _image(fig)

    return Figure("diffusion-0.2-schedule", numbers, render)


def figure_prediction(pipe) -> Figure:
    _, z0, eps = _example(pipe)
    prompt = embed(pipe, PROMPT)[1:]
    numbers: dict[str, Any] = {}
    predictions = {}
    for t in TIMESTEPS:
        predictions[t] = predict_noise(pipe, add_noise(z0, eps, t), t, prompt)
        numbers[f"eps_mse_{t}"] = round(float(((predictions[t] - eps) ** 2).mean()), 4)
        correlation = torch.corrcoef(torch.stack([predictions[t].flatten(), eps.flatten()]))[0, 1]
        numbers[f"eps_corr_{t}"] = round(float(correlation), 3)
    shown = predictions[500]
    rows = [list(eps[0]), list(shown[0]), list((shown - eps)[0])]
    titles = [[f"{name}, channel {c}" for c in range(4)] for name in ("ε", "ε̂", "ε̂ − ε")]
    return Figure("diffusion-0.3-prediction", numbers, lambda: pictures(
        rows, titles, ["the noise\nadded", "micro's\nprediction", "the\ndifference"], size=1.45,
        title="t = 500: the noise in x_t and micro's prediction of it, channel by channel "
              "(16×16; red +, blue −, one scale)"))


def figure_x0(pipe) -> Figure:
    _, z0, eps = _example(pipe)
    prompt = embed(pipe, PROMPT)[1:]
    noisy = [add_noise(z0, eps, t) for t in TIMESTEPS]
    clean = [x0_from_noise(x_t, predict_noise(pipe, x_t, t, prompt), t) for x_t, t in zip(noisy, TIMESTEPS)]
    numbers: dict[str, Any] = {}
    for t, x0 in zip(TIMESTEPS, clean):
        a = alpha_bar()[t]
        numbers[f"x0_error_{t}"] = round(float(((x0 - z0) ** 2).mean().sqrt()), 3)
        numbers[f"x0_gain_{t}"] = round(float(((1 - a) / a).sqrt()), 2)
    top, bottom = decode(pipe, torch.cat(noisy)), decode(pipe, torch.cat(clean))
    numbers["pictures"] = _mean_colours(top + bottom)
    titles = [[f"x_t, t = {t}" for t in TIMESTEPS], [f"x̂0 from t = {t}" for t in TIMESTEPS]]
    return Figure("diffusion-0.4-x0", numbers, lambda: pictures(
        [top, bottom], titles, ["what the\nUNet sees", "the clean\nlatent its\nprediction\nimplies"], size=1.7,
        title="x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t, decoded"))


@functools.lru_cache(maxsize=2)
def _running_example(pipe) -> Denoising:
    """The running example's generation: PROMPT, seed SEED, 20 steps at guidance 7.5 (made once)."""
    return denoise(pipe)


def figure_step(pipe) -> Figure:
    run = _running_example(pipe)
    k = run.timesteps.index(501)  # half-way down: from t = 501 to t = 451
    t, t_next, x_t = run.timesteps[k], run.timesteps[k + 1], run.latents[k]
    uncond, cond = predict_noise(pipe, x_t, t, embed(pipe, PROMPT)).chunk(2)
    eps = guide(uncond, cond, 7.5)
    after = step(x_t, eps, t, t_next)
    pndm = type(pipe.scheduler).from_config(pipe.scheduler.config)
    pndm.set_timesteps(20)
    theirs = pndm._get_prev_sample(x_t, t, t_next, eps)  # PNDM's own step from one prediction
    a = alpha_bar()
    numbers = {"step_t": t, "step_t_next": t_next, "step_index": k,
               "step_vs_pndm": float(f"{float((after - theirs).abs().max()):.0e}"),
               "signal_step": round(float(a[t].sqrt()), 3), "signal_step_next": round(float(a[t_next].sqrt()), 3)}
    numbers["step_change"] = round(float((after - x_t).pow(2).mean().sqrt() / x_t.pow(2).mean().sqrt()), 3)
    decoded = decode(pipe, torch.cat([x_t, x0_from_noise(x_t, eps, t), after]))
    numbers["pictures"] = _mean_colours(decoded)
    titles = [[f"x_t, t = {t}", "x̂0, from ε̂", f"x_t', t' = {t_next}", "x_t' − x_t, ×10\n(latent channel 0)"]]
    return Figure("diffusion-0.5-step", numbers, lambda: pictures(
        [decoded + [10 * (after - x_t)[0, 0]]], titles, size=1.8,
        title=f"One step, call {k} of the loop: x_t' = √ᾱ_t'·x̂0 + √(1−ᾱ_t')·ε̂, decoded"))


LOOP_SHOWN = (0, 4, 8, 12, 16, 20)  # the UNet calls the loop's figure shows (20 steps make 21 calls)


def figure_loop(pipe) -> Figure:
    run = _running_example(pipe)
    theirs = pipe(PROMPT, num_inference_steps=20, guidance_scale=7.5, generator=torch.Generator().manual_seed(SEED),
                  output_type="latent").images
    x_t = decode(pipe, torch.cat([run.latents[k] for k in LOOP_SHOWN] + [run.final]))
    x0 = decode(pipe, torch.cat([run.x0[k] for k in LOOP_SHOWN]))
    numbers = {"loop_calls": len(run.timesteps), "loop_timesteps": run.timesteps[:5],
               "loop_vs_pipeline": float((run.final - theirs).abs().max()), "pictures": _mean_colours(x_t + x0)}
    titles = [[f"call {k}: t = {run.timesteps[k]}" for k in LOOP_SHOWN] + ["the end"],
              [f"x̂0 at t = {run.timesteps[k]}" for k in LOOP_SHOWN]]
    return Figure("diffusion-0.6-loop", numbers, lambda: pictures(
        [x_t, x0], titles, ["x_t", "x̂0"], size=1.25,
        title=f"{PROMPT!r}, seed {SEED}: 20 PNDM steps (21 UNet calls) from pure noise to the image, decoded"))


TOLD = list(range(0, 1000, 20)) + [999]  # the timesteps the UNet is told in figure_timestep


def figure_timestep(pipe) -> Figure:
    _, z0, eps = _example(pipe)
    errors = {t: timestep_errors(pipe, z0, eps, t, TOLD) for t in TIMESTEPS}
    numbers: dict[str, Any] = {}
    for t, e in errors.items():
        numbers[f"told_best_{t}"] = TOLD[int(np.argmin(e))]
        numbers[f"told_true_{t}"] = round(e[TOLD.index(t)], 4)
        numbers[f"told_0_{t}"] = round(e[0], 3)
        numbers[f"told_999_{t}"] = round(e[-1], 3)

    def render():
        fig, ax = _chart()
        for (t, e), colour in zip(errors.items(), ("tab:green", "tab:blue", "tab:red")):
            ax.plot(TOLD, e, color=colour, label=f"x_t noised to t = {t}")
            ax.axvline(t, color=colour, ls=":", lw=1)
        ax.set_yscale("log"), ax.set_xlim(0, 999)
        ax.set_xlabel("the timestep the UNet is told"), ax.set_ylabel("mean squared error of ε̂")
        ax.legend(fontsize=8, frameon=False)
        ax.set_title("The same x_t, told another timestep: the prediction is best at the true one (dotted)",
                     fontsize=10)
        return _image(fig)

    return Figure("diffusion-0.7-timestep", numbers, render)


GUIDANCE = (0.0, 1.0, 3.0, 7.5)  # the guidance scales figure_guidance compares


def figure_guidance(pipe) -> Figure:
    same = noise((1, 4, 16, 16), SEED).repeat(len(GUIDANCE), 1, 1, 1)  # the same noise for every w, side by side
    scales = torch.tensor(GUIDANCE).view(-1, 1, 1, 1)
    decoded = decode(pipe, denoise(pipe, [PROMPT] * len(GUIDANCE), start=same, guidance=scales).final)
    _, z0, eps = _example(pipe)
    x_t, embeddings = add_noise(z0, eps, 500), embed(pipe, PROMPT)
    together = predict_noise(pipe, x_t, 500, embeddings)  # one UNet call, batch 2
    apart = torch.cat([predict_noise(pipe, x_t, 500, embeddings[k : k + 1]) for k in range(2)])  # two calls, batch 1
    numbers = {"batch2_vs_apart": float(f"{float((together - apart).abs().max()):.0e}"),
               "pictures": _mean_colours(decoded)}
    titles = [["w = 0: the empty prompt\nalone (unconditional)", "w = 1: the prompt\nalone (conditional)", "w = 3",
               "w = 7.5, SD1.5's default"]]
    return Figure("diffusion-0.8-guidance", numbers, lambda: pictures(
        [decoded], titles, size=1.9,
        title=f"{PROMPT!r}, seed {SEED}, the same noise: ε̂ = ε̂_uncond + w·(ε̂_cond − ε̂_uncond)"))


def figure_latent(pipe) -> Figure:
    image = draw("red", "circle", "left")
    z0 = encode(pipe, image)
    back = decode(pipe, z0)
    numbers = {"latent_shape": list(z0.shape), "image_values": image.numel(), "latent_values": z0.numel(),
               "pictures": _mean_colours(back)}
    rows = [to_pil(image) + list(z0[0]) + back]
    titles = [["the image, 64×64×3"] + [f"latent channel {c}\n16×16" for c in range(4)] + ["the latent, decoded"]]
    return Figure("vae-2.0-latent", numbers, lambda: pictures(
        rows, titles, size=1.35,
        title="micro's VAE: an image, its latent (scaled, as the UNet sees it; red +, blue −), and the latent decoded"))


HOLES = (("blue", "square", "right"), ("green", "triangle", "top"), ("yellow", "circle", "middle"),
         ("purple", "square", "bottom"))  # the images whose codes figure_holes and figure_walk decode


def _codes(pipe) -> torch.Tensor:
    return encode(pipe, torch.cat([draw(c, s, p, seed=k) for k, (c, s, p) in enumerate(HOLES)]))


def figure_holes(pipe) -> Figure:
    codes = _codes(pipe)
    real, made_up = decode(pipe, codes), decode(pipe, noise(codes.shape, seed=5))
    numbers = {"codes_std": round(float(codes.std()), 2), "pictures": _mean_colours(real + made_up)}
    titles = [[f"the code of a {c} {s}" for c, s, _ in HOLES], ["a random code"] * 4]
    return Figure("vae-2.1-holes", numbers, lambda: pictures(
        [real, made_up], titles, ["codes of\nimages", "random\ncodes,\nN(0, I)"], size=1.6,
        title="micro's decoder on the codes of four images, and on four random codes of the same spread"))


def figure_walk(pipe) -> Figure:
    codes = _codes(pipe)
    decoded = decode(pipe, walk(codes[:1], codes[1:2], 8))
    numbers = {"pictures": _mean_colours(decoded)}
    titles = [["the blue square"] + [f"{k}/7" for k in range(1, 7)] + ["the green triangle"]]
    return Figure("vae-2.2-walk", numbers, lambda: pictures(
        [decoded], titles, size=1.05,
        title="A straight walk from one code to another, decoded: what lies between them"))


@functools.lru_cache(maxsize=2)
def _training_posterior(pipe, count: int = 256):
    """The posteriors of `count` training images, computed once for figure_spread and figure_logvar."""
    return posterior(pipe, training_images(count))


def figure_spread(pipe) -> Figure:
    mean, logvar = _training_posterior(pipe)
    std = (0.5 * logvar).exp()
    factor = pipe.vae.config.scaling_factor
    kl = kl_to_prior(mean, logvar)
    numbers = {"means_std": round(float(mean.std()), 2), "one_over_factor": round(1 / factor, 2),
               "scaled_std": round(float((mean * factor).std()), 2), "posterior_std": round(float(std.median()), 3),
               "spread_over_posterior": int(round(float(mean.std() / std.median()), -1)),
               "kl_per_value": round(float(kl.mean()), 1),
               "kl_per_image": int(round(float(kl.sum(dim=(1, 2, 3)).mean()), -2))}

    def render():
        fig, ax = _chart()
        ax.hist(mean.flatten().numpy(), bins=120, range=(-5, 5), density=True, color="0.75",
                label=f"the means of 256 images' latent values: a standard deviation of {float(mean.std()):.2f}")
        x = np.linspace(-5, 5, 2001)
        ax.plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), color="tab:blue",
                label="N(0, 1): what the KL term asks each value's distribution to be")
        s = float(std.median())
        for k, (c, i, j) in enumerate(((0, 8, 4), (1, 3, 12), (2, 12, 8), (3, 6, 6))):  # four values of one image
            m = float(mean[0, c, i, j])
            ax.plot(x, 0.8 * np.exp(-((x - m) ** 2) / (2 * s**2)), color="tab:red", lw=1,
                    label=f"four values' own distributions: standard deviation {s:.3f} (drawn lower than they are)"
                    if k == 0 else None)
        ax.set_xlim(-5, 5), ax.set_yticks([]), ax.set_xlabel("latent value, before the scaling factor")
        ax.legend(fontsize=8, frameon=False, loc="upper left")
        ax.set_title("micro's VAE: each image's distribution is a narrow spike, far from N(0, 1)", fontsize=10)
        return _image(fig)

    return Figure("vae-2.2-spread", numbers, render)


PRIOR_PROMPTS = ("a blue square on the right", "a green triangle at the top", "a yellow circle in the middle",
                 "a purple square at the bottom")


def figure_prior(pipe) -> Figure:
    start = noise((len(PRIOR_PROMPTS), 4, 16, 16), seed=7)
    made = denoise(pipe, list(PRIOR_PROMPTS), start=start).final  # the four prompts side by side, one batch
    # decoded as it is: z itself goes into the decoder (decode divides by the factor), a sample of the VAE's prior
    direct = decode(pipe, start * pipe.vae.config.scaling_factor)
    diffused = decode(pipe, made)
    numbers = {"pictures": _mean_colours(direct + diffused)}
    titles = [["z ~ N(0, I)"] * 4, [textwrap.fill(repr(p), 18) for p in PRIOR_PROMPTS]]
    return Figure("vae-2.2-prior", numbers, lambda: pictures(
        [direct, diffused], titles, ["decoded\nas it is", "after 20\nsteps of\nmicro's\ndiffusion"], size=1.6,
        title="The same four draws z ~ N(0, I): decoded as they are, and taken by micro's diffusion loop first"))


def figure_logvar(pipe) -> Figure:
    _, logvar = _training_posterior(pipe)
    values = logvar.flatten().numpy()
    numbers = {"logvar_min": round(float(values.min()), 1), "logvar_max": round(float(values.max()), 1),
               "logvar_median": round(float(np.median(values)), 1),
               "sigma_min": float(f"{float(np.exp(0.5 * values.min())):.1g}"),
               "sigma_max": float(f"{float(np.exp(0.5 * values.max())):.2g}")}

    def render():
        from matplotlib.ticker import FixedLocator

        fig, ax = _chart(2.9)
        ax.hist(values, bins=100, range=(-13, -1), color="0.6")
        ax.set_xlim(-13, -1), ax.set_yticks([])
        ax.set_xlabel("log-variance, as the encoder outputs it (the second half of quant_conv's 8 channels)")
        sigma, logvar_of = (lambda v: np.exp(0.5 * v)), (lambda s: 2 * np.log(np.maximum(s, 1e-30)))
        top = ax.secondary_xaxis("top", functions=(sigma, logvar_of))
        top.xaxis.set_major_locator(FixedLocator([0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]))
        top.set_xlabel("standard deviation σ = exp(0.5·logvar), always positive", fontsize=9)
        ax.set_title(f"micro's encoder on 256 images: log-variances from {values.min():.1f} to {values.max():.1f}",
                     fontsize=10)
        return _image(fig)

    return Figure("vae-2.6-logvar", numbers, render)


FIGURES: tuple[Callable[[Any], Figure], ...] = (
    figure_noising, figure_schedule, figure_prediction, figure_x0, figure_step, figure_loop, figure_timestep,
    figure_guidance, figure_latent, figure_holes, figure_walk, figure_spread, figure_prior, figure_logvar,
)


def figures(pipe=None) -> list[Figure]:
    """Every picture of docs/figures/, computed (`.draw()` draws one)."""
    pipe = pipe or micro_pipeline()
    return [make(pipe) for make in FIGURES]


def numbers(made: list[Figure]) -> dict[str, Any]:
    """The numbers of all `made` figures by key, as the docs quote them (the pictures' colours left out)."""
    found: dict[str, Any] = {}
    for figure in made:
        for key, value in figure.numbers.items():
            if key != "pictures":
                assert key not in found, f"{key} is a number of two figures"
                found[key] = value
    return found
