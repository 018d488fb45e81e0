"""Drivers: how one forward pass of each kind of component is run, the way Stable Diffusion runs it.

A driver makes the component's inputs (empty tensors on the meta device, seeded random ones
otherwise) and returns them by name with a `run()` that calls the model. The registry
(`explorer.components`) says which driver a component uses:

- `denoiser` (the UNet): a noisy latent, a timestep and the prompt embedding;
- `autoencoder` (the VAE): an image through encode -> mean / log-variance -> sample -> scale ->
  unscale -> decode, each step between the modules recorded as a step;
- `text` (the CLIP text encoder): the tokenized prompts, negative prompts first; SDXL's two
  encoders each get their own tokenizer's ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Drive:
    """The inputs of one forward pass by name, the call that runs it, and record fields it adds."""

    inputs: dict[str, Any]
    run: Callable[[], Any]
    fields: dict[str, Any] = field(default_factory=dict)


def _tensor_factory(model, seed: int):
    """Make input tensors: empty ones on the meta device, seeded random ones otherwise."""
    import torch

    first = next(model.parameters())
    on_meta, device, dtype = first.is_meta, first.device, first.dtype  # a user's model may be on a GPU, in fp16
    generator = None if on_meta else torch.Generator().manual_seed(seed)

    def randn(*shape: int):
        if on_meta:
            return torch.empty(shape, device="meta", dtype=dtype)
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    def full(shape: tuple[int, ...], value: int, dtype):
        return torch.full(shape, value, dtype=dtype, device=device)

    return randn, full


def denoiser(loaded, request, height: int, width: int, batch: int) -> Drive:
    import torch

    from explorer.loading import context_length, latent_downscale

    unet = loaded.model
    cfg = dict(unet.config)  # the config as built, diffusers' defaults filled in
    randn, full = _tensor_factory(unet, request.seed)
    down = latent_downscale(loaded.source)
    sample = randn(batch, cfg["in_channels"], height // down, width // down)  # (B, 4, H/8, W/8) latents
    timestep = full((batch,), 999, torch.long)  # (B,) the first step of a 1000-step schedule
    context = randn(batch, context_length(loaded.source), cfg["cross_attention_dim"])  # (B, 77, 768) prompt

    added = _added_conditioning(cfg, randn, batch, height, width)  # SDXL: text_embeds, time_ids; else none

    def run():
        return unet(sample, timestep, encoder_hidden_states=context, added_cond_kwargs=added or None)

    return Drive({"sample": sample, "timestep": timestep, "encoder_hidden_states": context, **added}, run)


def _added_conditioning(cfg, randn, batch: int, height: int, width: int) -> dict[str, Any]:
    """What a UNet with `addition_embed_type = "text_time"` (SDXL) needs beside the prompt: the
    pooled text embedding and six numbers per image, (original height, width, crop top, left,
    target height, width), each turned into sinusoidal channels and added to the time embedding."""
    import torch

    kind = cfg.get("addition_embed_type")
    if kind is None:
        return {}
    if kind != "text_time":
        from explorer.errors import ExplorerError

        raise ExplorerError(
            f'This UNet has addition_embed_type = "{kind}", an extra conditioning the explorer cannot drive yet '
            '(it drives none, as SD1.5 and SD2.x, and "text_time", as SDXL); its VAE and text encoder explore as usual.'
        )
    pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]  # 2816 - 6 x 256 = 1280
    text_embeds = randn(batch, pooled)  # (B, 1280) the second text encoder's projected, pooled embedding
    if text_embeds.is_meta:
        time_ids = randn(batch, 6)  # (B, 6), shapes only
    else:
        sizes = [[height, width, 0, 0, height, width]] * batch  # (B, 6)
        time_ids = torch.tensor(sizes, dtype=text_embeds.dtype, device=text_embeds.device)
    return {"text_embeds": text_embeds, "time_ids": time_ids}


def autoencoder(loaded, request, height: int, width: int, batch: int) -> Drive:
    vae = loaded.model
    cfg = dict(vae.config)  # the config as built, diffusers' defaults filled in
    randn, _ = _tensor_factory(vae, request.seed)
    image = randn(batch, cfg["in_channels"], height, width)  # (B, 3, H, W) pixels in [-1, 1]

    def run():
        from explorer.capture.recorder import manual_steps

        with manual_steps():  # the steps below are recorded explicitly, not as torch operations
            latents = _encode_and_sample(vae, image, randn)  # (B, 4, H/8, W/8)
            return vae.decode(_unscale(vae, latents))  # post_quant_conv + decoder -> DecoderOutput.sample (B, 3, H, W)

    return Drive({"sample": image}, run)


def _encode_and_sample(vae, image, randn):
    """encoder + quant_conv -> a Gaussian -> its sample (the reparameterization trick) -> scaled."""
    from explorer.capture.recorder import record_step

    posterior = vae.encode(image).latent_dist  # (B, 8, H/8, W/8) moments
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
    factor = vae.config.scaling_factor
    latents = z * factor
    record_step(
        "scale",
        "ScaleLatents",
        {"z": z},
        latents,
        label=f"z × {factor}",
        note=f"Scaled by {factor} so the latents have roughly unit variance: this is what the UNet sees.",
    )
    return latents


def _unscale(vae, latents):
    from explorer.capture.recorder import record_step

    factor = vae.config.scaling_factor
    z = latents / factor
    record_step(
        "unscale",
        "UnscaleLatents",
        {"latents": latents},
        z,
        label=f"latents ÷ {factor}",
        note="Before decoding, the pipeline undoes the scaling.",
    )
    return z


def text(loaded, request, height: int, width: int, batch: int) -> Drive:
    import torch

    from explorer.tokenizer import pad_token_of, tokenize, tokenizer_folder

    max_length = int(loaded.config.get("max_position_embeddings", 77))
    # Like diffusers: the negative prompts first, then the prompts (batch 2 = [negative, prompt]).
    prompts = [request.negative_prompt] * (batch // 2) + [request.prompt] * (batch - batch // 2)
    ids, records = tokenize(prompts, max_length, tokenizer_folder(loaded.source), pad_token_of(loaded.source))
    device = next(loaded.model.parameters()).device
    input_ids = torch.tensor(ids, device=device)  # (B, 77)
    clip = loaded.model
    unique = {r["prompt"]: r for r in records}  # each distinct prompt once
    fields = {"tokens": tuple(unique.values())}
    if hasattr(clip, "text_encoder_2"):  # SDXL: the second tokenizer pads with "!"
        second, _ = tokenize(prompts, max_length, tokenizer_folder(loaded.source, 2), pad_token_of(loaded.source, 2))
        input_ids_2 = torch.tensor(second, device=device)  # (B, 77)
        return Drive({"input_ids": input_ids, "input_ids_2": input_ids_2}, lambda: clip(input_ids, input_ids_2), fields)

    def run():
        return clip(input_ids=input_ids)

    return Drive({"input_ids": input_ids}, run, fields)


DRIVERS: dict[str, Callable[..., Drive]] = {"denoiser": denoiser, "autoencoder": autoencoder, "text": text}
