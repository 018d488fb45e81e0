"""The interactive page: plain data for the browser, and the HTML, CSS and JavaScript that show it.

`page_data` gathers, as JSON-ready dicts, every node of the three records (type, path, shapes,
params, FLOPs), one Graphviz SVG per block that has something inside (its diagram at depth 1), the
pipeline overview, and a generation run when there is one. The page itself is three files in
`explorer/views/assets` (index.html, page.css, page.js: plain JavaScript over those SVGs). Nothing
from the user (a prompt, a file name) is ever inserted as HTML: the page sets it with `textContent`.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from explorer.record import Node, Trace
from explorer.views.format import attr, node_id


def viewable(trace: Trace) -> list[Node]:
    """The nodes that get a view of their own: modules with something inside."""
    children = trace.children()
    return [n for i, n in enumerate(trace.nodes) if n.kind == "module" and i in children and n.call == 0]


def nodes_data(trace: Trace, with_view: set[str]) -> dict[str, dict[str, Any]]:
    parents = trace.parents()
    data = {}
    for i, n in enumerate(trace.nodes):
        key = node_id(n)
        parent = parents[i]
        data[key] = {
            "path": n.path,
            "call": n.call,
            "type": n.type,
            "kind": n.kind,
            "label": n.label,
            "note": n.note,
            "depth": n.depth,
            "inputs": {k: list(v) if v and isinstance(v[0], int) else [list(s) for s in v] for k, v in n.inputs.items()},
            "outputs": [list(s) for s in n.outputs],
            "output_names": list(n.output_names),
            "params": n.params,
            "flops": n.flops,
            "parent": node_id(trace.nodes[parent]) if parent is not None else None,
            "view": key in with_view,
        }
    return data


_G = re.compile(r'<g id="([^"]*)" class="(node|cluster)">')


def tag_svg(svg: str, keys: dict[str, str], extra: dict[str, dict[str, str]] | None = None) -> str:
    """Give every box that stands for a node `data-path` (its path in the record) and `data-key`."""
    extra = extra or {}

    def tag(m: re.Match) -> str:
        element_id, kind = m.group(1), m.group(2)
        key = html.unescape(element_id)  # Graphviz escapes ids made from unusual module paths
        key = key.removeprefix("cluster_") if kind == "cluster" else key
        attrs = ""
        if key in keys:
            attrs = f' data-path="{attr(keys[key])}" data-key="{attr(key)}"'
        for name, value in extra.get(element_id, {}).items():
            attrs += f' data-{name}="{attr(value)}"'
        return f'<g id="{element_id}" class="{kind}{" sd-node" if attrs else ""}"{attrs}>'

    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG goes inside the page
    return _G.sub(tag, svg)


def to_script(data: dict) -> str:
    """`window.SD = {...};`, safe to load with a script tag whatever the strings contain."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return "window.SD = " + text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + ";\n"


ASSETS = ("index.html", "page.css", "page.js")  # the page itself, in explorer/views/assets


def asset(name: str) -> str:
    """The text of one of the page's own files."""
    from importlib.resources import files

    return files("explorer.views").joinpath("assets", name).read_text(encoding="utf-8")


DIFF_ROW_DEPTH = 2  # the page's diff tables list the places this deep below each component


def diff_data(diff: Any, svgs: dict[str, str]) -> dict:
    """A diff (explorer.compare.ModelDiff) for the page: its summary, and per component the figure
    coloured by what changed and a row per place that changed, with what it was and what it is."""
    from explorer.views.diff import WHAT, change_words, shown_entries

    components = {}
    for d in diff.components:
        rows = []
        for e in shown_entries(d, DIFF_ROW_DEPTH)[0]:
            rows.append({
                "path": e.path,
                "key": (e.b.path or "root") if e.b is not None else "",
                "status": e.status if e.status != "same" else "inside",
                "a": e.a.type if e.a else "",
                "b": e.b.type if e.b else "",
                "what": "; ".join(change_words(e)),
            })
        components[d.component] = {
            "title": WHAT.get(d.component, d.component),
            "params": [d.a.total_params, d.b.total_params],
            "counts": d.counts(),
            "identical": d.identical,
            "svg": svgs.get(d.component, ""),
            "rows": rows,
        }
    return {"a": diff.a, "b": diff.b, "summary": diff.summary(), "components": components}


def page_data(
    traces: dict[str, Trace], views: dict[str, dict[str, str]], pipeline_svg: str, run: dict | None, diff: dict | None = None
) -> dict:
    from explorer.components import component

    components = {}
    for name, trace in traces.items():
        nodes = nodes_data(trace, set(views[name]))
        components[name] = {
            "tab": component(name).title,
            "title": component(name).heading,
            "root": "root",
            "total_params": trace.total_params,
            "total_flops": trace.total_flops,
            "inputs": {k: list(v) for k, v in trace.inputs.items()},
            "nodes": nodes,
            "views": views[name],
        }
    from explorer.specs import model_name

    model = model_name(traces["unet"].model) if "unet" in traces else ""
    return {"components": components, "pipeline": pipeline_svg, "run": run, "diff": diff, "model": model}
