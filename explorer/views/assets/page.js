"use strict";
const SD = window.SD;
// This page's figures (figures-<language>.js): they go where the records' views are.
const FIG = window.SD_FIGURES;
SD.pipeline = FIG.pipeline;
for (const [name, comp] of Object.entries(SD.components)) comp.views = FIG.views[name] || {};
if (SD.diff) for (const [name, c] of Object.entries(SD.diff.components)) c.svg = FIG.diff[name] || "";
const $ = (id) => document.getElementById(id);

// The page's words (explorer/views/strings.py, in data.js): T(key, values) in this page's
// language, its <html lang>; tr(text) is what a record says (a note, a label), in that language when
// the site has its form, else as the record has it.
const LANG = SD.strings["tab.pipeline"][document.documentElement.lang] !== undefined ? document.documentElement.lang : SD.lang;
function T(key, values = {}) {
  const entry = SD.strings[key];
  if (!entry) { console.error("sd-explorer: no string " + key); return key; }
  return entry[LANG].replace(/\{(\w+)\}/g, (m, name) => name in values ? String(values[name]) : m);
}
const tr = (text) => (LANG !== "en" && text && (SD.texts[LANG] || {})[text]) || text;
const heading = (name) => SD.strings["heading." + name] ? T("heading." + name) : SD.components[name].title;
const listed = (parts) => parts.join(T("list.separator"));
// the switch to the page in the other language keeps the tab and the block shown
$("lang-switch").addEventListener("click", (e) => { e.preventDefault(); location.href = $("lang-switch").getAttribute("href") + location.hash; });
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) { if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v); }
  for (const c of children) e.append(c);
  return e;
};
// Tab names: the pipeline and the generation, and one tab per component of the records
// (their titles come from explorer.components).
const NAMES = { pipeline: T("tab.pipeline"), run: T("tab.run"), diff: T("tab.diff"), experiment: T("tab.experiment") };
const PAGES = ["run", "diff", "experiment"];  // tabs that are a page of their own, not one diagram
for (const [name, comp] of Object.entries(SD.components)) {
  NAMES[name] = heading(name);
  $("tabs").insertBefore(el("button", { "data-tab": name, text: comp.tab }), document.querySelector('#tabs button[data-tab="run"]'));
}
let state = { tab: "pipeline", view: null, picked: null, zoom: "fit" };

const shape = (s) => "[" + s.join(", ") + "]";
const num = (n) => n.toLocaleString("en-US");
const flops = (n) => n >= 1e9 ? (n / 1e9).toFixed(1) + " GFLOPs" : n >= 1e6 ? (n / 1e6).toFixed(1) + " MFLOPs" : num(n) + " FLOPs";

function show(tab, view, pick) {
  if (tab !== state.tab) $("info").replaceChildren(el("p", { cls: "hint", text: T("info.hint") }));
  state.tab = tab; state.view = view; state.picked = pick || null;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === tab);
  const page = PAGES.includes(tab);
  for (const name of PAGES) $(name).hidden = tab !== name;
  $("diagram").hidden = page;
  document.querySelector(".zoom").hidden = page;
  const diagram = $("diagram");
  if (page) { ({ run: renderRun, diff: renderDiff, experiment: renderExperiment })[tab](); crumbs(); $("runbar").replaceChildren(); $("hint").textContent = ""; history.replaceState(null, "", "#" + tab); return; }
  if (tab === "pipeline") {
    diagram.replaceChildren();
    diagram.insertAdjacentHTML("beforeend", SD.pipeline);
    const u = el("div", { "data-section": "unet" }, el("h3", { text: T("pipeline.unet") }));
    u.insertAdjacentHTML("beforeend", SD.components.unet.views[SD.components.unet.root]);
    diagram.append(u);
    $("hint").textContent = T("hint.pipeline");
  } else {
    const comp = SD.components[tab];
    view = view || comp.root; state.view = view;
    diagram.innerHTML = comp.views[view];
    $("hint").textContent = view === comp.root ? T("hint.root") : T("hint.inner");
    for (const g of diagram.querySelectorAll(".sd-node")) {
      const n = comp.nodes[g.dataset.key];
      if (n && n.view) g.classList.add("has-view");
    }
  }
  $("runbar").replaceChildren(...[runBar(), experimentBar(), sweepBar()].filter(Boolean));
  paint();
  applyZoom();
  crumbs();
  if (pick) highlight(pick);
  history.replaceState(null, "", "#" + tab + (tab !== "pipeline" && view ? "/" + encodeURIComponent(view) : ""));
}

