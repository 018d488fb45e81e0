"""The terminal tree: one line per node (name, type, input → output, params), indented by depth.

A node's first tensor argument is its input; the others (a ResnetBlock2D's `temb`, a cross-attention's
`encoder_hidden_states`, an up block's skip tensors) enter from the side, and are shown on a dim line
under the node, where they enter. Outputs after the first (a down block's skip tensors) likewise, and
outputs that the model's output class names ("out: last_hidden_state [2,77,768] · pooler_output [2,768]").
Steps (attention's heads and scores, the VAE's sample) are drawn in italics with what they compute.

Pure functions of a `Trace`; the same lines render in a terminal and, as HTML, in Jupyter.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.text import Text

from explorer.record import Node, Trace
from explorer.views.categories import category_of
from explorer.views.format import call_suffix, dropped_tokens, fmt_named_outputs, fmt_params, fmt_shape, fmt_shapes, relative_name

WEIGHT_WORDS = {
    "meta": "meta device: exact shapes, no weights",
    "random": "random weights",
    "pretrained": "pretrained weights",
}

# Colour by what a layer does (explorer.views.categories): the same key as the diagrams.
CATEGORY_STYLES = {
    "conv": "cyan",
    "norm": "green",
    "attention": "magenta",
    "linear": "yellow",
    "activation": "bright_black",
    "block": "bold blue",
    "step": "italic bright_magenta",
}


def type_style(node: Node) -> str:
    return CATEGORY_STYLES[category_of(node)]


def _inputs(node: Node) -> list[tuple[str, Any]]:
    """The node's inputs; a first input that is a tuple (a concat's tensors) counts as its items."""
    items = list(node.inputs.items())
    if items and items[0][1] and isinstance(items[0][1][0], tuple):
        name, shapes = items[0]
        items = [(f"{name}[{i}]", s) for i, s in enumerate(shapes)] + items[1:]
    return items


def _shapes(node: Node) -> str:
    inputs = _inputs(node)
    first_in = inputs[0][1] if inputs else None
    left = fmt_shape(first_in) if first_in is not None else ""
    right = fmt_shape(node.outputs[0]) if node.outputs else ""
    if len(node.outputs) > 1:
        right += f" +{len(node.outputs) - 1}"
    return f"{left} → {right}" if left else right


def _side_lines(node: Node, room: int) -> list[str]:
    """What enters from the side and what else leaves: '+ temb [2,1280]', 'also out: ...'.
    Side inputs share a line while they fit in `room` characters."""
    lines: list[str] = []
    for name, shape in _inputs(node)[1:]:
        item = f"{name} {fmt_shape(shape)}"
        if lines and len(lines[-1]) + 3 + len(item) <= room:
            lines[-1] += " · " + item
        else:
            lines.append("+ " + item)
    if node.output_names:  # named by the model's output class: every output with its name
        names = [node.output_name(k) for k in range(len(node.outputs))]
        lines.append("out: " + fmt_named_outputs(names, node.outputs))
    elif len(node.outputs) > 1:
        lines.append("also out: " + fmt_shapes(node.outputs[1:]))
    return lines


def _relative_name(node: Node, parent: Node | None, trace: Trace) -> str:
    """A node's name under its parent in the tree; the top of a --block view keeps its full path."""
    if node.path == "":
        return trace.component
    return relative_name(node.path, parent.path if parent is not None else "")


