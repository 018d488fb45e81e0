"""Edits: small objects that change one part of a running pipeline, and undo themselves.

Each edit is plain data (what to change, where, at which steps). `applied(pipe, edits, ...)` checks
all of them against the pipeline first — one sentence for a path that does not exist (with the
nearest ones), a word not in the prompt (with its words), a layer selection that matches nothing
(with what exists), steps out of range, an edit where it has no meaning, a factor that is not a
finite number — then installs them through wrappers of modules' `forward` on the instance and a
pre-hook on the UNet: never a copy of model code, never a weight or an attention processor changed.
When the block ends, however it ends (Ctrl-C, a failing pipeline), everything is taken away: a plain
run afterwards is the same, bit for bit, as one before.

    off(path)                      a module's contribution removed (what that means per kind: MEANINGS)
    scale(path, factor)            a module's contribution × factor
    skips(level, factor)           every skip tensor arriving in an up block × factor
    freeu(b1, b2, s1, s2)          FreeU (Si et al. 2023) by diffusers' own `unet.enable_freeu`
    prompt_at(prompt, layers)      those cross-attention layers read another prompt (P+, Voynov et al. 2023)
    swap(word, new_word, layers)   prompt-to-prompt's replace: the prompt's attention maps, the new words' values
    reweight(word, factor, layers) a word's attention weights × factor (prompt-to-prompt's reweight)
    timestep(shift)                the UNet is told t + shift, while the scheduler keeps its own t
    guidance(scale)                classifier-free guidance at `scale` instead of the run's own

Steps are the UNet calls of one generation, counted from 0: the record's steps (PNDM makes one call
more than the steps asked). Layers are the UNet's cross-attention layers (every `attn2`), chosen by
path or path prefix, by level ("down.1", "mid", "up.2"), by feature-map size ("8x8"), or "all".

Edits act on the whole batch where they change the model (off, scale, skips, freeu, timestep) and on
the prompt's half of a classifier-free-guidance batch where they change what the prompt says
(prompt_at, swap, reweight): the unconditional half is left as it was.

Watching sees what an edit did: `applied` is meant to be entered before `explorer.watch` (the
experiment does so), so that the watchers wrap the edited modules and record their edited outputs.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Iterable, Iterator

from explorer.errors import ExplorerError, OptionError

Steps = Any  # None (every step), an int, "3", "0-5" (both ends included), "10-", a range or a list of ints
Layers = Any  # "all", a path or path prefix, "down.1" / "mid" / "up.2", "8x8", or a list of them

# What `off` means for each kind of module, and what `scale` then multiplies: the part of the module's
# output that is its own contribution.
BRANCHES = {  # their output is added to a residual stream by the module around them: it becomes zero
    "Attention": "its output becomes zero: the residual stream it is added to passes on unchanged",
    "FeedForward": "its output becomes zero: the residual stream it is added to passes on unchanged",
}
PASS_THROUGH = {  # they add their own work to their input: the input passes through
    "ResnetBlock2D": "its shortcut passes on: the input itself, or conv_shortcut(input) where the channels change",
    "BasicTransformerBlock": "its input passes through unchanged",
    "Transformer2DModel": "its input passes through unchanged",
    "UNetMidBlock2DCrossAttn": "its input passes through unchanged",
    "UNetMidBlock2D": "its input passes through unchanged",
}
SKIP_MEANING = "the skip tensor arriving in the up block becomes zero (its place in the concatenation is kept)"
WHERE_OFF_WORKS = (
    "off and scale work on attention layers (attn1, attn2) and feed-forwards (ff), whose output is added to a "
    "residual stream; on ResnetBlock2D, BasicTransformerBlock, Transformer2DModel and the mid block, which add "
    "their work to their input; and on skip tensors (down_blocks.1[2], conv_in[0])"
)
REFUSALS = {  # why `off` means nothing for a kind of module
    "CrossAttnDownBlock2D": "halves the resolution and hands skip tensors to the up path, so nothing of its output's "
    "shape could pass in its place",
    "DownBlock2D": "halves the resolution and hands skip tensors to the up path, so nothing of its output's shape "
    "could pass in its place",
    "CrossAttnUpBlock2D": "joins the skip tensors to its input and doubles the resolution, so nothing of its output's "
    "shape could pass in its place",
    "UpBlock2D": "joins the skip tensors to its input and doubles the resolution, so nothing of its output's shape "
    "could pass in its place",
    "Downsample2D": "halves the feature map: nothing of its output's shape could pass in its place",
    "Upsample2D": "doubles the feature map: nothing of its output's shape could pass in its place",
    "Timesteps": "turns t into the sinusoidal features every block's time embedding is made of; timestep(shift) "
    "changes what the UNet is told instead",
    "TimestepEmbedding": "makes the time embedding every ResnetBlock2D reads; timestep(shift) changes what the UNet "
    "is told instead",
}


def _finite(name: str, value: Any) -> float:
    """A factor as a float: one sentence when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(name, f"must be a number, got {value!r}.") from None
    if not math.isfinite(number) or isinstance(value, bool):
        raise OptionError(name, f"must be a finite number, got {value!r}.")
    return number


# -- steps ---------------------------------------------------------------------------------------------


