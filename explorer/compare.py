"""`explore diff A B`: what changed between two models, component by component, read off their records.

Two records of the same component are aligned by module path; what is left over on both sides
under the same parent is paired by position in the data flow when the types agree (a renamed
module), and the rest is added or removed. A matched module is *changed* when one of ASPECTS
differs: its type, its parameter count, the shapes going in or out, its attention heads or the
width of the context it attends to. A module whose own aspects agree but that holds changes is
reported as such (`inside`), so a view cut at any depth still says where to look.

A component that holds the other one whole (SDXL's two text encoders hold SD1.5's one as
`text_encoder`) is aligned under that name.

`summary()` writes the differences in words ("SDXL's UNet: 3 resolution levels instead of 4; ..."),
each sentence computed from the two records, none typed in.

Pure functions of records (`sd-explorer/trace@1`); `diff()` traces the two models first and, with
`values=True`, reads both checkpoints to compare the parameters tensor by tensor (`ValuesDiff`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from explorer.errors import ExplorerError

from explorer.record import Node, Trace
from explorer.specs import model_name

SCHEMA = "sd-explorer/diff@1"
ASPECTS = ("type", "params", "inputs", "outputs", "heads", "context", "label")
STATUSES = ("same", "changed", "added", "removed")


# -- what one model has at an aligned place ----------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One model's node at an aligned place, with the facts the diff compares."""

    path: str
    type: str
    kind: str  # "module" or "step"
    depth: int
    params: int
    inputs: dict[str, Any]
    outputs: tuple
    heads: str = ""  # an attention module: "8×40" (heads × channels per head)
    context: int = 0  # an attention module reading the prompt: the context's width (768)
    label: str = ""  # a step: what it computes ("z × 0.18215")

    def to_dict(self) -> dict[str, Any]:
        d = {
            "path": self.path,
            "type": self.type,
            "kind": self.kind,
            "params": self.params,
            "inputs": {k: _json_shape(v) for k, v in self.inputs.items()},
            "outputs": [list(s) for s in self.outputs],
        }
        for name in ("heads", "context", "label"):
            if getattr(self, name):
                d[name] = getattr(self, name)
        return d


def _json_shape(shape):
    return [_json_shape(s) for s in shape] if shape and isinstance(shape[0], tuple) else list(shape)


def _attention_facts(trace: Trace, node: Node) -> tuple[str, int]:
    """(heads × channels per head, context width) of an attention module; ("", 0) for others."""
    try:
        split = trace.find(node.path + ".split_heads")
    except KeyError:
        return "", 0
    _, heads, _, per_head = split.outputs[0]  # (B, heads, tokens, channels per head)
    context = node.inputs.get("encoder_hidden_states")
    return f"{heads}×{per_head}", int(context[-1]) if context else 0


def _side(trace: Trace, node: Node) -> Side:
    heads, context = _attention_facts(trace, node) if node.kind == "module" else ("", 0)
    inputs = dict(node.inputs)
    if context:  # the context's width is its own aspect
        inputs.pop("encoder_hidden_states", None)
    return Side(node.path, node.type, node.kind, node.depth, node.params, inputs, node.outputs, heads, context, node.label)


def _differing(a: Side, b: Side) -> tuple[str, ...]:
    return tuple(aspect for aspect in ASPECTS if getattr(a, aspect) != getattr(b, aspect))


# -- the diff of one component ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One aligned place: a module (or step) of A, of B, or of both."""

    status: str  # one of STATUSES
    a: Side | None
    b: Side | None
    changed: tuple[str, ...] = ()  # the ASPECTS that differ (status "changed")
    inside: int = 0  # entries below this one that are not "same"
    renamed: bool = False  # paired by position in the flow, not by path

    @property
    def path(self) -> str:
        """B's path; A's where B's is its root held whole in A (see _rerooted)."""
        if self.b is not None and (self.b.path or self.a is None):
            return self.b.path
        return self.a.path if self.a is not None else ""

    @property
    def depth(self) -> int:
        return (self.b or self.a).depth

    @property
    def kind(self) -> str:
        return (self.b or self.a).kind


    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "status": self.status}
        if self.changed:
            d["changed"] = list(self.changed)
        if self.inside:
            d["inside"] = self.inside
        if self.renamed:
            d["renamed"] = True
        d["a"] = self.a.to_dict() if self.a else None
        d["b"] = self.b.to_dict() if self.b else None
        return d


