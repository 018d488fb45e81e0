"""Build a component (UNet, VAE, CLIP text encoder) from a preset, a folder, a file or a hub id.

Three ways to fill it:

- ``meta``: the real class on PyTorch's meta device. Every shape is exact, no memory is used,
  nothing is computed. The default for exploring. When the source has weights, their file headers
  are still read and checked against the architecture, so a wrong or damaged file is caught.
- ``random``: real tensors with random values, to run something offline (the output is noise).
- ``pretrained``: the weights of a diffusers folder, a single checkpoint file or a hub id.

Weights are read from safetensors only; a pickle checkpoint (.ckpt/.bin/.pt/.pth) is refused
unless the caller passes ``allow_pickle=True`` (even then it is loaded with ``weights_only=True``).

Before anything is built, a folder's configs are checked value by value (`explorer.configs`); before
random or pretrained weights are allocated, the memory they take (the meta model's parameter count
times four bytes) is compared with the memory available.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer.components import component as entry
from explorer.configs import check_config, check_scheduler, shown
from explorer.errors import ExplorerError, OptionError
from explorer.files import read_json_object
from explorer.specs import PRESETS, SD15, Preset

WEIGHTS = ("meta", "random", "pretrained")

# Models shipped inside the package, by name: plain diffusers folders, loaded like any user's folder.
SHIPPED = {"micro": Path(__file__).parent / "micro" / "model"}
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# What each single file or folder needs from the hub when a hub id is given.
_HUB_CONFIG_FILES = ["model_index.json", "*/config.json", "*/*_config.json", "tokenizer/*"]
_HUB_WEIGHT_FILES = ["unet/*.safetensors", "vae/*.safetensors", "text_encoder/*.safetensors"]


@dataclass(frozen=True)
class Source:
    """Where an architecture (and maybe its weights) comes from."""

    form: str  # what it is: "preset", "folder", "file", "hub", or "module" (a model object of the user's)
    label: str  # as the user named it: "sd15", "./sd15-folder", "org/name"
    path: Path | None = None  # the folder or file (a hub id resolves to its cached folder)
    preset: Preset | None = None  # the preset, or the architecture assumed for a single file

    @property
    def has_weights(self) -> bool:
        return self.form != "preset"


def _pickle_refusal(path: Path) -> ExplorerError:
    return ExplorerError(
        f"{path} is a pickle checkpoint, which can run arbitrary code when loaded; "
        "use a .safetensors file, or pass --allow-pickle if you trust where it came from."
    )


def resolve_source(
    model: str,
    *,
    config: str | None = None,
    allow_download: bool = False,
    allow_pickle: bool = False,
    need_weights: bool = False,
) -> Source:
    """Turn what the user typed for --model into a Source, or explain why it cannot be used."""
    preset = _config_preset(config)
    path = Path(model).expanduser()
    if config is not None and not path.is_file():
        raise ExplorerError(
            f"--config names the architecture of a single .safetensors file, and {model!r} is not one; "
            "to explore a preset, pass it as --model."
        )
    if model in PRESETS:
        return Source("preset", model, preset=PRESETS[model])
    if model in SHIPPED:
        return _shipped(model)

    if path.is_dir():
        return Source("folder", model, path=path)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise _pickle_refusal(path)
        if path.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            raise ExplorerError(
                f"{path} is not a checkpoint: --model takes a .safetensors file, a diffusers folder, "
                f"a hub id or a preset ({', '.join(PRESETS)})."
            )
        return Source("file", model, path=path, preset=preset)
    if _HUB_ID.match(model) and not model.endswith((".safetensors", *PICKLE_SUFFIXES)):
        folder = _hub_folder(model, allow_download=allow_download, need_weights=need_weights)
        return Source("hub", model, path=folder)
    raise ExplorerError(
        f"--model {model!r} does not exist: give a preset ({', '.join([*PRESETS, *SHIPPED])}), a diffusers folder, "
        "a .safetensors file or a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5."
    )


def _shipped(name: str) -> Source:
    folder = SHIPPED[name]
    if not (folder / "model_index.json").is_file():
        raise ExplorerError(
            f"The {name} model's folder ({folder}) is missing or incomplete: reinstall sd-explorer, or train one "
            f"with `python -m explorer.micro.train --out FOLDER` and pass --model FOLDER."
        )
    return Source("folder", name, path=folder)


def _config_preset(config: str | None) -> Preset:
    """The architecture of a single-file checkpoint: SD1.5 unless --config names another preset."""
    if config is None:
        return SD15
    if config not in PRESETS:
        raise ExplorerError(f"--config {config!r} is not a preset: choose one of {', '.join(PRESETS)}.")
    return PRESETS[config]


def _hub_folder(repo_id: str, *, allow_download: bool, need_weights: bool) -> Path:
    """The local snapshot of a hub repository; downloads only when the user allowed it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = _HUB_CONFIG_FILES + (_HUB_WEIGHT_FILES if need_weights else [])
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if constants.HF_HUB_OFFLINE:
        raise ExplorerError(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
            "downloaded; unset HF_HUB_OFFLINE, or give a local diffusers folder or .safetensors file."
        )
    if not allow_download:
        raise ExplorerError(
            f"{repo_id} is not in the local Hugging Face cache; pass --allow-download to fetch it "
            "(the SD1.5 weights are about 4 GB), or give a local diffusers folder or .safetensors file."
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network, authentication, no such repository
        raise ExplorerError(f"Could not download {repo_id} from the Hugging Face hub: {exc}") from exc


# -- configs -------------------------------------------------------------------------------------


def _component_folder(source: Source, component: str) -> Path:
    """The folder holding the component's config.json: `<pipeline>/<unet|vae|text_encoder>` or the
    folder itself when it is a single component's folder."""
    assert source.path is not None
    folder = entry(component).folder
    sub = source.path / folder
    if (sub / "config.json").is_file():
        return sub
    if (source.path / "config.json").is_file():
        return source.path
    raise ExplorerError(
        f"{source.label} has no {folder}/config.json: a diffusers folder holds one "
        "folder per component (unet/, vae/, text_encoder/), each with a config.json."
    )


def component_config(source: Source, component: str) -> dict[str, Any]:
    """The component's config dict (diffusers / transformers `config.json` contents)."""
    if source.form == "module":
        raise ExplorerError(f"{source.label} is a model object: its other components' configs are unknown.")
    if source.form in ("preset", "file"):
        assert source.preset is not None
        return source.preset.config(component)
    config_file = _component_folder(source, component) / "config.json"
    config = read_json_object(config_file)
    expected = entry(component).class_name
    architectures = config.get("architectures")
    if "_class_name" in config:  # diffusers' configs name their class; transformers' their architectures
        found = config["_class_name"]
    else:
        found = architectures[0] if isinstance(architectures, list) and architectures else expected
    if found != expected:
        described = found if isinstance(found, str) else shown(found)
        raise ExplorerError(f"{config_file} describes a {described}, not a {expected}.")
    check_config(component, config, str(config_file))
    return config


def scheduler_config(source: Source) -> dict[str, Any]:
    """The model folder's own scheduler config, checked, else its preset's (SD1.5's for a single file)."""
    if source.path is not None and source.path.is_dir():
        config_file = source.path / "scheduler" / "scheduler_config.json"
        if config_file.is_file():
            config = read_json_object(config_file)
            check_scheduler(config, str(config_file))
            return config
    return dict((source.preset or SD15).scheduler)


def default_image_size(source: Source, component: str) -> int:
    """The image side (px) the model was trained at, from its own config."""
    if source.preset is not None and source.form == "preset":
        return source.preset.default_size
    from explorer.explore import MAX_SIZE

    config = component_config(source, component)
    if component == "unet":
        latent, cell = config.get("sample_size", 64), latent_downscale(source)
        if latent * cell > MAX_SIZE:
            raise ExplorerError(
                f"{_config_label(source, component)}: sample_size {latent} means images of {latent * cell} px "
                f"({cell} px a latent), more than the {MAX_SIZE} px the explorer traces: give --height and --width."
            )
        return latent * cell
    if component == "vae":
        return config.get("sample_size", 512)
    return 512


def latent_downscale(source: Source) -> int:
    """How much smaller the latent is than the image per side: 2 ** (VAE levels - 1), 8 for SD1.5."""
    try:
        vae = component_config(source, "vae")
    except ExplorerError:  # a folder holding only a UNet: SD's VAE factor
        return 8
    return 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)  # checked: 1 to 8 levels