function crumbs() {
  const c = $("crumbs"); c.replaceChildren();
  const add = (text, fn) => { if (c.childElementCount) c.append(el("span", { cls: "sep", text: "›" })); c.append(fn ? el("a", { text }) : el("span", { text })); if (fn) c.lastChild.onclick = fn; };
  if (state.tab === "pipeline" || PAGES.includes(state.tab)) { add(NAMES[state.tab]); return; }
  const comp = SD.components[state.tab];
  const chain = [];
  for (let k = state.view; k; k = comp.nodes[k].parent) if (comp.nodes[k].view) chain.unshift(k);
  add(NAMES.pipeline, () => show("pipeline"));
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
  state.infoKey = key;
  box.append(el("h2", { text: n.kind === "step" ? tr(n.label || n.type) : n.type }));
  box.append(el("div", { cls: "path", text: (n.path || component) + (n.call ? "  " + T("info.call", { n: n.call + 1 }) : "") }));
  if (n.kind === "step") box.append(el("div", { cls: "path", text: T("info.step", { type: n.type }) }));
  const table = el("table");
  const row = (k, v, cls) => table.append(el("tr", {}, el("td", { text: k }), el("td", { cls: cls || "", text: v })));
  for (const [name, s] of Object.entries(n.inputs)) row(T("info.in", { name }), Array.isArray(s[0]) ? s.map(shape).join(", ") : shape(s), "shape");
  n.outputs.forEach((s, i) => row(n.output_names[i] ? T("info.out.named", { name: n.output_names[i] }) : n.outputs.length > 1 ? T("info.out.named", { name: i }) : T("info.out"), shape(s), "shape"));
  if (n.kind === "module" && !n.call) row(T("info.params"), num(n.params));
  if (n.flops) row("FLOPs", flops(n.flops) + " (" + (100 * n.flops / comp.total_flops).toFixed(1) + " %)");
  box.append(table);
  if (n.note) box.append(el("div", { cls: "note", text: tr(n.note) }));
  if (n.view && key !== state.view) { const go = el("a", { cls: "go", text: T("info.open", { path: n.path || component }) }); go.onclick = () => show(component, key); box.append(go); }
  box.append(...runInfo(component, n), ...experimentInfo(component, n), ...sweepInfo(component, n),
    ...(typeof liveInfo === "function" ? liveInfo(component, n) : []));  // the live page's edits (live.js)
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
  const g = e.target.closest("[data-key], [data-component]"); if (!g) return;
  if (g.dataset.component) info(g.dataset.component, SD.components[g.dataset.component].root);  // a pipeline box: its component
  else info(state.tab === "pipeline" ? "unet" : state.tab, g.dataset.key);
});

for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => show(b.dataset.tab);

// search: part of a module path or a type name, in every component
const index = [];
for (const [component, comp] of Object.entries(SD.components))
  for (const [key, n] of Object.entries(comp.nodes)) index.push({ component, key, n, text: ((n.path || component) + " " + n.type + " " + (n.label || "") + " " + tr(n.label || "")).toLowerCase() });
$("search").addEventListener("input", () => {
  const q = $("search").value.trim().toLowerCase(); const list = $("matches"); list.replaceChildren();
  if (!q) { list.classList.remove("open"); return; }
  const found = index.filter((x) => x.text.includes(q)).slice(0, 60);
  for (const m of found) {
    const b = el("button", { "data-path": m.n.path, "data-component": m.component },
      el("span", { cls: "where", text: NAMES[m.component] }), el("span", { text: m.n.path || m.component }), el("span", { cls: "type", text: tr(m.n.label) || m.n.type }));
    b.onclick = () => { list.classList.remove("open"); goTo(m.component, m.key); };
    list.append(b);
  }
  if (!found.length) list.append(el("button", { text: T("search.none") }));
  list.classList.add("open");
});
$("search").addEventListener("keydown", (e) => { if (e.key === "Enter") { const first = $("matches").querySelector("button[data-component]"); if (first) first.click(); } if (e.key === "Escape") $("matches").classList.remove("open"); });
function goTo(component, key) {
  const comp = SD.components[component]; const n = comp.nodes[key];
  const view = n.parent && comp.nodes[n.parent].view ? n.parent : comp.root;
  show(component, view, key === view ? null : key);
  info(component, key);
}

