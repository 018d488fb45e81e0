"use strict";
// The live page (explore serve): a prompt box and the settings; Generate streams every step from the
// server as it ends (server-sent events), shown by page.js's own views — the Generation tab, and the
// U in the UNet tab with each block's activity. A block of the U can be switched off, have what it
// adds halved or read another prompt (an experiment: both runs, side by side), or every
// cross-attention be switched off in turn (a sweep: the U coloured by effect). Stop, or closing the
// tab, stops the job at its next step; what was done is kept in a run folder the list reopens.
// Everything goes through the server's API (explorer/server.py); nothing here computes.

const LIVE = { job: null, source: null, kind: null, started: 0 };
// the kinds of module `off` and `scale` have a meaning for (explorer.edits: BRANCHES and PASS_THROUGH)
const EDITABLE = ["Attention", "FeedForward", "ResnetBlock2D", "BasicTransformerBlock", "Transformer2DModel",
  "UNetMidBlock2DCrossAttn", "UNetMidBlock2D"];

async function api(path, body) {
  const options = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  return { ok: response.ok, status: response.status, data };
}

function field(id, type, value, label, attrs = {}) {
  const input = el("input", { id, type, value: String(value), "aria-label": label, ...attrs });
  return el("label", { cls: "live-field" }, el("span", { text: label }), input);
}

// the samplers the server can drive (explorer.generation.SCHEDULERS), the model's own chosen
function schedulerField() {
  const select = el("select", { id: "live-scheduler", "aria-label": T("live.scheduler") },
    ...SD.live.schedulers.map((name) => el("option", { value: name, text: name === SD.live.scheduler ? T("live.scheduler.own", { name }) : name })));
  select.value = SD.live.scheduler;
  return el("label", { cls: "live-field" }, el("span", { text: T("live.scheduler") }), select);
}

function liveBar() {
  const bar = el("form", { id: "live", cls: "live", autocomplete: "off" });
  const prompt = el("input", { id: "live-prompt", type: "text", placeholder: T("live.prompt"), "aria-label": T("live.prompt.label"), maxlength: "1000" });
  const go = el("button", { id: "live-go", type: "submit", text: T("live.go") });
  const stop = el("button", { id: "live-stop", type: "button", text: T("live.stop"), disabled: "" });
  const runs = el("select", { id: "live-runs", "aria-label": T("live.runs") }, el("option", { value: "", text: T("live.runs.pick") }));
  const status = el("span", { id: "live-status", cls: "live-status", role: "status" });
  bar.append(el("b", { text: T("live.label") }), prompt,
    field("live-seed", "number", 0, T("live.seed"), { min: "0", step: "1" }),
    field("live-steps", "number", 20, T("live.steps"), { min: "1", max: "200", step: "1" }),
    field("live-guidance", "number", 7.5, T("live.guidance"), { min: "0", max: "30", step: "0.5" }),
    schedulerField(), go, stop, runs, status);
  bar.onsubmit = (e) => { e.preventDefault(); submit("generate", {}); };
  stop.onclick = () => { if (LIVE.job) api("/api/jobs/" + LIVE.job + "/stop", {}); };
  runs.onchange = () => { if (runs.value) reopen(runs.value, runs.selectedOptions[0].dataset.kind, true); };
  document.querySelector("header").after(bar);
  refreshRuns();
}

function settingsOf() {
  return { prompt: $("live-prompt").value, seed: Number($("live-seed").value), steps: Number($("live-steps").value),
           guidance: Number($("live-guidance").value), scheduler: $("live-scheduler").value };
}

function setStatus(state_, text, folder) {
  const s = $("live-status"); s.dataset.state = state_; s.textContent = text;
  if (folder) s.dataset.folder = folder;
  $("live-go").disabled = state_ === "queued" || state_ === "running";
  $("live-stop").disabled = !(state_ === "queued" || state_ === "running");
}

async function submit(kind, extra) {
  if (LIVE.job) return;
  const { ok, data } = await api("/api/jobs", { kind, ...settingsOf(), ...extra });
  if (!ok) { setStatus("refused", T("live.refused", { error: data.error || "" })); return; }
  follow(data.job, data.folder, kind);
}

// a run as page.js shows it, growing step by step from the events (the whole run is read back at the end)
function growing(folder, settings) {
  return { name: folder, image: null, settings: { ...settings, model: SD.model }, tokens: [], steps: [], status: "running",
           unet_calls: "", previews: {}, guidance: {}, blocks: {}, maps: null };
}

function addStep(run, e) {
  const k = e.index, base = "/api/runs/" + (e.parent ? e.parent + "/" : "") + e.folder + "/steps/" + k + "/";
  run.steps.push({ index: k, timestep: e.timestep, seconds: e.seconds, shapes: {}, latent_stats: e.stats });
  run.previews[k] = base + "latent.png";
  run.guidance[k] = { uncond: base + "uncond.png", cond: base + "cond.png", guided: base + "guided.png", x0: base + "x0.png" };
  for (const [path, std] of Object.entries(e.blocks || {})) {
    if (!run.blocks[path]) run.blocks[path] = { mean: [], std: [], abs: [] };
    run.blocks[path].std[k] = std;
  }
}

