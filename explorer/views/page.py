"""The interactive page: plain data for the browser, and the HTML, CSS and JavaScript that show it.

`page_data` gathers, as JSON-ready dicts, every node of the three records (type, path, shapes,
params, FLOPs), one Graphviz SVG per block that has something inside (its diagram at depth 1), the
pipeline overview, and a generation run when there is one. `INDEX_HTML` is the page: a small amount
of plain JavaScript over those SVGs. Nothing from the user (a prompt, a file name) is ever inserted
as HTML: the page sets it with `textContent`.
"""

from __future__ import annotations

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
        key = element_id.removeprefix("cluster_") if kind == "cluster" else element_id
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


INDEX_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sd-explorer: Stable Diffusion 1.5, block by block</title>
<style>
  :root { --ink: #1d2433; --dim: #667085; --line: #d0d5dd; --accent: #2f6db5; --bg: #f7f8fa; --pick: #f5a524; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink); background: var(--bg); }
  header { display: flex; align-items: center; gap: 18px; padding: 10px 18px; background: #fff; border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 5; }
  header h1 { font-size: 16px; margin: 0; white-space: nowrap; }
  header h1 span { color: var(--dim); font-weight: normal; }
  nav.tabs { display: flex; gap: 4px; }
  nav.tabs button { border: 1px solid var(--line); background: #fff; padding: 5px 12px; border-radius: 999px; cursor: pointer; font: inherit; }
  nav.tabs button.on { background: var(--ink); color: #fff; border-color: var(--ink); }
  nav.tabs button[hidden] { display: none; }
  .search { margin-left: auto; position: relative; }
  .search input { width: 300px; padding: 6px 10px; border: 1px solid var(--line); border-radius: 8px; font: inherit; }
  #matches { position: absolute; right: 0; top: 36px; width: 460px; max-height: 60vh; overflow: auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; box-shadow: 0 8px 24px rgba(0,0,0,.12); display: none; }
  #matches.open { display: block; }
  #matches button { display: block; width: 100%; text-align: left; border: 0; border-bottom: 1px solid #eef0f3; background: none; padding: 6px 10px; cursor: pointer; font: inherit; }
  #matches button:hover, #matches button:focus { background: #eef4fb; }
  #matches .type { color: var(--dim); margin-left: 6px; }
  #matches .where { color: var(--dim); font-size: 12px; float: right; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) 340px; gap: 0; min-height: calc(100vh - 52px); }
  #stage { padding: 10px 18px 40px; overflow: auto; }
  #crumbs { margin: 4px 0 10px; color: var(--dim); min-height: 22px; }
  #crumbs a { color: var(--accent); cursor: pointer; text-decoration: none; }
  #crumbs a:hover { text-decoration: underline; }
  #crumbs .sep { margin: 0 6px; }
  .hint { color: var(--dim); font-size: 13px; margin: 0 0 8px; }
  .zoom { float: right; }
  .zoom button { border: 1px solid var(--line); background: #fff; border-radius: 6px; width: 30px; height: 26px; cursor: pointer; }
  #diagram svg { display: block; max-width: none; height: auto; }
  #diagram.fit svg { max-width: 100%; }
  .sd-node { cursor: pointer; }
  .sd-node:hover > path, .sd-node:hover > polygon { stroke: var(--accent); stroke-width: 2.2; }
  .sd-node.has-view > path, .sd-node.has-view > polygon { stroke-width: 1.6; }
  .sd-node.picked > path, .sd-node.picked > polygon { stroke: var(--pick); stroke-width: 3; }
  aside { background: #fff; border-left: 1px solid var(--line); padding: 14px 16px; position: sticky; top: 52px; height: calc(100vh - 52px); overflow: auto; }
  aside h2 { font-size: 15px; margin: 0 0 2px; }
  aside .path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; color: var(--dim); word-break: break-all; }
  aside table { border-collapse: collapse; width: 100%; margin: 8px 0; }
  aside td { padding: 3px 4px; vertical-align: top; border-bottom: 1px solid #f0f1f4; }
  aside td:first-child { color: var(--dim); white-space: nowrap; }
  aside td.shape { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
  aside .note { background: #fdf3f3; border-radius: 6px; padding: 8px; margin: 8px 0; }
  aside .go { display: inline-block; margin-top: 6px; color: var(--accent); cursor: pointer; }
  .run { max-width: 1100px; }
  .run .cols { display: grid; grid-template-columns: 280px 1fr; gap: 24px; align-items: start; }
  .run img { width: 256px; height: auto; image-rendering: pixelated; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
  .run .prompt { font-size: 18px; font-weight: 600; margin: 4px 0 6px; }
  .run .warn { color: #b42318; font-weight: 600; }
  .run table { border-collapse: collapse; margin: 6px 0 14px; }
  .run td, .run th { padding: 3px 10px 3px 0; text-align: left; }
  .run th { color: var(--dim); font-weight: normal; }
  .tokens { display: flex; flex-wrap: wrap; gap: 4px; margin: 6px 0 14px; }
  .tokens span { border: 1px solid var(--line); border-radius: 6px; padding: 2px 6px; background: #fff; font-size: 12px; }
  .tokens span b { font-weight: 600; } .tokens span i { color: var(--dim); font-style: normal; margin-left: 4px; }
  .tokens span.special { background: #fff7e6; }
  input[type=range] { width: 100%; }
  .stat { font-family: ui-monospace, Menlo, Consolas, monospace; }
</style>
</head>
<body>
<header>
  <h1>sd-explorer <span>Stable Diffusion 1.5, block by block</span></h1>
  <nav class="tabs" id="tabs">
    <button data-tab="pipeline">Pipeline</button>
    <button data-tab="unet">UNet</button>
    <button data-tab="vae">VAE</button>
    <button data-tab="clip">CLIP</button>
    <button data-tab="run" hidden>Generation</button>
  </nav>
  <div class="search">
    <input type="search" id="search" placeholder="Search a module: conv_shortcut, Attention…" autocomplete="off" aria-label="Search modules">
    <div id="matches" role="listbox"></div>
  </div>
</header>
<main>
  <section id="stage">
    <div id="crumbs"></div>
    <p class="hint" id="hint"></p>
    <div class="zoom"><button id="zoom-out" title="smaller">−</button> <button id="zoom-fit" title="fit the width">⤢</button> <button id="zoom-in" title="larger">+</button></div>
    <div id="diagram" class="fit"></div>
    <div id="run" class="run" hidden></div>
  </section>
  <aside id="info"><p class="hint">Hover a box to see what it is; click a block to open it.</p></aside>
</main>
<script src="data.js"></script>
<script>
"use strict";
const SD = window.SD;
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) { if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v); }
  for (const c of children) e.append(c);
  return e;
};
const NAMES = { pipeline: "Pipeline", unet: "UNet", vae: "VAE", clip: "CLIP text encoder", run: "Generation" };
let state = { tab: "pipeline", view: null, picked: null, zoom: 1 };

const shape = (s) => "[" + s.join(", ") + "]";
const num = (n) => n.toLocaleString("en-US");
const flops = (n) => n >= 1e9 ? (n / 1e9).toFixed(1) + " GFLOPs" : n >= 1e6 ? (n / 1e6).toFixed(1) + " MFLOPs" : num(n) + " FLOPs";

function show(tab, view, pick) {
  if (tab !== state.tab) $("info").replaceChildren(el("p", { cls: "hint", text: "Hover a box to see what it is; click a block to open it." }));
  state.tab = tab; state.view = view; state.picked = pick || null;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === tab);
  $("run").hidden = tab !== "run"; $("diagram").hidden = tab === "run";
  document.querySelector(".zoom").hidden = tab === "run";
  const diagram = $("diagram");
  if (tab === "run") { renderRun(); crumbs(); $("hint").textContent = ""; history.replaceState(null, "", "#run"); return; }
  if (tab === "pipeline") {
    diagram.replaceChildren();
    diagram.insertAdjacentHTML("beforeend", SD.pipeline);
    const u = el("div", { "data-section": "unet" }, el("h3", { text: "The UNet: click a block to open it" }));
    u.insertAdjacentHTML("beforeend", SD.components.unet.views[SD.components.unet.root]);
    diagram.append(u);
    $("hint").textContent = "The whole pipeline, with the shapes read off the three traces, then the UNet's U. Click the text encoder, the UNet or the VAE decoder to open it, or any block of the U.";
  } else {
    const comp = SD.components[tab];
    view = view || comp.root; state.view = view;
    diagram.innerHTML = comp.views[view];
    $("hint").textContent = view === comp.root
      ? "Click a block to open it; hover any box for its shapes, parameters and FLOPs."
      : "Thick boxes open further. Hover any box for its shapes, parameters and FLOPs.";
    for (const g of diagram.querySelectorAll(".sd-node")) {
      const n = comp.nodes[g.dataset.key];
      if (n && n.view) g.classList.add("has-view");
    }
  }
  applyZoom();
  crumbs();
  if (pick) highlight(pick);
  history.replaceState(null, "", "#" + tab + (tab !== "pipeline" && view ? "/" + encodeURIComponent(view) : ""));
}

function crumbs() {
  const c = $("crumbs"); c.replaceChildren();
  const add = (text, fn) => { if (c.childElementCount) c.append(el("span", { cls: "sep", text: "›" })); c.append(fn ? el("a", { text }) : el("span", { text })); if (fn) c.lastChild.onclick = fn; };
  if (state.tab === "pipeline" || state.tab === "run") { add(NAMES[state.tab]); return; }
  const comp = SD.components[state.tab];
  const chain = [];
  for (let k = state.view; k; k = comp.nodes[k].parent) if (comp.nodes[k].view) chain.unshift(k);
  add("Pipeline", () => show("pipeline"));
  chain.forEach((k, i) => {
    const n = comp.nodes[k];
    const text = k === comp.root ? NAMES[state.tab] : n.path.split(".").slice(-2).join(".") + " · " + n.type;
    add(text, i < chain.length - 1 ? () => show(state.tab, k) : null);
  });
}

function info(component, key) {
  const box = $("info"); box.replaceChildren();
  const comp = SD.components[component]; const n = comp && comp.nodes[key];
  if (!n) return;
  box.append(el("h2", { text: n.kind === "step" ? (n.label || n.type) : n.type }));
  box.append(el("div", { cls: "path", text: (n.path || component) + (n.call ? "  (call " + (n.call + 1) + ")" : "") }));
  if (n.kind === "step") box.append(el("div", { cls: "path", text: "a step: " + n.type + ", not a module" }));
  const table = el("table");
  const row = (k, v, cls) => table.append(el("tr", {}, el("td", { text: k }), el("td", { cls: cls || "", text: v })));
  for (const [name, s] of Object.entries(n.inputs)) row("in: " + name, Array.isArray(s[0]) ? s.map(shape).join(", ") : shape(s), "shape");
  n.outputs.forEach((s, i) => row(n.outputs.length > 1 ? "out " + i : "out", shape(s), "shape"));
  if (n.kind === "module" && !n.call) row("parameters", num(n.params));
  if (n.flops) row("FLOPs", flops(n.flops) + " (" + (100 * n.flops / comp.total_flops).toFixed(1) + " %)");
  box.append(table);
  if (n.note) box.append(el("div", { cls: "note", text: n.note }));
  if (n.view && key !== state.view) { const go = el("a", { cls: "go", text: "Open " + (n.path || component) + " ›" }); go.onclick = () => show(component, key); box.append(go); }
}

function highlight(key) {
  for (const g of document.querySelectorAll(".sd-node.picked")) g.classList.remove("picked");
  const g = [...document.querySelectorAll("#diagram .sd-node")].find((x) => x.dataset.key === key);
  if (g) { g.classList.add("picked"); g.scrollIntoView({ block: "center", inline: "center" }); info(state.tab, key); }
}

$("diagram").addEventListener("click", (e) => {
  const g = e.target.closest("[data-key], [data-component]"); if (!g) return;
  if (state.tab === "pipeline") {
    if (g.dataset.component) show(g.dataset.component);
    else if (g.closest("[data-section=unet]")) { const n = SD.components.unet.nodes[g.dataset.key]; show("unet", n && n.view ? g.dataset.key : null, n && n.view ? null : g.dataset.key); }
    return;
  }
  const comp = SD.components[state.tab]; const n = comp.nodes[g.dataset.key];
  if (n && n.view && g.dataset.key !== state.view) show(state.tab, g.dataset.key);
  else { highlight(g.dataset.key); }
});
$("diagram").addEventListener("mouseover", (e) => {
  const g = e.target.closest("[data-key]"); if (!g) return;
  info(state.tab === "pipeline" ? "unet" : state.tab, g.dataset.key);
});

for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => show(b.dataset.tab);

// search: part of a module path or a type name, in every component
const index = [];
for (const [component, comp] of Object.entries(SD.components))
  for (const [key, n] of Object.entries(comp.nodes)) index.push({ component, key, n, text: ((n.path || component) + " " + n.type + " " + (n.label || "")).toLowerCase() });
$("search").addEventListener("input", () => {
  const q = $("search").value.trim().toLowerCase(); const list = $("matches"); list.replaceChildren();
  if (!q) { list.classList.remove("open"); return; }
  const found = index.filter((x) => x.text.includes(q)).slice(0, 60);
  for (const m of found) {
    const b = el("button", { "data-path": m.n.path, "data-component": m.component },
      el("span", { cls: "where", text: NAMES[m.component] }), el("span", { text: m.n.path || m.component }), el("span", { cls: "type", text: m.n.label || m.n.type }));
    b.onclick = () => { list.classList.remove("open"); goTo(m.component, m.key); };
    list.append(b);
  }
  if (!found.length) list.append(el("button", { text: "no module matches" }));
  list.classList.add("open");
});
$("search").addEventListener("keydown", (e) => { if (e.key === "Enter") { const first = $("matches").querySelector("button[data-component]"); if (first) first.click(); } if (e.key === "Escape") $("matches").classList.remove("open"); });
function goTo(component, key) {
  const comp = SD.components[component]; const n = comp.nodes[key];
  const view = n.parent && comp.nodes[n.parent].view ? n.parent : comp.root;
  show(component, view, key === view ? null : key);
  info(component, key);
}

function applyZoom() {
  const d = $("diagram"); const svg = d.querySelector("svg"); if (!svg) return;
  d.classList.toggle("fit", state.zoom === 1);
  svg.style.width = state.zoom === 1 ? "" : (svg.viewBox.baseVal.width * state.zoom * 1.333) + "px";
}
$("zoom-in").onclick = () => { state.zoom = state.zoom === 1 ? 1.25 : state.zoom * 1.25; applyZoom(); };
$("zoom-out").onclick = () => { state.zoom = state.zoom === 1 ? 0.6 : state.zoom / 1.25; applyZoom(); };
$("zoom-fit").onclick = () => { state.zoom = 1; applyZoom(); };

// a generation, replayed step by step
function renderRun() {
  const box = $("run"); box.replaceChildren(); const run = SD.run; if (!run) return;
  const s = run.settings;
  box.append(el("div", { cls: "prompt", text: s.prompt }));
  if (s.negative_prompt) box.append(el("div", { text: "negative prompt: " + s.negative_prompt }));
  const meta = [s.model, s.scheduler.toUpperCase(), s.steps + " steps", "guidance " + s.guidance, s.width + "×" + s.height + " px", "seed " + s.seed].join(" · ");
  box.append(el("div", { cls: "path", text: meta }));
  if (s.warning) box.append(el("p", { cls: "warn", text: s.warning[0].toUpperCase() + s.warning.slice(1) + "." }));
  if (run.image) box.append(el("div", {}, el("img", { src: run.image, alt: "the generated image", id: "result" }), el("div", { cls: "path", text: "the image" })));
  box.append(el("h3", { text: "Tokens" }));
  for (const t of run.tokens) {
    const line = el("div", { cls: "tokens", "data-prompt": t.prompt });
    for (let i = 0; i < t.length; i++) {
      const tok = t.tokens[i]; const span = el("span", { cls: tok.startsWith("<|") ? "special" : "" }, el("b", { text: tok.replace("</w>", "") }), el("i", { text: String(t.ids[i]) }));
      line.append(span);
    }
    line.append(el("span", { text: "+ " + (t.ids.length - t.length) + " padding = " + t.ids.length }));
    box.append(el("div", { cls: "path", text: t.prompt ? "prompt" : "negative prompt (empty)" }), line);
    if (t.dropped_count) box.append(el("p", { cls: "warn", text: t.dropped_count + " tokens dropped: " + t.dropped }));
  }
  if (!run.steps.length) { box.append(el("p", { text: "This run recorded no step." })); return; }
  box.append(el("h3", { text: "Steps" }));
  const slider = el("input", { type: "range", min: "0", max: String(run.steps.length - 1), value: "0", id: "step", "aria-label": "denoising step" });
  const img = el("img", { id: "preview", alt: "latent preview" });
  const detail = el("div");
  box.append(slider, el("div", { cls: "cols" }, el("div", {}, img, el("div", { cls: "path", text: "the latent after this step, mapped to RGB" })), detail));
  const update = () => {
    const st = run.steps[Number(slider.value)];
    img.src = run.previews[st.index] || ""; img.hidden = !run.previews[st.index];
    detail.replaceChildren();
    detail.append(el("h2", { text: "Step " + st.index + " of " + run.steps.length + " · timestep " + st.timestep }));
    detail.append(el("div", { cls: "path", text: st.seconds.toFixed(3) + " s" }));
    const t = el("table", {}, el("tr", {}, el("th", { text: "seam" }), el("th", { text: "shape" })));
    const names = { latent_in: "latent in", unet_input: "UNet input (classifier-free guidance)", noise_pred: "noise prediction", guided: "guided prediction", latent_out: "latent out" };
    for (const k of Object.keys(names)) if (st.shapes[k]) t.append(el("tr", {}, el("td", { text: names[k] }), el("td", { cls: "stat", text: shape(st.shapes[k]) })));
    detail.append(t);
    const ls = st.latent_stats;
    detail.append(el("div", { cls: "stat", text: "latent mean " + ls.mean.toFixed(4) + " · std " + ls.std.toFixed(4) + " · min " + ls.min.toFixed(3) + " · max " + ls.max.toFixed(3) }));
  };
  slider.oninput = update; update();
}

if (SD.run) document.querySelector('#tabs button[data-tab="run"]').hidden = false;
const [tab, view] = decodeURIComponent(location.hash.slice(1)).split("/");
if (tab === "run" && SD.run) show("run"); else if (SD.components[tab]) show(tab, SD.components[tab].nodes[view] ? view : null); else show("pipeline");
</script>
</body>
</html>
"""


def page_data(traces: dict[str, Trace], views: dict[str, dict[str, str]], pipeline_svg: str, run: dict | None) -> dict:
    components = {}
    for name, trace in traces.items():
        nodes = nodes_data(trace, set(views[name]))
        components[name] = {
            "root": "root",
            "total_params": trace.total_params,
            "total_flops": trace.total_flops,
            "inputs": {k: list(v) for k, v in trace.inputs.items()},
            "nodes": nodes,
            "views": views[name],
        }
    return {"components": components, "pipeline": pipeline_svg, "run": run}
