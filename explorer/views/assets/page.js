"use strict";
const SD = window.SD;
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) { if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v); }
  for (const c of children) e.append(c);
  return e;
};
// Tab names: the pipeline and the generation, and one tab per component of the records
// (their titles come from explorer.components).
const NAMES = { pipeline: "Pipeline", run: "Generation" };
for (const [name, comp] of Object.entries(SD.components)) {
  NAMES[name] = comp.title;
  $("tabs").insertBefore(el("button", { "data-tab": name, text: comp.tab }), document.querySelector('#tabs button[data-tab="run"]'));
}
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