def step_set(steps: Steps, calls: int) -> frozenset[int] | None:
    """The step indices `steps` names, checked against the generation's `calls` UNet calls (None:
    every step). "0-5" includes both ends."""
    if steps is None or steps == "all":
        return None
    last = calls - 1
    if isinstance(steps, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?", steps)
        if not match:
            raise OptionError("steps", f'must be a step ("3"), a range ("0-5", both ends included; "10-" to the end) or '
                              f'"all", got {steps!r}.')
        first = int(match.group(1))
        end = int(match.group(3)) if match.group(3) else (last if match.group(2) else first)
        if end < first:
            raise OptionError("steps", f"{steps!r} ends before it starts.")
        found = range(first, end + 1)
    elif isinstance(steps, int) and not isinstance(steps, bool):
        found = [steps]
    else:
        try:
            found = list(steps)
        except TypeError:
            raise OptionError("steps", f"must be a step, a range of steps or a list of them, got {steps!r}.") from None
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in found):
            raise OptionError("steps", f"must hold whole numbers, got {steps!r}.")
    outside = [s for s in found if not 0 <= s <= last]
    if outside:
        raise OptionError("steps", f"must be among this generation's {calls} UNet calls, 0 to {last}; {outside[0]} is not one of them.")
    if not found:
        raise OptionError("steps", f"{steps!r} names no step.")
    return frozenset(found)


def steps_text(steps: frozenset[int] | None) -> str:
    if steps is None:
        return "every step"
    ordered = sorted(steps)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"step {ordered[0]}" if len(ordered) == 1 else f"steps {ordered[0]}–{ordered[-1]}"
    return "steps " + ", ".join(map(str, ordered))


# -- what edits are checked against and installed on -----------------------------------------------------


class Clock:
    """Which UNet call of the generation is running (the record's step), and whether its batch holds
    the two halves of classifier-free guidance. Ticks in a pre-hook on the UNet."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.step = -1
        self.halves = 1

    def install(self) -> Callable[[], None]:
        return self.pipe.unet.register_forward_pre_hook(self._tick).remove

    def _tick(self, module, args) -> None:
        self.step += 1
        self.halves = 2 if getattr(self.pipe, "do_classifier_free_guidance", False) else 1

    def on(self, steps: frozenset[int] | None) -> bool:
        return steps is None or self.step in steps


@dataclass
class Target:
    """One pipeline and one generation's settings: what edits are checked against."""

    pipe: Any
    prompt: str
    calls: int  # UNet calls the generation makes: its steps
    latent: tuple[int, int]  # the latent's (h, w): the feature-map sizes of every level follow from it
    clock: Clock = field(init=False)

    def __post_init__(self):
        self.clock = Clock(self.pipe)

    @functools.cached_property
    def modules(self) -> dict[str, Any]:
        return dict(self.pipe.unet.named_modules())

    @functools.cached_property
    def cross_attention(self) -> dict[str, Any]:
        """Every cross-attention layer (`attn2`), in the U's order: down, mid, up."""
        found = {p: m for p, m in self.modules.items() if type(m).__name__ == "Attention" and getattr(m, "is_cross_attention", False)}
        return dict(sorted(found.items(), key=lambda item: u_order(item[0])))

    @functools.cached_property
    def tokens(self) -> list[str]:
        from explorer.tokenizer import tokenize_with

        tok = self.pipe.tokenizer
        record = tokenize_with(tok, [self.prompt], tok.model_max_length)[1][0]
        return record["tokens"][: record["length"]]

    def level(self, path: str) -> str:
        """"down.1", "mid" or "up.2": where a module sits in the U."""
        parts = path.split(".")
        if parts[0] == "mid_block":
            return "mid"
        if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
            return f"{parts[0][:-7]}.{parts[1]}"
        return parts[0]

    def size(self, path: str) -> tuple[int, int]:
        """The feature map (h, w) a module inside a level works on (before the level's own resampler)."""
        unet = self.pipe.unet
        downs = [getattr(b, "downsamplers", None) is not None for b in unet.down_blocks]
        ups = [getattr(b, "upsamplers", None) is not None for b in unet.up_blocks]
        level = self.level(path)
        if level.startswith("down."):
            halvings = sum(downs[: int(level[5:])])
        elif level.startswith("up."):
            halvings = sum(downs) - sum(ups[: int(level[3:])])
        else:
            halvings = sum(downs)
        h, w = self.latent
        for _ in range(halvings):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def nearest(self, path: str, among: Iterable[str]) -> str:
        close = difflib.get_close_matches(path, list(among), n=3, cutoff=0.5)
        return f" (the nearest: {', '.join(close)})" if close else ""

    def embedding(self, prompt: str):
        """`prompt` encoded by the pipeline's own `encode_prompt`, as it encodes the prompt it is
        called with: (1, 77, C)."""
        import torch

        with torch.no_grad():
            return self.pipe.encode_prompt(prompt=prompt, device=self.pipe._execution_device, num_images_per_prompt=1,
                                           do_classifier_free_guidance=False)[0]

    def rows(self, word: str, what: str = "word") -> list[int]:
        from explorer.maps import token_rows, words_of

        found = token_rows(self.tokens, word)
        if not found or word.startswith("<"):
            raise OptionError(what, f"{word!r} is not in the prompt {self.prompt!r}: its words are {', '.join(words_of(self.tokens))}.")
        return found


def u_order(path: str) -> tuple[int, int, str]:
    parts = path.split(".")
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}.get(parts[0], 3)
    index = int(parts[1]) if rank in (0, 2) and len(parts) > 1 and parts[1].isdigit() else 0
    return rank, index, path


