"""The interactive page: plain data for the browser, and the HTML, CSS and JavaScript that show it.

`page_data` gathers, as JSON-ready dicts, every node of the three records (type, path, shapes,
params, FLOPs) and a generation run when there is one; `page_words` adds the page's words in every
language it speaks (explorer.views.strings) and the Chinese of what the records say. The figures
(one Graphviz SVG per block that has something inside, its diagram at depth 1, and the pipeline
overview) are drawn once per language, each language's in a script of its own (`figures_script`).
The page itself is three files in `explorer/views/assets` (index.html, a template whose words
`html_page` fills in; page.css; page.js: plain JavaScript over those SVGs). Nothing from the user
(a prompt, a file name) is ever inserted as HTML: the page sets it with `textContent`.
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


def to_script(data: dict, name: str = "SD") -> str:
    """`window.SD = {...};`, safe to load with a script tag whatever the strings contain."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"window.{name} = " + text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + ";\n"


def figures_script(figures: dict) -> str:
    """One language's figures, `window.SD_FIGURES = {"pipeline": svg, "views": {component: {key:
    svg}}, "diff": {component: svg}}`; page.js puts them where the records' views are."""
    return to_script(figures, "SD_FIGURES")


ASSETS = ("page.css", "page.js")  # the page's own files, in explorer/views/assets, copied as they are
TEMPLATE = "index.html"  # the page, its words filled in once per language (html_page)


def asset(name: str) -> str:
    """The text of one of the page's own files."""
    from importlib.resources import files

    return files("explorer.views").joinpath("assets", name).read_text(encoding="utf-8")


DIFF_ROW_DEPTH = 2  # the page's diff tables list the places this deep below each component


def diff_data(diff: Any) -> dict:
    """A diff (explorer.compare.ModelDiff) for the page: its summary, and per component a row per
    place that changed, with what it was and what it is (the figures, coloured by what changed, are
    in each language's figures)."""
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
            "rows": rows,
        }
    return {"a": diff.a, "b": diff.b, "summary": diff.summary(), "components": components}


def page_data(
    traces: dict[str, Trace], with_view: dict[str, set[str]], run: dict | None, diff: dict | None = None
) -> dict:
    """The records for the page; `with_view`: per component, the keys of the nodes that have a figure."""
    from explorer.components import component

    components = {}
    for name, trace in traces.items():
        components[name] = {
            "tab": component(name).title,
            "title": component(name).heading,
            "root": "root",
            "total_params": trace.total_params,
            "total_flops": trace.total_flops,
            "inputs": {k: list(v) for k, v in trace.inputs.items()},
            "nodes": nodes_data(trace, with_view[name]),
        }
    from explorer.specs import model_name

    model = model_name(traces["unet"].model) if "unet" in traces else ""
    return {"components": components, "run": run, "diff": diff, "model": model}


def page_words(data: dict, lang: str) -> dict:
    """What page.js needs to speak: the language of index.html (`lang`), the page's strings
    (explorer.views.strings), and the Chinese of what the records in `data` say."""
    from explorer.views.strings import STRINGS, translations

    return {"lang": lang, "strings": STRINGS, "texts": {"zh": translations(record_texts(data), "zh")}}


def record_texts(data: dict) -> list[str]:
    """The sentences of the records that the page shows: labels and notes, a run's warning, an
    experiment's summary and edits, a sweep's judge, a diff's words."""
    texts = [t for c in data["components"].values() for n in c["nodes"].values() for t in (n["label"], n["note"])]
    for run in [data.get("run")] + list(((data.get("experiment") or {}).get("runs") or {}).values()):
        if run:
            texts += [str(run["settings"].get("warning") or ""), str(run.get("unet_calls") or "")]
    if data.get("experiment"):
        texts += [data["experiment"]["summary"]] + [e["text"] for e in data["experiment"]["edits"]]
    if data.get("sweep"):
        texts += [m["judged"] for m in data["sweep"]["modules"]]
    for c in ((data.get("diff") or {}).get("components") or {}).values():
        texts += [c["title"]] + [part for row in c["rows"] for part in row["what"].split("; ")]
    return [t for t in texts if isinstance(t, str)]


LIVE_ASSETS = ("live.js", "live.css")  # the live page's own part (explore serve), beside the page's


def html_page(lang: str, model: str, live: bool = False) -> str:
    """The page in `lang` (en.html, zh.html), its words filled in: the figures of that language, and
    the switch to the page in the other language. `live`: the live page's part too (explore serve),
    and its server's API allowed (connect-src 'self')."""
    from explorer.views.strings import LANGS, fill_html

    other = next(other for other in LANGS if other != lang)
    shown = model if model and model != "SD1.5" else "Stable Diffusion 1.5"  # SD1.5 is written out
    values = {"lang": lang, "model": shown, "figures": f"figures-{lang}.js", "other": f"{other}.html",
              "other.lang": other}
    page = fill_html(asset(TEMPLATE), lang, values)
    if live:
        page = page.replace("base-uri 'none';", "connect-src 'self'; base-uri 'none';", 1)
        page = page.replace('<link rel="stylesheet" href="page.css">', '<link rel="stylesheet" href="page.css">\n<link rel="stylesheet" href="live.css">', 1)
        page = page.replace('<script src="page.js"></script>', '<script src="page.js"></script>\n<script src="live.js"></script>', 1)
    return page