// state.zoom: "fit" (the figure scaled down to the width, never up) or a scale of its natural size
// (1: full size, 1 pt of the drawing = 1.333 px, the "1:1" button).
function applyZoom() {
  const d = $("diagram"); const svg = d.querySelector("svg"); if (!svg) return;
  d.classList.toggle("fit", state.zoom === "fit");
  svg.style.width = state.zoom === "fit" ? "" : (svg.viewBox.baseVal.width * state.zoom * 1.333) + "px";
}
function fitScale() { const svg = $("diagram").querySelector("svg"); return svg ? svg.getBoundingClientRect().width / (svg.viewBox.baseVal.width * 1.333) : 1; }
$("zoom-in").onclick = () => { state.zoom = (state.zoom === "fit" ? fitScale() : state.zoom) * 1.25; applyZoom(); };
$("zoom-out").onclick = () => { state.zoom = (state.zoom === "fit" ? fitScale() : state.zoom) / 1.25; applyZoom(); };
$("zoom-fit").onclick = () => { state.zoom = "fit"; applyZoom(); };
$("zoom-full").onclick = () => { state.zoom = 1; applyZoom(); };

// ---------------------------------------------------------------------------------------------------
// A generation, replayed step by step: its tokens, every step's seams, the guidance previews, the
// cross-attention map of a word; and, in the architecture, each block's activity over the steps.

let RUN = SD.run;  // the live page (live.js) replaces it as a run goes
const HEAT = [[0, [0, 0, 4]], [0.3, [87, 16, 110]], [0.55, [188, 55, 84]], [0.8, [249, 142, 9]], [1, [252, 255, 164]]];
// a run to show: the one the page was built with, or one the live page (live.js) hands over as it goes
function setRun(run, step) {
  RUN = run;
  if (!RUN) return;
  state.step = step === undefined ? Math.max(0, RUN.steps.length - 1) : step;
  const words = RUN.maps ? RUN.maps.words.filter(([w]) => !w.startsWith("<")) : [];
  if (!words.some(([w]) => w === state.word)) state.word = words.length ? words[0][0] : null;
  document.querySelector('#tabs button[data-tab="run"]').hidden = false;
}
setRun(RUN);

// the colour of a value in [0, 1] on the heat scale (the same as `explore maps`)
function heatColour(v) {
  for (let i = 1; i < HEAT.length; i++) {
    const [p1, c1] = HEAT[i]; const [p0, c0] = HEAT[i - 1];
    if (v <= p1) { const f = (v - p0) / (p1 - p0); return c0.map((c, k) => Math.round(c + f * (c1[k] - c))); }
  }
  return HEAT[HEAT.length - 1][1];
}

// one layer's map of some token rows at one step: {h, w, values}
function layerMap(step, layer, rows) {
  const m = RUN.maps.steps[step][layer];
  const bytes = Uint8Array.from(atob(m.b64), (c) => c.charCodeAt(0));
  const size = m.height * m.width; const values = new Float32Array(size);
  for (const r of rows) for (let p = 0; p < size; p++) values[p] += bytes[r * size + p] / 255 * m.scales[r];
  return { h: m.height, w: m.width, values };
}

// bilinear resize of a map to (H, W)
function resize(map, H, W) {
  if (map.h === H && map.w === W) return map.values;
  const out = new Float32Array(H * W);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const sy = Math.min(map.h - 1, Math.max(0, (y + 0.5) * map.h / H - 0.5)), sx = Math.min(map.w - 1, Math.max(0, (x + 0.5) * map.w / W - 0.5));
    const y0 = Math.floor(sy), x0 = Math.floor(sx), y1 = Math.min(map.h - 1, y0 + 1), x1 = Math.min(map.w - 1, x0 + 1);
    const fy = sy - y0, fx = sx - x0, v = (yy, xx) => map.values[yy * map.w + xx];
    out[y * W + x] = (v(y0, x0) * (1 - fx) + v(y0, x1) * fx) * (1 - fy) + (v(y1, x0) * (1 - fx) + v(y1, x1) * fx) * fy;
  }
  return out;
}

// a word's map at one step over some layers, the way DAAM adds them up, drawn on a canvas
function mapCanvas(step, layers, word) {
  const spans = RUN.maps.words.filter(([w]) => w === word); if (!spans.length || !layers.length) return null;
  const rows = spans.flatMap(([, r]) => r);
  const H = Math.max(...RUN.maps.layers.map((l) => l.height)), W = Math.max(...RUN.maps.layers.map((l) => l.width));
  const total = new Float32Array(H * W);
  for (const k of layers) resize(layerMap(step, k, rows), H, W).forEach((v, i) => { total[i] += v; });
  const top = Math.max(...total) || 1;
  const canvas = el("canvas", { width: String(W), height: String(H), cls: "heat" });
  const ctx = canvas.getContext("2d"); const img = ctx.createImageData(W, H);
  total.forEach((v, i) => { const c = heatColour(v / top); img.data.set([...c, 255], i * 4); });
  ctx.putImageData(img, 0, 0);
  return canvas;
}