def select_layers(target: Target, layers: Layers) -> list[str]:
    """The cross-attention layers (paths) a selection names: "all", a path or a path prefix, a level
    ("down.1", "mid", "up.2"), a feature-map size ("8x8"), or a list (or a comma-separated string) of
    them. One sentence naming what exists when it matches nothing."""
    every = target.cross_attention
    if not every:
        raise ExplorerError("This UNet has no cross-attention layer: edits of what the prompt says have nowhere to act.")
    wanted = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else list(layers)
    found: list[str] = []
    for one in wanted:
        if not isinstance(one, str) or not one:
            raise OptionError("layers", f"must be a name or a list of names, got {one!r}.")
        if one == "all":
            matched = list(every)
        elif re.fullmatch(r"\d+x\d+", one):
            matched = [p for p in every if "%dx%d" % target.size(p) == one]
        elif re.fullmatch(r"(down|up)\.\d+|mid", one):
            matched = [p for p in every if target.level(p) == one]
        else:
            matched = [p for p in every if p == one or p.startswith(one.rstrip(".") + ".")]
        if not matched:
            levels = list(dict.fromkeys(target.level(p) for p in every))
            sizes = list(dict.fromkeys("%dx%d" % target.size(p) for p in every))
            raise OptionError(
                "layers", f"{one!r} matches no cross-attention layer: there are {len(every)}, at the levels "
                f"{', '.join(levels)} (feature maps {', '.join(sizes)}), e.g. {next(iter(every))}.")
        found += [p for p in matched if p not in found]
    return sorted(found, key=u_order)


def skip_routes(unet: Any) -> dict[str, tuple[int, int]]:
    """Every skip tensor, by name, and where it arrives: (up block, position in the tuple it is handed).
    The names are the block that makes them and their index: conv_in[0], then down_blocks.0[0], ...
    (one per resnet, one more after a downsampler), as UNet2DConditionModel.forward collects them; each
    up block takes as many from the end as it has resnets."""
    names = ["conv_in[0]"]
    for i, block in enumerate(unet.down_blocks):
        count = len(block.resnets) + (1 if getattr(block, "downsamplers", None) is not None else 0)
        names += [f"down_blocks.{i}[{k}]" for k in range(count)]
    routes = {}
    for j, block in enumerate(unet.up_blocks):
        taken, names = names[-len(block.resnets):], names[: -len(block.resnets)]
        routes.update({name: (j, k) for k, name in enumerate(taken)})
    return routes


# -- edits ---------------------------------------------------------------------------------------------


@dataclass
class Bound:
    """An edit checked against one target: what it will do, in words and as the record keeps it, and
    how it is installed (a function returning the undo)."""

    record: dict[str, Any]
    install: Callable[[], Callable[[], None]]

    @property
    def text(self) -> str:
        return self.record["text"]


@dataclass(frozen=True)
class Edit:
    """One change to a running UNet. `bind(target)` checks it and says what it will do."""

    kind: ClassVar[str] = ""
    written: str = field(default="", compare=False, repr=False, kw_only=True)  # as the command line gave it

    def bind(self, target: Target) -> Bound:  # pragma: no cover - every edit has its own
        raise NotImplementedError

    @property
    def call(self) -> str:
        """How the user wrote it: `--swap red=blue@8x8`, or `swap('red', 'blue', '8x8')`."""
        if self.written:
            return self.written
        shown = [f for f in fields(self) if f.name != "written"]
        values = [repr(getattr(self, f.name)) if f.default is MISSING else f"{f.name}={getattr(self, f.name)!r}"
                  for f in shown if f.default is MISSING or getattr(self, f.name) != f.default]
        return f"{getattr(self, 'name', self.kind)}({', '.join(values)})"


def _wrapped_forward(module: Any, wrapper_of: Callable[[Callable], Callable]) -> Callable[[], None]:
    from explorer.capture.activity import wrap_on_instance

    def outer(forward: Callable) -> Callable:
        return functools.wraps(forward)(wrapper_of(forward))

    return wrap_on_instance(module, "forward", outer)


def _first_input(args: tuple, kwargs: dict):
    return kwargs["hidden_states"] if "hidden_states" in kwargs else (args[0] if args else kwargs.get("input_tensor"))


def _with_first(output: Any, tensor: Any) -> Any:
    """`output` (a tensor, a tuple, or a diffusers output with .sample) with `tensor` in its first place."""
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    if hasattr(output, "sample") and not hasattr(output, "shape"):
        return type(output)(sample=tensor)
    return tensor


def first_output(output: Any):
    if isinstance(output, tuple):
        return output[0]
    return output.sample if hasattr(output, "sample") and not hasattr(output, "shape") else output


