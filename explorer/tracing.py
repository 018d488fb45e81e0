"""Record what flows through a real model: forward hooks on every module, plus explicit steps.

`record(model, component, run)` instruments `model`, calls `run()` (which drives the model the way
a pipeline would), and returns a frozen `Trace`. The model is always left exactly as it was found:
hooks removed, `training` flags, attention processors and attention implementation restored, also
when the forward fails (then the error names the module that was running).

What is not a module but appears in the article's figures is recorded as a *step* by the code that
performs it, with `record_step`: attention's split into heads, score matrix and merge (in
`RecordingAttnProcessor` for diffusers and `_recording_attention` for transformers), and the VAE's
mean / log-variance split, reparameterization sample and 0.18215 scaling (in `explorer.drivers`).

No rich, graphviz or typer here: capture never knows how it will be shown.
"""

from __future__ import annotations

import inspect
import sys
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import fields, is_dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from explorer.record import Node, Shape, Trace

# The recorder of the trace in progress, if any. Code that performs a step asks it to write one;
# outside a trace `record_step` does nothing, so instrumented code also runs untraced.
_ACTIVE: ContextVar["Recorder | None"] = ContextVar("sd_explorer_recorder", default=None)


class TraceError(RuntimeError):
    """The model's forward failed while tracing; the message names the module that was running."""


# -- turning arguments and outputs into shapes ------------------------------------------------


def _shape(t: torch.Tensor) -> Shape:
    return tuple(int(d) for d in t.shape)


def flatten_shapes(value: Any) -> list[Shape]:
    """Shapes of every tensor in `value`, in order: tuples, lists, dicts, ModelOutputs and
    dataclasses are walked; anything else (None, numbers, strings) contributes nothing."""
    if isinstance(value, torch.Tensor):
        return [_shape(value)]
    if isinstance(value, (tuple, list)):
        return [s for item in value for s in flatten_shapes(item)]
    if isinstance(value, dict):  # also transformers / diffusers ModelOutput (an OrderedDict)
        return [s for item in value.values() for s in flatten_shapes(item)]
    if is_dataclass(value) and not isinstance(value, type):
        return [s for f in fields(value) for s in flatten_shapes(getattr(value, f.name))]
    return []


def _input_shape(value: Any) -> Any:
    """A tensor -> its shape; a tuple/list holding tensors -> a tuple of their shapes; else None."""
    if isinstance(value, torch.Tensor):
        return _shape(value)
    if isinstance(value, (tuple, list)):
        shapes = tuple(_shape(v) for v in value if isinstance(v, torch.Tensor))
        return shapes or None
    return None


_SIGNATURES: dict[type, list[inspect.Parameter]] = {}


def _positional_names(module: nn.Module) -> list[inspect.Parameter]:
    cls = type(module)
    if cls not in _SIGNATURES:
        try:
            params = list(inspect.signature(module.forward).parameters.values())
        except (TypeError, ValueError):  # a builtin or C-implemented forward
            params = []
        _SIGNATURES[cls] = params
    return _SIGNATURES[cls]


def named_input_shapes(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Every tensor argument of a call, by its name in `module.forward`'s signature."""
    shapes: dict[str, Any] = {}
    params = _positional_names(module)
    for i, value in enumerate(args):
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY, params[i].POSITIONAL_OR_KEYWORD):
            name = params[i].name
        else:  # past the named parameters: *args
            var = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), "args")
            name = f"{var}[{i - sum(p.kind != p.VAR_POSITIONAL for p in params[:i])}]"
        shape = _input_shape(value)
        if shape is not None:
            shapes[name] = shape
    for name, value in kwargs.items():
        shape = _input_shape(value)
        if shape is not None:
            shapes[name] = shape
    return shapes


# -- the recorder ----------------------------------------------------------------------------