@dataclass(frozen=True)
class ComponentDiff:
    component: str
    a: Trace
    b: Trace
    entries: tuple[Entry, ...]  # in B's call order, each removed entry after its closest kept predecessor

    @property
    def identical(self) -> bool:
        return self.a.inputs == self.b.inputs and all(e.status == "same" for e in self.entries)

    def counts(self) -> dict[str, int]:
        """Modules per status (steps are not counted: they are what modules do)."""
        counts = dict.fromkeys(STATUSES, 0)
        for e in self.entries:
            if e.kind == "module":
                counts[e.status] += 1
        return counts

    def find(self, path: str) -> Entry:
        for e in self.entries:
            if e.path == path or (e.a is not None and e.a.path == path):
                return e
        raise KeyError(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "identical": self.identical,
            "params": {"a": self.a.total_params, "b": self.b.total_params},
            "inputs": {
                "a": {k: list(v) for k, v in self.a.inputs.items()},
                "b": {k: list(v) for k, v in self.b.inputs.items()},
            },
            "counts": self.counts(),
            "entries": [e.to_dict() for e in self.entries],
        }


def _keyed(trace: Trace, prefix: str) -> list[tuple[str, Node]]:
    """(alignment key, node) for every first call: its path, under `prefix` when the whole
    component sits one level down on the other side (its root becomes the prefix itself)."""
    keyed = []
    for n in trace.nodes:
        if n.call:
            continue
        if not prefix:
            if n.path:
                keyed.append((n.path, n))
        else:
            keyed.append((f"{prefix}.{n.path}" if n.path else prefix, n))
    return keyed


def _first(trace: Trace, prefix: str) -> list[Node]:
    return [n for _, n in _keyed(trace, prefix)]


def _rerooted(a: Trace, b: Trace) -> tuple[str, str]:
    """Where one component holds the other whole (SDXL's two text encoders hold SD1.5's one as
    `text_encoder`): the path to put before A's paths, or before B's. Else ("", "")."""
    root_a, root_b = a.nodes[0], b.nodes[0]
    if root_a.type == root_b.type:
        return "", ""
    inside_b = next((n.path for n in b.nodes if n.depth == 1 and n.call == 0 and n.type == root_a.type), "")
    if inside_b:
        return inside_b, ""
    inside_a = next((n.path for n in a.nodes if n.depth == 1 and n.call == 0 and n.type == root_b.type), "")
    return "", inside_a


def _parent_key(key: str) -> str:
    """The text before the last dot: nodes with the same parent key sit side by side in the flow
    (a ModuleList such as `resnets` is never a node itself, so the path's text is used)."""
    return key.rsplit(".", 1)[0] if "." in key else ""


def _align(a_nodes: list[tuple[str, Node]], b_nodes: list[tuple[str, Node]]) -> list[tuple[Node | None, Node | None]]:
    """Pairs of (A node, B node): by key, then leftovers with the same parent and type in order
    (those are renamed: their keys differ)."""
    a_by_key = dict(a_nodes)
    b_keys = {k for k, _ in b_nodes}
    pairs: dict[str, Node | None] = {k: a_by_key.get(k) for k, _ in b_nodes}  # B key -> A node
    left_a = [(k, n) for k, n in a_nodes if k not in b_keys]
    for kb, b in b_nodes:  # a renamed module: same parent, same type, first one left in A's order
        if kb in a_by_key:
            continue
        match = next(((ka, a) for ka, a in left_a if _parent_key(ka) == _parent_key(kb) and a.type == b.type), None)
        if match is not None:
            pairs[kb] = match[1]
            left_a.remove(match)
    result = [(pairs[k], b) for k, b in b_nodes]
    a_order = {id(n): i for i, (_, n) in enumerate(a_nodes)}
    for _, a in left_a:  # removed: after the last pair whose A node came before it
        at = 0
        for i, (pa, _) in enumerate(result):
            if pa is not None and a_order[id(pa)] < a_order[id(a)]:
                at = i + 1
        result.insert(at, (a, None))
    return result


