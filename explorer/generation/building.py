"""The model's real diffusers pipeline, built the explorer's way: random weights for a preset, the
model's own for a folder, a file, a hub id or the shipped micro model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from explorer.errors import ExplorerError
from explorer.files import read_json_object
from explorer.generation.settings import SCHEDULERS, Settings, own_scheduler, preset_scheduler

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

    from explorer.loading import default_image_size, load, seed_after
    from explorer.tokenizer import clip_tokenizer, pad_token_of, tokenizer_folder

    source = source or resolve(settings)
    xl = check_drivable(source)
    weights = "pretrained" if source.has_weights else "random"
    parts = {
        c: load(c, source, weights=weights, allow_pickle=settings.allow_pickle, seed=seed_after(settings.seed, k))
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
    """The model folder's own scheduler config (its values checked), else its preset's (SD1.5's for a
    single file)."""
    from explorer.loading import scheduler_config

    return scheduler_config(source)


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
