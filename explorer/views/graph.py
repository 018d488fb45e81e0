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

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from explorer.errors import OptionError
from explorer.record import Node, Trace, check_depth
from explorer.views.categories import category_of
from explorer.views.format import call_suffix, esc, fmt_params, node_id, plural, relative_name, shape_str, small

FILL = {
    "conv": "#cfe8f3",
    "norm": "#d5f0d5",
    "attention": "#eadcf7",
    "linear": "#fff0c2",
    "activation": "#ececec",
    "block": "#dbe5f7",
    "step": "#fde0e0",
    "io": "#ffffff",
    # a diff's figure (explorer.views.diff): what became of each block
    "added": "#bfe6b5",
    "changed": "#ffd98a",
    "same": "#eeeeee",
    "removed": "#f4b9b9",
    # a sweep's figure (explorer.views.experiment): how much editing a block changed the image
    "effect0": "#f7f7f7",
    "effect1": "#fff2cc",
    "effect2": "#ffd58a",
    "effect3": "#fdae61",
    "effect4": "#f46d43",
    "effect5": "#d73027",
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
    "added": "added",
    "changed": "changed (or changed inside)",
    "same": "the same",
    "removed": "removed",
    "effect0": "image unchanged",
    "effect1": "image change under 0.5 %",
    "effect2": "0.5 to 2 %",
    "effect3": "2 to 5 %",
    "effect4": "5 to 12 %",
    "effect5": "12 % or more",
}
_PLAIN_PORTS = {"input", "other", "tensors", "hidden_states"}  # argument names that say nothing on an arrow
BUS_MIN = 3  # a tensor reaching this many drawn nodes is drawn as one bus
REPEAT_MIN = 4  # this many identical layers in a chain are drawn once
TITLE_CHARS = 80  # a title line longer than this is wrapped (18 pt bold: about 11 pt a character)


@dataclass
class Box:
    id: str
    label: str  # Graphviz HTML-like label, without the enclosing < >
    category: str  # the colour: one of explorer.views.categories.CATEGORIES, or "io"
    cluster: str = ""  # the id of the enclosing cluster, "" for none
    tags: list[str] = field(default_factory=list)  # "+ temb": what arrives from a bus


@dataclass
class Cluster:
    id: str
    label: str
    category: str
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
        self.children: dict[int, list[int]] = trace.children()

    def descendants(self, i: int) -> range:
        j = i + 1
        while j < len(self.nodes) and self.nodes[j].depth > self.nodes[i].depth:
            j += 1
        return range(i + 1, j)


def _find_block(trace: Trace, block: str | None) -> int:
    if not block:
        return 0
    found = trace.locate(block)
    if found is None:
        inside = [n.path for n in trace.nodes if n.path.startswith(block + ".")]
        children = sorted({p[len(block) + 1 :].split(".")[0] for p in inside})
        raise OptionError(
            "block",
            f"{block!r} is a container that never runs by itself: draw one of what it holds, e.g. {block}.{children[0]}.",
        )
    return found


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
    check_depth(depth, trace.component, minimum=1)
    # 1. which nodes are drawn: boxes for the frontier, clusters around the expanded ones
    sel = select(trace, block, depth, expand=expand, only=only)
    # 2. the arrows between them, the figure's inputs and outputs, and where results go next
    drawing = _Drawing(sel)
    draw_flow(sel, drawing, restricted=only is not None)
    draw_outputs(sel, drawing)
    draw_free_inputs(sel, drawing)
    draw_exits(drawing)
    # 3. the boxes of the drawn nodes, inside the clusters of the expanded ones
    clusters = draw_nodes(sel, drawing, detail)
    # 4. identical layers in a chain drawn once (×N), a tensor fanning out drawn as one bus
    drawn = [sel.nodes[i] for i in sorted(sel.frontier)]
    arrows = _collapse_repeats(list(drawing.arrows.values()), drawing.boxes, drawn, repeat_min)
    first_input = {node_id(n): next(iter(n.inputs), "") for n in drawn}
    arrows = _buses(arrows, drawing.boxes, drawing.tags_for, drawing.receivers, first_input, bus_min)
    for arrow in arrows:
        if arrow.count > 1:
            arrow.label = f"{arrow.label} ×{arrow.count}"
    result = Scene(
        title=title or _title(trace, sel.scope),
        boxes=_ordered(drawing.boxes, [node_id(n) for n in drawn]),
        clusters=clusters,
        arrows=arrows,
    )
    # 5. the layout: a chain folded into a U, or a U-Net's down and up paths side by side
    if fold:
        _fold(result, fold, sel)
    elif u_shape and not sel.expanded:
        _u_layout(result, [node_id(sel.nodes[i]) for i in sel.index.children.get(sel.b, []) if i in sel.frontier])
    return result


