"""Diagrams: the data flow of a record, as a Graphviz graph a person can read.

`scene(trace, block, depth)` is a pure function from the record to a plain description of the
figure (boxes, clusters, arrows with shapes); `to_dot(scene)` writes it as DOT. Nothing here knows
SD1.5: what is drawn, and where, is read off the record's nodes and edges.

- The nodes `depth` levels below `block` are drawn; a node whose children are drawn becomes a
  cluster around them. Edges recorded deeper are lifted to the drawn node that contains them.
- Tensors coming from outside the block are input boxes; what the block returns, output boxes.
- A tensor fanning out to many drawn nodes (the time embedding into every block) becomes one
  labelled bus, and each receiver is tagged with the argument it arrives as.
- Four or more identical layers in a chain (CLIP's 12 encoder layers) are drawn once, "×12".
- When the top-level nodes have skip connections (a U-Net), the graph is laid out as a U: the
  down path on the left, the up path on the right going up, skips straight across.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from explorer.errors import ExplorerError
from explorer.record import Node, Trace, fmt_params, shape_str
from explorer.views.kinds import kind_of

FILL = {
    "conv": "#cfe8f3",
    "norm": "#d5f0d5",
    "attention": "#eadcf7",
    "linear": "#fff0c2",
    "activation": "#ececec",
    "block": "#dbe5f7",
    "step": "#fde0e0",
    "io": "#ffffff",
}
LEGEND = {
    "conv": "convolution",
    "norm": "normalization",
    "attention": "attention",
    "linear": "linear / embedding",
    "activation": "activation / dropout",
    "block": "block",
    "step": "step (not a module)",
    "io": "input / output",
}
_PLAIN_PORTS = {"input", "other", "tensors", "hidden_states"}  # argument names that say nothing on an arrow
BUS_MIN = 3  # a tensor reaching this many drawn nodes is drawn as one bus
REPEAT_MIN = 4  # this many identical layers in a chain are drawn once


@dataclass
class Box:
    id: str
    label: str  # Graphviz HTML-like label, without the enclosing < >
    kind: str
    cluster: str = ""  # the id of the enclosing cluster, "" for none
    tags: list[str] = field(default_factory=list)  # "+ temb": what arrives from a bus


@dataclass
class Cluster:
    id: str
    label: str
    kind: str
    parent: str = ""


@dataclass
class Arrow:
    src: str
    dst: str
    label: str = ""
    count: int = 1  # distinct tensors drawn as this one arrow
    back: bool = False  # drawn pointing up: the up path of a U
    straight: bool = False  # does not influence ranking (skips across a U)
    dashed: bool = False


@dataclass
class Scene:
    title: str
    boxes: list[Box]
    clusters: list[Cluster]
    arrows: list[Arrow]
    same_rank: list[list[str]] = field(default_factory=list)
    rankdir: str = "TB"

    def box(self, box_id: str) -> Box:
        return next(b for b in self.boxes if b.id == box_id)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _small(text: str, color: str = "#555555") -> str:
    return f'<font point-size="10" color="{color}">{_esc(text)}</font>'


def sequence(types: list[str]) -> str:
    """'A → B → A → B → C' as '(A → B) ×2 → C': repeated runs of up to three types folded."""
    parts, i = [], 0
    while i < len(types):
        for period in (1, 2, 3):
            unit = types[i : i + period]
            runs = 1
            while types[i + runs * period : i + (runs + 1) * period] == unit:
                runs += 1
            if runs > 1 and len(unit) == period:
                text = " → ".join(unit)
                parts.append(f"({text}) ×{runs}" if period > 1 else f"{text} ×{runs}")
                i += period * runs
                break
        else:
            parts.append(types[i])
            i += 1
    return " → ".join(parts)


class _Index:
    """Parent / child relations of a trace's nodes, by position in `trace.nodes`."""

    def __init__(self, trace: Trace):
        self.nodes = trace.nodes
        self.at = {(n.path, n.call): i for i, n in enumerate(trace.nodes)}
        self.parent: dict[int, int] = {i: p for i, p in enumerate(trace.parents()) if p is not None}
        self.children: dict[int, list[int]] = {}
        for child, parent in self.parent.items():
            self.children.setdefault(parent, []).append(child)

    def descendants(self, i: int) -> range:
        j = i + 1
        while j < len(self.nodes) and self.nodes[j].depth > self.nodes[i].depth:
            j += 1
        return range(i + 1, j)