def context_length(source: Source) -> int:
    """Tokens in a prompt embedding: the text encoder's positions (77 for SD1.5)."""
    try:
        return component_config(source, "clip").get("max_position_embeddings", 77)  # checked: a whole number
    except ExplorerError:
        return 77


# -- building --------------------------------------------------------------------------------------


# One of diffusers' models applies torch.autocast("cuda") when it is imported; a CUDA build of torch
# on a machine without a GPU then warns about a GPU nobody asked for. Not our users' concern.
NO_GPU_WARNING = "User provided device_type of 'cuda', but CUDA is not available"


def library_class(library: str, name: str):
    """A class of diffusers or transformers, by name: the registry names them, nothing else is imported."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NO_GPU_WARNING)
        return getattr(importlib.import_module(library), name)


def _instantiate(component: str, config: dict[str, Any], where: str = ""):
    """The library's class built from `config`. The values are checked before (explorer.configs); a
    combination the checks let through and the library refuses is still one sentence."""
    c = entry(component)
    cls = library_class(c.library, c.class_name)
    try:
        if c.config_class:  # transformers: the model is built from its config object
            keep = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
            return cls(library_class(c.library, c.config_class)(**keep))
        return cls.from_config(config)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        what = where or f"The {component} config"
        raise ExplorerError(f"{what} cannot be built as a {c.class_name} ({reason}).") from None


def build_fresh(component: str, config: dict[str, Any]):
    """The real class with its own default initialisation, on the CPU: the start of training."""
    return _instantiate(component, config)


def build(component: str, config: dict[str, Any], weights: str = "meta", seed: int = 0, *, where: str = ""):
    """The real model class built from `config` (`where` names it in a sentence: its config file).

    meta: everything on the meta device. pretrained: parameters on meta (to be replaced by the
    checkpoint's tensors), buffers computed on the CPU as usual (CLIP's position_ids are not in
    checkpoints). random: parameters filled by `fill_random`, seeded, once `check_memory` found
    room for them.
    """
    import torch

    if weights == "meta":
        with torch.device("meta"):
            model = _instantiate(component, config, where)
        return model.eval()
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = _instantiate(component, config, where)
    if weights == "random":
        check_memory(model, f"Random weights for the {component}", extra=RANDOM_BYTES)
        fill_random(model, seed)
    return model.eval()


# -- memory ------------------------------------------------------------------------------------------

MEMORY_VARIABLE = "SD_EXPLORER_MEMORY_GB"  # the memory the explorer may fill, in GB: overrides what the system says


def available_memory() -> int | None:
    """Bytes that can still be allocated: SD_EXPLORER_MEMORY_GB when set, else what Linux reports
    (MemAvailable, within the container's limit), else None (unknown: nothing is refused)."""
    if os.environ.get(MEMORY_VARIABLE):
        text = os.environ[MEMORY_VARIABLE]
        try:
            gb = float(text)
        except ValueError:
            gb = -1.0
        if not 0 <= gb < float("inf"):
            raise ExplorerError(f"{MEMORY_VARIABLE} must be a number of gigabytes (e.g. 8 or 0.5), got {text!r}.")
        return int(gb * 1e9)
    found = [_meminfo_available(), _cgroup_room()]
    found = [n for n in found if n is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: unknown
        return None


def _cgroup_room() -> int | None:
    """What the container's memory limit (cgroup v2) leaves, when it has one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return max(0, int(limit) - int(used)) if limit != "max" else None
    except (OSError, ValueError):
        return None


def check_memory(model, what: str, extra: int = 0) -> None:
    """Refuse in one sentence, before anything is allocated, weights that would not fit: `model`'s
    parameters (on the meta device, so counting them is free) in float32, plus `extra` bytes."""
    count = sum(p.numel() for p in model.parameters())
    needed = 4 * count + extra
    available = available_memory()
    if available is not None and needed > available:
        raise ExplorerError(
            f"{what} need {needed / 1e9:,.1f} GB ({count:,} parameters in float32) but only {available / 1e9:,.1f} GB "
            "are available; meta weights show the same architecture without using any."
        )


RANDOM_BLOCK = 1 << 24  # 16M seeded random values, cut into every weight
RANDOM_BYTES = 2 * RANDOM_BLOCK * 4  # the block fill_random draws them into, float32


def fill_random(model, seed: int = 0) -> None:
    """Give every parameter real random values, fast: in the time it takes to allocate the memory.

    Drawing 860M fresh random numbers (PyTorch's default initialisation of the SD1.5 UNet) is what
    makes a random-weights model slow to build. Instead one block of 2^24 seeded random values
    (uniform, variance 1) is drawn, and each weight matrix is a copy of a slice of it starting at its
    own seeded offset, scaled by 1/sqrt(fan_in) so activations keep their size layer after layer.
    Biases are 0 and norm scales 1. Same seed, same weights, bit for bit.
    """
    import torch

    params = list(model.named_parameters())
    flat = torch.empty(sum(p.numel() for _, p in params))  # one allocation for all of them
    generator = torch.Generator().manual_seed(seed)
    block = torch.empty(2 * RANDOM_BLOCK).uniform_(-(3**0.5), 3**0.5, generator=generator)
    offsets = torch.randint(0, RANDOM_BLOCK, (len(params),), generator=generator).tolist()
    at = 0
    for (name, p), start in zip(params, offsets):
        owner, _, attr = name.rpartition(".")
        data = flat[at : at + p.numel()]
        at += p.numel()
        if p.ndim > 1:  # a weight: (out, in, ...) -> fan_in = in * kernel
            scale = p[0].numel() ** -0.5
            for done in range(0, data.numel(), RANDOM_BLOCK):
                n = min(RANDOM_BLOCK, data.numel() - done)
                torch.mul(block[start : start + n], scale, out=data[done : done + n])
        elif attr == "weight":  # a norm's scale
            data.fill_(1.0)
        else:  # a bias
            data.zero_()
        setattr(model.get_submodule(owner), attr, torch.nn.Parameter(data.view(p.shape), requires_grad=False))


@dataclass
class Loaded:
    """A built component and what it was built from."""

    component: str
    model: Any  # the nn.Module
    source: Source
    weights: str
    config: dict[str, Any]
    notes: tuple[str, ...] = ()  # things the user should know, printed on stderr by the CLI


def load(
    component: str,
    model: str | Source = "sd15",
    *,
    weights: str = "meta",
    config: str | None = None,
    allow_pickle: bool = False,
    allow_download: bool = False,
    seed: int = 0,
) -> Loaded:
    """Build `component` ("unet", "vae" or "clip") from `model` and fill it as `weights` says."""
    entry(component)  # one sentence when it is not a component
    if weights not in WEIGHTS:
        raise ExplorerError(f"Unknown weights {weights!r}: choose one of {', '.join(WEIGHTS)}.")
    check_seed(seed)
    source = (
        model
        if isinstance(model, Source)
        else resolve_source(
            model,
            config=config,
            allow_download=allow_download,
            allow_pickle=allow_pickle,
            need_weights=weights == "pretrained",
        )
    )
    if weights == "pretrained" and not source.has_weights:
        raise ExplorerError(
            f"The {source.label} preset has no weights; use meta or random weights, or give a diffusers "
            "folder, a .safetensors file or a hub id for pretrained ones."
        )

    loaded = _load_part(component, source, weights, allow_pickle, seed)
    if component == "clip" and has_second_text_encoder(source):
        # SDXL: the clip component is both encoders, run together as its pipeline runs them
        from explorer.textencoders import TextEncoders

        _check_positions(source)
        second = _load_part("clip_2", source, weights, allow_pickle, seed_after(seed, 1))
        pair = TextEncoders(loaded.model, second.model).eval()
        loaded = Loaded(component, pair, source, weights, loaded.config, tuple(dict.fromkeys(loaded.notes + second.notes)))
    return loaded


SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0 to 2**64 - 1


def check_seed(seed: Any) -> None:
    """A seed torch accepts, or one sentence (an OptionError: --seed on the command line)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise OptionError("seed", f"must be a whole number between 0 and {SEED_MAX} (2**64 - 1), got {seed!r}.")


def seed_after(seed: int, k: int) -> int:
    """The k-th seed after `seed` (for the next model of a pipeline), wrapping around past SEED_MAX."""
    return (seed + k) % (SEED_MAX + 1)


def _check_positions(source: Source) -> None:
    """SDXL: both text encoders read prompts padded to the first one's positions."""
    first = component_config(source, "clip").get("max_position_embeddings", 77)
    second = component_config(source, "clip_2").get("max_position_embeddings", 77)
    if second < first:
        raise ExplorerError(
            f"{_config_label(source, 'clip_2')}: max_position_embeddings must be at least the first text encoder's "
            f"{first} (both read the same padded prompt), got {second}."
        )


def _config_label(source: Source, component: str) -> str:
    """How a sentence names the component's config: its file, or the preset it comes from."""
    if source.path is not None and source.form in ("folder", "hub"):
        return str(_component_folder(source, component) / "config.json")
    return f"the {component} config of {source.label}"


def has_second_text_encoder(source: Source) -> bool:
    """Whether the model has SDXL's `text_encoder_2` (a preset's config, or its folder with a config.json)."""
    if source.preset is not None and source.form in ("preset", "file"):
        return entry("clip_2").folder in source.preset.models
    return source.path is not None and (source.path / entry("clip_2").folder / "config.json").is_file()


def _load_part(component: str, source: Source, weights: str, allow_pickle: bool, seed: int) -> Loaded:
    """One model of the pipeline, built from its config and filled as `weights` says."""
    cfg = component_config(source, component)
    notes: list[str] = []
    if entry(component).driver == "text" and weights != "meta":
        _check_vocabulary(source, component, cfg)
    built = build(component, cfg, weights, seed, where=_config_label(source, component))
    # Meta and random weights need only the configs: a folder of configs alone, or a hub id whose
    # weights were never downloaded, explores all the same.
    required = weights == "pretrained"
    if component == "clip_2" and source.form == "file":
        _second_encoder_from_file(source, weights, notes)
    elif source.has_weights and not weight_files(source, component, allow_pickle, required=required):
        where = "in the local cache" if source.form == "hub" else "there"
        notes.append(f"The {component} weights of {source.label} are not {where}: shapes from its config alone.")
    elif source.has_weights:
        # Names, shapes and dtypes from the file headers first: a wrong file costs no reading.
        checkpoint = read_checkpoint(source, component, allow_pickle=allow_pickle, values=False)
        state = to_model_keys(component, checkpoint, built, cfg)
        extra = check_against(built, state, component, source)
        if extra:
            notes.append(f"{len(extra)} tensors of the checkpoint are not used by the {component}, e.g. {extra[0]}.")
        if weights == "pretrained":
            _load_values(built, component, source, cfg, checkpoint, state, allow_pickle)
        else:
            notes.append(f"Checked the {component} weights of {source.label} against the architecture (shapes only).")
    elif weights == "random":
        notes.append(f"Random weights: the {source.label} architecture is real, the values are not.")
    return Loaded(component, built, source, weights, cfg, tuple(notes))


def _load_values(built, component: str, source: Source, cfg, checkpoint, state, allow_pickle: bool) -> None:
    """Read the checkpoint's tensors into `built`, in float32, once the memory for them is known to be there:
    the model's float32 parameters and, while they are read, the checkpoint's tensors that are not those."""
    import torch

    wanted = built.state_dict()
    stored = sum(t.numel() * t.element_size() for t in checkpoint.values())
    shared = sum(t.numel() * 4 for k, t in state.items() if k in wanted and t.dtype == torch.float32)
    if any(t.is_meta for t in checkpoint.values()):
        check_memory(built, f"The pretrained {component} weights of {source.label}", extra=max(0, stored - shared))
        checkpoint = read_checkpoint(source, component, allow_pickle=allow_pickle, values=True)
        state = to_model_keys(component, checkpoint, built, cfg)
    values = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items() if k in wanted}
    built.load_state_dict(values, strict=True, assign=True)


def _check_vocabulary(source: Source, component: str, cfg: dict[str, Any]) -> None:
    """Real weights look every token id up in the text encoder's table: the tokenizer the prompts
    are read with must not have more tokens than the table has rows."""
    from explorer.tokenizer import clip_tokenizer, pad_token_of, tokenizer_folder

    which = 2 if component == "clip_2" else 1
    tokens = len(clip_tokenizer(tokenizer_folder(source, which), context_length(source), pad_token_of(source, which)))
    if cfg.get("vocab_size", 49408) < tokens:
        raise ExplorerError(
            f"{_config_label(source, component)}: vocab_size must be at least {tokens:,}, the tokens of the tokenizer "
            f"its prompts are read with, got {cfg.get('vocab_size')}."
        )


def _second_encoder_from_file(source: Source, weights: str, notes: list[str]) -> None:
    """A single-file SDXL checkpoint keeps its second encoder in OpenCLIP's own layout, which is not converted here."""
    if weights == "pretrained":
        raise ExplorerError(
            f"{source.label}: the second text encoder of a single-file SDXL checkpoint is not read (OpenCLIP's layout); "
            "use the model's diffusers folder for its pretrained weights."
        )
    notes.append(f"The second text encoder of {source.label} is not read from the file: shapes from its config.")


# -- checkpoints ---------------------------------------------------------------------------------------


def weight_files(source: Source, component: str, allow_pickle: bool, required: bool = True) -> list[Path]:
    """The files holding the component's weights, preferring full precision over fp16 variants.
    None found: an error when `required`, else an empty list."""
    assert source.path is not None
    if source.form == "file":
        return [source.path]
    folder = _component_folder(source, component)
    tensors = sorted(folder.glob("*.safetensors"))
    if tensors:
        plain = [p for p in tensors if len(p.name.split(".")) == 2]  # model.safetensors, not model.fp16.safetensors
        return plain or tensors
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        if not allow_pickle:
            raise _pickle_refusal(pickles[0])
        return pickles
    if not required:
        return []
    raise ExplorerError(f"{folder} has a config.json but no weights (*.safetensors) for the {component}.")


def read_checkpoint(source: Source, component: str, *, allow_pickle: bool, values: bool) -> dict[str, Any]:
    """Every tensor of the component's weight files: real ones when `values`, else meta tensors
    with the right shapes and dtypes, read from the file headers alone."""
    import torch

    checkpoint: dict[str, Any] = {}
    for path in weight_files(source, component, allow_pickle):
        if path.suffix in PICKLE_SUFFIXES:
            checkpoint.update(_read_pickle(path))
            continue
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if values:
                        checkpoint[key] = f.get_tensor(key)
                    else:  # shapes and dtypes from the header; no tensor data is read
                        piece = f.get_slice(key)
                        dtype = _torch_dtype(piece.get_dtype(), path, key)
                        checkpoint[key] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
        except SafetensorError as exc:
            raise ExplorerError(
                f"{path} is not a valid safetensors file ({exc}); it may be truncated or corrupt: download it again."
            ) from exc
    return checkpoint


def _read_pickle(path: Path) -> dict[str, Any]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExplorerError(
            f"{path} could not be read as a PyTorch checkpoint of tensors ({exc.__class__.__name__}); "
            "convert it to .safetensors."
        ) from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # the original SD .ckpt wraps its weights
    if not isinstance(loaded, dict):
        raise ExplorerError(f"{path} does not hold a dictionary of tensors.")
    return {k: v for k, v in loaded.items() if hasattr(v, "shape")}


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
}


def _torch_dtype(code: str, path: Path, key: str):
    """The torch dtype of a safetensors header's dtype code, or one sentence when torch has none."""
    import torch

    dtype = getattr(torch, _SAFETENSORS_DTYPES.get(code, ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ExplorerError(
            f"{path}: {key} is stored as {code}, a type this PyTorch does not read; weights are floating point "
            "(F32, F16 or BF16)."
        )
    return dtype


def to_model_keys(component: str, checkpoint: dict[str, Any], model, config: dict[str, Any]):
    """The checkpoint under the model's own parameter names, converting the original SD layout
    with diffusers' own conversion functions (the registry names which)."""
    import inspect

    from diffusers.loaders import single_file_utils as sfu

    c = entry(component)
    markers = tuple(m for m in (c.ldm_prefix, c.ldm_marker) if m)
    if any(k.startswith(markers) for k in checkpoint):
        convert = getattr(sfu, c.ldm_converter)
        takes_config = "config" in inspect.signature(convert).parameters
        checkpoint = convert(checkpoint, config) if takes_config else convert(checkpoint)
    if c.library == "transformers" and not hasattr(model, "text_model"):
        # transformers >= 5.6 flattened CLIPTextModel; older files name everything text_model.*
        checkpoint = {k.removeprefix("text_model."): v for k, v in checkpoint.items()}
    return checkpoint


def check_against(model, state: dict[str, Any], component: str, source: Source) -> list[str]:
    """Fail with one sentence when the checkpoint does not fit the architecture (a name missing, a
    shape or a kind of number that differs); return the checkpoint keys the model does not use."""
    own = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in own.items()}
    if not set(state) & set(expected):
        raise ExplorerError(
            f"{source.label} holds no {component} weights: its tensors are neither in the original SD layout "
            f"({entry(component).ldm_prefix}...) nor named like diffusers' {type(model).__name__}."
        )
    missing = [k for k in expected if k not in state]
    if missing:
        raise ExplorerError(
            f"{source.label} has no weights for {len(missing)} of the {len(expected)} {component} tensors "
            f"(e.g. {missing[0]}): it is not a complete {type(model).__name__} checkpoint"
            + (" for this configuration; pass --config to name its architecture." if source.form == "file" else ".")
        )
    for key, shape in expected.items():
        found = tuple(state[key].shape)
        if found != shape:
            raise ExplorerError(
                f"{source.label}: {key} is {list(found)} in the checkpoint but the architecture expects "
                f"{list(shape)}; the checkpoint is for a different configuration"
                + (" (pass --config to name it)." if source.form == "file" else ".")
            )
    for key, tensor in own.items():
        dtype, floating = state[key].dtype, tensor.is_floating_point()
        if floating != dtype.is_floating_point:
            wanted = "floating-point values (float32, float16 or bfloat16)" if floating else "integers"
            raise ExplorerError(
                f"{source.label}: {key} is stored as {str(dtype).removeprefix('torch.')}, but the {component} "
                f"expects {wanted} there."
            )
    return [k for k in state if k not in expected]
