"""The recorder: collects nodes and data-flow edges while a model runs.

Nodes come from three places:

- forward hooks on every module (`pre_hook` / `post_hook`);
- *steps* that code performing a non-module computation records with `record_step`
  (attention's head split and scores, the VAE's reparameterization sample);
- *operations* between modules that join, split or reshape tensors (a skip connection's concat,
  a residual add, the reshape of a feature map into tokens), seen by a `TorchFunctionMode` and
  recorded as steps, but only in the body of a module that has children: what happens inside a
  Conv2d or a Linear is that layer's own business.

Edges come from tensor identity: every tensor a node outputs is remembered with its producer;
when a later node receives that same tensor object, the edge producer -> consumer is recorded.
Operations that only move data around (view, permute, `.to`, indexing, scaling by a constant)
pass their input's producer on to their output, so edges see through them.

Plain data only: no rich, graphviz or typer here.
"""

from __future__ import annotations

import inspect
import weakref
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import fields, is_dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from explorer.record import Edge, Node, Shape, Trace

# The recorder of the trace in progress, if any. Code that performs a step asks it to write one;
# outside a trace `record_step` does nothing, so instrumented code also runs untraced.
_ACTIVE: ContextVar["Recorder | None"] = ContextVar("sd_explorer_recorder", default=None)


@contextmanager
def recording(recorder: "Recorder") -> Iterator["Recorder"]:
    """Make `recorder` the one `record_step` writes to, for the duration of the block."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


class Virtual:
    """Something with a shape that is not a real tensor: the attention scores (never
    materialized), or another view of a tensor (`source`), whose producer it shares."""

    __slots__ = ("shape", "source", "__weakref__")

    def __init__(self, shape, source: Any = None):
        self.shape = tuple(int(d) for d in shape)
        self.source = source


def _is_shaped(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, Virtual))


def _shape(x: torch.Tensor | Virtual) -> Shape:
    return tuple(int(d) for d in x.shape)


def tensors_in(value: Any) -> list[Any]:
    """Every tensor (or Virtual) in `value`, in order: tuples, lists, dicts, ModelOutputs and
    dataclasses are walked; anything else (None, numbers, strings) contributes nothing."""
    if _is_shaped(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors_in(item)]
    if isinstance(value, dict):  # also transformers / diffusers ModelOutput (an OrderedDict)
        return [t for item in value.values() for t in tensors_in(item)]
    if is_dataclass(value) and not isinstance(value, type):
        return [t for f in fields(value) for t in tensors_in(getattr(value, f.name))]
    return []


def output_names(value: Any, prefix: str = "") -> list[str]:
    """A name for each tensor `tensors_in(value)` finds, in the same order: the fields of the
    model's own output class ("last_hidden_state", "pooler_output", "sample"), with [i] for the
    items of a tuple inside one; "" for a tensor nothing names (a bare tensor or tuple)."""
    if _is_shaped(value):
        return [prefix]
    if isinstance(value, (tuple, list)):
        return [n for i, item in enumerate(value) for n in output_names(item, f"{prefix}[{i}]" if prefix else "")]
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in output_names(item, _dotted(prefix, str(key)))]
    if is_dataclass(value) and not isinstance(value, type):
        return [n for f in fields(value) for n in output_names(getattr(value, f.name), _dotted(prefix, f.name))]
    return []


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _input_value(value: Any) -> Any:
    """A call argument as recorded: a tensor, a tuple of tensors, or None when it holds none."""
    if _is_shaped(value):
        return value
    if isinstance(value, (tuple, list)):
        found = tuple(v for v in value if _is_shaped(v))
        return found or None
    return None


_SIGNATURES: dict[type, list[inspect.Parameter]] = {}


def _parameters(module: nn.Module) -> list[inspect.Parameter]:
    cls = type(module)
    if cls not in _SIGNATURES:
        try:
            _SIGNATURES[cls] = list(inspect.signature(module.forward).parameters.values())
        except (TypeError, ValueError):  # a builtin or C-implemented forward
            _SIGNATURES[cls] = []
    return _SIGNATURES[cls]


def named_inputs(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Every tensor argument of a call, by its name in `module.forward`'s signature."""
    found: dict[str, Any] = {}
    params = _parameters(module)
    named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), "args")
    for i, value in enumerate(args):
        name = named[i] if i < len(named) else f"{star}[{i - len(named)}]"
        if (kept := _input_value(value)) is not None:
            found[name] = kept
    for name, value in kwargs.items():
        if (kept := _input_value(value)) is not None:
            found[name] = kept
    return found