def _find_block(trace: Trace, index: _Index, block: str | None) -> int:
    if not block:
        return 0
    if (block, 0) in index.at:
        return index.at[(block, 0)]
    inside = [n.path for n in trace.nodes if n.path.startswith(block + ".")]
    if inside:
        children = sorted({p[len(block) + 1 :].split(".")[0] for p in inside})
        raise ExplorerError(
            f"--block {block!r} is a container that never runs by itself: draw one of what it holds, "
            f"e.g. {block}.{children[0]}."
        )
    raise ExplorerError(f"--block {block!r} names no module that runs in the {trace.component}.")


def scene(
    trace: Trace,
    block: str | None = None,
    depth: int = 1,
    *,
    title: str | None = None,
    only: Iterable[str] | None = None,
    expand: Iterable[str] = (),
    fold: tuple[str, str] | None = None,
    detail: bool = True,
    u_shape: bool = True,
    bus_min: int = BUS_MIN,
    repeat_min: int = REPEAT_MIN,
) -> Scene:
    """The figure of `block` (the whole component when None), `depth` levels deep.

    `only`: names of the block's direct children to draw (with what is inside them), the rest left
    out. `expand`: paths (relative to the block) drawn one level deeper than `depth`. `fold`: two
    direct children; the chain is drawn as a U, down to the first, across to the second in a row,
    and up from there. `detail`: labels with path, parameters and the sequence of layers inside.
    """
    if depth < 1:
        raise ExplorerError(f"--depth must be 1 or more for a diagram, got {depth}.")
    index = _Index(trace)
    nodes = trace.nodes
    b = _find_block(trace, index, block)
    scope = nodes[b]
    inside = set(index.descendants(b))
    visible = {i for i in inside if nodes[i].depth - scope.depth <= depth}
    for name in expand:  # one level more inside these
        opened = index.at.get((f"{scope.path}.{name}" if scope.path else name, 0))
        if opened is not None and opened in visible:
            visible |= set(index.children.get(opened, []))
    if only is not None:
        keep = set(only)
        tops = {i for i in index.children.get(b, []) if _rel(nodes[i], scope) in keep}
        visible = {i for i in visible if _top(i, b, index) in tops}
    expanded = {i for i in visible if any(c in visible for c in index.children.get(i, []))}
    frontier = visible - expanded

    def lift(i: int) -> int | None:  # the drawn node containing i
        while i not in frontier:
            if i not in index.parent or index.parent[i] == b or i == b:
                return None
            i = index.parent[i]
        return i

    returns = {}
    for e in trace.edges:
        if e.returned:
            returns[(index.at[(e.dst, e.dst_call)], e.dst_port)] = (index.at[(e.src, e.src_call)], e.src_port)

    def resolve(i: int, port: str, seen: int = 0) -> int | None:  # who made output `port` of node i, as drawn
        if i in frontier:
            return i
        if i in expanded and (i, port) in returns and seen < 50:
            return resolve(*returns[(i, port)], seen + 1)
        if i in inside:
            return lift(i)
        return None

    # Ports of the block: which argument each outside tensor arrives as.
    entering: dict[tuple[int, str], tuple[str, tuple]] = {}
    for e in trace.edges:
        if not e.returned and index.at[(e.dst, e.dst_call)] == b:
            entering[(index.at[(e.src, e.src_call)], e.src_port)] = (e.dst_port, e.shape)
    boxes: dict[str, Box] = {}
    arrows: dict[tuple[str, str, str], Arrow] = {}
    tags_for: dict[str, Counter] = {}
    receivers: dict[tuple[str, str], list[tuple[Node, str]]] = {}  # (src box, shape) -> consumers at any depth

    def input_box(src: int, port: str, shape: tuple) -> str:
        if src == b:  # the component's own input
            name = port
        elif (src, port) in entering:
            name = entering[(src, port)][0]
        else:
            name = f"from {nodes[src].path or trace.component}"
        box_id = f"in/{name}"
        if box_id not in boxes:
            boxes[box_id] = Box(box_id, f"<b>{_esc(name)}</b><br/>{_esc(shape_str(shape))}", "io")
        return box_id

    tensors: dict[tuple[str, str, str], set] = {}

    def add_arrow(src: str, dst: str, shape: tuple, dst_port: str, tensor: tuple, consumer: Node | None = None) -> None:
        """One arrow per (source, destination, label); `count` says how many tensors it stands for."""
        label = shape_str(shape)
        if consumer is not None and consumer.is_step and dst_port.split("[")[0] not in _PLAIN_PORTS:
            label = f"{dst_port} {label}"  # a step's named inputs: query, key, mean, logvar, ...
        key = (src, dst, label)
        if key not in arrows:
            arrows[key] = Arrow(src, dst, label)
        tensors.setdefault(key, set()).add(tensor)
        arrows[key].count = len(tensors[key])
        tags_for.setdefault(dst, Counter())[(src, dst_port.split("[")[0])] += 1

    exits: dict[tuple[str, str], list[tuple[Node, str]]] = {}  # to nodes `only` left out
    direct = {
        (index.at[(e.src, e.src_call)], e.src_port, index.at[(e.dst, e.dst_call)]) for e in trace.edges if not e.returned
    }
    for e in trace.edges:
        if e.returned:
            continue
        dst = index.at[(e.dst, e.dst_call)]
        if dst not in inside:
            continue
        if (drawn_dst := lift(dst)) is None:
            src = index.at[(e.src, e.src_call)]
            if only is not None and dst not in visible and src in inside and (drawn := resolve(src, e.src_port)):
                exits.setdefault((_node_id(nodes[drawn]), shape_str(e.shape)), []).append((nodes[dst], e.dst_port))
            continue
        src = index.at[(e.src, e.src_call)]
        if src in inside and (drawn_src := resolve(src, e.src_port)) is not None:
            if drawn_src == drawn_dst:
                continue
            src_id = _node_id(nodes[drawn_src])
        elif src in inside:  # made by a node left out of this figure (`only`)
            src_id = input_box(_top(src, b, index), "", e.shape)
        else:
            src_id = input_box(src, e.src_port, e.shape)
        receivers.setdefault((src_id, shape_str(e.shape)), []).append((nodes[dst], e.dst_port))
        if drawn_dst != dst and (src, e.src_port, drawn_dst) in direct:
            continue  # the drawn node itself receives this tensor: that edge says it, with its shape
        add_arrow(src_id, _node_id(nodes[drawn_dst]), e.shape, e.dst_port, (src, e.src_port), nodes[dst])

    for e in trace.edges:  # what the block returns
        if e.returned and index.at[(e.dst, e.dst_call)] == b:
            drawn = resolve(index.at[(e.src, e.src_call)], e.src_port)
            if drawn is None:
                continue
            out_id = f"out/{e.dst_port}"
            name = "output" if len(scope.outputs) == 1 else f"output {e.dst_port}"
            boxes[out_id] = Box(out_id, f"<b>{name}</b><br/>{_esc(shape_str(e.shape))}", "io")
            add_arrow(_node_id(nodes[drawn]), out_id, e.shape, "", (b, e.dst_port))

    fed = {(e.dst, e.dst_call, e.dst_port) for e in trace.edges if not e.returned}
    for i in sorted(frontier):  # inputs made by nobody: noise, a constant
        n = nodes[i]
        for name, shape in n.inputs.items():
            if isinstance(shape[0], int) and (n.path, n.call, name) not in fed:
                free = f"in/{_node_id(n)}/{name}"
                boxes[free] = Box(free, f"<b>{_esc(name)}</b><br/>{_esc(shape_str(shape))}", "io")
                arrows[(free, _node_id(n), "")] = Arrow(free, _node_id(n))

    for (src_id, label), consumers in exits.items():  # where the figure's results go next
        port = Counter(p for _, p in consumers).most_common(1)[0][0]
        away = f"away/{src_id}/{len(boxes)}"
        boxes[away] = Box(away, f"<b>{_esc(port)}</b> {_esc(label)}<br/>" + _small(_receivers(consumers, port)), "io")
        arrows[(src_id, away, label)] = Arrow(src_id, away)

    # Boxes for the drawn nodes, clusters for the expanded ones.
    clusters = []
    for i in sorted(expanded):
        n = nodes[i]
        parent = index.parent.get(i)
        clusters.append(
            Cluster(
                _cluster_id(n),
                f"<b>{_esc(n.type)}</b> {_small(_rel(n, nodes[parent] if parent in expanded else scope) + _calls(n))}",
                kind_of(n),
                _cluster_id(nodes[parent]) if parent in expanded else "",
            )
        )
    for i in sorted(frontier):
        n = nodes[i]
        parent = index.parent.get(i)
        boxes[_node_id(n)] = Box(
            _node_id(n),
            _label(n, nodes[parent] if parent in expanded else scope, index, detail),
            kind_of(n),
            _cluster_id(nodes[parent]) if parent in expanded else "",
        )

    drawn_order = [_node_id(nodes[i]) for i in sorted(frontier)]
    arrow_list = list(arrows.values())
    arrow_list = _collapse_repeats(arrow_list, boxes, [nodes[i] for i in sorted(frontier)], repeat_min)
    first_input = {_node_id(nodes[i]): next(iter(nodes[i].inputs), "") for i in frontier}
    arrow_list = _buses(arrow_list, boxes, tags_for, receivers, first_input, bus_min)
    for arrow in arrow_list:
        if arrow.count > 1:
            arrow.label = f"{arrow.label} ×{arrow.count}"
    result = Scene(
        title=title or _title(trace, scope),
        boxes=_ordered(boxes, drawn_order),
        clusters=clusters,
        arrows=arrow_list,
    )
    tops = [_node_id(nodes[i]) for i in index.children.get(b, []) if i in frontier]
    if fold:
        _fold(result, fold, scope, nodes, index, b, frontier)
    elif u_shape and not expanded:
        _u_layout(result, tops)
    return result


def _fold(result: Scene, fold: tuple[str, str], scope: Node, nodes, index: _Index, b: int, frontier: set) -> None:
    """Down to `fold[0]`, across in a row to `fold[1]`, then up: a long chain drawn as a U."""
    children = index.children.get(b, [])
    names = [_rel(nodes[i], scope) for i in children]
    start, end = names.index(fold[0]), names.index(fold[1])
    side = {}  # box id -> "row" or "up"
    for i in frontier:
        top = names.index(_rel(nodes[_top(i, b, index)], scope))
        if start <= top <= end:
            side[_node_id(nodes[i])] = "row"
        elif top > end:
            side[_node_id(nodes[i])] = "up"
    for a in result.arrows:
        if side.get(a.dst) == "up" or (side.get(a.src) == "up" and a.dst.startswith("out/")):
            a.back = True
    result.same_rank = [[box_id for box_id in (_node_id(nodes[i]) for i in sorted(frontier)) if side.get(box_id) == "row"]]


def _rel(n: Node, scope: Node) -> str:
    if scope.path and n.path.startswith(scope.path + "."):
        return n.path[len(scope.path) + 1 :]
    return n.path


def _calls(n: Node) -> str:
    return f" (call {n.call + 1})" if n.call else ""


def _top(i: int, b: int, index: _Index) -> int:
    while index.parent.get(i) not in (b, None):
        i = index.parent[i]
    return i


def _node_id(n: Node) -> str:
    return (n.path or "root") + (f"#{n.call}" if n.call else "")


def _cluster_id(n: Node) -> str:
    return "cluster_" + _node_id(n)


def _label(n: Node, scope: Node, index: _Index, detail: bool) -> str:
    name = _rel(n, scope) + _calls(n)
    if n.is_step:
        return f"<b><i>{_esc(n.label or n.type)}</i></b><br/>{_small(name)}"
    lines = [f"<b>{_esc(n.type)}</b>"]
    if detail:
        i = index.at[(n.path, n.call)]
        kids = [index.nodes[c] for c in index.children.get(i, [])]
        inner = [k.type if not k.is_step else k.label or k.type for k in kids if k.kind == "module" or k.type == "Concat"]
        holds_blocks = any(index.children.get(index.at[(k.path, k.call)]) for k in kids if k.kind == "module")
        if len(inner) > 1 and holds_blocks:  # a block of blocks: say what it is made of
            lines.append(_small(sequence(inner), "#333333"))
        params = f" · {fmt_params(n.params)}" if n.params and not n.call else ""
        lines.append(_small(name + params))
    return "<br/>".join(lines)


def _title(trace: Trace, scope: Node) -> str:
    where = f"{scope.path} · " if scope.path else ""
    inputs = ", ".join(f"{k} {shape_str(v)}" for k, v in trace.inputs.items())
    return f"{scope.type} — {where}{trace.model} · {inputs}"


