"""`trace()`: build a component, drive it the way Stable Diffusion does, and return the record.

What to trace is one `TraceRequest`, checked once when it is made: the CLI builds it from its
flags, Python callers from keywords. Default inputs follow the article: classifier-free guidance
doubles the batch, so the UNet and the text encoder see batch 2 (the negative prompt and the
prompt); the VAE sees one image and runs encode -> sample -> scale -> unscale -> decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from explorer.components import COMPONENTS, component as entry
from explorer.errors import OptionError
from explorer.loading import WEIGHTS, Loaded, check_seed, default_image_size, load
from explorer.record import Trace, check_depth

DEFAULT_PROMPT = "a photo of an astronaut riding a horse"
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_BATCH = 64


def check_size(name: str, value: int | None) -> None:
    if value is None:
        return
    if value % 8 or not MIN_SIZE <= value <= MAX_SIZE:
        raise OptionError(
            name,
            f"must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} pixels (SD's VAE works in 8x8 pixel "
            f"cells), got {value}.",
        )


@dataclass(frozen=True)
class TraceRequest:
    """Everything that decides a trace, checked when it is made (no torch needed for that)."""

    component: str = "unet"  # a name of explorer.components: "unet", "vae", "clip"
    model: str = "sd15"  # a preset, a diffusers folder, a .safetensors file or a hub id
    weights: str = "meta"  # "meta" (exact shapes, no memory), "random" or "pretrained"
    height: int | None = None  # pixels; None: the model's own size
    width: int | None = None
    batch: int | None = None  # None: the component's default (2 for classifier-free guidance)
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = ""
    config: str | None = None  # the architecture of a single-file checkpoint, as a preset name
    allow_pickle: bool = False
    allow_download: bool = False
    seed: int = 0  # random weights and inputs
    flops: bool = False  # also count every node's floating-point operations

    def __post_init__(self) -> None:
        entry(self.component)
        if self.weights not in WEIGHTS:
            raise OptionError("weights", f"must be one of {', '.join(WEIGHTS)}, got {self.weights!r}.")
        check_size("height", self.height)
        check_size("width", self.width)
        check_seed(self.seed)
        if self.batch is not None and not 1 <= self.batch <= MAX_BATCH:
            raise OptionError(
                "batch", f"must be between 1 and {MAX_BATCH} (2 is what classifier-free guidance uses), got {self.batch}."
            )

    def inputs(self) -> dict[str, Any]:
        """What, beside the model itself, changes the record (the trace cache's key)."""
        keys = ("height", "width", "batch", "prompt", "negative_prompt", "seed", "flops")
        return {k: v for k, v in asdict(self).items() if k in keys}


def trace(component: Any = "unet", model: str = "sd15", **options: Any) -> Trace:
    """Record one forward pass of `component` ("unet", "vae" or "clip") of `model`, or of a model
    you loaded yourself (`explorer.trace(pipe.unet)`, like torchinfo's `summary(model)`).

    `model` is a preset ("sd15", "tiny"), "micro", a diffusers folder, a .safetensors file or a hub id.
    `options` are the fields of TraceRequest: weights ("meta", the default: exact shapes, no memory;
    "random"; "pretrained"), height, width, batch, prompt, negative_prompt, config, allow_pickle,
    allow_download, seed, flops (count every node's floating-point operations).
    """
    if not isinstance(component, str):
        return trace_module(component, **options)
    request = TraceRequest(component, model, **options)
    loaded = load(
        request.component,
        request.model,
        weights=request.weights,
        config=request.config,
        allow_pickle=request.allow_pickle,
        allow_download=request.allow_download,
        seed=request.seed,
    )
    return trace_loaded(loaded, request)


def trace_module(module: Any, **options: Any) -> Trace:
    """Record one forward pass of a model object: a diffusers UNet2DConditionModel or AutoencoderKL,
    a transformers CLIPTextModel (whatever its weights, device or dtype); the registry names it."""
    from explorer.components import COMPONENTS
    from explorer.errors import ExplorerError
    from explorer.loading import Source

    found = [c for c in COMPONENTS.values() if type(module).__name__ == c.class_name]
    if not found or not hasattr(module, "parameters"):
        known = ", ".join(c.class_name for c in COMPONENTS.values())
        raise ExplorerError(
            f"explorer.trace takes a component name or a model object ({known}); "
            f"got an object of type {type(module).__name__}."
        )
    c = found[0]
    config = dict(module.config) if hasattr(module, "config") and hasattr(module.config, "items") else module.config.to_dict()
    if c.image_sized and "height" not in options:
        size = int(config.get("sample_size", 64)) * (8 if c.name == "unet" else 1)
        options = {**options, "height": options.get("height", size), "width": options.get("width", size)}
    weights = "meta" if next(module.parameters()).is_meta else "pretrained"
    request = TraceRequest(c.name, type(module).__name__, weights, **options)
    loaded = Loaded(c.name, module, Source("module", f"your {type(module).__name__}"), weights, config)
    return trace_loaded(loaded, request)


def trace_loaded(loaded: Loaded, request: TraceRequest | None = None) -> Trace:
    """Record one forward pass of an already built component (inputs as `request` says)."""
    from explorer.capture.drivers import DRIVERS
    from explorer.capture.hooks import record

    request = request or TraceRequest(loaded.component)
    c = entry(loaded.component)
    if request.height and request.width:
        height, width = request.height, request.width
    else:
        size = default_image_size(loaded.source, c.name)
        height, width = request.height or size, request.width or size
    drive = DRIVERS[c.driver](loaded, request, height, width, request.batch or c.default_batch)
    fields = {"component": c.name, "model": loaded.source.label, "weights": loaded.weights, **drive.fields}
    return record(loaded.model, drive.inputs, drive.run, flops=request.flops, **fields)


# -- narrowing a trace for display ------------------------------------------------------------------


def narrow(trace: Trace, block: str | None = None, depth: int | None = None) -> Trace:
    """The subtree at `block` (if given), cut `depth` levels below its top (if given)."""
    check_depth(depth, trace.component)
    if block:
        trace.locate(block)  # one sentence when `block` names nothing that runs
        trace = trace.subtree(block)
    if depth is not None:
        top = trace.root_depth
        # A container that is never called (down_blocks) has no node: count from its children.
        if block and not any(n.path == block for n in trace.nodes):
            top -= 1
        trace = trace.keep(n for n in trace.nodes if n.depth <= top + depth)
    return trace


def trace_cached(
    request: TraceRequest, *, use_cache: bool = True, on_miss: Callable[[], None] | None = None
) -> tuple[Trace, list[str]]:
    """`trace()` through the cache of explorer.cache: a meta-device record traced before with the
    same config, weight files, inputs, options and library versions is read back instead of traced,
    without importing torch. Returns the record and the notes to show the user. `on_miss` is called
    (with no argument) before tracing, e.g. to start a progress display.
    """
    from explorer import cache
    from explorer.loading import resolve_source

    source = resolve_source(
        request.model,
        config=request.config,
        allow_download=request.allow_download,
        allow_pickle=request.allow_pickle,
        need_weights=request.weights == "pretrained",
    )
    name = None
    if use_cache and request.weights == "meta":
        fingerprint = cache.source_fingerprint(source, request.component, request.allow_pickle)
        name = cache.key(component=request.component, source=fingerprint, allow_pickle=request.allow_pickle, **request.inputs())
        if (hit := cache.load(name)) is not None:
            return hit
    if on_miss is not None:
        on_miss()
    loaded = load(request.component, source, weights=request.weights, allow_pickle=request.allow_pickle, seed=request.seed)
    record = trace_loaded(loaded, request)
    if name is not None:
        cache.store(name, record, list(loaded.notes))
    return record, list(loaded.notes)


__all__ = ["COMPONENTS", "TraceRequest", "trace", "trace_loaded", "trace_cached", "narrow", "check_size", "check_depth"]