def _inside_counts(entries: list[Entry]) -> list[Entry]:
    """Each entry with the number of not-"same" entries below it (by path prefix)."""
    out = []
    for i, e in enumerate(entries):
        prefix = e.path + "."
        inside = sum(1 for other in entries if other.status != "same" and other.path.startswith(prefix))
        out.append(Entry(e.status, e.a, e.b, e.changed, inside, e.renamed) if inside else e)
    return out


def compare(a: Trace, b: Trace) -> ComponentDiff:
    """The diff of two records of the same component."""
    if a.component != b.component:
        raise ExplorerError(f"Compare records of the same component: got a {a.component} and a {b.component}.")
    entries = []
    prefix_a, prefix_b = _rerooted(a, b)
    key_a = {id(n): k for k, n in _keyed(a, prefix_a)}
    key_b = {id(n): k for k, n in _keyed(b, prefix_b)}
    for na, nb in _align(list(zip(key_a.values(), _first(a, prefix_a))), list(zip(key_b.values(), _first(b, prefix_b)))):
        if na is None:
            entries.append(Entry("added", None, _side(b, nb)))
        elif nb is None:
            entries.append(Entry("removed", _side(a, na), None))
        else:
            sa, sb = _side(a, na), _side(b, nb)
            changed = _differing(sa, sb)
            renamed = key_a[id(na)] != key_b[id(nb)]
            entries.append(Entry("changed" if changed or renamed else "same", sa, sb, changed, renamed=renamed))
    return ComponentDiff(a.component, a, b, tuple(_inside_counts(entries)))


# -- the diff of two models -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDiff:
    a: str  # the models as the user named them
    b: str
    components: tuple[ComponentDiff, ...]
    sizes: dict[str, int] = field(default_factory=dict)  # each model's own image side, px
    traced_at: int = 0  # the image side both were traced at, px
    values: tuple["ValuesDiff", ...] = ()  # with diff(values=True): the parameters' values compared

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.components)

    def component(self, name: str) -> ComponentDiff:
        return next(c for c in self.components if c.component == name)

    def summary(self) -> str:
        return summary(self)

    def figure(self, component: str = "unet", depth: int = 1):
        """B's figure of `component`, each block coloured by what became of it (an explorer.Diagram;
        in Jupyter it displays as SVG)."""
        from explorer.diagrams import Diagram
        from explorer.views.diff import diff_scene
        from explorer.views.graph import to_dot

        found = [c.component for c in self.components]
        if component not in found:
            raise ExplorerError(f"This diff compared {', '.join(found)}; no {component}.")
        return Diagram(f"diff-{component}", to_dot(diff_scene(self.component(component), self.a, self.b, depth=depth)))

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from explorer.views.diff import notebook_bundle  # the view is loaded only when displayed

        return notebook_bundle(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "summary": self.summary(),
            "sizes": {"a": self.sizes.get("a"), "b": self.sizes.get("b"), "traced_at": self.traced_at},
            "components": {c.component: c.to_dict() for c in self.components},
            "values": {v.component: v.to_dict() for v in self.values} if self.values else None,
        }


# -- the summary, in words --------------------------------------------------------------------------


def _levels(trace: Trace) -> list[Node]:
    return [n for n in trace.nodes if n.depth == 1 and n.path.startswith("down_blocks.") and n.call == 0]