@dataclass(frozen=True)
class Scale(Edit):
    """A module's contribution × `factor` (`off`: × 0). Branches (attention, feed-forward): output ×
    factor. Modules that add their work to their input: input + factor · (output − input), where the
    input is a ResnetBlock2D's shortcut of it. A skip tensor (down_blocks.1[2]): × factor where it
    arrives in its up block."""

    path: str
    factor: float = 0.0
    steps: Steps = None
    kind: ClassVar[str] = "scale"

    @property
    def name(self) -> str:
        return "off" if self.factor == 0 and type(self) is Off else "scale"

    def bind(self, target: Target) -> Bound:
        factor = _finite("factor", self.factor)
        steps = step_set(self.steps, target.calls)
        routes = skip_routes(target.pipe.unet)
        record = {"kind": self.name, "path": self.path, "factor": factor, "steps": _steps_record(steps)}
        what = "off" if self.name == "off" else f"× {factor:g}"
        if self.path in routes:
            up, position = routes[self.path]
            meaning = SKIP_MEANING if self.name == "off" else f"the skip tensor arriving in up_blocks.{up} is multiplied by {factor:g}"
            record.update(type="skip tensor", meaning=meaning, text=f"{self.path} {what} ({meaning}), {steps_text(steps)}")
            return Bound(record, lambda: _scale_skip(target, up, position, factor, steps))
        module = target.modules.get(self.path) if self.path else None
        if module is None:
            called = [p for p, m in target.modules.items() if p and type(m).__name__ not in ("ModuleList", "ModuleDict")]
            raise OptionError("path", f"{self.path!r} is not a module of this UNet{target.nearest(self.path, [*called, *routes])}; "
                              "see the paths with `explore unet --depth 3`.")
        kind = type(module).__name__
        if kind == "Attention" and getattr(module, "residual_connection", False):
            raise ExplorerError(f"{self.path} is an attention layer that adds its own input back: {WHERE_OFF_WORKS}.")
        if kind in BRANCHES:
            meaning = BRANCHES[kind] if self.name == "off" else f"its output is multiplied by {factor:g}"
            install = functools.partial(_scale_branch, target, module, factor, steps)
        elif kind in PASS_THROUGH:
            if kind == "ResnetBlock2D" and (module.upsample is not None or module.downsample is not None):
                raise ExplorerError(f"{self.path} is a ResnetBlock2D that resamples its input: its shortcut is not a "
                                    "tensor the explorer can hand on; switch off a ResnetBlock2D that keeps the size.")
            meaning = PASS_THROUGH[kind] if self.name == "off" else f"what it adds to its input is multiplied by {factor:g}"
            install = functools.partial(_scale_residual, target, module, factor, steps)
        else:
            raise ExplorerError(f"`{self.name}` has no meaning for {self.path} ({kind}): it {_refusal(target, self.path, kind)}.")
        record.update(type=kind, meaning=meaning, text=f"{self.path} {what} ({kind}: {meaning}), {steps_text(steps)}")
        return Bound(record, install)


@dataclass(frozen=True)
class Off(Scale):
    """A module's contribution removed: see MEANINGS in the module's docstring."""


def _refusal(target: Target, path: str, kind: str) -> str:
    if kind in REFUSALS:
        reason = REFUSALS[kind]
        if kind.endswith("Block2D"):
            parts = [p for p, m in target.modules.items() if p.startswith(path + ".") and p.count(".") == path.count(".") + 2
                     and (type(m).__name__ in PASS_THROUGH or type(m).__name__ in BRANCHES)]
            reason += f"; switch off its parts instead: {', '.join(parts[:6])}" if parts else ""
        return reason
    if path in ("conv_in", "conv_out"):
        return ("turns the latent's channels into the blocks' (or back): without it nothing reaches the blocks (or the "
                "scheduler), and there is no residual around it")
    return f"is a layer inside a block, with no residual around it: removing it would break the computation, not take a contribution away; {WHERE_OFF_WORKS}"


def _steps_record(steps: frozenset[int] | None) -> list[int] | None:
    return None if steps is None else sorted(steps)


def _scale_branch(target: Target, module: Any, factor: float, steps) -> Callable[[], None]:
    """output × factor: the module still runs (its attention maps are still recorded), its result is scaled."""
    clock = target.clock

    def wrapper_of(forward):
        def edited(*args, **kwargs):
            output = forward(*args, **kwargs)
            if not clock.on(steps):
                return output
            first = first_output(output)
            return _with_first(output, first * factor if factor else first.new_zeros(first.shape))

        return edited

    return _wrapped_forward(module, wrapper_of)


def _shortcut(module: Any, x):
    """What a ResnetBlock2D adds its work to: its input, through conv_shortcut where the channels change,
    divided by its output scale factor as its output is."""
    if module.conv_shortcut is not None:
        x = module.conv_shortcut(x)
    return x / module.output_scale_factor


def _scale_residual(target: Target, module: Any, factor: float, steps) -> Callable[[], None]:
    """input + factor · (output − input), the input being a ResnetBlock2D's shortcut of it."""
    clock, resnet = target.clock, type(module).__name__ == "ResnetBlock2D"

    def wrapper_of(forward):
        def edited(*args, **kwargs):
            output = forward(*args, **kwargs)
            if not clock.on(steps) or factor == 1:  # × 1: the output as it is, not recomputed in floating point
                return output
            x = _first_input(args, kwargs)
            passed = _shortcut(module, x) if resnet else x
            first = first_output(output)
            return _with_first(output, passed + factor * (first - passed) if factor else passed)

        return edited

    return _wrapped_forward(module, wrapper_of)


def _scale_skip(target: Target, up: int, position: int, factor: float, steps) -> Callable[[], None]:
    """One skip tensor × factor where it arrives in up block `up` (the tuple it is handed is rebuilt)."""
    return _scale_skips(target, up, {position}, factor, steps)


def _scale_skips(target: Target, up: int, positions: set[int] | None, factor: float, steps) -> Callable[[], None]:
    clock = target.clock

    def wrapper_of(forward):
        def edited(*args, **kwargs):
            if clock.on(steps) and "res_hidden_states_tuple" in kwargs:
                skips = kwargs["res_hidden_states_tuple"]
                kwargs["res_hidden_states_tuple"] = tuple(
                    t * factor if positions is None or k in positions else t for k, t in enumerate(skips))
            return forward(*args, **kwargs)

        return edited

    return _wrapped_forward(target.pipe.unet.up_blocks[up], wrapper_of)