class Recorder:
    """Collects nodes while a model runs. Mutable while recording; `freeze()` gives the Trace."""

    def __init__(self, model: nn.Module):
        self.names = {id(m): name for name, m in model.named_modules()}
        self._params: dict[int, int] = {}
        self.nodes: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any]] = []  # the modules running right now, outermost first
        self.calls: Counter[str] = Counter()
        self.last: dict[str, Any] | None = None  # the node entered most recently

    def params_of(self, module: nn.Module) -> int:
        key = id(module)
        if key not in self._params:
            self._params[key] = sum(p.numel() for p in module.parameters())  # shared ones once
        return self._params[key]

    def enter(self, path: str, type_: str, inputs: dict[str, Any], params: int, kind: str = "module") -> dict:
        node = {
            "path": path,
            "type": type_,
            "kind": kind,
            "depth": len(self.stack),
            "call": self.calls[path],
            "inputs": inputs,
            "outputs": (),
            "params": params,
            "label": "",
            "note": "",
        }
        self.calls[path] += 1
        self.nodes.append(node)
        self.stack.append(node)
        self.last = node
        return node

    def leave(self, outputs: Any) -> None:
        node = self.stack.pop()
        node["outputs"] = tuple(flatten_shapes(outputs))

    # forward hooks -------------------------------------------------------------------------

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        path = self.names[id(module)]
        self.enter(path, type(module).__name__, named_input_shapes(module, args, kwargs), self.params_of(module))

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.leave(output)

    # steps ---------------------------------------------------------------------------------

    def step(
        self, name: str, type_: str, inputs: dict[str, Any], outputs: tuple[Shape, ...], label: str, note: str
    ) -> None:
        parent = self.stack[-1]["path"] if self.stack else ""
        path = f"{parent}.{name}" if parent else name
        node = self.enter(path, type_, inputs, params=0, kind="step")
        node["label"], node["note"] = label, note
        self.stack.pop()
        node["outputs"] = outputs

    def freeze(self, **trace_fields: Any) -> Trace:
        nodes = tuple(
            Node(
                path=n["path"],
                type=n["type"],
                kind=n["kind"],
                depth=n["depth"],
                call=n["call"],
                inputs=dict(n["inputs"]),
                outputs=n["outputs"],
                params=n["params"],
                label=n["label"],
                note=n["note"],
            )
            for n in self.nodes
        )
        return Trace(nodes=nodes, **trace_fields)


def record_step(
    name: str,
    type_: str,
    inputs: dict[str, torch.Tensor | Shape],
    outputs: Any,
    label: str = "",
    note: str = "",
) -> None:
    """Record a non-module step as a child of the module running now (no-op outside a trace).

    `inputs` maps names to tensors or shapes; `outputs` is a tensor, a shape, or a tuple of them.
    """
    recorder = _ACTIVE.get()
    if recorder is None:
        return

    def as_shape(x: Any) -> Shape:
        return _shape(x) if isinstance(x, torch.Tensor) else tuple(int(d) for d in x)

    if isinstance(outputs, torch.Tensor) or (outputs and isinstance(outputs[0], int)):
        outputs = (outputs,)
    recorder.step(
        name,
        type_,
        {k: as_shape(v) for k, v in inputs.items()},
        tuple(as_shape(o) for o in outputs),
        label,
        note,
    )