// the map over the predicted clean image of that step
function overlay(step, layers, word, caption) {
  const canvas = mapCanvas(step, layers, word); if (!canvas) return null;
  const x0 = RUN.guidance[step] && RUN.guidance[step].x0;
  const box = el("div", { cls: "overlay" });
  if (x0) box.append(el("img", { src: x0, alt: T("map.x0") }));
  box.append(canvas);
  return el("figure", { cls: "map" }, box, el("figcaption", { text: caption }));
}

function wordPicker(onchange) {
  const select = el("select", { id: "run-word", "aria-label": T("picker.word.label") });
  for (const [w] of RUN.maps.words) select.append(el("option", { value: w, text: w }));
  select.value = state.word; select.onchange = () => { state.word = select.value; onchange(); };
  return el("label", { cls: "picker" }, el("span", { text: T("picker.word") + " " }), select);
}

function stepSlider(id, onchange) {
  const slider = el("input", { type: "range", min: "0", max: String(RUN.steps.length - 1), value: String(state.step), id, "aria-label": T("slider.step") });
  slider.oninput = () => { state.step = Number(slider.value); onchange(); };
  return slider;
}

// a sparkline of one statistic over the steps, the current step marked
function sparkline(values, current) {
  const ns = "http://www.w3.org/2000/svg"; const W = 280, H = 48;
  const svg = document.createElementNS(ns, "svg"); svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "spark");
  const known = values.filter((v) => v !== null); if (!known.length) return svg;
  const lo = Math.min(...known), hi = Math.max(...known), span = hi - lo || 1;
  const at = (i, v) => [4 + i * (W - 8) / Math.max(1, values.length - 1), H - 4 - (v - lo) / span * (H - 8)];
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", values.map((v, i) => v === null ? null : at(i, v).join(",")).filter(Boolean).join(" "));
  const dot = document.createElementNS(ns, "circle"); const [cx, cy] = at(current, values[current] ?? lo);
  dot.setAttribute("cx", cx); dot.setAttribute("cy", cy); dot.setAttribute("r", 3.5);
  svg.append(line, dot);
  return svg;
}

// in the architecture: a block's activity over the steps, and a cross-attention's map of the word
function runInfo(component, n) {
  if (!RUN || component !== "unet") return [];
  const parts = [];
  const stats = RUN.blocks[n.path];
  if (stats) {
    const std = stats.std[state.step];
    parts.push(el("h3", { text: T("run.in") }), el("div", { cls: "path", text: T("run.std", { step: state.step, value: std === null ? "—" : std.toFixed(4) }) }), sparkline(stats.std, state.step));
  }
  if (RUN.maps && state.word) {
    // the cross-attention layers inside this block, or the one this step belongs to
    const related = (p) => p === n.path || p.startsWith(n.path + ".") || (n.path || "").startsWith(p + ".");
    const layers = RUN.maps.layers.map((l, k) => [l.path, k]).filter(([p]) => related(p)).map(([, k]) => k);
    const caption = T(layers.length === 1 ? "map.one" : "map.some", { word: state.word, n: layers.length, step: state.step });
    const shown = overlay(state.step, layers, state.word, caption);
    if (shown) parts.push(shown);
  }
  return parts;
}

function runBar() {
  if (!RUN || state.tab !== "unet") return null;
  const again = () => { if (state.infoKey) info(state.tab, state.infoKey); label.textContent = stepLabel(); };
  const label = el("span", { cls: "path", text: stepLabel() });
  const bar = el("div", { cls: "runbar" }, el("b", { text: T("run.bar") + " " }), el("span", { cls: "path", text: RUN.settings.prompt }), stepSlider("arch-step", again), label);
  if (RUN.maps) bar.append(wordPicker(again));
  return bar;
}

function stepLabel() {
  const st = RUN.steps[state.step]; return T("run.step", { step: state.step, timestep: st.timestep });
}