@dataclass(frozen=True)
class Skips(Edit):
    """Every skip tensor arriving in up block `level` (0, 1, ... or "up.1") × `factor`."""

    level: Any
    factor: float
    steps: Steps = None
    kind: ClassVar[str] = "skips"

    def bind(self, target: Target) -> Bound:
        factor = _finite("factor", self.factor)
        steps = step_set(self.steps, target.calls)
        count = len(target.pipe.unet.up_blocks)
        text = str(self.level)
        match = re.fullmatch(r"(?:up\.|up_blocks\.)?(\d+)", text)
        if not match or int(match.group(1)) >= count:
            raise OptionError("level", f"must be an up block, up.0 to up.{count - 1} (or 0 to {count - 1}), got {self.level!r}.")
        up = int(match.group(1))
        arriving = [name for name, (j, _) in skip_routes(target.pipe.unet).items() if j == up]
        meaning = f"the {len(arriving)} skip tensors arriving in up_blocks.{up} ({', '.join(arriving)}) × {factor:g}"
        record = {"kind": self.kind, "level": f"up.{up}", "factor": factor, "steps": _steps_record(steps),
                  "meaning": meaning, "text": f"skips into up.{up} × {factor:g} ({meaning}), {steps_text(steps)}"}
        return Bound(record, lambda: _scale_skips(target, up, None, factor, steps))


FREEU_SD15 = {"b1": 1.5, "b2": 1.6, "s1": 0.9, "s2": 0.2}  # the values FreeU published for SD1.5


@dataclass(frozen=True)
class FreeU(Edit):
    """FreeU by diffusers' own implementation (`unet.enable_freeu`): in the first two up blocks, half
    the backbone's channels × b1 (b2), and the skip tensors' low frequencies × s1 (s2). At every step,
    as diffusers applies it."""

    b1: float = FREEU_SD15["b1"]
    b2: float = FREEU_SD15["b2"]
    s1: float = FREEU_SD15["s1"]
    s2: float = FREEU_SD15["s2"]
    kind: ClassVar[str] = "freeu"

    def bind(self, target: Target) -> Bound:
        values = {name: _finite(name, getattr(self, name)) for name in ("b1", "b2", "s1", "s2")}
        if not all(values.values()):
            raise OptionError("freeu", f"factors must not be 0: diffusers' FreeU is off when any of them is, got {values}.")
        if not hasattr(target.pipe.unet, "enable_freeu"):
            raise ExplorerError(f"{type(target.pipe.unet).__name__} has no enable_freeu: diffusers' FreeU runs on UNet2DConditionModel.")
        shown = ", ".join(f"{k} {v:g}" for k, v in values.items())
        meaning = ("in up_blocks.0 and up_blocks.1, half the backbone's channels × b1 and b2, the skip tensors' low "
                   "frequencies × s1 and s2 (diffusers' enable_freeu)")
        record = {"kind": self.kind, **values, "steps": None, "meaning": meaning, "text": f"FreeU {shown} ({meaning}), every step"}
        return Bound(record, lambda: _freeu(target.pipe.unet, values))


def _freeu(unet: Any, values: dict[str, float]) -> Callable[[], None]:
    blocks = list(unet.up_blocks)
    before = [{k: vars(b).get(k, _ABSENT) for k in values} for b in blocks]
    unet.enable_freeu(**values)

    def undo() -> None:
        for block, kept in zip(blocks, before):
            for k, v in kept.items():
                if v is _ABSENT:
                    vars(block).pop(k, None)
                else:
                    setattr(block, k, v)

    return undo


_ABSENT = object()


@dataclass(frozen=True)
class PromptAt(Edit):
    """The chosen cross-attention layers read `prompt` instead (P+): the prompt's half of their
    context is that prompt's embedding, as the pipeline's own encode_prompt makes it."""

    prompt: str
    layers: Layers = "all"
    steps: Steps = None
    kind: ClassVar[str] = "prompt_at"

    def bind(self, target: Target) -> Bound:
        if not isinstance(self.prompt, str):
            raise OptionError("prompt", f"must be text, got {self.prompt!r}.")
        steps = step_set(self.steps, target.calls)
        layers = select_layers(target, self.layers)
        where = _layers_text(target, layers)
        meaning = f"{where} read {self.prompt!r} instead of the prompt"
        record = {"kind": self.kind, "prompt": self.prompt, "layers": layers, "steps": _steps_record(steps),
                  "meaning": meaning, "text": f"{meaning}, {steps_text(steps)}"}

        def install() -> Callable[[], None]:
            other = target.embedding(self.prompt)  # (1, 77, C)
            return _undo_all([_read_other(target, target.modules[p], other, steps) for p in layers])

        return Bound(record, install)


def _layers_text(target: Target, layers: list[str]) -> str:
    every = target.cross_attention
    if len(layers) == len(every):
        return f"all {len(every)} cross-attention layers"
    levels = list(dict.fromkeys(target.level(p) for p in layers))
    sizes = list(dict.fromkeys("%dx%d" % target.size(p) for p in layers))
    return f"{len(layers)} of the {len(every)} cross-attention layers ({', '.join(levels)}: {', '.join(sizes)})"


def _undo_all(undos: list[Callable[[], None]]) -> Callable[[], None]:
    def undo() -> None:
        for one in reversed(undos):
            one()

    return undo


def _prompt_half(t, clock: Clock) -> int:
    from explorer.capture.activity import prompt_start

    return prompt_start(t, clock.halves)