def _shapes(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: (_shape(v) if _is_shaped(v) else tuple(_shape(t) for t in v)) for k, v in inputs.items()}


# -- operations between modules that are worth a node ------------------------------------------------

_JOIN = {"cat": "Concat", "concat": "Concat", "concatenate": "Concat"}
_BINARY = {"add": "Add", "__add__": "Add", "__radd__": "Add", "mul": "Multiply", "__mul__": "Multiply", "__rmul__": "Multiply"}
_SPLIT = {"chunk", "split", "unbind", "tensor_split"}
_RESHAPE = {"reshape", "view", "flatten", "unflatten"}
_LAYOUT = _RESHAPE | {"permute", "transpose", "contiguous"}  # may extend a Reshape step
_NAMED = {"gelu": "GELU", "silu": "SiLU", "softmax": "Softmax", "interpolate": "Interpolate"}

_STEP_TEXT = {
    "Concat": ("concat", "Joins its inputs along one axis; here the channels add up."),
    "Add": ("+", "Adds its inputs element by element, broadcasting a size-1 axis: a residual or an embedding."),
    "Multiply": ("×", "Multiplies its inputs element by element, e.g. a value by its gate."),
    "Split": ("split", "Cuts one tensor into equal parts along an axis."),
    "Reshape": ("reshape", "Changes how the same values are laid out, e.g. a feature map into a sequence of tokens."),
    "GELU": ("GELU", "The GELU activation, applied element by element."),
    "SiLU": ("SiLU", "The SiLU activation, x·sigmoid(x), element by element."),
    "Softmax": ("softmax", "Turns scores into weights that sum to 1."),
    "Interpolate": ("upsample", "Resizes the feature map by interpolation."),
}


def _op_kind(name: str, ins: list, outs: list) -> str | None:
    """The step type of a torch operation, or None when it only passes data through."""
    if name in _JOIN and len(ins) >= 2:
        return "Concat"
    if name in _BINARY and len(ins) == 2 and ins[0] is not ins[1] and min(t.ndim for t in ins) >= 1:
        return _BINARY[name]
    if name in _SPLIT and len(outs) >= 2:
        return "Split"
    if name in _RESHAPE and ins and outs[0].ndim != ins[0].ndim:
        return "Reshape"
    return _NAMED.get(name)


def _step_label(kind: str, args: tuple, kwargs: dict, outs: list) -> str:
    label = _STEP_TEXT[kind][0]
    if kind in ("Concat", "Split"):
        dim = kwargs.get("dim", args[-1] if len(args) > 1 and isinstance(args[-1], int) else 0)
        label = f"{label} on dim {dim}" if kind == "Concat" else f"split in {len(outs)} on dim {dim}"
    elif kind == "Interpolate":
        scale = kwargs.get("scale_factor")
        label = f"{kwargs.get('mode', 'nearest')} ×{scale:g}" if isinstance(scale, (int, float)) else label
    return label


def _op_inputs(kind: str, ins: list) -> dict[str, Any]:
    if kind == "Concat":
        return {"tensors": tuple(ins)}
    if kind in ("Add", "Multiply"):
        return {"input": ins[0], "other": ins[1]}
    return {"input": ins[0]}


# -- the recorder ---------------------------------------------------------------------------------------


