"""The course (docs/diffusion.md, docs/vae.md, notebooks 00 and 02): its formulas are the scheduler's
and the VAE's own, its loop is the pipeline's, and the pictures of docs/figures/ and the numbers the
docs quote are what the code makes now (`make diagrams` redraws them: scripts/course_figures.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from explorer import course

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
MARKER = re.compile(r"<!-- n:(\w+) -->(.*?)<!-- /n -->")
STALE = "run `python scripts/course_figures.py` (or `make diagrams`)"


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # micro's tensors are tiny: one thread is enough, and a busy machine cannot stall it
    yield course.micro_pipeline()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def made(pipe):
    return course.figures(pipe)


def number(shown: str) -> float:
    """A number as a page shows it (12,288) read back."""
    return float(shown.replace(",", ""))


def close(fresh, committed) -> bool:
    """Equal up to what another CPU or library version may move: a rounding step, 2 %, or for a
    difference that is rounding error itself (under 1e-4), only that it still is."""
    if isinstance(committed, list):
        return isinstance(fresh, list) and len(fresh) == len(committed) and all(map(close, fresh, committed))
    if abs(committed) < 1e-4:
        return abs(fresh) < 1e-4
    return abs(fresh - committed) <= 0.02 * abs(committed) + 0.002


# -- the formulas -----------------------------------------------------------------------------------


def test_the_noising_is_the_schedulers_own(pipe):
    """micro's schedule is SD1.5's, and x_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε is what the scheduler's add_noise does."""
    assert torch.equal(course.alpha_bar(), pipe.scheduler.alphas_cumprod)
    z0, eps = course.noise((1, 4, 16, 16), 1), course.noise((1, 4, 16, 16), 2)
    for t in course.TIMESTEPS:
        theirs = pipe.scheduler.add_noise(z0, eps, torch.tensor([t]))
        assert torch.allclose(course.add_noise(z0, eps, t), theirs, atol=1e-6)
        assert torch.allclose(course.x0_from_noise(course.add_noise(z0, eps, t), eps, t), z0, atol=1e-4)


def test_one_step_is_the_first_step_pndm_takes(pipe):
    """PNDM's first step uses one prediction alone: from t = 951 to 901 it is x̂0 noised again to 901."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(20)
    x, eps = course.noise((1, 4, 16, 16), 1), course.noise((1, 4, 16, 16), 2)
    theirs = scheduler.step(eps, scheduler.timesteps[0], x).prev_sample
    assert int(scheduler.timesteps[0]) == 951
    assert torch.allclose(course.step(x, eps, 951, 901), theirs, atol=1e-5)


def test_the_loop_by_hand_is_the_pipelines(pipe):
    run = course.denoise(pipe, "a blue square at the top", seed=1, steps=5)
    theirs = pipe("a blue square at the top", num_inference_steps=5, generator=torch.Generator().manual_seed(1),
                  output_type="latent").images
    assert torch.equal(run.final, theirs)
    assert len(run.timesteps) == 6 and run.timesteps[1] == run.timesteps[2]  # PLMS's extra call
    assert len(run.latents) == 7 and len(run.x0) == 6


def test_guidance_is_one_call_of_batch_two(pipe):
    x_t = course.noise((1, 4, 16, 16), 1)
    both = course.embed(pipe, "a red circle on the left")
    assert both.shape == (2, 77, 32)
    uncond, cond = course.predict_noise(pipe, x_t, 500, both).chunk(2)
    assert torch.allclose(uncond, course.predict_noise(pipe, x_t, 500, both[:1]), atol=1e-5)
    assert torch.allclose(cond, course.predict_noise(pipe, x_t, 500, both[1:]), atol=1e-5)
    assert torch.equal(course.guide(uncond, cond, 0.0), uncond)
    assert torch.allclose(course.guide(uncond, cond, 1.0), cond, atol=1e-6)


def test_the_vae_formulas_are_diffusers_own(pipe):
    """The reparameterized sample is diffusers' `sample()`, and the KL term per value sums to its `kl()`."""
    images = course.training_images(2)
    with torch.no_grad():
        dist = pipe.vae.encode(images).latent_dist
    eps = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(course.reparameterized(dist.mean, dist.logvar, eps),
                          dist.sample(generator=torch.Generator().manual_seed(0)), atol=1e-6)
    assert torch.allclose(course.kl_to_prior(dist.mean, dist.logvar).sum(dim=(1, 2, 3)), dist.kl(), rtol=1e-4)
    ends = course.walk(dist.mean[:1], dist.mean[1:], 5)
    assert ends.shape == (5, 4, 16, 16) and torch.equal(ends[0], dist.mean[0])
    assert torch.allclose(ends[-1], dist.mean[1], atol=1e-6)