function renderRun() {
  const box = $("run"); box.replaceChildren(); if (!RUN) return;
  const s = RUN.settings;
  box.append(el("div", { cls: "prompt", text: s.prompt }));
  if (s.negative_prompt) box.append(el("div", { text: T("run.negative", { text: s.negative_prompt }) }));
  const meta = [s.model, String(s.scheduler || "").toUpperCase(), T(s.steps === 1 ? "run.steps.one" : "run.steps.many", { n: s.steps }), T("run.guidance", { value: s.guidance }), s.width + "×" + s.height + " px", T("run.seed", { seed: s.seed })].join(" · ");
  box.append(el("div", { cls: "path", text: meta }));
  if (s.warning) { const w = tr(s.warning); box.append(el("p", { cls: "warn", text: T("run.warning", { text: w[0].toUpperCase() + w.slice(1) }) })); }
  if (RUN.unet_calls) box.append(el("p", { cls: "path", text: tr(RUN.unet_calls) }));
  if (RUN.image) box.append(el("div", {}, el("img", { src: RUN.image, alt: T("run.image.alt"), id: "result" }), el("div", { cls: "path", text: T("run.image") })));
  renderTokens(box);
  if (!RUN.steps.length) { box.append(el("p", { text: T("run.nosteps") })); return; }
  box.append(el("h3", { text: T("run.steps") }));
  const detail = el("div");
  const img = el("img", { id: "preview", alt: T("run.preview.alt") });
  const guidance = el("div", { cls: "guidance" });
  const mapBox = el("div");
  const update = () => { renderStep(detail, img, guidance, mapBox); };
  box.append(stepSlider("step", update), el("div", { cls: "cols" }, el("div", {}, img, el("div", { cls: "path", text: T("run.preview") })), detail));
  box.append(el("h3", { text: T("run.guidance.title") }), guidance);
  if (RUN.maps) box.append(el("h3", { text: T("run.maps.title") }), wordPicker(update), mapBox);
  update();
}

function renderTokens(box) {
  box.append(el("h3", { text: T("tokens.title") }));
  for (const t of RUN.tokens) {
    const line = el("div", { cls: "tokens", "data-prompt": t.prompt });
    for (let i = 0; i < t.length; i++) {
      const tok = t.tokens[i];
      line.append(el("span", { cls: tok.startsWith("<|") ? "special" : "" }, el("b", { text: tok.replace("</w>", "") }), el("i", { text: String(t.ids[i]) })));
    }
    line.append(el("span", { text: T("tokens.padding", { padding: t.ids.length - t.length, total: t.ids.length }) }));
    box.append(el("div", { cls: "path", text: t.prompt ? T("tokens.prompt") : T("tokens.negative") }), line);
    if (t.dropped_count) box.append(el("p", { cls: "warn", text: T("tokens.dropped", { n: t.dropped_count, tokens: t.dropped }) }));
  }
}

function renderStep(detail, img, guidance, mapBox) {
  const k = state.step; const st = RUN.steps[k];
  img.src = RUN.previews[k] || ""; img.hidden = !RUN.previews[k];
  detail.replaceChildren(el("h2", { text: T("step.title", { step: k, steps: RUN.steps.length, timestep: st.timestep }) }), el("div", { cls: "path", text: T("step.seconds", { seconds: st.seconds.toFixed(3) }) }));
  const t = el("table", {}, el("tr", {}, el("th", { text: T("step.seam") }), el("th", { text: T("step.shape") })));
  for (const key of ["latent_in", "unet_input", "noise_pred", "guided", "latent_out"]) if (st.shapes[key]) t.append(el("tr", {}, el("td", { text: T("seam." + key) }), el("td", { cls: "stat", text: shape(st.shapes[key]) })));
  const ls = st.latent_stats;
  detail.append(t, el("div", { cls: "stat", text: T("step.stats", { mean: ls.mean.toFixed(4), std: ls.std.toFixed(4), min: ls.min.toFixed(3), max: ls.max.toFixed(3) }) }));
  guidance.replaceChildren();
  const captions = { uncond: T("guidance.uncond"), cond: T("guidance.cond"), guided: T("guidance.guided", { scale: RUN.settings.guidance }), x0: T("guidance.x0") };
  for (const [part, caption] of Object.entries(captions)) {
    const src = RUN.guidance[k] && RUN.guidance[k][part];
    if (src) guidance.append(el("figure", { "data-part": part }, el("img", { src, alt: caption }), el("figcaption", { text: caption })));
  }
  mapBox.replaceChildren();
  if (RUN.maps && state.word) {
    const shown = overlay(k, RUN.maps.layers.map((l, i) => i), state.word, T("map.all", { word: state.word, step: k }));
    if (shown) mapBox.append(shown);
  }
}