def _read_other(target: Target, attention: Any, other, steps) -> Callable[[], None]:
    """attn2 reads `other` (1, 77, C) in the prompt's half of its context."""
    import torch

    clock = target.clock

    def wrapper_of(forward):
        def edited(hidden_states, *args, **kwargs):
            context = kwargs.get("encoder_hidden_states", args[0] if args else None)
            if clock.on(steps) and context is not None:
                start = _prompt_half(context, clock)
                replaced = torch.cat([context[:start], other.to(context).expand(len(context) - start, -1, -1)])
                if "encoder_hidden_states" in kwargs:
                    kwargs["encoder_hidden_states"] = replaced
                else:
                    args = (replaced, *args[1:])
            return forward(hidden_states, *args, **kwargs)

        return edited

    return _wrapped_forward(attention, wrapper_of)


def replaced_word(prompt: str, word: str, new_word: str) -> str:
    """The prompt with every occurrence of `word` (a whole word, any case) replaced by `new_word`."""
    return re.sub(rf"(?<![\w]){re.escape(word)}(?![\w])", new_word, prompt, flags=re.IGNORECASE)


@dataclass(frozen=True)
class Swap(Edit):
    """Prompt-to-prompt's replace (Hertz et al. 2022) in the chosen layers and steps: the attention
    weights of the prompt as it is (its keys), the values of the prompt with `word` replaced by
    `new_word`. Elsewhere the model reads the prompt as it is. The two words must take as many
    tokens, so that every token keeps its place."""

    word: str
    new_word: str
    layers: Layers = "all"
    steps: Steps = None
    kind: ClassVar[str] = "swap"

    def bind(self, target: Target) -> Bound:
        from explorer.tokenizer import tokenize_with

        steps = step_set(self.steps, target.calls)
        rows = target.rows(self.word)
        if not isinstance(self.new_word, str) or not self.new_word.strip():
            raise OptionError("new_word", f"must be a word, got {self.new_word!r}.")
        new_prompt = replaced_word(target.prompt, self.word, self.new_word.strip())
        tok = target.pipe.tokenizer
        new = tokenize_with(tok, [new_prompt], tok.model_max_length)[1][0]
        new_tokens = new["tokens"][: new["length"]]
        if len(new_tokens) != len(target.tokens):
            raise ExplorerError(
                f"swap needs words of as many tokens, so that every token keeps its place: {self.word!r} takes "
                f"{_token_count(tok, self.word)}, {self.new_word.strip()!r} takes {_token_count(tok, self.new_word)}.")
        layers = select_layers(target, self.layers)
        meaning = (f"{_layers_text(target, layers)} attend as for {target.prompt!r} and take their values from "
                   f"{new_prompt!r}")
        record = {"kind": self.kind, "word": self.word, "new_word": self.new_word.strip(), "new_prompt": new_prompt,
                  "rows": rows, "layers": layers, "steps": _steps_record(steps), "meaning": meaning,
                  "text": f"swap {self.word} → {self.new_word.strip()}: {meaning}, {steps_text(steps)}"}

        def install() -> Callable[[], None]:
            other = target.embedding(new_prompt)
            return _undo_all([_values_from(target, target.modules[p].to_v, other, steps) for p in layers])

        return Bound(record, install)


def _token_count(tok: Any, word: str) -> int:
    from explorer.tokenizer import tokenize_with

    return tokenize_with(tok, [word.strip()], tok.model_max_length)[1][0]["length"] - 2  # without start and end


def _values_from(target: Target, to_v: Any, other, steps) -> Callable[[], None]:
    """to_v of the prompt's half computed from `other` (1, 77, C) instead: the same attention weights,
    other values. Computed once a layer (the context does not change between steps)."""
    import torch

    clock, kept = target.clock, {}  # kept: the values of `other`, once computed

    def wrapper_of(forward):
        def edited(context, *args, **kwargs):
            values = forward(context, *args, **kwargs)  # (B, 77, inner)
            if not clock.on(steps):
                return values
            if "other" not in kept:
                kept["other"] = forward(other.to(context), *args, **kwargs)  # (1, 77, inner)
            start = _prompt_half(values, clock)
            return torch.cat([values[:start], kept["other"].expand(len(values) - start, -1, -1)])

        return edited

    return _wrapped_forward(to_v, wrapper_of)


@dataclass(frozen=True)
class Reweight(Edit):
    """A word's attention weights × `factor` in the chosen layers and steps (prompt-to-prompt's reweight,
    without renormalizing): done by scaling the word's value vectors, which gives the same output, since
    Σⱼ wⱼ·cⱼ·vⱼ = Σⱼ wⱼ·(cⱼ·vⱼ). The recorded maps show the weights before it."""

    word: str
    factor: float
    layers: Layers = "all"
    steps: Steps = None
    kind: ClassVar[str] = "reweight"

    def bind(self, target: Target) -> Bound:
        factor = _finite("factor", self.factor)
        steps = step_set(self.steps, target.calls)
        rows = target.rows(self.word)
        layers = select_layers(target, self.layers)
        meaning = f"in {_layers_text(target, layers)}, the attention weights of {self.word!r} (tokens {rows}) × {factor:g}"
        record = {"kind": self.kind, "word": self.word, "factor": factor, "rows": rows, "layers": layers,
                  "steps": _steps_record(steps), "meaning": meaning, "text": f"{meaning}, {steps_text(steps)}"}
        return Bound(record, lambda: _undo_all([_word_scaled(target, target.modules[p].to_v, rows, factor, steps) for p in layers]))