def test_the_reparameterization_lets_the_gradient_through():
    """Sampling with torch.distributions' sample() cuts the graph; mean + σ·ε does not: ∂z/∂mean = 1,
    ∂z/∂logvar = ½·σ·ε."""
    mean = torch.zeros(3, requires_grad=True)
    logvar = torch.full((3,), -2.0, requires_grad=True)
    assert torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).sample().grad_fn is None
    eps = torch.tensor([0.5, -1.0, 2.0])
    course.reparameterized(mean, logvar, eps).sum().backward()
    assert torch.equal(mean.grad, torch.ones(3))
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


# -- the pictures and the numbers the docs quote --------------------------------------------------------


def test_the_committed_pictures_are_what_the_code_makes(made):
    """Every figure is in docs/figures/, drawn from the numbers it is drawn from now (each picture's
    mean colour included), and nothing else is there."""
    committed = json.loads((FIGURES / "numbers.json").read_text())
    assert set(committed) == {f.name for f in made}, STALE
    assert {p.stem for p in FIGURES.glob("*.png")} == {f.name for f in made}, STALE
    for figure in made:
        assert set(figure.numbers) == set(committed[figure.name]), f"{figure.name}: {STALE}"
        for key, value in figure.numbers.items():
            if key == "pictures":
                pairs = zip(value, committed[figure.name][key])
                same = all(abs(a - b) <= 1.5 for fresh, old in pairs for a, b in zip(fresh, old))
                assert same, f"{figure.name}: {STALE}"
            else:
                old = committed[figure.name][key]
                assert close(value, old), f"{figure.name} {key}: {value}, committed {old}; {STALE}"


def test_the_numbers_the_docs_quote_are_measured(made):
    numbers = course.numbers(made)
    quoted = 0
    for page in sorted((ROOT / "docs").glob("*.md")):
        for key, shown in MARKER.findall(page.read_text()):
            assert key in numbers, f"{page.name} quotes {key}, which no figure measures"
            value = [number(v) for v in shown.split(", ")] if isinstance(numbers[key], list) else number(shown)
            assert close(numbers[key], value), f"{page.name}: {key} is {numbers[key]} now, it says {shown}; {STALE}"
            quoted += 1
    assert quoted >= 40


def test_what_the_pages_say_holds(made):
    """The claims in words, on the numbers: the UNet predicts the noise, best at the true timestep; the
    loop by hand is the pipeline's; one batch of 2 is two batches of 1; micro's posteriors are narrow
    beside the spread of its latents, which the scaling factor brings to about 1."""
    n = course.numbers(made)
    for t in course.TIMESTEPS:
        assert n[f"eps_corr_{t}"] > 0.95 and n[f"told_best_{t}"] == t
        assert n[f"told_0_{t}"] > 5 * n[f"told_true_{t}"] or t == 100
    assert n["told_999_100"] > 10 * n["told_true_100"]
    assert n["loop_vs_pipeline"] == 0 and n["loop_calls"] == 21
    assert n["batch2_vs_apart"] < 1e-4 and n["step_vs_pndm"] < 1e-4
    assert n["spread_over_posterior"] >= 30 and 0.9 < n["scaled_std"] < 1.1 and n["logvar_max"] < 0