def layout(trace: Trace) -> list[dict[str, Any]]:
    """Each node with its parent and the tree guides to draw before its name."""
    rows: list[dict[str, Any]] = []
    open_levels: list[bool] = []  # per ancestor level: does it still have siblings to come?
    parents: list[Node] = []
    nodes = trace.nodes
    top = trace.root_depth
    for i, node in enumerate(nodes):
        level = node.depth - top
        parents = parents[:level]
        parent = parents[-1] if parents else None
        later_sibling = False
        for later in nodes[i + 1 :]:
            if later.depth <= node.depth:
                later_sibling = later.depth == node.depth
                break
        open_levels = open_levels[:level]
        if level == 0:
            guide = ""
        else:
            guide = "".join("│  " if still_open else "   " for still_open in open_levels[1:])
            guide += "├─ " if later_sibling else "└─ "
        continuation = "".join("│  " if still_open else "   " for still_open in open_levels[1:])
        if level > 0:
            continuation += "│  " if later_sibling else "   "
        has_children = i + 1 < len(nodes) and nodes[i + 1].depth > node.depth
        continuation += "│  " if has_children else "   "
        rows.append(
            {
                "node": node,
                "name": _relative_name(node, parent, trace),
                "guide": guide,
                "continuation": continuation,
            }
        )
        open_levels.append(later_sibling)
        parents.append(node)
    return rows


def header(trace: Trace) -> Text:
    """One line: component and class, where it came from, its inputs, its parameter count."""
    root = trace.nodes[0] if trace.nodes and trace.nodes[0].path == "" else None
    text = Text()
    text.append(trace.component, style="bold")
    if root is not None:
        text.append(f" {root.type}", style="bold blue")
    text.append(f" · {trace.model} · {WEIGHT_WORDS.get(trace.weights, trace.weights)}", style="dim")
    text.append("\n")
    text.append("in: ", style="dim")
    text.append("  ".join(f"{k} {fmt_shape(v)}" for k, v in trace.inputs.items()))
    text.append(f" · {trace.total_params:,} params", style="dim")
    if trace.block:
        text.append(f"\nblock {trace.block}", style="bold")
    return text


def tree_lines(trace: Trace, width: int = 100) -> list[Text]:
    rows = layout(trace)
    if not rows:
        return []
    name_w = max(len("module"), *(len(r["guide"]) + len(r["name"]) + (9 if r["node"].call else 0) for r in rows))
    type_w = max(len("type"), *(len(r["node"].label if r["node"].is_step else r["node"].type) for r in rows))
    shapes = [_shapes(r["node"]) for r in rows]
    shape_w = max(len("input → output"), *(len(s) for s in shapes))
    lines = [
        Text.assemble(
            ("module".ljust(name_w), "bold dim"),
            "  ",
            ("type".ljust(type_w), "bold dim"),
            "  ",
            ("input → output".ljust(shape_w), "bold dim"),
            "  ",
            ("params", "bold dim"),
        )
    ]
    for row, shape in zip(rows, shapes):
        node: Node = row["node"]
        line = Text(row["guide"], style="bright_black")
        line.append(row["name"], style="italic" if node.is_step else ("bold" if node.depth == trace.root_depth else ""))
        if node.call:
            line.append(call_suffix(node), style="dim")
        line.pad_right(name_w - len(line))
        line.append("  ")
        line.append((node.label if node.is_step else node.type).ljust(type_w), style=type_style(node))
        line.append("  ")
        line.append(shape.ljust(shape_w))
        line.append("  ")
        if not node.is_step and node.call == 0:
            line.append(fmt_params(node.params).rjust(6), style="dim" if node.params == 0 else "")
        lines.append(line)
        for extra in _side_lines(node, room=width - name_w - 2):
            lines.append(
                Text.assemble(
                    (row["continuation"], "bright_black"),
                    (" " * max(0, name_w - len(row["continuation"]) + 2)),
                    (extra, "dim cyan"),
                )
            )
    return lines


