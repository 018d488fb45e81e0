"""`trace()`: build a component, drive it the way Stable Diffusion does, and return the record.

Default inputs follow the article: classifier-free guidance doubles the batch, so the UNet and the
text encoder see batch 2 (the negative prompt and the prompt); the VAE sees one image and runs
encode -> sample -> scale -> unscale -> decode.
"""

from __future__ import annotations

import difflib
from typing import Any

from explorer.errors import ExplorerError
from explorer.loading import Loaded, context_length, default_image_size, latent_downscale, load
from explorer.record import Trace

DEFAULT_PROMPT = "a photo of an astronaut riding a horse"
DEFAULT_BATCH = {"unet": 2, "vae": 1, "clip": 2}
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_BATCH = 64


def check_size(name: str, value: int | None) -> None:
    if value is None:
        return
    if value % 8 or not MIN_SIZE <= value <= MAX_SIZE:
        raise ExplorerError(
            f"--{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} pixels (the VAE works in "
            f"8x8 pixel cells), got {value}."
        )


def check_batch(batch: int | None) -> None:
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise ExplorerError(
            f"--batch must be between 1 and {MAX_BATCH} (2 is what classifier-free guidance uses), got {batch}."
        )


def trace(
    component: str = "unet",
    model: str = "sd15",
    *,
    weights: str = "meta",
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    negative_prompt: str = "",
    config: str | None = None,
    allow_pickle: bool = False,
    allow_download: bool = False,
    seed: int = 0,
    flops: bool = False,
) -> Trace:
    """Record one forward pass of `component` ("unet", "vae" or "clip") of `model`.

    `model` is a preset ("sd15", "tiny"), a diffusers folder, a .safetensors file or a hub id.
    `weights` is "meta" (exact shapes, no memory: the default), "random" or "pretrained".
    `flops`: also count every node's floating-point operations (PyTorch's FlopCounterMode formulas).
    """
    check_size("height", height)
    check_size("width", width)
    check_batch(batch)
    loaded = load(
        component,
        model,
        weights=weights,
        config=config,
        allow_pickle=allow_pickle,
        allow_download=allow_download,
        seed=seed,
    )
    return trace_loaded(
        loaded,
        height=height,
        width=width,
        batch=batch,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        flops=flops,
    )


def trace_loaded(
    loaded: Loaded,
    *,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    negative_prompt: str = "",
    seed: int = 0,
    flops: bool = False,
) -> Trace:
    """Record one forward pass of an already built component."""
    from explorer.tracing import record

    component = loaded.component
    size = default_image_size(loaded.source, component)
    height, width = height or size, width or size
    batch = batch or DEFAULT_BATCH[component]
    fields: dict[str, Any] = {"component": component, "model": loaded.source.label, "weights": loaded.weights}
    if component == "unet":
        inputs, run = _unet_run(loaded, height, width, batch, seed)
    elif component == "vae":
        inputs, run = _vae_run(loaded, height, width, batch, seed)
    else:
        inputs, run, tokens = _clip_run(loaded, batch, prompt, negative_prompt)
        fields["tokens"] = tuple(tokens)
    return record(loaded.model, inputs, run, flops=flops, **fields)


# -- drivers: each returns the inputs by name and run() -> the output ----------------------------------------


def _tensor_factory(loaded: Loaded, seed: int):
    """Make input tensors: empty ones on the meta device, seeded random ones otherwise."""
    import torch

    on_meta = next(loaded.model.parameters()).is_meta
    generator = None if on_meta else torch.Generator().manual_seed(seed)

    def randn(*shape: int):
        if on_meta:
            return torch.empty(shape, device="meta")
        return torch.randn(shape, generator=generator)

    def full(shape: tuple[int, ...], value: int, dtype):
        return torch.full(shape, value, dtype=dtype, device="meta" if on_meta else "cpu")

    return randn, full