def _word_scaled(target: Target, to_v: Any, rows: list[int], factor: float, steps) -> Callable[[], None]:
    clock = target.clock

    def wrapper_of(forward):
        def edited(*args, **kwargs):
            values = forward(*args, **kwargs)  # (B, 77, inner)
            if not clock.on(steps):
                return values
            start = _prompt_half(values, clock)
            values = values.clone()
            values[start:, rows] *= factor
            return values

        return edited

    return _wrapped_forward(to_v, wrapper_of)


@dataclass(frozen=True)
class Timestep(Edit):
    """The UNet is told t + `shift` (kept within the noise schedule, 0 to T − 1), while the scheduler
    steps with its own t: what the time embedding tells the blocks."""

    shift: float
    steps: Steps = None
    kind: ClassVar[str] = "timestep"

    def bind(self, target: Target) -> Bound:
        shift = _finite("shift", self.shift)
        steps = step_set(self.steps, target.calls)
        last = int(target.pipe.scheduler.config.get("num_train_timesteps", 1000)) - 1
        meaning = f"the UNet is told t {'+' if shift >= 0 else '−'} {abs(shift):g} (within 0 to {last}); the scheduler keeps its t"
        record = {"kind": self.kind, "shift": shift, "steps": _steps_record(steps), "meaning": meaning,
                  "text": f"{meaning}, {steps_text(steps)}"}
        return Bound(record, lambda: _told_time(target, shift, last, steps))


def _told_time(target: Target, shift: float, last: int, steps) -> Callable[[], None]:
    import torch

    clock = target.clock

    def shifted(module, args, kwargs):
        if not clock.on(steps):
            return None
        t = kwargs["timestep"] if "timestep" in kwargs else args[1]
        t = torch.as_tensor(t)
        t = (t + shift).clamp(0, last).to(t.dtype) if t.is_floating_point() else (t + round(shift)).clamp(0, last)
        if "timestep" in kwargs:
            return args, {**kwargs, "timestep": t}
        return (args[0], t, *args[2:]), kwargs

    return target.pipe.unet.register_forward_pre_hook(shifted, with_kwargs=True).remove


@dataclass(frozen=True)
class Guidance(Edit):
    """Classifier-free guidance at `scale` in the chosen steps, instead of the run's own: the prompt's
    half of the UNet's prediction is moved so that the pipeline's own formula, uncond + g · (cond′ −
    uncond), gives uncond + scale · (cond − uncond). 1: the prompt's prediction alone; 0: the
    unconditional one alone. Needs a run with guidance above 1 (a batch of two halves)."""

    scale: float
    steps: Steps = None
    kind: ClassVar[str] = "guidance"

    def bind(self, target: Target) -> Bound:
        scale = _finite("scale", self.scale)
        if scale < 0:
            raise OptionError("scale", f"must be 0 or more (1: the prompt alone, 0: no prompt), got {scale:g}.")
        steps = step_set(self.steps, target.calls)
        meaning = f"classifier-free guidance at {scale:g} instead of the run's own: uncond + {scale:g} · (cond − uncond)"
        record = {"kind": self.kind, "scale": scale, "steps": _steps_record(steps), "meaning": meaning,
                  "text": f"{meaning}, {steps_text(steps)}"}
        return Bound(record, lambda: _guided(target, scale, steps))


def _guided(target: Target, scale: float, steps) -> Callable[[], None]:
    """cond′ = uncond + (scale / g) · (cond − uncond) in the UNet's output, g the pipeline's guidance.
    (The watchers record that cond′ as the conditional prediction.)"""
    import torch

    clock = target.clock

    def wrapper_of(forward):
        def edited(*args, **kwargs):
            output = forward(*args, **kwargs)
            g = float(getattr(target.pipe, "guidance_scale", 1.0))
            if not clock.on(steps) or clock.halves != 2 or scale == g:
                return output
            prediction = first_output(output)
            uncond, cond = prediction.chunk(2)
            return _with_first(output, torch.cat([uncond, uncond + (scale / g) * (cond - uncond)]))

        return edited

    return _wrapped_forward(target.pipe.unet, wrapper_of)


# -- what users write ------------------------------------------------------------------------------------


def off(path: str, steps: Steps = None) -> Off:
    """Switch a module off: its contribution removed (see the module's docstring for each kind)."""
    return Off(path, 0.0, steps)


def scale(path: str, factor: float, steps: Steps = None) -> Scale:
    """A module's contribution × factor."""
    return Scale(path, factor, steps)


def skips(level, factor: float, steps: Steps = None) -> Skips:
    """Every skip tensor arriving in up block `level` (e.g. "up.1" or 1) × factor."""
    return Skips(level, factor, steps)


def freeu(b1: float = FREEU_SD15["b1"], b2: float = FREEU_SD15["b2"], s1: float = FREEU_SD15["s1"],
          s2: float = FREEU_SD15["s2"]) -> FreeU:
    """FreeU, by diffusers' own enable_freeu; the values published for SD1.5 by default."""
    return FreeU(b1, b2, s1, s2)


def prompt_at(prompt: str, layers: Layers = "all", steps: Steps = None) -> PromptAt:
    """These cross-attention layers read `prompt` instead (P+)."""
    return PromptAt(prompt, layers, steps)


def swap(word: str, new_word: str, layers: Layers = "all", steps: Steps = None) -> Swap:
    """prompt-to-prompt's replace: the prompt's attention weights, `new_word`'s values."""
    return Swap(word, new_word, layers, steps)