def tokens_view(tokens: tuple[dict[str, Any], ...], width: int = 100) -> Group:
    """Each prompt's tokenization: position, vocabulary entry and id of every real token; the
    padding summarized; a warning naming what truncation dropped."""
    parts: list[Any] = []
    for record in tokens:
        ids, toks, length = record["ids"], record["tokens"], record["length"]
        padding = len(ids) - length
        title = Text()
        title.append("prompt ", style="dim")
        title.append(repr(record["prompt"]), style="bold")
        title.append(
            f"  → {length} tokens (start + {length - 2} + end) + {padding} padding = {len(ids)}", style="dim"
        )
        parts.append(title)
        row_pos, row_tok, row_id = Text("pos   ", "dim"), Text("token ", "dim"), Text("id    ", "dim")
        for pos in range(length):
            word = toks[pos].replace("</w>", "")
            cell = max(len(toks[pos]), len(str(ids[pos])), len(str(pos))) + 2
            if len(row_tok) + cell > width:  # wrap: start a new block of three rows
                parts.extend([row_pos, row_tok, row_id])
                row_pos, row_tok, row_id = Text("      "), Text("      "), Text("      ")
            row_pos.append(str(pos).ljust(cell), "dim")
            special = toks[pos].startswith("<|")
            row_tok.append(word, "bold yellow" if special else "bold")
            row_tok.append("</w>" if toks[pos].endswith("</w>") else "", "dim")
            row_tok.append(" " * (cell - len(toks[pos])))
            row_id.append(str(ids[pos]).ljust(cell), "cyan")
        parts.extend([row_pos, row_tok, row_id])
        if padding:
            parts.append(
                Text(f"{length}–{len(ids) - 1}: {toks[-1]} {ids[-1]} × {padding} (padding to {len(ids)})", "dim")
            )
        if dropped := dropped_tokens(record):
            parts.append(Text(f"⚠ {dropped}", "bold red"))
        parts.append(Text(""))
    return Group(*parts)


def render(trace: Trace, hidden: int = 0) -> Group:
    """Header, the tokenization (CLIP), the tree, and a footer saying what is not shown."""
    parts: list[Any] = [header(trace), Text("")]
    if trace.tokens and not trace.block:
        parts.append(tokens_view(trace.tokens))
    parts.extend(tree_lines(trace))
    if hidden:
        nodes = "node" if hidden == 1 else "nodes"
        parts.append(Text(f"\n{hidden:,} deeper {nodes} not shown: raise --depth to see them.", "dim"))
    return Group(*parts)


def to_text(trace: Trace, width: int = 100, hidden: int = 0, color: bool = False) -> str:
    """The rendered tree as plain text (or with ANSI colours)."""
    console = recording_console(width, "standard" if color else None)
    console.print(render(trace, hidden), overflow="ignore", crop=False, soft_wrap=True)
    return console.export_text(styles=color)


NOTEBOOK_MAX_NODES = 200


def notebook_bundle(trace: Trace) -> dict[str, str]:
    """What Jupyter shows for a Trace: the tree as HTML (and text). A big trace shows its top
    levels and says how to see more."""
    shown, depth = trace, trace.max_depth
    while len(shown.nodes) > NOTEBOOK_MAX_NODES and depth > 1:
        depth -= 1
        shown = trace.upto(depth)
    hidden = len(trace.nodes) - len(shown.nodes)
    note = Text(f"{hidden:,} deeper nodes not shown: trace.upto({depth + 1}) or trace.subtree(path) shows them.", "dim")
    return mime_bundle(render(shown), *([note] if hidden else []), width=120)


def mime_bundle(*renderables, width: int) -> dict[str, str]:
    """What Jupyter displays for rich renderables: HTML with inline styles, and the same as plain text."""
    console = recording_console(width, "truecolor")
    for renderable in renderables:
        console.print(renderable, overflow="ignore", crop=False, soft_wrap=True)
    return {"text/plain": console.export_text(clear=False), "text/html": console.export_html(inline_styles=True)}


def recording_console(width: int, color_system: str | None) -> Console:
    """A console that only records what is printed, for export. force_jupyter=False: inside Jupyter
    rich would also display what it prints (the tree twice)."""
    return Console(width=width, record=True, file=_Null(), color_system=color_system, force_jupyter=False)


class _Null:
    """A file that drops what is written: the console only records."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass
