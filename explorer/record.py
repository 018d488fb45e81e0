"""The record: what flowed through a model, as plain frozen data (schema `sd-explorer/trace@1`).

A `Trace` holds no module and no tensor: only names, types and shapes. It round-trips through
JSON exactly (`Trace.from_json(t.to_json()) == t`), so it can be saved, compared in tests and read
by other tools. Every view (tree, diagrams, page) is a function of a `Trace`.

This module imports nothing heavy: no torch, no rich.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

from explorer.errors import OptionError

SCHEMA = "sd-explorer/trace@1"

Shape = tuple[int, ...]
# An input is one tensor (a shape) or a tuple of tensors (a tuple of shapes).
InputShape = Shape | tuple[Shape, ...]


def _is_shape_tuple(value: Any) -> bool:
    return bool(value) and isinstance(value[0], (list, tuple))


def _shape_from_json(value: list) -> InputShape:
    if _is_shape_tuple(value):
        return tuple(tuple(s) for s in value)
    return tuple(value)


def _shape_to_json(value: InputShape) -> list:
    if _is_shape_tuple(value):
        return [list(s) for s in value]
    return list(value)


def check_depth(depth: int | None, component: str, minimum: int = 0) -> None:
    """How many levels below the top to show: 0 (the component alone) or more; 1 or more for a diagram."""
    if depth is None or depth >= minimum:
        return
    if minimum == 1:
        raise OptionError("depth", f"must be 1 or more for a diagram, got {depth}.")
    raise OptionError(
        "depth",
        f"must be 0 or more, got {depth}: 0 shows the {component} alone, 1 its blocks, 2 their layers, and so on.",
    )


@dataclass(frozen=True)
class Node:
    """One call of a module (`kind="module"`) or one recorded non-module step (`kind="step"`)."""

    path: str  # dotted name inside the component; "" is the component itself
    type: str  # class name for a module; a step's kind, e.g. "AttentionScores"
    kind: str  # "module" or "step"
    depth: int  # called ancestors: the component is 0
    call: int  # 0 for the first call of this path, 1 for the second, ...
    inputs: dict[str, InputShape]  # argument name -> shape (a tuple argument -> tuple of shapes)
    outputs: tuple[Shape, ...]  # every output tensor, flattened, in order
    params: int  # parameters of the module and its children, each counted once
    label: str = ""  # steps: what they compute, e.g. "softmax(QKᵀ/√40)"
    note: str = ""  # steps: one sentence for a learner
    flops: int = 0  # when counted (explore stats): floating-point operations of this call, children included
    output_names: tuple[str, ...] = ()  # beside `outputs`, from the model's output class; () when none names them

    def output_name(self, k: int) -> str:
        """The name of output `k` ("pooler_output"), or "" when its class gives none."""
        return self.output_names[k] if k < len(self.output_names) else ""

    @property
    def name(self) -> str:
        """The last part of the path ("conv_in"), or "" for the component."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_step(self) -> bool:
        return self.kind == "step"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "type": self.type,
            "kind": self.kind,
            "depth": self.depth,
            "call": self.call,
            "inputs": {k: _shape_to_json(v) for k, v in self.inputs.items()},
            "outputs": [list(s) for s in self.outputs],
            "params": self.params,
        }
        if self.label:
            d["label"] = self.label
        if self.note:
            d["note"] = self.note
        if self.flops:
            d["flops"] = self.flops
        if self.output_names:
            d["output_names"] = list(self.output_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        return cls(
            path=d["path"],
            type=d["type"],
            kind=d["kind"],
            depth=d["depth"],
            call=d["call"],
            inputs={k: _shape_from_json(v) for k, v in d["inputs"].items()},
            outputs=tuple(tuple(s) for s in d["outputs"]),
            params=d["params"],
            label=d.get("label", ""),
            note=d.get("note", ""),
            flops=d.get("flops", 0),
            output_names=tuple(d.get("output_names", ())),
        )


@dataclass(frozen=True)
class Edge:
    """A tensor going from the node that made it to a node that used it.

    `src_port` is the index of the producer's output ("0", "1", ...); when `src` is "" the tensor
    is one of the component's own inputs and `src_port` is its name. `dst_port` is the argument
    name at the consumer ("hidden_states", "res_hidden_states_tuple[2]"). A `returned` edge ends at
    the module that returns the tensor: `dst_port` is then the index of that module's output.
    """

    src: str
    src_call: int
    src_port: str
    dst: str
    dst_call: int
    dst_port: str
    shape: Shape
    returned: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "src": self.src,
            "src_call": self.src_call,
            "src_port": self.src_port,
            "dst": self.dst,
            "dst_call": self.dst_call,
            "dst_port": self.dst_port,
            "shape": list(self.shape),
        }
        if self.returned:
            d["returned"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Edge":
        return cls(
            src=d["src"],
            src_call=d["src_call"],
            src_port=d["src_port"],
            dst=d["dst"],
            dst_call=d["dst_call"],
            dst_port=d["dst_port"],
            shape=tuple(d["shape"]),
            returned=d.get("returned", False),
        )


@dataclass(frozen=True)
class Trace:
    """Everything recorded from one forward pass of one component."""

    component: str  # "unet", "vae" or "clip"
    model: str  # where the architecture came from: "sd15", "tiny", a folder, a file, a hub id
    weights: str  # "meta" (no values), "random" or "pretrained"
    inputs: dict[str, Shape]  # what the component was called with
    total_params: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...] = ()  # the data flow between nodes, see Edge
    dtype: str = "float32"
    versions: dict[str, str] = field(default_factory=dict)  # torch / diffusers / transformers / sd-explorer
    tokens: tuple[dict[str, Any], ...] = ()  # clip: the tokenized prompts, see explorer.tokenizer
    block: str = ""  # set when this is one subtree of a larger trace
    total_flops: int = 0  # when counted (explore stats): of the whole component
    schema: str = SCHEMA

    # -- queries ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def find(self, path: str, call: int = 0) -> Node:
        """The node of `path` (its `call`-th call). KeyError when it never ran."""
        for node in self.nodes:
            if node.path == path and node.call == call:
                return node
        raise KeyError(f"no node {path!r} (call {call}) in this {self.component} trace")

    def parents(self) -> list[int | None]:
        """For each node (by position), the position of its parent, None for the top one. Nodes are
        in call order with every parent before its children, so the parent is the nearest earlier
        node one level up."""
        parents: list[int | None] = []
        stack: list[int] = []
        for i, n in enumerate(self.nodes):
            while stack and self.nodes[stack[-1]].depth >= n.depth:
                stack.pop()
            parents.append(stack[-1] if stack else None)
            stack.append(i)
        return parents

    def children(self) -> dict[int, list[int]]:
        """For each node with children (by position), the positions of its children, in call order."""
        found: dict[int, list[int]] = {}
        for i, parent in enumerate(self.parents()):
            if parent is not None:
                found.setdefault(parent, []).append(i)
        return found

    def paths(self) -> list[str]:
        """Every recorded path once, in call order."""
        return list(dict.fromkeys(n.path for n in self.nodes))

    def locate(self, block: str) -> int | None:
        """The position of `block`'s node (its first call); None when `block` is a container that
        never runs by itself (`down_blocks`) but holds nodes. One sentence (an OptionError on
        `block`) when it names nothing that runs, with the closest names."""
        for i, node in enumerate(self.nodes):
            if node.path == block and node.call == 0:
                return i
        if any(n.path.startswith(block + ".") for n in self.nodes):
            return None
        paths = [p for p in self.paths() if p]
        close = difflib.get_close_matches(block, paths, n=3, cutoff=0.6)
        tops = list(dict.fromkeys(p.split(".")[0] for p in paths))  # in call order
        hint = f"did you mean {', '.join(close)}?" if close else f"top-level names are {', '.join(tops)}."
        raise OptionError("block", f"{block!r} names no module that runs in the {self.component}: {hint}")

    @property
    def root_depth(self) -> int:
        """Depth of the shallowest node: 0 for a whole component, more for a subtree."""
        return min((n.depth for n in self.nodes), default=0)

    @property
    def max_depth(self) -> int:
        """Deepest level below the root (0 when the trace is only its root)."""
        return max((n.depth for n in self.nodes), default=0) - self.root_depth

    # -- narrowing: each returns a new Trace, the original is untouched -----------------------

    def upto(self, depth: int) -> "Trace":
        """Only the nodes at most `depth` levels below this trace's root."""
        limit = self.root_depth + depth
        return self.keep(n for n in self.nodes if n.depth <= limit)

    def subtree(self, prefix: str) -> "Trace":
        """The nodes at `prefix` and below it (an empty trace when none ran there)."""
        inside = (n for n in self.nodes if n.path == prefix or n.path.startswith(prefix + "."))
        return replace(self.keep(inside), block=prefix)

    def keep(self, nodes: Iterable[Node]) -> "Trace":
        """A Trace of `nodes` (a selection of this trace's, in order) and the edges between them."""
        nodes = tuple(nodes)
        keys = {(n.path, n.call) for n in nodes}
        edges = tuple(e for e in self.edges if (e.src, e.src_call) in keys and (e.dst, e.dst_call) in keys)
        return replace(self, nodes=nodes, edges=edges)

    # -- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": self.schema,
            "component": self.component,
            "model": self.model,
            "weights": self.weights,
            "dtype": self.dtype,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "total_params": self.total_params,
            "versions": dict(self.versions),
        }
        if self.block:
            d["block"] = self.block
        if self.total_flops:
            d["total_flops"] = self.total_flops
        if self.tokens:
            d["tokens"] = [dict(t) for t in self.tokens]
        d["nodes"] = [n.to_dict() for n in self.nodes]
        d["edges"] = [e.to_dict() for e in self.edges]
        return d

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trace":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not an {SCHEMA} record (schema: {d.get('schema')!r})")
        return cls(
            component=d["component"],
            model=d["model"],
            weights=d["weights"],
            inputs={k: tuple(v) for k, v in d["inputs"].items()},
            total_params=d["total_params"],
            nodes=tuple(Node.from_dict(n) for n in d["nodes"]),
            edges=tuple(Edge.from_dict(e) for e in d.get("edges", ())),
            dtype=d.get("dtype", "float32"),
            versions=dict(d.get("versions", {})),
            tokens=tuple(d.get("tokens", ())),
            block=d.get("block", ""),
            total_flops=d.get("total_flops", 0),
        )

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        """The record a JSON text holds (ValueError when it holds none, or nests too deeply to be one)."""
        from explorer.files import parse_json

        return cls.from_dict(parse_json(text))

    # -- display in Jupyter: the terminal tree, rendered as HTML ------------------------------

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from explorer.views.tree import notebook_bundle  # the view is loaded only when displayed

        return notebook_bundle(self)