class Recorder:
    """Collects nodes and edges while a model runs. Mutable while recording; `freeze()` gives the Trace."""

    def __init__(self, model: nn.Module, manual: set[int] = frozenset()):
        self.names = {id(m): name for name, m in model.named_modules()}
        self.composite = {id(m) for m in model.modules() if next(m.children(), None) is not None}
        self.manual = set(manual)  # modules whose inside is described by their own recorded steps
        self._params: dict[int, int] = {}
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[tuple[int, str, int, str, Shape, bool]] = []  # src, port, dst, port, shape, returned
        self.stack: list[dict[str, Any]] = []  # the modules running right now, outermost first
        self.calls: Counter[str] = Counter()
        self.last: dict[str, Any] | None = None  # the node entered most recently
        self._made: dict[int, tuple[weakref.ref, int, str]] = {}  # id(tensor) -> (ref, node index, port)
        # Buffers (constants stored in a module, like CLIP's position_ids) and what is sliced from them:
        # when one is first used, a "Buffer" step makes it a source of edges like any node.
        self._buffers: dict[int, tuple[weakref.ref, str]] = {
            id(b): (weakref.ref(b), name) for name, b in model.named_buffers()
        }

    def params_of(self, module: nn.Module) -> int:
        key = id(module)
        if key not in self._params:
            self._params[key] = sum(p.numel() for p in module.parameters())  # shared ones once
        return self._params[key]

    # tensor provenance ----------------------------------------------------------------------------

    def _buffer_step(self, obj: Any) -> tuple[int, str] | None:
        """A tensor from a module buffer, used for the first time: record a Buffer step making it."""
        entry = self._buffers.get(id(obj))
        if entry is None or entry[0]() is not obj or not self.stack:
            return None
        name = entry[1]
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if not (self.stack[-1]["path"] == owner or not owner):
            return None  # only where the module that owns it uses it
        self.step(name.rsplit(".", 1)[-1], "Buffer", {}, obj, name.rsplit(".", 1)[-1],
                  "A constant stored in the module (a buffer), not learned.")
        return self.producer(obj)

    def producer(self, obj: Any) -> tuple[int, str] | None:
        key = obj.source if isinstance(obj, Virtual) and obj.source is not None else obj
        entry = self._made.get(id(key))
        if entry is not None and entry[0]() is key:  # the same object, not a new one at a reused id
            return entry[1], entry[2]
        return None

    def made_by(self, obj: Any, index: int, port: str) -> None:
        key = obj.source if isinstance(obj, Virtual) and obj.source is not None else obj
        self._made[id(key)] = (weakref.ref(key), index, port)

    # nodes ---------------------------------------------------------------------------------------

    def enter(
        self, path: str, type_: str, inputs: dict[str, Any], params: int, kind: str = "module", **flags: Any
    ) -> dict:
        node = {
            "path": path,
            "type": type_,
            "kind": kind,
            "depth": len(self.stack),
            "call": self.calls[path],
            "inputs": _shapes(inputs),
            "outputs": (),
            "params": params,
            "label": "",
            "note": "",
            "composite": False,
            "manual": False,
            **flags,
        }
        sources = []  # who made each input (a Buffer step may be recorded first, before this node)
        for name, value in inputs.items():
            items = [(name, value)] if _is_shaped(value) else [(f"{name}[{k}]", v) for k, v in enumerate(value)]
            for port, obj in items:
                if (source := self.producer(obj) or self._buffer_step(obj)) is not None:
                    sources.append((source, port, _shape(obj)))
        index = node["index"] = len(self.nodes)
        for (src, src_port), port, shape in sources:
            self.edges.append((src, src_port, index, port, shape, False))
        self.calls[path] += 1
        self.nodes.append(node)
        self.stack.append(node)
        self.last = node
        return node

    def leave(self, output: Any) -> dict:
        node = self.stack.pop()
        index = node["index"]
        outs = tensors_in(output)
        node["outputs"] = tuple(_shape(t) for t in outs)
        names = output_names(output)
        node["output_names"] = tuple(names) if any(names) else ()
        seen: set[int] = set()
        for k, obj in enumerate(outs):
            source = self.producer(obj)
            if source is not None and source[0] > index:  # made inside this node: it returns it
                self.edges.append((source[0], source[1], index, str(k), _shape(obj), True))
            if id(obj) not in seen:  # the same tensor twice in an output keeps its first port
                self.made_by(obj, index, str(k))
                seen.add(id(obj))
        return node

    # forward hooks ---------------------------------------------------------------------------------

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        key = id(module)
        self.enter(
            self.names[key],
            type(module).__name__,
            named_inputs(module, args, kwargs),
            self.params_of(module),
            composite=key in self.composite,
            manual=key in self.manual,
        )

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.leave(output)

    # steps -----------------------------------------------------------------------------------------

    def step(self, name: str, type_: str, inputs: dict[str, Any], outputs: Any, label: str, note: str) -> dict:
        parent = self.stack[-1]["path"] if self.stack else ""
        path = f"{parent}.{name}" if parent else name
        self.enter(path, type_, inputs, params=0, kind="step", label=label, note=note)
        return self.leave(outputs)

    def on_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """A torch operation ran: make it a step, or pass its input's producer on to its output."""
        if not isinstance(out, (torch.Tensor, tuple, list)):
            return  # most calls: .shape, .dim(), .item() ...
        outs = tensors_in(out)
        if not outs:
            return
        ins = tensors_in((args, kwargs))
        name = getattr(func, "__name__", "")
        top = self.stack[-1] if self.stack else None
        kind = None
        if top is not None and top["composite"] and not top["manual"]:
            kind = _op_kind(name, ins, outs)
        if kind is None:
            self._pass_through(name, ins, outs)
            return
        inputs = _op_inputs(kind, ins)
        if kind == "Reshape":  # show the layout it started from, before any permute
            inputs = {"input": Virtual(self._produced_shape(ins[0]), source=ins[0])}
        label = _step_label(kind, args, kwargs, outs)
        self.step(kind.lower(), kind, inputs, out, label, _STEP_TEXT[kind][1])

    def _produced_shape(self, t: torch.Tensor) -> Shape:
        """The shape `t`'s producer gave it, before layout-only operations (permute) changed it."""
        source = self.producer(t)
        if source is None:
            return _shape(t)
        node, port = self.nodes[source[0]], source[1]
        if port.isdigit() and int(port) < len(node["outputs"]):
            return node["outputs"][int(port)]
        return node["inputs"].get(port, _shape(t))

    def _pass_through(self, name: str, ins: list, outs: list) -> None:
        source = next((s for s in map(self.producer, ins) if s is not None), None)
        if source is None:
            for i in ins:  # a slice of a buffer is still that buffer
                if (entry := self._buffers.get(id(i))) is not None and entry[0]() is i:
                    for o in outs:
                        self._buffers[id(o)] = (weakref.ref(o), entry[1])
                    break
            return
        last = self.nodes[-1] if self.nodes else None
        for o in outs:
            if any(o is i for i in ins):
                continue  # an in-place op or a no-op `.to()`: the same tensor, the same producer
            self.made_by(o, *source)
            # reshape + permute (+ contiguous) is one layout change: extend the Reshape step just made
            if (
                name in _LAYOUT
                and last is not None
                and last["type"] == "Reshape"
                and source == (last["index"], "0")
                and len(outs) == 1
            ):
                last["outputs"] = (_shape(o),)

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
                output_names=n.get("output_names", ()),
                params=n["params"],
                label=n["label"],
                note=n["note"],
            )
            for n in self.nodes
        )
        edges = tuple(
            Edge(
                src=nodes[s].path,
                src_call=nodes[s].call,
                src_port=sp,
                dst=nodes[d].path,
                dst_call=nodes[d].call,
                dst_port=dp,
                shape=shape,
                returned=returned,
            )
            for s, sp, d, dp, shape, returned in self.edges
        )
        return Trace(nodes=nodes, edges=edges, **trace_fields)