function follow(job, folder, kind) {
  LIVE.job = job; LIVE.kind = kind; LIVE.started = performance.now();
  setStatus("queued", T("live.queued", { waiting: 0 }), folder);
  const source = new EventSource("/api/jobs/" + job + "/events");
  LIVE.source = source;
  let run = null;
  source.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "queued") setStatus("queued", T("live.queued", { waiting: e.waiting }), folder);
    else if (e.type === "run" && kind === "generate") { run = growing(e.folder, settingsOf()); setRun(run); }
    else if (e.type === "step") stepped(run, e, kind, folder);
    else if (e.type === "sweep") setStatus("running", T("live.sweeping", { done: e.done, total: e.total }), folder);
    else if (e.type === "end") { source.close(); LIVE.source = null; LIVE.job = null; ended(kind, folder, e); }
  };
  source.onerror = () => { if (LIVE.source === source && source.readyState === EventSource.CLOSED) { LIVE.job = null; setStatus("failed", T("live.gone")); } };
}

function stepped(run, e, kind, folder) {
  const where = { step: e.index, total: e.total };
  if (kind !== "generate" || !run) { setStatus("running", T("live.running.run", { run: T("live." + e.run), ...where }), folder); return; }
  addStep(run, e);
  setStatus("running", T("live.running", where), folder);
  state.step = e.index;
  refresh();
}

// the tab on show, drawn again with what is known now
function refresh() {
  if (state.tab === "run") renderRun();
  else if (state.tab === "unet") { $("runbar").replaceChildren(...[runBar(), experimentBar(), sweepBar()].filter(Boolean)); if (state.infoKey) info("unet", state.infoKey); paint(); }
  else if (state.tab === "pipeline") show("run");
}

async function ended(kind, folder, e) {
  const seconds = ((performance.now() - LIVE.started) / 1000).toFixed(1);
  const word = e.status === "done" ? T("live.done", { seconds }) : e.status === "stopped" ? T("live.stopped") : T("live.failed", { error: e.error });
  await reopen(folder, kind);
  await refreshRuns();
  setStatus(e.status, word, folder);  // last: "done" means everything is on the page
}

// a kept run, experiment or sweep read back from the server and shown (`picked`: chosen from the list,
// shown in its own tab; otherwise a job just ended, shown where the page is)
async function reopen(name, kind, picked) {
  const path = { generate: "/api/runs/", experiment: "/api/experiments/", sweep: "/api/sweeps/" }[kind || "generate"] + encodeURIComponent(name);
  const { ok, data } = await api(path);
  if (!ok) return;
  Object.assign((SD.texts.zh = SD.texts.zh || {}), data.texts || {});
  if (kind === "experiment") { setExperiment(data); show("experiment"); }
  else if (kind === "sweep") { setSweep(data); show("unet"); }
  else { setRun(data); show(state.tab === "unet" && !picked ? "unet" : "run"); }
}

async function refreshRuns() {
  const { ok, data } = await api("/api/runs");
  if (!ok) return;
  const select = $("live-runs");
  select.replaceChildren(el("option", { value: "", text: T("live.runs.pick") }));
  for (const r of data.runs) select.append(el("option", { value: r.name, "data-kind": r.kind, text: (r.kind === "generate" ? "" : r.kind + " · ") + r.prompt + " · " + r.status }));
}

// in the info panel of a block of the U: what the live page can do to it
function liveInfo(component, n) {
  if (component !== "unet" || !n.path || n.kind !== "module") return [];
  const edit = (kind, text) => () => submit("experiment", { edits: [{ kind, text }] });
  const parts = [el("h3", { text: T("live.edit.head") })];
  if (EDITABLE.includes(n.type)) {  // a module whose contribution can be taken away (explorer.edits)
    const off = el("button", { type: "button", "data-edit": "off", text: T("live.edit.off") });
    const half = el("button", { type: "button", "data-edit": "scale", text: T("live.edit.scale") });
    off.onclick = edit("off", n.path); half.onclick = edit("scale", n.path + "=0.5");
    parts.push(el("div", { cls: "live-edits" }, off, half));
  }
  const hasCross = Object.values(SD.components.unet.nodes).some((m) => m.path.endsWith("attn2") && (m.path === n.path || m.path.startsWith(n.path + ".")));
  if (hasCross) {
    const other = el("input", { type: "text", id: "live-other", placeholder: T("live.edit.other.placeholder"), "aria-label": T("live.edit.other") });
    const give = el("button", { type: "button", "data-edit": "prompt_at", text: T("live.edit.other") });
    give.onclick = () => { if (other.value.trim()) edit("prompt_at", other.value.trim() + "@" + n.path)(); };
    parts.push(el("div", { cls: "live-edits" }, other, give));
  }
  const sweep = el("button", { type: "button", "data-edit": "sweep", text: T("live.edit.sweep") });
  sweep.onclick = () => submit("sweep", { over: "cross-attention" });
  parts.push(el("div", { cls: "live-edits" }, sweep), el("p", { cls: "hint", text: T("live.edit.hint") }));
  return parts;
}

if (SD.live) liveBar();