def _unet_run(loaded: Loaded, height: int, width: int, batch: int, seed: int):
    import torch

    cfg, unet = loaded.config, loaded.model
    randn, full = _tensor_factory(loaded, seed)
    down = latent_downscale(loaded.source)
    sample = randn(batch, cfg["in_channels"], height // down, width // down)  # (B, 4, H/8, W/8) latents
    timestep = full((batch,), 999, torch.long)  # (B,) the first step of a 1000-step schedule
    context = randn(batch, context_length(loaded.source), cfg["cross_attention_dim"])  # (B, 77, 768) prompt

    def run():
        return unet(sample, timestep, encoder_hidden_states=context)

    return {"sample": sample, "timestep": timestep, "encoder_hidden_states": context}, run


def _vae_run(loaded: Loaded, height: int, width: int, batch: int, seed: int):
    from explorer.recorder import manual_steps, record_step

    cfg, vae = loaded.config, loaded.model
    randn, _ = _tensor_factory(loaded, seed)
    image = randn(batch, cfg["in_channels"], height, width)  # (B, 3, H, W) pixels in [-1, 1]
    factor = vae.config.scaling_factor

    def run():
        with manual_steps():  # the steps below are recorded explicitly, not as torch operations
            posterior = vae.encode(image).latent_dist  # encoder + quant_conv -> (B, 8, H/8, W/8) moments
            record_step(
                "mean_logvar",
                "SplitMeanLogVar",
                {"moments": posterior.parameters},
                (posterior.mean, posterior.logvar),
                label=f"{posterior.parameters.shape[1]} channels → mean, log-variance",
                note="The encoder does not output a point but a Gaussian: half the channels are its mean, "
                "half its log-variance (clamped to [-30, 20]).",
            )
            eps = randn(*posterior.mean.shape)  # ε ~ N(0, I)
            z = posterior.mean + posterior.std * eps  # the reparameterization trick: std = exp(0.5·logvar)
            record_step(
                "sample",
                "Reparameterize",
                {"mean": posterior.mean, "logvar": posterior.logvar, "eps": eps},
                z,
                label="z = mean + exp(0.5·logvar)·ε",
                note="A sample of the Gaussian written so gradients flow through mean and logvar: ε carries the randomness.",
            )
            latents = z * factor
            record_step(
                "scale",
                "ScaleLatents",
                {"z": z},
                latents,
                label=f"z × {factor}",
                note=f"Scaled by {factor} so the latents have roughly unit variance: this is what the UNet sees.",
            )
            z = latents / factor
            record_step(
                "unscale",
                "UnscaleLatents",
                {"latents": latents},
                z,
                label=f"latents ÷ {factor}",
                note="Before decoding, the pipeline undoes the scaling.",
            )
            return vae.decode(z).sample  # post_quant_conv + decoder -> (B, 3, H, W)

    return {"sample": image}, run


def _clip_run(loaded: Loaded, batch: int, prompt: str, negative_prompt: str):
    import torch

    from explorer.tokenizer import tokenize, tokenizer_folder

    max_length = int(loaded.config.get("max_position_embeddings", 77))
    # Like diffusers: the negative prompts first, then the prompts (batch 2 = [negative, prompt]).
    prompts = [negative_prompt] * (batch // 2) + [prompt] * (batch - batch // 2)
    ids, records = tokenize(prompts, max_length, tokenizer_folder(loaded.source))
    on_meta = next(loaded.model.parameters()).is_meta
    input_ids = torch.tensor(ids, device="meta" if on_meta else "cpu")  # (B, 77)
    clip = loaded.model

    def run():
        return clip(input_ids=input_ids)

    unique = {r["prompt"]: r for r in records}  # each distinct prompt once
    return {"input_ids": input_ids}, run, list(unique.values())


# -- narrowing a trace for display ------------------------------------------------------------------


def narrow(trace: Trace, block: str | None = None, depth: int | None = None) -> Trace:
    """The subtree at `block` (if given), cut `depth` levels below its top (if given)."""
    if depth is not None and depth < 0:
        raise ExplorerError(
            f"--depth must be 0 or more, got {depth}: 0 shows the {trace.component} alone, 1 its blocks, "
            "2 their layers, and so on."
        )
    if block:
        sub = trace.subtree(block)
        if not sub.nodes:
            raise ExplorerError(_no_such_block(trace, block))
        trace = sub
    if depth is not None:
        top = trace.root_depth
        # A container that is never called (down_blocks) has no node: count from its children.
        if block and not any(n.path == block for n in trace.nodes):
            top -= 1
        trace = trace._with_nodes(tuple(n for n in trace.nodes if n.depth <= top + depth))
    return trace


def _no_such_block(trace: Trace, block: str) -> str:
    paths = [p for p in trace.paths() if p]
    close = difflib.get_close_matches(block, paths, n=3, cutoff=0.6)
    tops = list(dict.fromkeys(p.split(".")[0] for p in paths))  # in call order
    hint = f"did you mean {', '.join(close)}?" if close else f"top-level names are {', '.join(tops)}."
    return f"--block {block!r} names no module that runs in the {trace.component}: {hint}"


def trace_cached(
    component: str,
    model: str = "sd15",
    *,
    weights: str = "meta",
    use_cache: bool = True,
    config: str | None = None,
    allow_pickle: bool = False,
    allow_download: bool = False,
    on_miss: Any = None,
    **inputs: Any,
) -> tuple[Trace, list[str]]:
    """`trace()` through the cache of explorer.cache: a meta-device record traced before with the
    same config, weight files, inputs, options and library versions is read back instead of traced,
    without importing torch. Returns the record and the notes to show the user.

    `inputs`: height, width, batch, prompt, negative_prompt, seed, flops, as for `trace`. `on_miss`
    is called (with no argument) before tracing, e.g. to start a progress display.
    """
    from explorer import cache
    from explorer.loading import resolve_source

    source = resolve_source(
        model,
        config=config,
        allow_download=allow_download,
        allow_pickle=allow_pickle,
        need_weights=weights == "pretrained",
    )
    name = None
    if use_cache and weights == "meta":
        name = cache.key(
            component=component,
            source=cache.source_fingerprint(source, component, allow_pickle),
            allow_pickle=allow_pickle,
            **inputs,
        )
        if (hit := cache.load(name)) is not None:
            return hit
    if on_miss is not None:
        on_miss()
    check_size("height", inputs.get("height"))
    check_size("width", inputs.get("width"))
    check_batch(inputs.get("batch"))
    loaded = load(component, source, weights=weights, allow_pickle=allow_pickle, seed=inputs.get("seed", 0))
    record = trace_loaded(loaded, **inputs)
    if name is not None:
        cache.store(name, record, list(loaded.notes))
    return record, list(loaded.notes)
