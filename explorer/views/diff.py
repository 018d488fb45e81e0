"""How a diff (explorer.compare) is shown: side by side in the terminal, and on the U as a diagram.

Pure functions of the diff record; nothing here traces or loads a model.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from explorer.compare import WHAT, ComponentDiff, Entry, ModelDiff, Side
from explorer.specs import model_name
from explorer.views.format import esc, fmt_params, fmt_shape, plural, small
from explorer.views.graph import Box, Cluster, Scene, scene

MARK = {"same": " ", "changed": "~", "added": "+", "removed": "−"}
STYLE = {"same": "dim", "changed": "yellow", "added": "green", "removed": "red"}


# -- what changed at one place, in a few words -------------------------------------------------------


def _arguments(a: dict, b: dict) -> list[str]:
    said = []
    for name in dict.fromkeys([*a, *b]):
        if name not in a:
            said.append(f"+ in {name} {fmt_shape(b[name])}")
        elif name not in b:
            said.append(f"− in {name}")
        elif a[name] != b[name]:
            said.append(f"in {name} {fmt_shape(a[name])} → {fmt_shape(b[name])}")
    return said


def _outputs(a: tuple, b: tuple) -> list[str]:
    if len(a) != len(b):
        return [f"{plural(len(a), 'output')} → {len(b)}"]
    return [f"out {fmt_shape(x)} → {fmt_shape(y)}" for x, y in zip(a, b) if x != y][:1]


def change_words(e: Entry) -> list[str]:
    """'type CrossAttnDownBlock2D → DownBlock2D', 'params 10.5M → 5.4M', ... for one entry."""
    if e.status == "added":
        return [f"new: {fmt_params(e.b.params)} params" if e.b.params else ("new" if e.kind == "module" else "new step")]
    if e.status == "removed":
        return [f"gone: {fmt_params(e.a.params)} params" if e.a.params else ("gone" if e.kind == "module" else "step gone")]
    a, b = e.a, e.b
    words = [f"was {a.path}"] if e.renamed else []
    for aspect in e.changed:
        if aspect == "inputs":
            words += _arguments(a.inputs, b.inputs)
        elif aspect == "outputs":
            words += _outputs(a.outputs, b.outputs)
        elif aspect == "params":
            words.append(f"params {fmt_params(a.params)} → {fmt_params(b.params)}")
        else:  # type, heads, context, label
            words.append(f"{aspect} {getattr(a, aspect)} → {getattr(b, aspect)}")
    if e.inside:
        words.append(f"{plural(e.inside, 'difference')} inside")
    return words


def _who(side: Side | None) -> str:
    if side is None:
        return ""
    what = side.label if side.kind == "step" and side.label else side.type
    return f"{what} · {fmt_params(side.params)}" if side.kind == "module" else what


# -- the terminal ---------------------------------------------------------------------------------------


def shown_entries(d: ComponentDiff, depth: int, everything: bool = False) -> tuple[list[Entry], int]:
    """The entries down to `depth` below the component worth a row (all of them with
    `everything`), and how many unchanged ones were left out."""
    within = [e for e in d.entries if e.depth <= depth]
    if everything:
        return within, 0
    kept = [e for e in within if e.status != "same" or e.inside]
    return kept, len(within) - len(kept)


def component_table(d: ComponentDiff, a: str, b: str, depth: int, everything: bool = False) -> Group:
    """One component: a heading with the totals, then a row per place, A beside B."""
    counts = d.counts()
    head = Text(f"{WHAT.get(d.component, d.component)} ", style="bold")
    head.append(f"{d.a.total_params:,} → {d.b.total_params:,} params", style="")
    if d.identical:
        return Group(head + Text(" · identical", style="green"), Text(""))
    moved = ", ".join(f"{counts[s]:,} {s}" for s in ("added", "removed", "changed") if counts[s])
    head.append(" · " + (moved or "the same modules, steps differ"))
    rows, hidden = shown_entries(d, depth, everything)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("module", no_wrap=True)
    table.add_column(a)
    table.add_column(b)
    table.add_column("what changed")
    for e in rows:
        style = STYLE[e.status] if e.status != "same" else ("" if e.inside else "dim")
        indent = "  " * max(e.depth - 1, 0)
        table.add_row(
            Text(MARK[e.status], style=STYLE[e.status]),
            Text(indent + e.path, style=style),
            _who(e.a),
            _who(e.b),
            Text("; ".join(change_words(e)) if e.status != "same" or e.inside else "", style="dim" if e.status == "same" else ""),
        )
    parts = [head, table]
    if hidden:
        parts.append(Text(f"  … and {plural(hidden, 'unchanged place')} at these depths (--all shows them)", style="dim"))
    parts.append(Text(""))
    return Group(*parts)


def render(diff: ModelDiff, depth: int = 1, everything: bool = False) -> Group:
    """The whole diff: the summary paragraph, then each component side by side."""
    a, b = model_name(diff.a), model_name(diff.b)
    title = Text(f"{a} → {b}", style="bold")
    if diff.traced_at:
        title.append(f" · both traced at {diff.traced_at}×{diff.traced_at} px, meta device", style="dim")
    values = {v.component: v for v in diff.values}
    parts = []
    for d in diff.components:
        parts.append(component_table(d, a, b, depth, everything))
        if d.component in values:
            parts.append(_values_line(values[d.component]))
    return Group(title, Text(diff.summary()), Text(""), *parts)


def _values_line(v) -> Text:
    """'  values: all of the UNet's 686 tensors changed (...)', after a component's table."""
    if v.identical:
        return Text(f"  values: all {v.tensors:,} tensors bit for bit the same\n", style="green")
    return Text(f"  values: {v.sentence()}\n", style="yellow")


# -- the diagram: B's figure, coloured by what changed -------------------------------------------------


def diff_scene(d: ComponentDiff, a: str, b: str, block: str | None = None, depth: int = 1) -> Scene:
    """B's figure of `block` with each box coloured as added / changed / the same (changed where
    anything inside changed), and what A had there and B has not, in a cluster of its own."""
    result = scene(d.b, block, depth, title=f"{model_name(a)} → {model_name(b)} · {WHAT.get(d.component, d.component)}: what changed")
    by_id = {e.b.path or "root": e for e in d.entries if e.b is not None}  # box ids are paths (first calls)
    for box in result.boxes:
        e = by_id.get(box.id)
        if e is None:
            continue
        box.category = "added" if e.status == "added" else ("changed" if e.status == "changed" or e.inside else "same")
        words = change_words(e) if box.category != "same" else []
        brief = [w for w in words if not w.startswith(("in ", "out ", "+ in ", "− in "))] or words  # shapes are on the arrows
        for word in brief[:3]:  # a line each: the box stays narrow
            box.label += "<br/>" + small(word, "#7a4b00")
    drawn_depth = {by_id[bx.id].depth for bx in result.boxes if bx.id in by_id}
    scope = (block + ".") if block else ""
    gone = [
        e for e in d.entries
        if e.status == "removed" and e.a.path.startswith(scope) and e.depth in drawn_depth and e.kind == "module"
    ]
    if gone:
        result.clusters.append(Cluster("cluster_removed", f"<b>only in {model_name(a)}</b>", "removed"))
        for e in gone:
            label = f"<b>{esc(e.a.path)}</b><br/>{esc(e.a.type)}<br/>" + small(f"{fmt_params(e.a.params)} params")
            result.boxes.append(Box("removed/" + e.a.path, label, "removed", "cluster_removed"))
    return result


def notebook_bundle(diff: ModelDiff) -> dict[str, str]:
    """What Jupyter shows for a diff: the summary and each component side by side, as HTML and text."""
    from explorer.views.tree import mime_bundle

    return mime_bundle(render(diff), width=140)