@dataclass
class Selection:
    """The nodes a figure draws, by position in the trace: `frontier` as boxes, `expanded` as
    clusters around what they hold; `b` is the figure's block, `inside` everything below it."""

    trace: Trace
    index: _Index
    b: int
    inside: set[int]
    visible: set[int]
    expanded: set[int]
    frontier: set[int]
    returns: dict[tuple[int, str], tuple[int, str]]  # (node, output port) -> (child that made it, its port)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.trace.nodes

    @property
    def scope(self) -> Node:
        return self.trace.nodes[self.b]

    def at(self, path: str, call: int) -> int:
        return self.index.at[(path, call)]

    def lift(self, i: int) -> int | None:
        """The drawn node containing node i (None outside the figure)."""
        while i not in self.frontier:
            if i not in self.index.parent or self.index.parent[i] == self.b or i == self.b:
                return None
            i = self.index.parent[i]
        return i

    def resolve(self, i: int, port: str, seen: int = 0) -> int | None:
        """The drawn node that made output `port` of node i: through the children of a cluster
        that returns it, or the drawn node around i."""
        if i in self.frontier:
            return i
        if i in self.expanded and (i, port) in self.returns and seen < 50:
            return self.resolve(*self.returns[(i, port)], seen + 1)
        if i in self.inside:
            return self.lift(i)
        return None

    def top(self, i: int) -> int:
        """The child of the figure's block that holds node i."""
        return _top(i, self.b, self.index)

    def parent_in_figure(self, i: int) -> Node:
        """The cluster node i sits in, or the figure's block."""
        parent = self.index.parent.get(i)
        return self.nodes[parent] if parent in self.expanded else self.scope


def select(trace: Trace, block: str | None, depth: int, expand: Iterable[str] = (), only: Iterable[str] | None = None) -> Selection:
    """Stage 1: the nodes `depth` levels below `block`, those in `expand` one level deeper, only the
    children named in `only` (with what is inside them)."""
    index = _Index(trace)
    nodes = trace.nodes
    b = _find_block(trace, block)
    scope = nodes[b]
    inside = set(index.descendants(b))
    visible = {i for i in inside if nodes[i].depth - scope.depth <= depth}
    for name in expand:  # one level more inside these
        opened = index.at.get((f"{scope.path}.{name}" if scope.path else name, 0))
        if opened is not None and opened in visible:
            visible |= set(index.children.get(opened, []))
    if only is not None:
        keep = set(only)
        tops = {i for i in index.children.get(b, []) if relative_name(nodes[i].path, scope.path) in keep}
        visible = {i for i in visible if _top(i, b, index) in tops}
    expanded = {i for i in visible if any(c in visible for c in index.children.get(i, []))}
    returns = {
        (index.at[(e.dst, e.dst_call)], e.dst_port): (index.at[(e.src, e.src_call)], e.src_port)
        for e in trace.edges
        if e.returned
    }
    return Selection(trace, index, b, inside, visible, expanded, visible - expanded, returns)


class _Drawing:
    """The boxes and arrows of a figure while it is built."""

    def __init__(self, sel: Selection):
        self.sel = sel
        self.boxes: dict[str, Box] = {}
        self.arrows: dict[tuple[str, str, str], Arrow] = {}
        self.tensors: dict[tuple[str, str, str], set] = {}  # the distinct tensors each arrow stands for
        self.tags_for: dict[str, Counter] = {}  # box -> (source box, argument) -> count
        self.receivers: dict[tuple[str, str], list[tuple[Node, str]]] = {}  # (src box, shape) -> consumers, any depth
        self.exits: dict[tuple[str, str], list[tuple[Node, str]]] = {}  # to nodes `only` left out
        # Ports of the block: which argument each outside tensor arrives as.
        self.entering: dict[tuple[int, str], str] = {
            (sel.at(e.src, e.src_call), e.src_port): e.dst_port
            for e in sel.trace.edges
            if not e.returned and sel.at(e.dst, e.dst_call) == sel.b
        }

    def input_box(self, src: int, port: str, shape: tuple) -> str:
        """The box of a tensor coming from outside the figure."""
        if src == self.sel.b:  # the component's own input
            name = port
        elif (src, port) in self.entering:
            name = self.entering[(src, port)]
        else:
            name = f"from {self.sel.nodes[src].path or self.sel.trace.component}"
        box_id = f"in/{name}"
        if box_id not in self.boxes:
            self.boxes[box_id] = Box(box_id, f"<b>{esc(name)}</b><br/>{esc(shape_str(shape))}", "io")
        return box_id

    def add_arrow(self, src: str, dst: str, shape: tuple, dst_port: str, tensor: tuple, consumer: Node | None = None) -> None:
        """One arrow per (source, destination, label); `count` says how many tensors it stands for."""
        label = shape_str(shape)
        if consumer is not None and consumer.is_step and dst_port.split("[")[0] not in _PLAIN_PORTS:
            label = f"{dst_port} {label}"  # a step's named inputs: query, key, mean, logvar, ...
        key = (src, dst, label)
        if key not in self.arrows:
            self.arrows[key] = Arrow(src, dst, label)
        self.tensors.setdefault(key, set()).add(tensor)
        self.arrows[key].count = len(self.tensors[key])
        self.tags_for.setdefault(dst, Counter())[(src, dst_port.split("[")[0])] += 1


def draw_flow(sel: Selection, drawing: _Drawing, restricted: bool) -> None:
    """Stage 2: every edge into a drawn node, lifted to the drawn nodes that contain its ends.
    `restricted` (a figure of `only` some children): edges to the rest become exits."""
    nodes = sel.nodes
    direct = {(sel.at(e.src, e.src_call), e.src_port, sel.at(e.dst, e.dst_call)) for e in sel.trace.edges if not e.returned}
    for e in sel.trace.edges:
        dst = sel.at(e.dst, e.dst_call)
        if e.returned or dst not in sel.inside:
            continue
        src = sel.at(e.src, e.src_call)
        if (drawn_dst := sel.lift(dst)) is None:
            if restricted and dst not in sel.visible and src in sel.inside and (drawn := sel.resolve(src, e.src_port)):
                drawing.exits.setdefault((node_id(nodes[drawn]), shape_str(e.shape)), []).append((nodes[dst], e.dst_port))
            continue
        if src in sel.inside and (drawn_src := sel.resolve(src, e.src_port)) is not None:
            if drawn_src == drawn_dst:
                continue
            src_id = node_id(nodes[drawn_src])
        elif src in sel.inside:  # made by a node left out of this figure (`only`)
            src_id = drawing.input_box(sel.top(src), "", e.shape)
        else:
            src_id = drawing.input_box(src, e.src_port, e.shape)
        drawing.receivers.setdefault((src_id, shape_str(e.shape)), []).append((nodes[dst], e.dst_port))
        if drawn_dst != dst and (src, e.src_port, drawn_dst) in direct:
            continue  # the drawn node itself receives this tensor: that edge says it, with its shape
        drawing.add_arrow(src_id, node_id(nodes[drawn_dst]), e.shape, e.dst_port, (src, e.src_port), nodes[dst])


def draw_outputs(sel: Selection, drawing: _Drawing) -> None:
    """What the block returns: an output box for each returned tensor."""
    for e in sel.trace.edges:
        if e.returned and sel.at(e.dst, e.dst_call) == sel.b:
            drawn = sel.resolve(sel.at(e.src, e.src_call), e.src_port)
            if drawn is None:
                continue
            out_id = f"out/{e.dst_port}"
            name = sel.scope.output_name(int(e.dst_port)) or (
                "output" if len(sel.scope.outputs) == 1 else f"output {e.dst_port}"
            )
            drawing.boxes[out_id] = Box(out_id, f"<b>{name}</b><br/>{esc(shape_str(e.shape))}", "io")
            drawing.add_arrow(node_id(sel.nodes[drawn]), out_id, e.shape, "", (sel.b, e.dst_port))


def draw_free_inputs(sel: Selection, drawing: _Drawing) -> None:
    """Inputs made by nobody (noise, a constant): a box of their own."""
    fed = {(e.dst, e.dst_call, e.dst_port) for e in sel.trace.edges if not e.returned}
    for i in sorted(sel.frontier):
        n = sel.nodes[i]
        for name, shape in n.inputs.items():
            if isinstance(shape[0], int) and (n.path, n.call, name) not in fed:
                free = f"in/{node_id(n)}/{name}"
                drawing.boxes[free] = Box(free, f"<b>{esc(name)}</b><br/>{esc(shape_str(shape))}", "io")
                drawing.arrows[(free, node_id(n), "")] = Arrow(free, node_id(n))


def draw_exits(drawing: _Drawing) -> None:
    """Where the figure's results go next, when only some children are drawn."""
    for (src_id, label), consumers in drawing.exits.items():
        port = Counter(p for _, p in consumers).most_common(1)[0][0]
        away = f"away/{src_id}/{len(drawing.boxes)}"
        drawing.boxes[away] = Box(away, f"<b>{esc(port)}</b> {esc(label)}<br/>" + small(_receivers(consumers, port)), "io")
        drawing.arrows[(src_id, away, label)] = Arrow(src_id, away)


def draw_nodes(sel: Selection, drawing: _Drawing, detail: bool) -> list[Cluster]:
    """Stage 3: a box per drawn node, a cluster per expanded one; returns the clusters."""
    clusters = []
    for i in sorted(sel.expanded):
        n, parent = sel.nodes[i], sel.index.parent.get(i)
        clusters.append(
            Cluster(
                _cluster_id(n),
                f"<b>{esc(n.type)}</b> {small(relative_name(n.path, sel.parent_in_figure(i).path) + call_suffix(n))}",
                category_of(n),
                _cluster_id(sel.nodes[parent]) if parent in sel.expanded else "",
            )
        )
    for i in sorted(sel.frontier):
        n, parent = sel.nodes[i], sel.index.parent.get(i)
        drawing.boxes[node_id(n)] = Box(
            node_id(n),
            _label(n, sel.parent_in_figure(i), sel.index, detail),
            category_of(n),
            _cluster_id(sel.nodes[parent]) if parent in sel.expanded else "",
        )
    return clusters


def _fold(result: Scene, fold: tuple[str, str], sel: Selection) -> None:
    """Down to `fold[0]`, across in a row to `fold[1]`, then up: a long chain drawn as a U."""
    scope = sel.scope.path
    names = [relative_name(sel.nodes[i].path, scope) for i in sel.index.children.get(sel.b, [])]
    start, end = names.index(fold[0]), names.index(fold[1])
    side = {}  # box id -> "row" or "up"
    for i in sel.frontier:
        top = names.index(relative_name(sel.nodes[sel.top(i)].path, scope))
        if start <= top <= end:
            side[node_id(sel.nodes[i])] = "row"
        elif top > end:
            side[node_id(sel.nodes[i])] = "up"
    for a in result.arrows:
        if side.get(a.dst) == "up" or (side.get(a.src) == "up" and a.dst.startswith("out/")):
            a.back = True
    drawn = (node_id(sel.nodes[i]) for i in sorted(sel.frontier))
    result.same_rank = [[box_id for box_id in drawn if side.get(box_id) == "row"]]


def _top(i: int, b: int, index: _Index) -> int:
    while index.parent.get(i) not in (b, None):
        i = index.parent[i]
    return i


def _cluster_id(n: Node) -> str:
    return "cluster_" + node_id(n)