def _ordered(boxes: dict[str, Box], drawn_order: list[str]) -> list[Box]:
    """Inputs first, then the drawn nodes in call order, then outputs and buses: stable DOT text."""
    first = [b for k, b in boxes.items() if k.startswith("in/")]
    middle = [boxes[k] for k in drawn_order if k in boxes]
    last = [b for k, b in boxes.items() if not k.startswith("in/") and k not in drawn_order]
    return first + middle + last


def _collapse_repeats(arrows: list[Arrow], boxes: dict[str, Box], drawn: list[Node], minimum: int) -> list[Arrow]:
    """Draw a chain of `minimum` or more identical layers once, marked ×N."""
    groups: list[list[Node]] = []
    for n in drawn:
        prev = groups[-1][-1] if groups else None
        chained = prev is not None and any(
            a.src == _node_id(prev) and a.dst == _node_id(n) for a in arrows
        )
        same = (
            prev is not None
            and not n.is_step
            and n.type == prev.type
            and n.outputs == prev.outputs
            and boxes[_node_id(n)].cluster == boxes[_node_id(prev)].cluster
        )
        if chained and same:
            groups[-1].append(n)
        else:
            groups.append([n])
    rename: dict[str, str] = {}
    for group in groups:
        if len(group) < minimum:
            continue
        first, last = group[0], group[-1]
        keep = _node_id(first)
        box = boxes[keep]
        box.label = (
            f"<b>{_esc(first.type)} ×{len(group)}</b><br/>"
            + _small(f"{first.path.rsplit('.', 1)[0]}.{first.name} … {last.name} · {fmt_params(first.params)} each")
        )
        for n in group[1:]:
            rename[_node_id(n)] = keep
            del boxes[_node_id(n)]
    if not rename:
        return arrows
    merged: dict[tuple[str, str, str], Arrow] = {}
    for a in arrows:
        src, dst = rename.get(a.src, a.src), rename.get(a.dst, a.dst)
        if src == dst:
            continue
        key = (src, dst, a.label)
        if key in merged:
            continue  # the same tensor into each copy: drawn once
        merged[key] = Arrow(src, dst, a.label, a.count)
    return list(merged.values())


def _buses(
    arrows: list[Arrow],
    boxes: dict[str, Box],
    tags_for: dict[str, Counter],
    receivers: dict[tuple[str, str], list[tuple[Node, str]]],
    first_input: dict[str, str],
    minimum: int,
) -> list[Arrow]:
    """A tensor reaching `minimum` or more drawn nodes from the side (as an extra argument, like a
    time embedding): one arrow into a labelled bus instead, each receiver tagged with the argument."""
    fan: dict[tuple[str, str], list[Arrow]] = {}
    for a in arrows:
        if a.dst in boxes and not a.dst.startswith("out/"):
            fan.setdefault((a.src, a.label), []).append(a)
    buses, bused = [], set()
    for (src, label), group in fan.items():
        if len(group) < minimum:
            continue
        ports: Counter = Counter()
        for a in group:
            for (s, port), count in tags_for.get(a.dst, Counter()).items():
                if s == src:
                    ports[port] += count
        port = ports.most_common(1)[0][0] if ports else "input"
        if any(first_input.get(a.dst) == port for a in group):
            continue  # what the receivers mainly work on (Q, K and V of one input): drawn as arrows
        into = _receivers(receivers.get((src, label), []), port) or f"into {len(group)} nodes"
        if src.startswith("in/"):  # an input of the figure: it is its own bus
            boxes[src].label += "<br/>" + _small(into)
        else:
            bus_id = f"bus/{src}/" + "x".join(label.strip("[]").split(", "))
            boxes[bus_id] = Box(bus_id, f"<b>{_esc(port)}</b> {_esc(label)}<br/>" + _small(into), "io")
            buses.append(Arrow(src, bus_id))
        for a in group:
            boxes[a.dst].tags.append(f"+ {port}")
            bused.add(id(a))
    return buses + [a for a in arrows if id(a) not in bused]


def _receivers(consumers: list[tuple[Node, str]], port: str) -> str:
    """Where a tensor really ends up, at any depth: 'into every ResnetBlock2D (22)'. The most
    frequent module type receiving it as `port`, the outermost one on a tie."""
    deep = [n for n, p in consumers if p == port and not n.is_step]
    counts = Counter(n.type for n in deep)
    if not counts:
        return ""
    best = min(counts, key=lambda t: (-counts[t], min(n.depth for n in deep if n.type == t)))
    return f"into every {best} ({counts[best]})" if counts[best] > 1 else f"into {best}"


def _u_layout(result: Scene, tops: list[str]) -> None:
    """When top-level nodes hand tensors across the chain (skip connections), draw a U."""
    position = {box_id: k for k, box_id in enumerate(tops)}
    skips: Counter = Counter()
    for a in result.arrows:
        if a.src in position and a.dst in position and position[a.dst] - position[a.src] >= 2:
            skips[(a.src, a.dst)] += a.count
    pairs: dict[str, str] = {}
    taken: set[str] = set()
    for (src, dst), _ in sorted(skips.items(), key=lambda kv: (-kv[1], position[kv[0][0]])):
        if src not in pairs and dst not in taken:
            pairs[src] = dst
            taken.add(dst)
    # A U: at least three pairs, nested: the first down node feeds the last up node, and so on.
    ordered = sorted(pairs.items(), key=lambda kv: position[kv[0]])
    nested = all(position[a[1]] > position[b[1]] for a, b in zip(ordered, ordered[1:]))
    if len(pairs) < 3 or not nested:
        return
    first_up = min(position[d] for d in pairs.values())
    up = {box_id for box_id in tops if position[box_id] >= first_up}
    for a in result.arrows:
        if a.src in position and a.dst in position and position[a.dst] - position[a.src] >= 2:
            a.straight = True  # a skip: straight across the U
        elif a.dst in up or (a.src in up and a.dst.startswith("out/")):
            a.back = True  # the up path is drawn going up
    result.same_rank = [[src, dst] for src, dst in pairs.items()]


# -- DOT -----------------------------------------------------------------------------------------


def to_dot(s: Scene) -> str:
    """The scene as DOT text, deterministic: same record, same text."""
    import graphviz

    g = graphviz.Digraph("figure", engine="dot")
    head, *rest = s.title.split("\n")
    rows = [f'<tr><td><font point-size="18"><b>{_esc(head)}</b></font></td></tr>']
    rows += [f'<tr><td><font point-size="12" color="#555555">{_esc(line)}</font></td></tr>' for line in rest]
    rows.append(f"<tr><td>{_legend([k for k in FILL if any(b.kind == k for b in s.boxes)])}</td></tr>")
    title = '<table border="0" cellpadding="1">' + "".join(rows) + "</table>"
    g.attr(
        rankdir=s.rankdir,
        label=f"<{title}>",
        labelloc="t",
        fontname="Helvetica",
        fontsize="16",
        nodesep="0.35",
        ranksep="0.45",
        newrank="true",
        compound="true",
    )
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="12", margin="0.12,0.06")
    g.attr("edge", fontname="Helvetica", fontsize="10", color="#555555", arrowsize="0.7")

    graphs = {"": g}
    subgraphs = {}
    for c in s.clusters:  # parents come before children (sorted by call order)
        sub = graphviz.Digraph(c.id)
        sub.attr(
            id=c.id,
            label=f"<{c.label}>",
            style="rounded,filled",
            fillcolor=_lighter(FILL.get(c.kind, "#ffffff")),
            color="#9aa7b8",
            fontname="Helvetica",
            fontsize="12",
            labeljust="l",
        )
        subgraphs[c.id] = (sub, c.parent)
        graphs[c.id] = sub

    for box in s.boxes:
        label = box.label
        if box.tags:
            label += "<br/>" + _small(" ".join(dict.fromkeys(box.tags)), "#7a3b8f")
        attrs = {"label": f"<{label}>", "fillcolor": FILL[box.kind], "id": box.id}  # the SVG element's id
        if box.kind == "step":
            attrs["style"] = "rounded,filled,dashed"
        if box.kind == "io":
            attrs["shape"] = "note" if not box.id.startswith("bus/") else "box"
            attrs["style"] = "filled" if not box.id.startswith("bus/") else "filled,dashed"
        graphs[box.cluster].node(box.id, **attrs)

    for cid in reversed(list(subgraphs)):  # nest clusters, innermost first
        sub, parent = subgraphs[cid]
        graphs[parent].subgraph(sub)

    for group in s.same_rank:
        with g.subgraph() as same:
            same.attr(rank="same")
            for box_id in group:
                same.node(box_id)

    for a in s.arrows:
        attrs = {}
        if a.label:
            attrs["label"] = f" {a.label} "
        if a.back:
            attrs["dir"] = "back"
        if a.straight:
            attrs["constraint"] = "false"
            attrs["color"] = "#2f6db5"
            attrs["fontcolor"] = "#2f6db5"
            attrs["penwidth"] = "1.4"
        if a.dashed:
            attrs["style"] = "dashed"
        if a.back:
            g.edge(a.dst, a.src, **attrs)
        else:
            g.edge(a.src, a.dst, **attrs)

    return g.source


def _legend(kinds: list[str]) -> str:
    """The colour key, as a row of cells under the title."""
    cells = "".join(
        f'<td bgcolor="{FILL[k]}" border="1" style="rounded"><font point-size="10">{_esc(LEGEND[k])}</font></td>'
        for k in kinds
    )
    return f'<table border="0" cellspacing="6" cellpadding="4"><tr>{cells}</tr></table>'


def _lighter(color: str) -> str:
    """A paler version of a fill colour, for cluster backgrounds."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#%02x%02x%02x" % tuple(int(c + (255 - c) * 0.6) for c in (r, g, b))