// the diff: what changed from SD.diff.a to this page's model, per component, on the coloured figure
function renderDiff() {
  const box = $("diff"); box.replaceChildren(); const D = SD.diff; if (!D) return;
  box.append(el("h2", { text: D.a + " → " + D.b }), el("p", { cls: "summary", text: D.summary }));
  for (const [name, c] of Object.entries(D.components)) {
    const head = T("diff.params", { a: num(c.params[0]), b: num(c.params[1]) });
    const counts = listed(["added", "removed", "changed"].filter((k) => c.counts[k]).map((k) => T("diff." + k, { n: num(c.counts[k]) })));
    box.append(el("h3", { text: tr(c.title) + " · " + (c.identical ? T("diff.identical") : head + (counts ? " · " + T("diff.modules", { counts }) : "")) }));
    if (c.identical) continue;
    const figure = el("div", { cls: "diff-figure", "data-component": name });
    figure.insertAdjacentHTML("beforeend", c.svg);
    const table = el("table", { cls: "diff-rows" }, el("tr", {}, el("th", { text: "" }), el("th", { text: T("diff.module") }), el("th", { text: D.a }), el("th", { text: D.b }), el("th", { text: T("diff.what") })));
    for (const r of c.rows) {
      const path = el("td", { cls: "path", text: r.path });
      const line = el("tr", { cls: r.status }, el("td", { text: { added: "+", removed: "−", changed: "~", inside: "·" }[r.status] }), path, el("td", { text: r.a }), el("td", { text: r.b }), el("td", { text: r.what.split("; ").map((w) => tr(w)).join(T("list.semicolon")) }));
      if (r.key && SD.components[name] && SD.components[name].nodes[r.key]) { path.classList.add("go"); path.onclick = () => openIn(name, r.key); }
      table.append(line);
    }
    box.append(figure, table);
  }
}

// open a place of the page's own model: the block's view when it has one, else its parent's, picked
function openIn(component, key) {
  const comp = SD.components[component]; const n = comp.nodes[key];
  if (n.view) show(component, key); else show(component, n.parent && comp.nodes[n.parent].view ? n.parent : null, key);
}

$("diff").addEventListener("click", (e) => {
  const g = e.target.closest(".sd-node"); const figure = e.target.closest(".diff-figure");
  if (g && figure && SD.components[figure.dataset.component].nodes[g.dataset.key]) openIn(figure.dataset.component, g.dataset.key);
});
$("diff").addEventListener("mouseover", (e) => {
  const g = e.target.closest(".sd-node"); const figure = e.target.closest(".diff-figure");
  if (g && figure) info(figure.dataset.component, g.dataset.key);
});

// ---------------------------------------------------------------------------------------------------
// An experiment (explore experiment): the same generation twice from the same noise, as it is and
// edited. On the U, each block is coloured by how much its output changed at the slider's step;
// the Experiment tab has the summary, both images, x0 step by step and the change of every block.
// A sweep (explore sweep): on the U, each block coloured by how much editing it changed the image.

let EXP = SD.experiment, SWEEP = SD.sweep;  // and these, when an experiment or a sweep ends
const CHANGE = [[0, [255, 255, 255]], [0.02, [255, 236, 179]], [0.1, [253, 174, 97]], [0.3, [227, 74, 51]], [1, [127, 0, 0]]];
const EFFECT = [[0, "#f7f7f7", T("effect.none")], [0.005, "#fff2cc", T("effect.under")], [0.02, "#ffd58a", T("effect.small")],
  [0.05, "#fdae61", T("effect.some")], [0.12, "#f46d43", T("effect.large")], [Infinity, "#d73027", T("effect.most")]];
function setExperiment(experiment) {
  EXP = experiment;
  if (!EXP) return;
  state.expStep = Math.max(0, EXP.x0.length - 1);
  document.querySelector('#tabs button[data-tab="experiment"]').hidden = false;
}
function setSweep(sweep) { SWEEP = sweep; }
setExperiment(EXP);
const pct = (v) => v === null || v === undefined ? "—" : (100 * v).toFixed(1) + " %";

function changeColour(v) {
  const x = Math.max(0, Math.min(1, v || 0));
  for (let i = 1; i < CHANGE.length; i++) {
    const [p1, c1] = CHANGE[i]; const [p0, c0] = CHANGE[i - 1];
    if (x <= p1) { const f = (x - p0) / (p1 - p0); return "rgb(" + c0.map((c, k) => Math.round(c + f * (c1[k] - c))).join(",") + ")"; }
  }
  return "rgb(127,0,0)";
}
function effectColour(v) { return (EFFECT.find(([upper], i) => i === 0 ? v <= upper : v < upper) || EFFECT[EFFECT.length - 1])[1]; }