def _label(n: Node, scope: Node, index: _Index, detail: bool) -> str:
    name = relative_name(n.path, scope.path) + call_suffix(n)
    if n.is_step:
        return f"<b><i>{esc(n.label or n.type)}</i></b><br/>{small(name)}"
    lines = [f"<b>{esc(n.type)}</b>"]
    if detail:
        i = index.at[(n.path, n.call)]
        kids = [index.nodes[c] for c in index.children.get(i, [])]
        inner = [k.type if not k.is_step else k.label or k.type for k in kids if k.kind == "module" or k.type == "Concat"]
        holds_blocks = any(index.children.get(index.at[(k.path, k.call)]) for k in kids if k.kind == "module")
        if len(inner) > 1 and holds_blocks:  # a block of blocks: say what it is made of
            lines.append(small(sequence(inner), "#333333"))
        params = f" · {fmt_params(n.params)}" if n.params and not n.call else ""
        lines.append(small(name + params))
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
            a.src == node_id(prev) and a.dst == node_id(n) for a in arrows
        )
        same = (
            prev is not None
            and not n.is_step
            and n.type == prev.type
            and n.outputs == prev.outputs
            and boxes[node_id(n)].cluster == boxes[node_id(prev)].cluster
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
        keep = node_id(first)
        box = boxes[keep]
        box.label = (
            f"<b>{esc(first.type)} ×{len(group)}</b><br/>"
            + small(f"{first.path.rsplit('.', 1)[0]}.{first.name} … {last.name} · {fmt_params(first.params)} each")
        )
        for n in group[1:]:
            rename[node_id(n)] = keep
            del boxes[node_id(n)]
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
        into = _receivers(receivers.get((src, label), []), port) or f"into {plural(len(group), 'node')}"
        if src.startswith("in/"):  # an input of the figure: it is its own bus
            boxes[src].label += "<br/>" + small(into)
        else:
            bus_id = f"bus/{src}/" + "x".join(label.strip("[]").split(", "))
            boxes[bus_id] = Box(bus_id, f"<b>{esc(port)}</b> {esc(label)}<br/>" + small(into), "io")
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
    # Skips of a U all pass over its bottom: keep the pairs around the position most of them span
    # (SDXL's time embedding also reaches past a few nodes, to be added to the extra conditioning).
    spans = [(position[src], position[dst]) for src, dst in pairs.items()]
    bottom = max(range(len(tops)), key=lambda m: sum(a < m < b for a, b in spans), default=0)
    pairs = {src: dst for src, dst in pairs.items() if position[src] < bottom < position[dst]}
    # A U: at least three pairs, nested: the first down node feeds the last up node, and so on.
    ordered = sorted(pairs.items(), key=lambda kv: position[kv[0]])
    nested = all(position[a[1]] > position[b[1]] for a, b in zip(ordered, ordered[1:]))
    if len(pairs) < 3 or not nested:
        return
    first_up = min(position[d] for d in pairs.values())
    up = {box_id for box_id in tops if position[box_id] >= first_up}
    for a in result.arrows:
        if a.src in position and a.dst in position and position[a.src] < bottom < position[a.dst]:
            a.straight = True  # a skip: straight across the U
        elif a.dst in up or (a.src in up and a.dst.startswith("out/")):
            a.back = True  # the up path is drawn going up
    result.same_rank = [[src, dst] for src, dst in pairs.items()]


# -- DOT -----------------------------------------------------------------------------------------


def to_dot(s: Scene, lang: str = "en") -> str:
    """The scene as DOT text, deterministic: same record, same text. `lang` "zh": everything the figure
    says in Chinese (explorer.views.zh), drawn with a CJK font; names and shapes as they are."""
    import graphviz

    from explorer.views import zh

    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be en or zh, got {lang!r}")
    legend, font = (zh.LEGEND, zh.FONT) if lang == "zh" else (LEGEND, "Helvetica")
    s = zh.translated(s) if lang == "zh" else s
    g = graphviz.Digraph("figure", engine="dot")
    g.attr(
        rankdir=s.rankdir,
        label=f"<{_title_table(s, legend)}>",
        labelloc="t",
        fontname=font,
        fontsize="16",
        nodesep="0.35",
        ranksep="0.45",
        newrank="true",
        compound="true",
    )
    g.attr("node", shape="box", style="rounded,filled", fontname=font, fontsize="12", margin="0.12,0.06")
    g.attr("edge", fontname=font, fontsize="10", color="#555555", arrowsize="0.7")
    graphs, subgraphs = _cluster_graphs(s, g, font)
    for box in s.boxes:
        graphs[box.cluster].node(box.id, **_box_attrs(box))
    for cid in reversed(list(subgraphs)):  # nest clusters, innermost first
        sub, parent = subgraphs[cid]
        graphs[parent].subgraph(sub)
    for group in s.same_rank:
        with g.subgraph() as same:
            same.attr(rank="same")
            for box_id in group:
                same.node(box_id)
    for a in s.arrows:
        if a.back:
            g.edge(a.dst, a.src, **_arrow_attrs(a))
        else:
            g.edge(a.src, a.dst, **_arrow_attrs(a))
    return g.source


def _title_table(s: Scene, legend: dict[str, str] = LEGEND) -> str:
    """The heading, the lines under it and the colour key, as a Graphviz HTML-like table."""
    head, *rest = s.title.split("\n")
    # long lines are wrapped at words, so that the title never makes a figure wider than its drawing
    rows = [f'<tr><td><font point-size="18"><b>{esc(line)}</b></font></td></tr>' for line in _wrap(head, TITLE_CHARS)]
    rows += [
        f'<tr><td><font point-size="12" color="#555555">{esc(line)}</font></td></tr>'
        for text in rest
        for line in _wrap(text, 2 * TITLE_CHARS)
    ]
    kinds = [k for k in FILL if any(b.category == k for b in s.boxes)]
    if kinds:
        rows.append(f"<tr><td>{_legend(kinds, legend)}</td></tr>")
    return '<table border="0" cellpadding="1">' + "".join(rows) + "</table>"


def _wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` characters: what comes before ': ' on a line of its own
    when it fits, the rest broken between words."""
    import textwrap

    if len(text) <= width:
        return [text]
    head, sep, tail = text.partition(": ")
    if sep and len(head) < width:  # "1.4.1 ResnetBlock2D:" on its own line, then what it says
        return [head + ":", *textwrap.wrap(tail, width)]
    return textwrap.wrap(text, width)


def _cluster_graphs(s: Scene, g, font: str = "Helvetica") -> tuple[dict, dict]:
    """One Graphviz subgraph per cluster (parents come before children, sorted by call order)."""
    import graphviz

    graphs = {"": g}
    subgraphs = {}
    for c in s.clusters:
        sub = graphviz.Digraph(c.id)
        sub.attr(
            id=c.id,
            label=f"<{c.label}>",
            style="rounded,filled",
            fillcolor=_lighter(FILL.get(c.category, "#ffffff")),
            color="#9aa7b8",
            fontname=font,
            fontsize="12",
            labeljust="l",
        )
        subgraphs[c.id] = (sub, c.parent)
        graphs[c.id] = sub
    return graphs, subgraphs


def _box_attrs(box: Box) -> dict[str, str]:
    label = box.label
    if box.tags:
        label += "<br/>" + small(" ".join(dict.fromkeys(box.tags)), "#7a3b8f")
    attrs = {"label": f"<{label}>", "fillcolor": FILL[box.category], "id": box.id}  # the SVG element's id
    if box.category == "step":
        attrs["style"] = "rounded,filled,dashed"
    if box.category == "io":
        attrs["shape"] = "note" if not box.id.startswith("bus/") else "box"
        attrs["style"] = "filled" if not box.id.startswith("bus/") else "filled,dashed"
    return attrs


def _arrow_attrs(a: Arrow) -> dict[str, str]:
    attrs = {}
    if a.label:
        attrs["label"] = f" {a.label} "
    if a.back:
        attrs["dir"] = "back"
    if a.straight:  # a skip across the U
        attrs.update(constraint="false", color="#2f6db5", fontcolor="#2f6db5", penwidth="1.4")
    if a.dashed:
        attrs["style"] = "dashed"
    return attrs


def _legend(kinds: list[str], legend: dict[str, str] = LEGEND) -> str:
    """The colour key, as a row of cells under the title."""
    cells = "".join(
        f'<td bgcolor="{FILL[k]}" border="1" style="rounded"><font point-size="10">{esc(legend[k])}</font></td>'
        for k in kinds
    )
    return f'<table border="0" cellspacing="6" cellpadding="4"><tr>{cells}</tr></table>'


def _lighter(color: str) -> str:
    """A paler version of a fill colour, for cluster backgrounds."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#%02x%02x%02x" % tuple(int(c + (255 - c) * 0.6) for c in (r, g, b))