class DataflowMode(TorchFunctionMode):
    """Shows every torch operation to the recorder (see `Recorder.on_op`)."""

    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.recorder.on_op(func, args, kwargs, out)
        return out


# -- what code performing a step calls ------------------------------------------------------------------


def tracing() -> bool:
    """Whether a trace is being recorded now (code that records its own steps can skip preparing
    them otherwise: a watched generation calls the recording processor at every step)."""
    return _ACTIVE.get() is not None


def record_step(
    name: str,
    type_: str,
    inputs: dict[str, Any],
    outputs: Any,
    label: str = "",
    note: str = "",
) -> None:
    """Record a non-module step as a child of the module running now (no-op outside a trace).

    `inputs` maps names to the tensors (or `Virtual`s) it reads; `outputs` is a tensor, a Virtual,
    or a tuple of them. Later nodes that receive an output tensor get an edge from this step.
    """
    recorder = _ACTIVE.get()
    if recorder is not None:
        recorder.step(name, type_, inputs, outputs, label, note)


@contextmanager
def manual_steps() -> Iterator[None]:
    """Inside this block the running code records its own steps: operations make no nodes."""
    recorder = _ACTIVE.get()
    if recorder is None or not recorder.stack:
        yield
        return
    top = recorder.stack[-1]
    was = top["manual"]
    top["manual"] = True
    try:
        yield
    finally:
        top["manual"] = was