def _attention_steps(
    q_tokens: Shape,
    k_tokens: Shape,
    v_tokens: Shape,
    q: Shape,
    k: Shape,
    v: Shape,
    merged: Shape,
    self_attention: bool,
    causal: bool = False,
) -> None:
    """The four steps of multi-head attention, from the shapes the attention code really saw.

    q_tokens.. are [B, N, C] before the split; q, k, v are [B, heads, N, d] after it.
    """
    batch, heads, n_q, d = q
    n_k = k[2]
    scores = (batch, heads, n_q, n_k)  # (B, heads, N_q, N_k): never materialized by SDPA
    record_step(
        "split_heads",
        "SplitHeads",
        {"query": q_tokens, "key": k_tokens, "value": v_tokens},
        (q, k, v),
        label=f"split into {heads} head{'s' if heads > 1 else ''} of {d}",
        note=f"The {q_tokens[-1]} channels of Q, K and V are cut into {heads} head{'s' if heads > 1 else ''} "
        f"of {d} channels; each head attends on its own.",
    )
    if causal:
        attends_to = "itself and the tokens before it (causal mask)"
    elif self_attention:
        attends_to = "every token of the same sequence"
    else:
        attends_to = f"the {n_k} tokens of the context"
    record_step(
        "scores",
        "AttentionScores",
        {"query": q, "key": k},
        scores,
        label=f"softmax(QKᵀ/√{d})",
        note=f"Per head, each of the {n_q} query tokens gets one score per key token ({n_k}), "
        f"and softmax turns them into weights: a token attends to {attends_to}.",
    )
    record_step(
        "weighted_sum",
        "WeightedSum",
        {"scores": scores, "value": v},
        (batch, heads, n_q, v[-1]),
        label="scores · V",
        note="Each query token becomes the score-weighted average of the value vectors.",
    )
    record_step(
        "merge_heads",
        "MergeHeads",
        {"heads": (batch, heads, n_q, v[-1])},
        merged,
        label=f"merge {heads} head{'s' if heads > 1 else ''}",
        note=f"The heads' outputs are concatenated back to {merged[-1]} channels per token.",
    )


# -- diffusers attention: a processor that computes what AttnProcessor2_0 does, and says so ------------


class RecordingAttnProcessor:
    """diffusers' `AttnProcessor2_0`, step for step, recording the head split, scores and merge.

    Same operations in the same order, so outputs are identical to the stock processor
    (tests compare them on real tensors). The score matrix is never materialized: like the stock
    processor this calls `F.scaled_dot_product_attention`, and records the scores' shape.
    """

    def __call__(
        self,
        attn: Any,  # diffusers.models.attention_processor.Attention
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:  # the VAE's attention works on a feature map
            batch_size, channel, height, width = hidden_states.shape
            image_shape = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
            # (B, C, H, W) -> (B, H*W, C): every pixel becomes a token
            record_step(
                "to_tokens",
                "ToTokens",
                {"hidden_states": image_shape},
                hidden_states,
                label="[B,C,H,W] → [B,HW,C]",
                note=f"The {height}x{width} feature map becomes {height * width} tokens of {channel} channels.",
            )

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (B, N_q, inner)
        self_attention = encoder_hidden_states is None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        key = attn.to_k(encoder_hidden_states)  # (B, N_k, inner): from the prompt in cross-attention
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        q_tokens, k_tokens, v_tokens = query.shape, key.shape, value.shape
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N_q, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N_k, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )  # (B, heads, N_q, d)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # (B, N_q, inner)
        hidden_states = hidden_states.to(query.dtype)
        _attention_steps(
            q_tokens, k_tokens, v_tokens, query.shape, key.shape, value.shape, hidden_states.shape, self_attention
        )

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            tokens_shape = hidden_states.shape
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
            record_step(
                "to_image",
                "ToImage",
                {"hidden_states": tokens_shape},
                hidden_states,
                label="[B,HW,C] → [B,C,H,W]",
                note="The tokens are laid back out as a feature map.",
            )

        if attn.residual_connection:
            hidden_states = hidden_states + residual

        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states


def _stock_processor_names() -> set[str]:
    # The processors RecordingAttnProcessor reproduces exactly. Others (xformers, IP-Adapter, LoRA
    # variants...) are left in place: their attention is traced as modules only.
    return {"AttnProcessor2_0", "AttnProcessor"}


# -- transformers attention: a registered attention function that delegates and records --------------


def _recording_attention(delegate: Callable) -> Callable:
    def attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
        out, weights = delegate(module, query, key, value, attention_mask, **kwargs)
        batch, heads, n_q, d = query.shape  # (B, heads, N, d): CLIPAttention split them just before
        tokens = lambda t: (t.shape[0], t.shape[2], t.shape[1] * t.shape[3])  # noqa: E731 (B, N, heads*d)
        _attention_steps(
            tokens(query),
            tokens(key),
            tokens(value),
            query.shape,
            key.shape,
            value.shape,
            (batch, n_q, heads * value.shape[-1]),  # CLIPAttention merges right after this returns
            self_attention=True,
            causal=bool(kwargs.get("is_causal", getattr(module, "is_causal", False))),
        )
        return out, weights

    return attention


def _use_recording_attention(model: nn.Module) -> Callable[[], None] | None:
    """Route a transformers model's attention through a recording function; returns the undo."""
    config = getattr(model, "config", None)
    original = getattr(config, "_attn_implementation", None)
    if original is None:
        return None
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:  # a transformers without pluggable attention: modules are still traced
        return None

    if original == "eager":
        delegates = [sys.modules[type(m).__module__] for m in model.modules() if "Attention" in type(m).__name__]
        delegate = getattr(delegates[0], "eager_attention_forward", None) if delegates else None
    else:
        delegate = ALL_ATTENTION_FUNCTIONS.get(original)
    mask = ALL_MASK_ATTENTION_FUNCTIONS.get(original)
    if delegate is None or mask is None:
        return None

    name = f"sd_explorer_{original}"
    AttentionInterface.register(name, _recording_attention(delegate))
    AttentionMaskInterface.register(name, mask)
    config._attn_implementation = name

    def undo() -> None:
        config._attn_implementation = original

    return undo


# -- instrumenting a model, always undone ---------------------------------------------------------


@contextmanager
def instrumented(model: nn.Module) -> Iterator[Recorder]:
    """Hooks on every module, recording attention, eval mode; all undone on exit, error or not."""
    recorder = Recorder(model)
    training = {m: m.training for m in model.modules()}
    processors = {
        m: m.processor
        for m in model.modules()
        if hasattr(m, "set_processor") and type(getattr(m, "processor", None)).__name__ in _stock_processor_names()
    }
    handles = []
    undo_attention = None
    token = _ACTIVE.set(recorder)
    try:
        model.eval()
        for m in processors:
            m.set_processor(RecordingAttnProcessor())
        undo_attention = _use_recording_attention(model)
        for name, m in model.named_modules():
            if name == "":  # the component itself is recorded by the driver (the VAE is not one forward)
                continue
            handles.append(m.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(recorder.post_hook, with_kwargs=True))
        yield recorder
    finally:
        _ACTIVE.reset(token)
        for h in handles:
            h.remove()
        if undo_attention is not None:
            undo_attention()
        for m, processor in processors.items():
            m.set_processor(processor)
        for m, was_training in training.items():
            m.training = was_training


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("sd-explorer", "torch", "diffusers", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def record(
    module: nn.Module,
    run: Callable[[], tuple[dict[str, torch.Tensor], Any]],
    **trace_fields: Any,
) -> Trace:
    """Run `run()` on the instrumented `module` and return the frozen Trace.

    `run` drives the model and returns (the inputs it gave the component, by name; the output).
    The component itself becomes the root node (path "", depth 0).
    """
    with instrumented(module) as recorder:
        root = recorder.enter("", type(module).__name__, {}, recorder.params_of(module))
        try:
            with torch.no_grad():
                inputs, output = run()
        except Exception as exc:
            last = recorder.stack[-1] if len(recorder.stack) > 1 else recorder.last
            where = f"in {last['path'] or 'the component'} ({last['type']})" if last else "before any module ran"
            raise TraceError(f"The {type(module).__name__} forward failed {where}: {exc}") from exc
        root["inputs"] = {k: _shape(v) for k, v in inputs.items()}
        recorder.leave(output)
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        return recorder.freeze(
            inputs=root["inputs"],
            total_params=root["params"],
            dtype=str(dtype).removeprefix("torch."),
            versions=versions(),
            **trace_fields,
        )

