"""What a generation is asked to do, checked before anything is built: the settings, the
schedulers the explorer drives, and the most steps each can take with a model's noise schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from explorer.errors import OptionError

SCHEDULERS = {
    "pndm": "PNDMScheduler",  # SD1.5's own
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
}


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
    adds: bool = False  # block activity also measures what each block adds to its input


def own_scheduler(scheduler_config: dict) -> str:
    """The name in SCHEDULERS of the model's own scheduler ("pndm" when it is none of them)."""
    found = {v: k for k, v in SCHEDULERS.items()}.get(str(scheduler_config.get("_class_name", "")))
    return found or "pndm"


def check(settings: Settings, scheduler_config: dict | None = None) -> None:
    """One sentence for each setting that cannot work, before anything is built (the scheduler
    left unset becomes the model's own)."""
    from explorer.explore import check_size
    from explorer.loading import check_seed

    check_seed(settings.seed)
    if settings.scheduler is None:
        settings.scheduler = own_scheduler(scheduler_config or preset_scheduler())
    if settings.scheduler not in SCHEDULERS:
        raise OptionError("scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {settings.scheduler!r}.")
    limit = max_steps(settings.scheduler, scheduler_config or preset_scheduler())
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


def preset_scheduler() -> dict:
    from explorer.specs import SD15

    return dict(SD15.scheduler)


def default_out(prompt: str, root: Path = Path("runs")) -> Path:
    """runs/20261124-203015-a-lighthouse-at-dusk"""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "run"
    return root / f"{datetime.now():%Y%m%d-%H%M%S}-{slug}"