def reweight(word: str, factor: float, layers: Layers = "all", steps: Steps = None) -> Reweight:
    """A word's attention weights × factor (prompt-to-prompt's reweight)."""
    return Reweight(word, factor, layers, steps)


def timestep(shift: float, steps: Steps = None) -> Timestep:
    """The UNet is told t + shift."""
    return Timestep(shift, steps)


def guidance(scale: float, steps: Steps = None) -> Guidance:
    """Classifier-free guidance at `scale` at these steps (1: none)."""
    return Guidance(scale, steps)


def unet_calls(scheduler: Any, steps: int) -> int:
    """How many UNet calls a generation of `steps` steps makes with this scheduler (PNDM: one more)."""
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(steps)
    return len(fresh.timesteps)


def bind(pipe: Any, edits: Iterable[Edit], *, prompt: str, steps: int, height: int | None = None,
         width: int | None = None) -> tuple[Target, list[Bound]]:
    """Check every edit against this pipeline and generation before anything runs: one sentence for
    the first that cannot work."""
    edits = list(edits)
    for edit in edits:
        if not isinstance(edit, Edit):
            raise OptionError("edits", f"must be edits made by explorer.edits (off, scale, swap, ...), got {edit!r}.")
    factor = getattr(pipe, "vae_scale_factor", 8)
    size = pipe.unet.config.sample_size * factor
    latent = ((height or size) // factor, (width or size) // factor)
    target = Target(pipe, prompt, unet_calls(pipe.scheduler, steps), latent)
    bound = []
    for edit in edits:  # each sentence says which edit it is about
        try:
            bound.append(edit.bind(target))
        except OptionError as exc:
            raise ExplorerError(f"{edit.call}: {exc.option} {exc.rest}") from None
        except ExplorerError as exc:
            raise ExplorerError(f"{edit.call}: {exc}") from None
    return target, bound


@contextmanager
def installed(target: Target, bound: list[Bound]) -> Iterator[list[Bound]]:
    """Bound edits installed on their pipeline for the block, then taken away, however it ends."""
    target.clock.step = -1
    undos = [target.clock.install()]
    try:
        for one in bound:
            undos.append(one.install())
        yield bound
    finally:
        for undo in reversed(undos):
            undo()


@contextmanager
def applied(pipe: Any, edits: Iterable[Edit], *, prompt: str, steps: int, height: int | None = None,
            width: int | None = None) -> Iterator[list[Bound]]:
    """Your pipeline with `edits` for one generation (call it once inside the block, with the same
    prompt and steps); everything is taken away when the block ends.

        with explorer.edits.applied(pipe, [off("mid_block")], prompt=p, steps=20):
            image = pipe(p, num_inference_steps=20).images[0]
    """
    target, bound = bind(pipe, edits, prompt=prompt, steps=steps, height=height, width=width)
    with installed(target, bound):
        yield bound


# -- edits written as text (the command line, the page) ----------------------------------------------------

SYNTAX = {
    "off": "PATH, e.g. mid_block or down_blocks.1.attentions.0 or down_blocks.1[2]",
    "scale": "PATH=FACTOR, e.g. mid_block=0.5",
    "skips": "LEVEL=FACTOR, e.g. up.1=0.5",
    "prompt_at": "PROMPT@LAYERS, e.g. 'a green square@8x8'",
    "swap": "WORD=NEW_WORD or WORD=NEW_WORD@LAYERS, e.g. red=blue@8x8",
    "reweight": "WORD=FACTOR or WORD=FACTOR@LAYERS, e.g. circle=2@up.1",
    "timestep": "SHIFT, e.g. 200 or -300",
    "guidance": "SCALE, e.g. 1 (no guidance) or 15",
}


def parse(kind: str, text: str, steps: Steps = None) -> Edit:
    """An edit from its text form (SYNTAX), acting at `steps`; its sentences quote the option as given."""
    edit = _parsed(kind, text, steps)
    during = f" --during {steps}" if steps not in (None, "all") else ""
    return replace(edit, written=f"--{kind.replace('_', '-')} {text.strip()}{during}")


def _parsed(kind: str, text: str, steps: Steps) -> Edit:
    if kind not in SYNTAX:
        raise OptionError("edit", f"must be one of {', '.join(SYNTAX)}, got {kind!r}.")
    option = kind.replace("_", "-")

    def wrong() -> OptionError:
        return OptionError(option, f"takes {SYNTAX[kind]}; got {text!r}.")

    text = text.strip()
    if not text:
        raise wrong()
    if kind == "off":
        return off(text, steps)
    if kind == "timestep":
        return timestep(_finite(option, text), steps)
    if kind == "guidance":
        return guidance(_finite(option, text), steps)
    if kind == "prompt_at":
        prompt, at, layers = text.rpartition("@")
        if not at or not prompt.strip() or not layers.strip():
            raise wrong()
        return prompt_at(prompt.strip(), layers.strip(), steps)
    left, equals, right = text.partition("=")
    if not equals or not left.strip() or not right.strip():
        raise wrong()
    right, at, layers = right.partition("@")
    if at and not layers.strip():
        raise wrong()
    if at and kind in ("scale", "skips"):
        raise wrong()
    layers = layers.strip() or "all"
    if kind == "scale":
        return scale(left.strip(), _finite(option, right), steps)
    if kind == "skips":
        return skips(left.strip(), _finite(option, right), steps)
    if kind == "swap":
        return swap(left.strip(), right.strip(), layers, steps)
    return reweight(left.strip(), _finite(option, right), layers, steps)