// the swept modules at or inside a place of the U, and the largest change among them
function swept(path) { return SWEEP ? SWEEP.modules.filter((m) => m.path === path || m.path.startsWith(path + ".")) : []; }
function sweptEffect(path) { const found = swept(path); return found.length ? Math.max(...found.map((m) => m.change)) : null; }
function expChange(path) { const c = EXP && EXP.change[path]; return c ? c[state.expStep] : null; }

// colour the U's boxes: by an experiment's change at the step shown, else by a sweep's effect
function paint() {
  if (state.tab !== "unet" || (!EXP && !SWEEP)) return;
  for (const g of document.querySelectorAll("#diagram .sd-node")) {
    const value = EXP ? expChange(g.dataset.path) : sweptEffect(g.dataset.path);
    const shape = g.querySelector("polygon, path");
    if (!shape || value === null) continue;
    shape.style.fill = EXP ? changeColour(value) : effectColour(value);
    g.classList.add("painted");
  }
}

function runThumb(name, step) {
  const run = EXP.runs[name]; const src = run && run.guidance[step] && run.guidance[step].x0;
  return el("figure", { cls: "thumb", "data-run": name }, src ? el("img", { src, alt: T("exp.thumb.alt", { run: T("exp." + name) }) }) : el("span", { text: "—" }),
    el("figcaption", { text: T("exp." + name) }));
}

function experimentBar() {
  if (!EXP || state.tab !== "unet") return null;
  const label = el("span", { cls: "path" });
  const thumbs = el("span", { cls: "thumbs" });
  const again = () => {
    label.textContent = T("exp.bar.step", { step: state.expStep, change: pct(EXP.x0[state.expStep]) });
    thumbs.replaceChildren(runThumb("baseline", state.expStep), runThumb("edited", state.expStep));
    paint(); if (state.infoKey) info(state.tab, state.infoKey);
  };
  const slider = el("input", { type: "range", min: "0", max: String(Math.max(0, EXP.x0.length - 1)), value: String(state.expStep), id: "exp-step", "aria-label": T("exp.slider") });
  slider.oninput = () => { state.expStep = Number(slider.value); again(); };
  const bar = el("div", { cls: "runbar", id: "expbar" }, el("b", { text: T("exp.bar") + " " }), el("span", { cls: "path", text: EXP.edits.map((e) => tr(e.text)).join(T("list.semicolon")) || T("exp.noedit") }), slider, label, thumbs, legend(T("exp.legend"), [[0, "0"], [0.02, "2 %"], [0.1, "10 %"], [0.3, "30 %"], [1, "100 %"]].map(([v, t]) => [changeColour(v), t])));
  again();
  return bar;
}

function sweepBar() {
  if (!SWEEP || EXP || state.tab !== "unet") return null;
  const what = SWEEP.edit === "scale" ? T("sweep.scale", { factor: SWEEP.factor }) : T("sweep.off");
  return el("div", { cls: "runbar", id: "sweepbar" }, el("b", { text: T("sweep.bar") + " " }), el("span", { cls: "path", text: T("sweep.what", { n: SWEEP.modules.length, what, prompt: SWEEP.settings.prompt }) }),
    legend(T("sweep.legend"), EFFECT.map(([, colour, text]) => [colour, text])));
}

function legend(title, entries) {
  const box = el("span", { cls: "legend" }, el("span", { cls: "path", text: T("legend", { title }) }));
  for (const [colour, text] of entries) { const swatch = el("i", {}); swatch.style.background = colour; box.append(el("span", {}, swatch, el("span", { text }))); }
  return box;
}

function experimentInfo(component, n) {
  if (!EXP || component !== "unet") return [];
  const c = EXP.change[n.path]; if (!c) return [];
  return [el("h3", { text: T("exp.in") }), el("div", { cls: "path", text: T("exp.block", { change: pct(c[state.expStep]), step: state.expStep }) }), sparkline(c, state.expStep)];
}