def _transformer_depth(trace: Trace, block: str) -> int:
    """Transformer blocks in the first attention layer of `block` (0 when it has none)."""
    prefix = f"{block}.attentions.0.transformer_blocks."
    return len({n.path[len(prefix) :].split(".")[0] for n in trace.nodes if n.path.startswith(prefix)})


def _heads(trace: Trace, block: str) -> str:
    """Heads × channels per head of the first attention inside `block` ("" = the whole component)."""
    for node in trace.nodes:
        if node.path.startswith(block + "." if block else "") and node.path.endswith(".split_heads"):
            return f"{node.outputs[0][1]}×{node.outputs[0][3]}"
    return "—"


def _unet_facts(t: Trace) -> dict[str, Any]:
    levels = _levels(t)
    return {
        "levels": len(levels),
        "channels": "/".join(str(n.outputs[-1][1]) for n in levels),
        "depths": "/".join(str(_transformer_depth(t, n.path)) for n in levels),
        "middle": _transformer_depth(t, "mid_block"),
        "heads": ", ".join(_heads(t, n.path) for n in levels),
        "context": t.inputs.get("encoder_hidden_states", (0,))[-1],
        "proj_in": next((n.type for n in t.nodes if n.path.endswith("attentions.0.proj_in")), ""),
    }


def _unet_clauses(d: ComponentDiff, a: str) -> list[str]:
    fa, fb = _unet_facts(d.a), _unet_facts(d.b)
    said = []
    if fa["levels"] != fb["levels"]:
        said.append(f"{fb['levels']} resolution levels instead of {fa['levels']}")
    if fa["channels"] != fb["channels"]:
        said.append(f"{fb['channels']} channels level by level ({a}: {fa['channels']})")
    if (fa["depths"], fa["middle"]) != (fb["depths"], fb["middle"]):
        said.append(
            f"{fb['depths']} transformer blocks in each attention layer, level by level, and {fb['middle']} in the "
            f"middle ({a}: {fa['depths']} and {fa['middle']})"
        )
    if fa["heads"] != fb["heads"]:
        said.append(f"attention heads {fb['heads']} (heads × channels, level by level; {a}: {fa['heads']})")
    if fa["context"] != fb["context"]:
        said.append(f"cross-attention reading a {fb['context']}-channel prompt embedding instead of {fa['context']}")
    if fa["proj_in"] != fb["proj_in"] and fa["proj_in"] and fb["proj_in"]:
        said.append(f"{fb['proj_in']} projections into and out of its transformers instead of {fa['proj_in']}")
    extra = [f"{k} {_shape(v)}" for k, v in d.b.inputs.items() if k not in d.a.inputs]
    if extra:
        said.append(f"{' and '.join(extra)} as extra inputs, added to the time embedding through add_embedding")
    missing = [k for k in d.a.inputs if k not in d.b.inputs]
    if missing:
        said.append(f"no {' or '.join(missing)} input")
    return said


def _shape(shape) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def _vae_clauses(d: ComponentDiff, a: str) -> list[str]:
    for e in d.entries:
        if e.status == "changed" and e.a is not None and e.a.type == "ScaleLatents" and "label" in e.changed:
            return [f"latents scaled by {e.b.label.split('×')[-1].strip()} instead of {e.a.label.split('×')[-1].strip()}"]
    return []


def _encoders(t: Trace) -> list[tuple[str, Node]]:
    """(path, root node) of each text encoder: the component itself, or the ones it holds (SDXL)."""
    inside = [n for n in t.nodes if n.depth == 1 and n.call == 0 and n.type.startswith("CLIPTextModel")]
    return [(n.path, n) for n in inside] or [("", t.nodes[0])]


def _count(n: int, word: str) -> str:
    return f"{('one', 'two', 'three')[n - 1] if 1 <= n <= 3 else n} {word}{'' if n == 1 else 's'}"


def _encoder_facts(t: Trace, path: str, root: Node) -> str:
    """'CLIPTextModel: 12 layers, 768 channels, heads 12×64'."""
    inside = [n for n in t.nodes if n.path.startswith(f"{path}.") or not path]  # text_model.* in some versions
    layers = {n.path.split("encoder.layers.")[1].split(".")[0] for n in inside if "encoder.layers." in n.path}
    hidden = next((n for n in inside if n.type == "CLIPTextEmbeddings"), root)
    return f"{root.type}: {len(layers)} layers, {hidden.outputs[0][-1]} channels, heads {_heads(t, path)}"


def _clip_clauses(d: ComponentDiff, a: str) -> list[str]:
    ea, eb = _encoders(d.a), _encoders(d.b)
    fa, fb = [_encoder_facts(d.a, p, n) for p, n in ea], [_encoder_facts(d.b, p, n) for p, n in eb]
    said = []
    if len(ea) != len(eb):
        said.append(
            f"{_count(len(eb), 'text encoder')} instead of {_count(len(ea), 'text encoder')}: "
            + " and ".join(f"{p} ({f})" if p else f for (p, _), f in zip(eb, fb))
        )
    elif fa != fb:
        said.append(" and ".join(fb) + f" ({a}: " + " and ".join(fa) + ")")
    out_a, out_b = d.a.nodes[0].outputs[0], d.b.nodes[0].outputs[0]
    if out_a[-1] != out_b[-1] or len(ea) != len(eb):
        joined = next((n.label for n in d.b.nodes if n.depth == 1 and n.type == "Concat"), "")
        said.append(f"a {out_b[-1]}-channel prompt embedding instead of {out_a[-1]}" + (f" ({joined})" if joined else ""))
    pooled = [f"{name} {_shape(s)}" for name, s in zip(d.b.nodes[0].output_names, d.b.nodes[0].outputs) if "pooled" in name]
    if pooled and not any("pooled" in name for name in d.a.nodes[0].output_names):
        said.append(f"and {pooled[0]} for the UNet's extra conditioning")
    return said


CLAUSES = {"unet": _unet_clauses, "vae": _vae_clauses, "clip": _clip_clauses}
WHAT = {"unet": "UNet", "vae": "VAE", "clip": "text encoder"}


def _ratio(a: int, b: int) -> str:
    """'×2.99'; '1,573× fewer' where ×0.00 would say nothing."""
    if not a or not b:
        return "none before" if not a else "none now"
    return f"×{b / a:.2f}" if b / a >= 0.1 else f"{a / b:,.0f}× fewer"


def _second_encoder(diff: "ModelDiff", b: str) -> str:
    """The sentence for a UNet whose context is wider than the text encoder's output (SDXL joins two)."""
    try:
        unet, clip = diff.component("unet").b, diff.component("clip").b
    except StopIteration:
        return ""
    context = unet.inputs.get("encoder_hidden_states", (0,))[-1]
    width = next(n for n in clip.nodes if n.path == "").outputs[0][-1]
    if context <= width:
        return ""
    return (
        f" {b}'s UNet reads a {context}-channel context while its text encoder gives {width} channels: the other "
        f"{context - width} would come from a second text encoder (text_encoder_2), which {b} does not have."
    )


def _component_sentence(d: ComponentDiff, a: str, b: str) -> str:
    """'SDXL's UNet: 3 resolution levels instead of 4; ...; 1,319 modules added, ...'."""
    what = WHAT.get(d.component, d.component)
    if d.identical:
        return f"The {what} is the same."
    said = CLAUSES.get(d.component, lambda d, a: [])(d, a)
    pa, pb = d.a.total_params, d.b.total_params
    if pa != pb:
        said.append(f"{pb:,} parameters instead of {pa:,} ({_ratio(pa, pb)})")
    c = d.counts()
    if c["added"] or c["removed"] or c["changed"]:
        parts = [f"{c[s]:,} {s}" for s in ("added", "removed", "changed") if c[s]]
        said.append(f"modules {', '.join(parts)}, {c['same']:,} the same")
    return f"{b}'s {what}: " + "; ".join(said) + "."


def summary(diff: ModelDiff) -> str:
    """One paragraph: what changed from A to B, computed from the records."""
    a, b = model_name(diff.a), model_name(diff.b)
    if diff.identical:
        if diff.a == diff.b:
            return f"{a} and {b} are identical: the same model."
        text = (
            f"{a} and {b} are identical in architecture: every module, shape and parameter count agrees in "
            f"{_listing(WHAT.get(c.component, c.component) for c in diff.components)}."
        )
        if diff.values:
            return text + " " + _values_sentence(diff.values)
        return text + (
            " What tells them apart, if anything, is in the parameters' values — a fine-tune changes only those "
            "(--values compares them)."
        )
    text = " ".join(_component_sentence(d, a, b) for d in diff.components) + _second_encoder(diff, b)
    if diff.values:
        text += " " + _values_sentence(diff.values)
    sa, sb = diff.sizes.get("a"), diff.sizes.get("b")
    if sa and sb and sa != sb:
        text += (
            f" {b} is made for {sb}×{sb} px images ({a}: {sa}×{sa} px); both were traced at "
            f"{diff.traced_at}×{diff.traced_at} px so that their shapes compare."
        )
    return text


def _values_sentence(values: tuple["ValuesDiff", ...]) -> str:
    """'Their values: the UNet's 686 tensors all changed (...); the VAE and the text encoder are bit for bit the same.'"""
    same = [WHAT.get(v.component, v.component) for v in values if v.identical]
    moved = [v.sentence() for v in values if not v.identical]
    parts = moved + ([f"the {_listing(same)} {'is' if len(same) == 1 else 'are'} bit for bit the same"] if same else [])
    return "Their values: " + "; ".join(parts) + "."


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# -- tracing the two models ------------------------------------------------------------------------


def diff(
    a: str,
    b: str,
    components: Iterable[str] | None = None,
    *,
    size: int | None = None,
    values: bool = False,
    use_cache: bool = True,
    on_trace: Callable[[str, str], None] = lambda component, model: None,
) -> ModelDiff:
    """The diff of models `a` and `b` (presets, folders, files, hub ids), traced on the meta device.

    `components`: which to compare (default: every component both models have). Image-sized
    components are traced at `size` px (default: A's own size) so that their shapes compare.
    `values`: also compare the parameters' values, tensor by tensor, of every component whose
    architecture is the same on both sides (both models need weights). `on_trace(component, model)`
    is called before each trace (progress).
    """
    from explorer.components import COMPONENTS, component as entry
    from explorer.explore import TraceRequest, check_size, trace_cached
    from explorer.loading import component_config, default_image_size, resolve_source

    check_size("size", size)
    sources = {m: _source(m, resolve_source) for m in (a, b)}
    if values:
        _check_weights(sources)
    asked = list(components) if components is not None else None
    names = asked or [c for c in COMPONENTS if all(_has(sources[m], c, component_config) for m in (a, b))]
    if not names:
        raise ExplorerError(f"{a} and {b} have no component in common to compare (the components are {', '.join(COMPONENTS)}).")
    sizes = {k: _own_size(sources[m], names, default_image_size) for k, m in (("a", a), ("b", b))}
    traced_at = size or sizes["a"]
    diffs = []
    for name in names:
        pair = []
        for model in (a, b):
            on_trace(name, model)
            options = {"height": traced_at, "width": traced_at} if entry(name).image_sized else {}
            pair.append(trace_cached(TraceRequest(name, model, "meta", **options), use_cache=use_cache)[0])
        diffs.append(compare(*pair))
    compared = tuple(_values_of(sources, a, b, d.component) for d in diffs if values and d.identical)
    return ModelDiff(a, b, tuple(diffs), sizes, traced_at, compared)


def _source(model: str, resolve_source):
    try:
        return resolve_source(model)
    except ExplorerError as exc:  # its sentence names --model, which `explore diff` does not have
        raise ExplorerError(str(exc).removeprefix("--model ")) from None


def _has(source, component: str, component_config) -> bool:
    try:
        component_config(source, component)
    except ExplorerError:
        return False
    return True


def _own_size(source, names: list[str], default_image_size) -> int:
    for name in ("unet", "vae"):
        if name in names:
            return default_image_size(source, name)
    return 0


# -- the parameters' values ------------------------------------------------------------------------


@dataclass(frozen=True)
class ValuesDiff:
    """The parameters of one component in two checkpoints, tensor by tensor (same names, same shapes)."""

    component: str
    tensors: int  # tensors both have
    changed: tuple[tuple[str, float], ...]  # (name, ‖b − a‖ / max(‖a‖, ‖b‖): 0 to 2), largest first
    only_a: int = 0  # tensors one side has and the other does not
    only_b: int = 0

    @property
    def identical(self) -> bool:
        return not self.changed and not self.only_a and not self.only_b

    def sentence(self) -> str:
        what = WHAT.get(self.component, self.component)
        if not self.changed:
            return f"the {what}'s tensors are the same, but {self.only_a + self.only_b} are on one side only"
        changes = sorted(c for _, c in self.changed)
        median = changes[len(changes) // 2]
        name, largest = self.changed[0]
        count = "all" if len(self.changed) == self.tensors else f"{len(self.changed):,}"
        return (
            f"{count} of the {what}'s {self.tensors:,} tensors changed (relative change: median {100 * median:.3g} %, "
            f"largest {100 * largest:.3g} % in {name})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "identical": self.identical,
            "tensors": self.tensors,
            "changed": [{"name": n, "relative": round(c, 6)} for n, c in self.changed],
            "only_a": self.only_a,
            "only_b": self.only_b,
        }


def compare_values(a: dict[str, Any], b: dict[str, Any], component: str) -> ValuesDiff:
    """Two state dicts of the same architecture, tensor by tensor."""
    import torch

    changed = []
    common = [k for k in a if k in b]
    for k in common:
        x, y = a[k].float(), b[k].float()
        if x.shape != y.shape:
            changed.append((k, float("inf")))
        elif not torch.equal(x, y):  # relative to the larger of the two: a bias that started at 0 reads 100 %
            scale = torch.maximum(torch.linalg.vector_norm(x), torch.linalg.vector_norm(y))
            changed.append((k, float(torch.linalg.vector_norm(y - x) / scale)))
    changed.sort(key=lambda kv: -kv[1])
    return ValuesDiff(component, len(common), tuple(changed), sum(k not in b for k in a), sum(k not in a for k in b))


def _state(source, part: str) -> dict[str, Any]:
    """The tensors of one part of a model's checkpoint, under the model's own names."""
    from explorer.loading import build, component_config, read_checkpoint, to_model_keys

    config = component_config(source, part)
    model = build(part, config, "meta")
    wanted = model.state_dict()
    state = to_model_keys(part, read_checkpoint(source, part, allow_pickle=False, values=True), model, config)
    return {k: v for k, v in state.items() if k in wanted}


def _values_of(sources: dict[str, Any], a: str, b: str, component: str) -> ValuesDiff:
    from explorer.loading import has_second_text_encoder

    parts = [component] + (["clip_2"] if component == "clip" and has_second_text_encoder(sources[a]) else [])
    states = []
    for model in (a, b):
        state = {}
        for part in parts:  # SDXL's second text encoder's tensors under its name in the component
            prefix = "text_encoder_2." if part == "clip_2" else ("text_encoder." if len(parts) > 1 else "")
            state.update({prefix + k: v for k, v in _state(sources[model], part).items()})
        states.append(state)
    return compare_values(*states, component)


def _check_weights(sources: dict[str, Any]) -> None:
    for model, source in sources.items():
        if not source.has_weights:
            raise ExplorerError(
                f"--values compares the parameters of two checkpoints, and {model} is a preset without weights: "
                "give diffusers folders, .safetensors files or hub ids."
            )
