/* evonorm-search dashboard: searches, the live Pareto front, candidates. No framework, no CDN. */
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const view = () => document.getElementById("view");
const state = { route: null, cleanup: [] };
window.__evonorm = { firstRender: null, renders: 0 };

// -- helpers ------------------------------------------------------------------------------

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(x, digits = 3) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
// One formatter each, made once: toLocaleString() builds a new one per call, a table page's worth of them
// showed up in the page's first render.
const DATE_TIME = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "numeric", day: "numeric",
  hour: "numeric", minute: "numeric", second: "numeric" });
const DATE = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "numeric", day: "numeric" });
const TIME = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "numeric", second: "numeric" });
function when(iso) { return iso ? DATE_TIME.format(new Date(iso)) : "–"; }
function short(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toDateString() === new Date().toDateString() ? TIME.format(d) : DATE.format(d);
}
function badge(status) { return `<span class="badge ${esc(status)}">${esc(status)}</span>`; }

function toast(message, isError = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = "toast" + (isError ? " error" : "");
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, isError ? 7000 : 3000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(typeof body?.detail === "string" ? body.detail : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = localStorage.getItem("evonorm.token");
  if (options.method && options.method !== "GET" && token) headers.Authorization = `Bearer ${token}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { ...options, headers });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text }; }
  if (!response.ok) {
    if (response.status === 401) toast("This server needs a bearer token: set it under “Token” (top right).", true);
    throw new ApiError(response.status, body);
  }
  return body;
}

function errorText(err) {
  if (err instanceof ApiError && Array.isArray(err.body?.detail)) {
    return err.body.detail.map((d) => `${d.field || (d.loc || []).join(".")}: ${d.msg}`).join("\n");
  }
  return err.message || String(err);
}

function throttle(fn, ms) {
  let timer = null, pending = false, last = 0;
  return function run() {
    const now = Date.now();
    if (timer) { pending = true; return; }
    const wait = Math.max(0, ms - (now - last));
    timer = setTimeout(async () => {
      last = Date.now();
      try { await fn(); } catch (e) { console.warn(e); }
      timer = null;
      if (pending) { pending = false; run(); }
    }, wait);
  };
}

// Events that record a fault the search went through (see docs/deployment.md).
const FAULT_KINDS = ["store_outage", "node_lost", "candidate_retried", "runner_takeover"];

function faultText(e) {
  const p = e.payload || {};
  const who = (ids) => (ids && ids.length ? ` (candidates ${ids.map((i) => `#${i}`).join(", ")})` : "");
  switch (e.kind) {
    case "store_outage": return `database unreachable for ${p.down_s} s; the search waited${p.runner_restarted ? " and resumed" : ""}`;
    case "node_lost": return `Ray node ${String(p.node || "").slice(0, 8)} (${p.address}) lost${who(p.candidates)}`;
    case "candidate_retried": return `job retried on ${p.same_node ? "the same node" : "another node"}${who(p.candidates)}`;
    case "runner_takeover": return `a new runner took over from ${p.previous}`;
    default: return e.kind;
  }
}

function onCleanup(fn) { state.cleanup.push(fn); }

function follow(params, onEvent) {
  const live = document.getElementById("live");
  const source = new EventSource(`/api/events?${new URLSearchParams(params)}`);
  source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  source.onerror = () => { live.textContent = "reconnecting"; live.classList.remove("on"); };
  source.onmessage = (e) => onEvent(e);
  for (const kind of ["search_created", "search_status", "candidates_added", "candidate_finished", "rerank_added",
    ...FAULT_KINDS]) {
    source.addEventListener(kind, onEvent);
  }
  onCleanup(() => { source.close(); live.textContent = "not live"; live.classList.remove("on"); });
  return source;
}

async function control(searchId, action) {
  try {
    await api(`/api/searches/${searchId}/${action}`, { method: "POST" });
    toast(`${action}: done`);
  } catch (err) {
    toast(`${action} failed: ${errorText(err)}`, true);
  }
}

function controls(s, compact = false) {
  const can = {
    pause: ["queued", "running"].includes(s.status),
    resume: ["paused", "failed"].includes(s.status),
    cancel: ["queued", "running", "paused"].includes(s.status),
  };
  return ["pause", "resume", "cancel"].filter((a) => can[a] || !compact).map((a) =>
    `<button data-action="${a}" data-search="${s.id}" ${can[a] ? "" : "disabled"}>${a}</button>`).join(" ");
}

function bindControls(root, after) {
  root.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", async (e) => {
    e.stopPropagation();
    b.disabled = true;
    await control(b.dataset.search, b.dataset.action);
    after();
  }));
}

// -- plots ---------------------------------------------------------------------------------------------
// The page's two plots (the front: a scatter with error bars and a staircase; the hypervolume: a step
// line) drawn as plain SVG. plotly.js (1.2 MB even in its basic bundle) took most of a first visit's
// time: its compile and its first draw were 60% of the page's main-thread work before it was usable.
//
// drawPlot(el, spec) — spec: { xTitle, yTitle, xFromZero, yFromZero, empty (a message: no axes),
//   traces: [{ name, cls, mode: "markers" | "lines" | "stairs" | "stairs+markers", color, legend,
//     points: [{ x, y, ex, ey, id, label, hover, symbol: "circle" | "diamond" | "star", color, size,
//                hollow }] }],
//   onClick(id) }. Hover shows a point's `hover` lines; clicking a point with an id calls onClick.

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw * 0.999) || 10 * mag;
}

function axisRange(values, fromZero) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (fromZero) lo = Math.min(0, lo);
  if (!(hi > lo)) { const d = Math.abs(hi) * 0.05 || 0.5; lo -= d; hi += d; }
  const pad = (hi - lo) * 0.06;
  return [fromZero && lo === 0 ? 0 : lo - pad, hi + pad];
}

function ticks([lo, hi], count) {
  const step = niceStep(hi - lo, count);
  const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push([v, v.toFixed(digits)]);
  return out;
}

function symbolPath(symbol, x, y, size) {
  const r = size / 2;
  if (symbol === "diamond") return `M${x},${y - r * 1.3}L${x + r},${y}L${x},${y + r * 1.3}L${x - r},${y}Z`;
  if (symbol === "star") {
    let d = "";
    for (let k = 0; k < 10; k++) {
      const a = -Math.PI / 2 + (k * Math.PI) / 5, rr = k % 2 ? r * 0.45 : r;
      d += `${k ? "L" : "M"}${(x + rr * Math.cos(a)).toFixed(2)},${(y + rr * Math.sin(a)).toFixed(2)}`;
    }
    return d + "Z";
  }
  return `M${x - r},${y}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0Z`;
}

function drawPlot(el, spec) {
  el._plot = spec;
  el.classList.add("svgplot");
  if (spec.empty) {
    el.innerHTML = `<div class="plot-empty">${esc(spec.empty)}</div>`;
    return;
  }
  const legend = spec.traces.filter((t) => t.legend);
  const width = el.clientWidth || 600;
  const height = (el.clientHeight || 300) - (legend.length ? 26 : 0);
  const m = { l: 60, r: 14, t: 12, b: 44 };
  const all = spec.traces.flatMap((t) => t.points);
  const xr = axisRange(all.flatMap((p) => [p.x - (p.ex || 0), p.x + (p.ex || 0)]), spec.xFromZero);
  const yr = axisRange(all.flatMap((p) => [p.y - (p.ey || 0), p.y + (p.ey || 0)]), spec.yFromZero);
  const X = (v) => m.l + ((v - xr[0]) / (xr[1] - xr[0])) * (width - m.l - m.r);
  const Y = (v) => height - m.b - ((v - yr[0]) / (yr[1] - yr[0])) * (height - m.t - m.b);
  const f = (v) => v.toFixed(1);
  const out = [`<rect class="bg" x="${m.l}" y="${m.t}" width="${width - m.l - m.r}" height="${height - m.t - m.b}"/>`];
  for (const [v, text] of ticks(xr, Math.max(2, Math.floor((width - m.l - m.r) / 90)))) {
    out.push(`<g class="xtick"><line x1="${f(X(v))}" x2="${f(X(v))}" y1="${m.t}" y2="${height - m.b}"/>` +
      `<text x="${f(X(v))}" y="${height - m.b + 16}">${text}</text></g>`);
  }
  for (const [v, text] of ticks(yr, Math.max(2, Math.floor((height - m.t - m.b) / 50)))) {
    out.push(`<g class="ytick"><line x1="${m.l}" x2="${width - m.r}" y1="${f(Y(v))}" y2="${f(Y(v))}"/>` +
      `<text x="${m.l - 6}" y="${f(Y(v) + 4)}">${text}</text></g>`);
  }
  out.push(`<text class="axis-title" x="${f((m.l + width - m.r) / 2)}" y="${height - 6}">${esc(spec.xTitle)}</text>`);
  out.push(`<text class="axis-title" transform="translate(14,${f((m.t + height - m.b) / 2)}) rotate(-90)">${esc(spec.yTitle)}</text>`);
  const hovers = [];
  spec.traces.forEach((t) => {
    const g = [`<g class="trace ${esc(t.cls || "")}">`];
    const pts = t.points;
    if (t.mode.startsWith("stairs") || t.mode === "lines") {
      let d = "";
      pts.forEach((p, i) => {
        if (!i) d += `M${f(X(p.x))},${f(Y(p.y))}`;
        else if (t.mode.startsWith("stairs")) d += `H${f(X(p.x))}V${f(Y(p.y))}`;
        else d += `L${f(X(p.x))},${f(Y(p.y))}`;
      });
      if (d) g.push(`<path class="line" d="${d}" stroke="${t.color}"/>`);
    }
    if (t.mode === "markers" || t.mode.endsWith("+markers")) {
      for (const p of pts) {
        const x = X(p.x), y = Y(p.y), color = p.color || t.color;
        if (p.ex > 0) {
          const a = f(X(p.x - p.ex)), b = f(X(p.x + p.ex));
          g.push(`<path class="errorbar" stroke="${t.color}" d="M${a},${f(y)}H${b}M${a},${f(y - 4)}V${f(y + 4)}M${b},${f(y - 4)}V${f(y + 4)}"/>`);
        }
        if (p.ey > 0) {
          const a = f(Y(p.y - p.ey)), b = f(Y(p.y + p.ey));
          g.push(`<path class="errorbar" stroke="${t.color}" d="M${f(x)},${a}V${b}M${f(x - 4)},${a}H${f(x + 4)}M${f(x - 4)},${b}H${f(x + 4)}"/>`);
        }
      }
      for (const p of pts) {
        const x = X(p.x), y = Y(p.y), color = p.color || t.color;
        const fill = p.hollow ? "none" : color, stroke = p.hollow ? p.stroke || color : p.stroke || "#fff";
        hovers.push(p.hover || "");
        g.push(`<path class="point${p.id ? " clickable" : ""}" data-i="${hovers.length - 1}" ${p.id ? `data-id="${p.id}"` : ""} ` +
          `d="${symbolPath(p.symbol, x, y, p.size || 8)}" fill="${fill}" stroke="${stroke}" stroke-width="${p.hollow ? 2 : 1}"/>`);
        if (p.label) g.push(`<text class="label" x="${f(x)}" y="${f(y - (p.size || 8) / 2 - 5)}" fill="${t.labelColor || color}">${esc(p.label)}</text>`);
      }
    }
    g.push("</g>");
    out.push(g.join(""));
  });
  const legendHtml = legend.length ? `<div class="plot-legend">${legend.map((t) => {
    const p = t.points[0] || {};
    const sym = `<svg width="18" height="16"><path d="${symbolPath(p.symbol || "circle", 9, 8, 10)}" fill="${p.hollow ? "none" : t.color}" stroke="${p.hollow ? t.color : "#fff"}" stroke-width="${p.hollow ? 1.5 : 1}"/></svg>`;
    return `<span>${sym}${esc(t.name)}</span>`;
  }).join("")}</div>` : "";
  el.innerHTML = `<svg class="plot-svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${out.join("")}</svg>` +
    legendHtml + `<div class="plot-tip" hidden></div>`;
  const tip = el.querySelector(".plot-tip");
  el.querySelectorAll(".point").forEach((node) => {
    node.addEventListener("mouseenter", () => {
      const text = hovers[Number(node.dataset.i)];
      if (!text) return;
      tip.innerHTML = text.split("\n").map(esc).join("<br>");
      const box = node.getBoundingClientRect(), host = el.getBoundingClientRect();
      tip.hidden = false;
      const left = box.right - host.left + 8;
      tip.style.left = `${Math.min(left, host.width - tip.offsetWidth - 4)}px`;
      tip.style.top = `${Math.max(0, box.top - host.top - tip.offsetHeight - 4)}px`;
    });
    node.addEventListener("mouseleave", () => { tip.hidden = true; });
    if (node.dataset.id && spec.onClick) node.addEventListener("click", () => spec.onClick(Number(node.dataset.id)));
  });
}

// Plots are drawn at their element's size: redrawn when it changes (window resize, layout).
const plotSizes = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const el = entry.target;
    const w = Math.round(entry.contentRect.width);
    if (el._plot && w && w !== el._plotWidth) { el._plotWidth = w; drawPlot(el, el._plot); }
  }
});
function observePlot(el) {
  if (el.dataset.observed) return;
  el.dataset.observed = "1";
  el._plotWidth = el.clientWidth;
  plotSizes.observe(el);
  onCleanup(() => plotSizes.unobserve(el));
}