function sweepInfo(component, n) {
  if (!SWEEP || component !== "unet") return [];
  const found = swept(n.path); if (!found.length) return [];
  const parts = [el("h3", { text: T("sweep.in") })];
  for (const m of found.slice(0, 6)) {
    const said = m.judged ? T("sweep.judge", { said: tr(m.judged) }) : "";
    parts.push(el("div", { cls: "path", text: m.path }), el("div", { text: T("sweep.change", { change: pct(m.change) }) + (said ? " · " + said : "") }));
    const pair = el("div", { cls: "pair" });
    if (SWEEP.baseline) pair.append(el("figure", {}, el("img", { src: SWEEP.baseline, alt: T("sweep.baseline.alt") }), el("figcaption", { text: T("sweep.as_is") })));
    if (m.image) pair.append(el("figure", {}, el("img", { src: m.image, alt: T("sweep.edited.alt", { path: m.path }) }), el("figcaption", { text: SWEEP.edit === "scale" ? T("sweep.scale", { factor: SWEEP.factor }) : T("sweep.switched_off") })));
    parts.push(pair);
  }
  if (found.length > 6) parts.push(el("div", { cls: "path", text: T("sweep.more", { n: found.length - 6 }) }));
  return parts;
}

function renderExperiment() {
  const box = $("experiment"); box.replaceChildren(); if (!EXP) return;
  const s = EXP.settings;
  box.append(el("div", { cls: "prompt", text: s.prompt }));
  box.append(el("div", { cls: "path", text: [s.model, T(s.steps === 1 ? "run.steps.one" : "run.steps.many", { n: s.steps }), T("run.guidance", { value: s.guidance }), T("exp.both", { seed: s.seed })].join(" · ") }));
  for (const e of EXP.edits) box.append(el("p", { cls: "edit", text: T("exp.edit", { text: tr(e.text) }) }));
  if (!EXP.edits.length) box.append(el("p", { text: T("exp.none") }));
  box.append(el("pre", { cls: "summary", text: tr(EXP.summary) }));
  const images = el("div", { cls: "guidance" });
  for (const name of ["baseline", "edited"]) {
    const run = EXP.runs[name];
    if (run && run.image) images.append(el("figure", { cls: "result", "data-run": name }, el("img", { src: run.image, alt: T("exp.image.alt", { run: T("exp." + name) }) }), el("figcaption", { text: T("exp." + name) })));
  }
  box.append(el("h3", { text: T("exp.images") }), images);
  const pair = el("div", { cls: "guidance" });
  const label = el("div", { cls: "path" });
  const update = () => {
    pair.replaceChildren(runThumb("baseline", state.expStep), runThumb("edited", state.expStep));
    label.textContent = T("exp.step", { step: state.expStep, change: pct(EXP.x0[state.expStep]) });
    for (const td of strip.querySelectorAll("td.cell")) td.classList.toggle("now", Number(td.dataset.step) === state.expStep);
  };
  const slider = el("input", { type: "range", min: "0", max: String(Math.max(0, EXP.x0.length - 1)), value: String(state.expStep), id: "exp-tab-step", "aria-label": T("slider.step") });
  slider.oninput = () => { state.expStep = Number(slider.value); update(); };
  box.append(el("h3", { text: T("exp.x0") }), slider, label, pair);
  const strip = el("table", { cls: "strip" });
  const head = el("tr", {}, el("th", { text: T("exp.strip.block") }));
  EXP.x0.forEach((_, k) => head.append(el("th", { text: String(k) })));
  strip.append(head);
  for (const [path, values] of [...Object.entries(EXP.change).filter(([p]) => !p.includes(".") || /^(down|up)_blocks\.\d+$/.test(p)), ["x0", EXP.x0]]) {
    const row = el("tr", {}, el("td", { cls: "path", text: path }));
    values.forEach((v, k) => { const td = el("td", { cls: "cell", "data-step": String(k), title: T("exp.cell", { path, step: k, change: pct(v) }) }); td.style.background = changeColour(v); row.append(td); });
    strip.append(row);
  }
  box.append(el("h3", { text: T("exp.strip") }), strip, el("p", { cls: "path", text: T("exp.strip.note") }));
  update();
}

if (SD.run) document.querySelector('#tabs button[data-tab="run"]').hidden = false;
if (SD.experiment) document.querySelector('#tabs button[data-tab="experiment"]').hidden = false;
if (SD.diff) document.querySelector('#tabs button[data-tab="diff"]').hidden = false;
const [tab, view] = decodeURIComponent(location.hash.slice(1)).split("/");
if (tab === "diff" && SD.diff) show("diff"); else if (tab === "run" && SD.run) show("run"); else if (tab === "experiment" && SD.experiment) show("experiment"); else if (SD.components[tab]) show(tab, SD.components[tab].nodes[view] ? view : null); else show("pipeline");