// -- router -----------------------------------------------------------------------------

const routes = [
  [/^#?\/?$/, renderSearches],
  [/^#\/search\/(\d+)$/, (m) => renderSearch(Number(m[1]))],
  [/^#\/candidate\/(\d+)$/, (m) => renderCandidate(Number(m[1]))],
  [/^#\/zoo$/, renderZoo],
];

async function route() {
  state.cleanup.splice(0).forEach((fn) => { try { fn(); } catch (e) { /* ignore */ } });
  document.querySelector("details.token").open = false;
  const hash = location.hash || "#/";
  for (const [pattern, render] of routes) {
    const m = hash.match(pattern);
    if (m) {
      document.body.dataset.view = "loading";
      try { await render(m); } catch (err) {
        view().innerHTML = `<div class="panel"><h2>Could not load this page</h2><p class="errors">${esc(errorText(err))}</p></div>`;
      }
      return;
    }
  }
  view().innerHTML = `<div class="panel">Not found. <a href="#/">Searches</a></div>`;
}

// -- searches list + launch form --------------------------------------------------------------

async function renderSearches() {
  const options = await api("/api/presets");
  view().innerHTML = `
    <div class="grid list">
      <section class="panel">
        <div class="panel-head"><h2>Searches</h2><span class="spacer"></span><span class="muted" id="search-count"></span></div>
        <div class="table-wrap"><table id="searches">
          <thead><tr><th>id</th><th>name</th><th>status</th><th>progress</th><th>evaluated</th><th>rejected</th><th>objectives</th><th>created</th><th>control</th></tr></thead>
          <tbody></tbody></table></div>
      </section>
      <section class="panel">
        <div class="panel-head"><h2>Launch a search</h2></div>
        ${launchForm(options)}
      </section>
    </div>`;
  const form = $("#launch");
  fillForm(form, options.presets.quick, options);
  form.preset.addEventListener("change", () => {
    const p = form.preset.value === "default" ? options.default : options.presets[form.preset.value];
    fillForm(form, p, options);
  });
  $("#add-task").addEventListener("click", () => addTaskRow(form, { backbone: "resnet", task: "shapes32" }, options));
  form.addEventListener("submit", (e) => { e.preventDefault(); launch(form, options); });

  let lastEvent = 0;
  const refresh = async () => {
    const list = await api("/api/searches?limit=100");
    lastEvent = list.last_event_id;
    $("#search-count").textContent = `${list.items.length} shown`;
    const tbody = $("#searches tbody");
    tbody.innerHTML = list.items.map((s) => {
      const done = s.num_evaluated + s.num_rejected;
      const pct = s.budget ? Math.min(100, (100 * done) / s.budget) : 0;
      return `<tr class="clickable" data-id="${s.id}">
        <td>${s.id}</td><td class="clip"><b>${esc(s.name)}</b></td><td>${badge(s.status)}</td>
        <td><div class="progress" title="${done} of ${s.budget}"><i style="width:${pct}%"></i></div><span class="muted">${done} / ${s.budget}</span></td>
        <td class="num">${s.num_evaluated}</td><td class="num">${s.num_rejected}</td>
        <td class="muted small">${s.objectives.map(esc).join("<br>")}</td><td class="muted nowrap" title="${esc(when(s.created_at))}">${short(s.created_at)}</td>
        <td class="nowrap">${controls(s, true)}</td></tr>`;
    }).join("") || `<tr><td colspan="9" class="muted">No searches yet: launch one.</td></tr>`;
    tbody.querySelectorAll("tr.clickable").forEach((tr) =>
      tr.addEventListener("click", () => { location.hash = `#/search/${tr.dataset.id}`; }));
    bindControls(tbody, refresh);
  };
  await refresh();
  document.body.dataset.view = "searches";
  const live = throttle(refresh, 1000);
  follow({ after: lastEvent }, (e) => {
    if (e.type !== "candidates_added") live();
  });
}

function launchForm(options) {
  const presetOptions = ["quick", ...Object.keys(options.presets).filter((p) => p !== "quick"), "default"]
    .map((p) => `<option value="${p}">${p}</option>`).join("");
  const seeds = options.zoo_seeds.map((z) =>
    `<label><input type="checkbox" name="seed_with_zoo" value="${esc(z)}"> ${esc(z)}</label>`).join("");
  return `<form id="launch" class="launch" novalidate>
    <label>Preset<select name="preset">${presetOptions}</select></label>
    <label>Name<input name="name" data-field="name" maxlength="200"></label>
    <label>Strategy<select name="strategy" data-field="strategy"><option>evolution</option><option>random</option></select></label>
    <label>Budget<input name="budget" data-field="budget" type="number" min="1"></label>
    <label>Population<input name="population_size" data-field="population_size" type="number" min="1"></label>
    <label>Tournament<input name="tournament_size" data-field="tournament_size" type="number" min="1"></label>
    <label title="Evolution proposes random draws until this many evaluated layers are in its population. Empty: the population size (the paper's warm-up). Lower it for a search without zoo seeds, where most draws are rejected.">Breed after<input name="breed_after" data-field="breed_after" type="number" min="1" placeholder="population"></label>
    <label>In flight<input name="in_flight" data-field="in_flight" type="number" min="1"></label>
    <label title="Stop proposing once the search's jobs have run this many worker core-hours (GPU-hours on GPU workers); what is in flight and due to climb still finishes. Empty: the budget alone.">Core-hours<input name="max_core_hours" data-field="max_core_hours" type="number" min="0" step="any" placeholder="no cap"></label>
    <label>Seed<input name="seed" data-field="seed" type="number" min="0"></label>
    <label class="wide"><span><input type="checkbox" name="batch_independent" data-field="batch_independent"> batch-independent layers only (S-series)</span></label>
    <div class="wide"><label>Proxy tasks (one objective each)</label><div id="tasks" data-field="tasks"></div>
      <button type="button" id="add-task">+ task</button></div>
    <div class="wide"><label>Seed the population with zoo layers</label><div class="checks" data-field="seed_with_zoo">${seeds}</div></div>
    <label class="wide">More fields as JSON (merged over the form)<textarea name="extra" data-field="extra" placeholder='{"rejection": {"quality_steps": 50}}'></textarea></label>
    <div class="wide"><div id="launch-errors" class="errors"></div>
      <button class="primary" type="submit" id="launch-button">Launch</button></div>
  </form>`;
}

function fillForm(form, cfg, options) {
  for (const name of ["name", "strategy", "budget", "population_size", "tournament_size", "in_flight", "seed"]) {
    if (cfg[name] !== undefined) form[name].value = cfg[name];
  }
  form.max_core_hours.value = cfg.max_core_hours ?? "";
  form.breed_after.value = cfg.breed_after ?? "";
  form.batch_independent.checked = !!cfg.batch_independent;
  const seeds = new Set(cfg.seed_with_zoo || []);
  form.querySelectorAll('input[name="seed_with_zoo"]').forEach((c) => { c.checked = seeds.has(c.value); });
  $("#tasks", form).innerHTML = "";
  (cfg.tasks || []).forEach((t) => addTaskRow(form, t, options));
  form.extra.value = "";
}

function addTaskRow(form, task, options) {
  const row = document.createElement("div");
  row.className = "task-row";
  const backbones = Object.keys(options.backbones).map((b) =>
    `<option ${b === task.backbone ? "selected" : ""}>${esc(b)}</option>`).join("");
  const tasks = Object.keys(options.tasks).map((t) =>
    `<option ${t === task.task ? "selected" : ""}>${esc(t)}</option>`).join("");
  row.innerHTML = `<label>backbone<select name="t_backbone">${backbones}</select></label>
    <label>data<select name="t_task">${tasks}</select></label>
    <label>steps<input name="t_steps" type="number" min="1" placeholder="recipe" value="${task.steps ?? ""}"></label>
    <label title="Images (or sequences) per forward pass; the gradients of a batch's micro-batches add up to one step, so batch statistics see only these. Must divide the batch size; another objective (task@mbN).">micro-batch<input name="t_micro_batch" type="number" min="1" placeholder="batch" value="${task.micro_batch ?? ""}"></label>
    <label title="No rung of the funnel trains this task for less than this fraction of its steps (1: every rung trains it in full, for a task whose short runs rank layers poorly, as the proxy Transformer's do).">rung floor<input name="t_min_steps_frac" type="number" min="0" max="1" step="any" placeholder="rung's" value="${task.min_steps_frac ?? ""}"></label>
    <button type="button" title="remove">✕</button>`;
  row.querySelector("button").addEventListener("click", () => row.remove());
  $("#tasks", form).appendChild(row);
}

function readForm(form) {
  // A named preset goes along: what the form does not show (rungs, held-out tasks, baselines, resources)
  // comes from it, and the fields the form shows override it.
  const cfg = form.preset.value === "default" ? {} : { preset: form.preset.value };
  for (const name of ["name", "strategy"]) cfg[name] = form[name].value;
  for (const name of ["budget", "population_size", "tournament_size", "in_flight", "seed"]) {
    if (form[name].value !== "") cfg[name] = Number(form[name].value);
  }
  // Empty is no cap, even over a preset that has one: the form launches what it shows.
  cfg.max_core_hours = form.max_core_hours.value === "" ? null : Number(form.max_core_hours.value);
  cfg.breed_after = form.breed_after.value === "" ? null : Number(form.breed_after.value);
  cfg.batch_independent = form.batch_independent.checked;
  cfg.seed_with_zoo = [...form.querySelectorAll('input[name="seed_with_zoo"]:checked')].map((c) => c.value);
  cfg.tasks = [...form.querySelectorAll(".task-row")].map((row) => {
    const t = { backbone: row.querySelector('[name="t_backbone"]').value, task: row.querySelector('[name="t_task"]').value };
    const steps = row.querySelector('[name="t_steps"]').value;
    if (steps !== "") t.steps = Number(steps);
    const micro = row.querySelector('[name="t_micro_batch"]').value;
    if (micro !== "") t.micro_batch = Number(micro);
    const floor = row.querySelector('[name="t_min_steps_frac"]').value;
    if (floor !== "") t.min_steps_frac = Number(floor);
    return t;
  });
  if (form.extra.value.trim()) Object.assign(cfg, JSON.parse(form.extra.value));
  return cfg;
}

async function launch(form, options) {
  const errors = $("#launch-errors");
  form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
  errors.textContent = "";
  let cfg;
  try { cfg = readForm(form); } catch (e) {
    form.extra.classList.add("invalid");
    errors.textContent = `extra: not valid JSON (${e.message})`;
    return;
  }
  const button = $("#launch-button");
  button.disabled = true;
  try {
    const search = await api("/api/searches", { method: "POST", json: cfg });
    toast(`search ${search.id} launched`);
    location.hash = `#/search/${search.id}`;
  } catch (err) {
    errors.textContent = errorText(err);
    if (err instanceof ApiError && Array.isArray(err.body?.detail)) {
      for (const d of err.body.detail) {
        const path = String(d.field || "").split(/[.[\]]+/);
        const el = form.querySelector(`[data-field="${CSS.escape(path[0])}"]`);
        if (el) el.classList.add("invalid");
        if (path[0] === "tasks" && path.length > 2) {   // tasks.0.micro_batch: that row's input too
          const row = form.querySelectorAll(".task-row")[Number(path[1])];
          const input = row?.querySelector(`[name="t_${CSS.escape(path[2])}"]`);
          if (input) input.classList.add("invalid");
        }
      }
    }
  } finally {
    button.disabled = false;
  }
}

// -- one search --------------------------------------------------------------------------------

async function renderSearch(id) {
  const table = { sort: "id", order: "desc", offset: 0, limit: 50, status: "", stage: "" };
  const pageQuery = () => {
    const params = new URLSearchParams({ sort: table.sort, order: table.order, limit: table.limit, offset: table.offset });
    if (table.status) params.append("status", table.status);
    if (table.stage) params.set("rejection_stage", table.stage);
    return params;
  };
  // Everything the first view needs, asked for at once: the search, its front, the first page of its
  // candidates (50 rows: the table pages, it never holds all of them) and its faults.
  const quiet = (promise) => { promise.catch(() => {}); return promise; };   // awaited below
  const firstFront = quiet(api(`/api/searches/${id}/front`));
  const firstPage = quiet(api(`/api/searches/${id}/candidates?${pageQuery()}`));
  const firstFaults = quiet(api(`/api/searches/${id}/faults`));
  const s = await api(`/api/searches/${id}`);
  const names = s.objectives;
  const axes = { x: 0, y: Math.min(1, names.length - 1) };
  const axisOptions = (sel) => names.map((n, i) => `<option value="${i}" ${i === sel ? "selected" : ""}>${esc(n)}</option>`).join("");
  view().innerHTML = `
    <div class="page-head">
      <div><h1 id="search-title"></h1><div class="muted" id="search-sub"></div></div>
      <span class="spacer"></span><div class="actions" id="search-actions"></div>
    </div>
    <div class="stats" id="stats"></div>
    <div class="grid two">
      <section class="panel">
        <div class="panel-head"><h2>Pareto front</h2><span class="spacer"></span>
          <label>x<select id="axis-x">${axisOptions(axes.x)}</select></label>
          <label>y<select id="axis-y">${axisOptions(axes.y)}</select></label></div>
        <div id="front-plot" class="plot" data-points="0"></div>
        <div class="muted">Points: non-dominated candidates (click one to open it). Stars: zoo layers seeded into this search, trained with the same recipe.</div>
      </section>
      <div class="grid">
        <section class="panel"><h2>Hypervolume</h2><div id="hv-plot" class="plot small"></div></section>
        <section class="panel"><h2>Candidates by status</h2><div class="bars" id="status-bars"></div>
          <h2 style="margin-top:12px">Rejected by stage</h2><div class="bars" id="stage-bars"></div>
          <h2 style="margin-top:12px">Faults</h2><ul class="faults" id="faults"><li class="muted">none</li></ul></section>
      </div>
    </div>
    <section class="panel" style="margin-top:16px">
      <div class="panel-head"><h2>Candidates</h2><span class="spacer"></span>
        <div class="filters">
          <label>status<select id="f-status"><option value="">any</option><option>pending</option><option>evaluating</option><option>evaluated</option><option>rejected</option></select></label>
          <label>rejection stage<select id="f-stage"><option value="">any</option></select></label>
        </div></div>
      <div class="table-wrap"><table id="candidates"><thead></thead><tbody></tbody></table></div>
      <div class="pager"><span class="muted" id="page-info"></span>
        <button id="prev">‹ prev</button><button id="next">next ›</button></div>
    </section>`;

  let front = null;
  let detail = s;
  let rendered = { front: false, table: false };
  const markRendered = (what) => {
    if (!rendered[what]) performance.mark(`evonorm:${what}`);
    rendered[what] = true;
    if (rendered.front && rendered.table && window.__evonorm.firstRender === null) {
      window.__evonorm.firstRender = performance.now();
      document.body.dataset.view = "search";
    }
    window.__evonorm.renders += 1;
  };

  const renderHead = () => {
    $("#search-title").innerHTML = `${esc(detail.name)} <span class="muted">#${detail.id}</span> ${badge(detail.status)}`;
    $("#search-sub").textContent = `${detail.strategy}, budget ${detail.budget} · objectives: ${names.join(", ")}` +
      (detail.error ? ` · error: ${detail.error}` : "");
    $("#search-actions").innerHTML = controls(detail);
    bindControls($("#search-actions"), refreshAll);
    const c = detail.counts;
    const finished = c.evaluated + c.rejected;
    const stats = [
      [`${finished} / ${detail.budget}`, "finished / budget"], [c.evaluated, "evaluated"], [c.rejected, "rejected"],
      [c.evaluating, "evaluating"], [c.pending, "pending"],
      [front ? front.members.length : "–", "on the front"], [front ? fmt(front.hypervolume, 4) : "–", "hypervolume"],
    ];
    $("#stats").innerHTML = stats.map(([v, l]) => `<div class="stat"><b>${esc(v)}</b><span>${esc(l)}</span></div>`).join("");
    const total = Math.max(1, detail.num_candidates);
    $("#status-bars").innerHTML = ["pending", "evaluating", "evaluated", "rejected"].map((k) =>
      `<div class="bar-row"><span>${k}</span><div class="bar ${k}"><i style="width:${(100 * c[k]) / total}%"></i></div><span class="num">${c[k]}</span></div>`).join("");
    const stages = Object.entries(detail.rejected_by_stage);
    const rej = Math.max(1, c.rejected);
    $("#stage-bars").innerHTML = stages.length ? stages.map(([k, v]) =>
      `<div class="bar-row"><span>${esc(k)}</span><div class="bar rejected"><i style="width:${(100 * v) / rej}%"></i></div><span class="num">${v}</span></div>`).join("")
      : `<span class="muted">none yet</span>`;
    const stageSel = $("#f-stage");
    const current = stageSel.value;
    stageSel.innerHTML = `<option value="">any</option>` + stages.map(([k]) => `<option ${k === current ? "selected" : ""}>${esc(k)}</option>`).join("");
  };

  // a member's (or baseline's) estimate of objective i: its standard error (0 when n < 2) and a text
  const stderr = (m, i) => (m.estimates && m.estimates[i] && m.estimates[i].stderr) || 0;
  const estText = (m, i) => {
    const e = m.estimates && m.estimates[i];
    if (!e) return fmt(m.objectives[i], 4);
    return `${fmt(e.mean, 4)}${e.stderr != null ? ` ± ${fmt(e.stderr, 4)}` : ""} (n ${e.n})`;
  };
  const axisTitle = (i) => `${names[i]} ${front.maximise[i] ? "↑" : "↓ (lower is better)"}`;
  const renderFront = () => {
    const xi = axes.x, yi = axes.y;
    const members = front.members;
    const pts = members.map((m) => ({ x: m.objectives[xi], y: m.objectives[yi], m }));
    // The 2-D front of the chosen pair, as a staircase (a minimised objective counts backwards).
    const sx = front.maximise[xi] ? 1 : -1, sy = front.maximise[yi] ? 1 : -1;
    const sorted = [...pts].sort((a, b) => sx * (b.x - a.x) || sy * (b.y - a.y));
    const stairs = [];
    let best = -Infinity;
    for (const p of sorted) if (sy * p.y > best) { stairs.push(p); best = sy * p.y; }
    const open = (id) => { location.hash = `#/candidate/${id}`; };
    const base = front.baselines.filter((b) => b.objectives);
    const el = $("#front-plot");
    const empty = !pts.length && !base.length;
    el.dataset.empty = empty ? "1" : "";
    drawPlot(el, {
      // nothing evaluated yet: say so instead of drawing axes around nothing
      empty: empty ? "No evaluated candidates yet: the front appears as they finish." : null,
      xTitle: axisTitle(xi), yTitle: axisTitle(yi), onClick: open,
      traces: [
        { name: "2-D front", cls: "stairs", mode: "stairs", color: "#93c5fd", points: stairs.map((p) => ({ x: p.x, y: p.y })) },
        { name: "front (◆ verified)", cls: "front", mode: "markers", color: "#93c5fd", legend: true,
          // error bars: the standard error of each mean over the seeds of the member's highest rung
          points: pts.map((p) => ({ x: p.x, y: p.y, ex: stderr(p.m, xi), ey: stderr(p.m, yi), id: p.m.id, size: 11,
            symbol: p.m.verified ? "diamond" : "circle", color: p.m.verified ? "#1d4ed8" : "#93c5fd",
            hover: `#${p.m.id} ${p.m.formula}\n${p.m.verified ? "verified" : `provisional (rung ${p.m.rung})`}` +
              `\n${names[xi]} ${estText(p.m, xi)}\n${names[yi]} ${estText(p.m, yi)}` })) },
        // zoo stars are hollow: a front member at a baseline's point (BN-ReLU as seed and member) shows through
        { name: "zoo baselines", cls: "baselines", mode: "markers", color: "#d97706", labelColor: "#b45309", legend: base.length > 0,
          points: base.map((b) => ({ x: b.objectives[xi], y: b.objectives[yi], ex: stderr(b, xi), ey: stderr(b, yi),
            id: b.candidate_id, label: b.name, symbol: "star", size: 17, hollow: true, stroke: "#b45309",
            hover: `zoo ${b.name} (baseline, same seeds)\n${names[xi]} ${estText(b, xi)}\n${names[yi]} ${estText(b, yi)}` })) },
      ],
    });
    observePlot(el);
    el.dataset.points = String(pts.length);
    el.dataset.verified = String(pts.filter((p) => p.m.verified).length);
    el.dataset.errorbars = String(pts.filter((p) => stderr(p.m, xi) > 0 || stderr(p.m, yi) > 0).length);
    // the history's (0, 0) start is no measurement: drawn, it is a stray line at x = 0
    const hv = front.hypervolume_history.filter((h) => h.finished > 0);
    const hvEl = $("#hv-plot");
    drawPlot(hvEl, {
      empty: hv.length ? null : "No hypervolume yet.", xTitle: "candidates finished", yTitle: "hypervolume",
      xFromZero: true, yFromZero: true,
      traces: [{ name: "hypervolume", cls: "hv", mode: "stairs+markers", color: "#16a34a",
        points: hv.map((h) => ({ x: h.finished, y: h.hypervolume, size: 5, hover: `${fmt(h.hypervolume, 4)} after ${h.finished} candidates` })) }],
    });
    observePlot(hvEl);
    markRendered("front");
  };

  const sortable = { id: "id", generation: "generation", updated_at: "updated" };
  const renderTable = async (prefetched = null) => {
    const page = await (prefetched || api(`/api/searches/${id}/candidates?${pageQuery()}`));
    const head = [["id", "id"], ["status", null], ["formula", null], ...names.map((n) => [n, null]),
      ["rejected at", null], ["generation", "generation"], ["origin", null], ["updated", "updated_at"]];
    $("#candidates thead").innerHTML = "<tr>" + head.map(([label, key]) => {
      const cls = key ? `sortable ${table.sort === key ? "sorted" : ""}` : "";
      const arrow = key && table.sort === key ? (table.order === "asc" ? " ▲" : " ▼") : "";
      return `<th class="${cls}" ${key ? `data-sort="${key}"` : ""}>${esc(label)}${arrow}</th>`;
    }).join("") + "</tr>";
    $("#candidates tbody").innerHTML = page.items.map((c) => `<tr class="clickable" data-id="${c.id}">
      <td>${c.id}</td><td>${badge(c.status)}</td><td class="formula" title="${esc(c.formula)}">${esc(c.formula)}</td>
      ${names.map((_, i) => `<td class="num">${c.objectives ? fmt(c.objectives[i]) : ""}</td>`).join("")}
      <td class="clip reason" title="${esc(c.rejection_reason || "")}">${c.rejection_stage ? `<b>${esc(c.rejection_stage)}</b> ${esc(c.rejection_reason || "")}` : ""}</td><td class="num">${c.generation}</td>
      <td class="muted clip" title="${esc(c.mutation || "")}">${esc(c.reused_from ? `dup of #${c.reused_from}` : c.mutation || "")}</td>
      <td class="muted nowrap" title="${esc(when(c.updated_at))}">${short(c.updated_at)}</td></tr>`).join("") ||
      `<tr><td colspan="${head.length}" class="muted">No candidates match.</td></tr>`;
    $("#candidates tbody").querySelectorAll("tr.clickable").forEach((tr) =>
      tr.addEventListener("click", () => { location.hash = `#/candidate/${tr.dataset.id}`; }));
    $("#candidates thead").querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
      const key = th.dataset.sort;
      if (table.sort === key) table.order = table.order === "asc" ? "desc" : "asc";
      else { table.sort = key; table.order = "desc"; }
      table.offset = 0;
      renderTable();
    }));
    const total = page.total ?? 0;
    const pages = Math.max(1, Math.ceil(total / table.limit));
    $("#page-info").textContent = `${total.toLocaleString()} candidates · page ${Math.floor(table.offset / table.limit) + 1} of ${pages.toLocaleString()}`;
    $("#prev").disabled = table.offset === 0;
    $("#next").disabled = table.offset + table.limit >= total;
    markRendered("table");
  };
  $("#prev").addEventListener("click", () => { table.offset = Math.max(0, table.offset - table.limit); renderTable(); });
  $("#next").addEventListener("click", () => { table.offset += table.limit; renderTable(); });
  $("#f-status").addEventListener("change", (e) => { table.status = e.target.value; table.offset = 0; renderTable(); });
  $("#f-stage").addEventListener("change", (e) => { table.stage = e.target.value; table.offset = 0; renderTable(); });
  $("#axis-x").addEventListener("change", (e) => { axes.x = Number(e.target.value); renderFront(); });
  $("#axis-y").addEventListener("change", (e) => { axes.y = Number(e.target.value); renderFront(); });

  async function refreshAll() {
    [detail, front] = await Promise.all([api(`/api/searches/${id}`), api(`/api/searches/${id}/front`)]);
    renderHead();
    renderFront();
    await renderTable();
  }

  const renderFaults = async (prefetched = null) => {
    const faults = await (prefetched || api(`/api/searches/${id}/faults`));
    $("#faults").innerHTML = faults.length ? faults.map((e) =>
      `<li data-kind="${esc(e.kind)}"><span class="muted nowrap">${short(e.created_at)}</span> ${esc(faultText(e))}</li>`).join("")
      : `<li class="muted">none</li>`;
  };

  front = await firstFront;
  renderHead();
  renderFront();
  await renderTable(firstPage);
  await renderFaults(firstFaults);
  const live = throttle(refreshAll, 1000);
  const faultsLive = throttle(renderFaults, 1000);
  follow({ search_id: id, after: front.last_event_id }, (e) => {
    live();
    if (FAULT_KINDS.includes(e.type)) faultsLive();
  });
}

// -- one candidate ---------------------------------------------------------------------------------

async function renderCandidate(id) {
  const c = await api(`/api/candidates/${id}`);
  const names = c.objective_names;
  const base = c.baselines;
  const scoreRows = names.map((n, i) => {
    const mine = c.objectives ? c.objectives[i] : null;
    const cells = [mine, ...base.map((b) => (b.objectives ? b.objectives[i] : null))];
    const max = Math.max(1e-9, ...cells.filter((v) => v !== null));
    // the mean, then ± its standard error and the seeds it is over (docs/funnel.md)
    const spread = (est) => (est && est[i] ? `<span class="muted small">${est[i].stderr != null ? ` ± ${fmt(est[i].stderr, 4)}` : ""} (n ${est[i].n})</span>` : "");
    const cell = (v, cls, est) => v === null ? `<td class="muted">–</td>` :
      `<td><div class="score-cell"><div class="score-bar ${cls}" style="width:${Math.round((70 * v) / max)}px"></div>${fmt(v, 4)}${spread(est)}</div></td>`;
    return `<tr><td>${esc(n)}</td>${cell(mine, "", c.estimates)}${base.map((b) => cell(b.objectives ? b.objectives[i] : null, "base", b.estimates)).join("")}</tr>`;
  }).join("");
  const evals = c.evaluations.map((e) => `<tr><td>${esc(e.objective)}</td><td class="num">${esc(e.rung ?? "")}</td>
    <td class="num">${esc(e.seed ?? "")}</td><td class="num">${fmt(e.metrics.accuracy, 4)}</td>
    <td class="num">${fmt(e.metrics.loss, 4)}</td><td class="num">${esc(e.metrics.steps ?? "")}</td>
    <td class="num">${fmt(e.wall_s, 1)}</td><td class="muted">${esc(e.worker || "")}</td></tr>`).join("");
  const lineage = c.lineage.map((p) => `<tr class="clickable" data-id="${p.id}"><td>#${p.id}</td><td>${badge(p.status)}</td>
    <td class="formula" title="${esc(p.formula)}">${esc(p.formula)}</td><td class="muted clip" title="${esc(p.mutation || "")}">${esc(p.mutation || "")}</td>
    <td class="num">${p.objectives ? p.objectives.map((v) => fmt(v)).join(" / ") : ""}</td></tr>`).join("");
  const dl = (fmtName, label) => `<a class="button ${fmtName === "py" ? "primary" : ""}" data-format="${fmtName}"
    href="/api/candidates/${c.id}/module?format=${fmtName}" download>${label}</a>`;
  view().innerHTML = `
    <div class="page-head"><div>
      <h1>Candidate #${c.id} ${badge(c.status)}</h1>
      <div class="muted">search <a href="#/search/${c.search_id}">${esc(c.search_name)} #${c.search_id}</a> · generation ${c.generation}
        · ${esc(c.mutation || "")}${c.reused_from ? ` · functional duplicate of <a href="#/candidate/${c.reused_from}">#${c.reused_from}</a>` : ""}</div>
    </div><span class="spacer"></span>
    <div class="actions" id="downloads">
      <label>layout<select id="dl-layout"><option value="nchw">nchw (images)</option><option value="tokens">tokens (B, T, C)</option></select></label>
      <label title="num_features of the TorchScript and torch.export files (a .py takes it as its argument)">channels<input id="dl-channels" type="number" min="1" max="4096" value="64" style="width:90px"></label>
      ${dl("py", "⬇ .py module")} ${dl("torchscript", "⬇ TorchScript .pt")} ${dl("export", "⬇ torch.export .pt2")}
    </div></div>
    <p class="muted small" id="dl-note">The <code>.py</code> and TorchScript files train and evaluate (<code>.train()</code> / <code>.eval()</code>). The <code>.pt2</code> is an inference program traced in eval mode for the chosen channels and layout: <code>.train()</code> on it raises; train with the <code>.py</code>.</p>
    <div class="formula-big" id="formula">y = ${esc(c.formula)}</div>
    <p class="muted">then a per-channel affine: out = y · weight + bias. Class <code id="class-name">${esc(c.class_name)}</code><code>(num_features)</code>, eps ${c.eps}${c.batch_dependent ? ", uses batch statistics" : ", batch-independent"}.</p>
    ${c.rejection_stage ? `<div class="panel" style="margin-bottom:16px"><b>Rejected at ${esc(c.rejection_stage)}</b><p class="errors">${esc(c.rejection_reason || "")}</p></div>` : ""}
    <div class="grid halves">
      <section class="panel"><h2>Graph</h2><div class="graph-svg" id="graph"></div></section>
      <section class="panel"><h2>Scores beside the zoo baselines</h2>
        <div class="table-wrap"><table id="scores"><thead><tr><th>objective</th><th>#${c.id}</th>${base.map((b) => `<th><a href="#/candidate/${b.candidate_id}">${esc(b.name)}</a></th>`).join("")}</tr></thead>
        <tbody>${scoreRows}</tbody></table></div>
        ${c.evaluations.length ? `<h2 style="margin-top:14px">Training${c.evaluations_from !== c.id ? ` (of #${c.evaluations_from})` : ""}</h2>
        <p class="muted small">${c.verified ? "Verified: the top rung, held-out tasks included, is done." : c.rung != null ? `Provisional: rung ${c.rung} of the funnel.` : ""}</p>
        <div class="table-wrap"><table><thead><tr><th>objective</th><th>rung</th><th>seed</th><th>accuracy</th><th>loss</th><th>steps</th><th>seconds</th><th>worker</th></tr></thead><tbody>${evals}</tbody></table></div>` : ""}
      </section>
    </div>
    <div class="grid halves" style="margin-top:16px">
      <section class="panel"><h2>Lineage</h2>${lineage ? `<div class="table-wrap" id="lineage"><table><thead><tr><th>id</th><th>status</th><th>formula</th><th>mutation</th><th>scores</th></tr></thead><tbody>${lineage}</tbody></table></div>` : `<p class="muted">No ancestors: ${esc(c.mutation || "a random graph")}.</p>`}</section>
      <section class="panel"><h2>Graph JSON</h2><pre class="json" id="graph-json">${esc(graphJson(c.graph))}</pre></section>
    </div>`;
  $("#graph").appendChild(drawGraph(c.graph));
  view().querySelectorAll("tr.clickable").forEach((tr) =>
    tr.addEventListener("click", () => { location.hash = `#/candidate/${tr.dataset.id}`; }));
  const relink = () => {
    const layout = $("#dl-layout").value;
    const channels = Math.max(1, Math.min(4096, Math.round(Number($("#dl-channels").value) || 64)));
    view().querySelectorAll("#downloads a[data-format]").forEach((a) => {
      a.href = `/api/candidates/${c.id}/module?format=${a.dataset.format}&layout=${layout}&num_features=${channels}`;
    });
  };
  $("#dl-layout").addEventListener("change", relink);
  $("#dl-channels").addEventListener("input", relink);
  document.body.dataset.view = "candidate";
}

const INPUTS = ["x", "0", "v0", "v1"];

function graphJson(graph) {
  const nodes = graph.nodes.map((n, k) => `    ${JSON.stringify(n)}${k < graph.nodes.length - 1 ? "," : ""}`);
  return `{\n  "schema": ${JSON.stringify(graph.schema)},\n  "nodes": [\n${nodes.join("\n")}\n  ]\n}`;
}

function drawGraph(graph) {
  const nodes = graph.nodes;
  const n = 4 + nodes.length;
  const out = n - 1;
  const inputsOf = (i) => (i < 4 ? [] : nodes[i - 4].inputs);
  const live = new Set();
  const stack = [out];
  while (stack.length) {
    const i = stack.pop();
    if (live.has(i)) continue;
    live.add(i);
    stack.push(...inputsOf(i));
  }
  const depth = [];
  for (let i = 0; i < n; i++) depth[i] = i < 4 ? 0 : 1 + Math.max(...inputsOf(i).map((j) => depth[j]));
  const columns = [];
  for (let i = 0; i < n; i++) (columns[depth[i]] ||= []).push(i);
  const W = 112, H = 32, GX = 34, GY = 14;
  const pos = [];
  const tallest = Math.max(...columns.map((c) => c.length));
  columns.forEach((col, d) => col.forEach((i, k) => {
    const offset = ((tallest - col.length) * (H + GY)) / 2;
    pos[i] = { x: 10 + d * (W + GX), y: 10 + offset + k * (H + GY) };
  }));
  const width = 20 + columns.length * (W + GX) - GX;
  const height = 20 + tallest * (H + GY) - GY;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.style.maxWidth = "100%";
  svg.style.height = "auto";
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "layer graph");
  for (let i = 4; i < n; i++) {
    for (const j of inputsOf(i)) {
      const a = pos[j], b = pos[i];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      const path = document.createElementNS(ns, "path");
      path.setAttribute("d", `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`);
      path.setAttribute("class", "edge" + (live.has(i) ? "" : " dead"));
      svg.appendChild(path);
    }
  }
  for (let i = 0; i < n; i++) {
    const g = document.createElementNS(ns, "g");
    g.setAttribute("class", "node" + (i < 4 ? " input" : "") + (i === out ? " output" : "") + (live.has(i) ? "" : " dead"));
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", pos[i].x); rect.setAttribute("y", pos[i].y);
    rect.setAttribute("width", W); rect.setAttribute("height", H); rect.setAttribute("rx", 7);
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", pos[i].x + W / 2); text.setAttribute("y", pos[i].y + H / 2 + 4);
    text.setAttribute("text-anchor", "middle");
    text.textContent = i < 4 ? INPUTS[i] : `${i}: ${nodes[i - 4].op}`;
    const title = document.createElementNS(ns, "title");
    title.textContent = i < 4 ? `input ${INPUTS[i]}` : `node ${i}: ${nodes[i - 4].op}(${nodes[i - 4].inputs.join(", ")})`;
    g.append(rect, text, title);
    svg.appendChild(g);
  }
  return svg;
}

// -- zoo ---------------------------------------------------------------------------------------------

async function renderZoo() {
  const zoo = await api("/api/zoo");
  view().innerHTML = `<section class="panel"><h2>Layer zoo</h2><table><thead><tr><th>name</th><th>layer</th><th>formula</th><th>batch</th><th>source</th><th></th></tr></thead>
    <tbody>${zoo.map((z) => `<tr><td><code>${esc(z.name)}</code></td><td>${esc(z.title)}</td><td class="formula">${esc(z.formula)}</td>
    <td>${z.batch_dependent ? "yes" : ""}</td><td class="muted">${esc(z.source)}</td>
    <td>${z.graph ? `<button data-zoo="${esc(z.name)}">⬇ .py</button>` : `<span class="muted">hand-written</span>`}</td></tr>`).join("")}</tbody></table></section>`;
  view().querySelectorAll("button[data-zoo]").forEach((b) => b.addEventListener("click", async () => {
    const layer = zoo.find((z) => z.name === b.dataset.zoo);
    const token = localStorage.getItem("evonorm.token");
    const response = await fetch("/api/graphs/module", {
      method: "POST", headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ graph: layer.graph, format: "py", name: layer.name, eps: layer.eps }),
    });
    if (!response.ok) { toast(`download failed: HTTP ${response.status}`, true); return; }
    const url = URL.createObjectURL(await response.blob());
    const a = Object.assign(document.createElement("a"), { href: url, download: `${layer.name}.py` });
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }));
  document.body.dataset.view = "zoo";
}

// -- boot --------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const token = document.getElementById("token");
  token.value = localStorage.getItem("evonorm.token") || "";
  token.addEventListener("change", () => {
    if (token.value) localStorage.setItem("evonorm.token", token.value);
    else localStorage.removeItem("evonorm.token");
    toast(token.value ? "token saved in this browser" : "token cleared");
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("click", (e) => {
    const popover = document.querySelector("details.token");
    if (popover.open && !popover.contains(e.target)) popover.open = false;
  });
  route();
});
