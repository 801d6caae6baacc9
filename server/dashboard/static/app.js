// mfms-bo dashboard. Every value from the server is written with textContent (never
// innerHTML) and every label given to Plotly is entity-escaped, so names are shown, not run.
// The admin token for the study controls lives in this tab only (sessionStorage), never in
// localStorage: closing the tab forgets it.
"use strict";

const REFRESH_MS = 5000;
const ADMIN_KEY = "mfmsAdminToken";
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function token() { return window.localStorage.getItem("mfmsToken") || ""; }

async function getJSON(url, started) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const r = await (started || fetch(url, { headers }));
  if (r.status === 401) { showAuth(); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

function showAuth() {
  const box = document.getElementById("auth");
  box.hidden = false;
  document.getElementById("token-save").onclick = () => {
    window.localStorage.setItem("mfmsToken", document.getElementById("token").value);
    window.location.reload();
  };
}

function setStatus(text) { document.getElementById("status").textContent = text; }

function esc(s) {  // for Plotly labels, which interpret a few HTML-like tags
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fmt(x, digits) {
  if (x === null || x === undefined) return "";
  if (typeof x !== "number") return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(digits || 3);
  return x.toFixed(digits === undefined ? 4 : digits);
}

// Sizes and step counts with an SI suffix: 20000000 -> "20M", 4000 -> "4k", 500 -> "500".
function fmtSI(m) {
  if (m >= 1e9) return (m / 1e9).toFixed(3).replace(/\.?0+$/, "") + "B";
  if (m >= 1e6) return (m / 1e6).toFixed(3).replace(/\.?0+$/, "") + "M";
  if (m >= 1e3) return (m / 1e3).toFixed(3).replace(/\.?0+$/, "") + "k";
  return String(m);
}

function fmtTime(s) { return s ? s.replace("T", " ").slice(0, 19) : ""; }

function mixText(mix) {
  return Object.entries(mix).map(([d, w]) => d + " " + w.toFixed(3)).join(", ");
}

const LAYOUT = { margin: { l: 55, r: 15, t: 10, b: 45 }, hovermode: "closest",
                 legend: { orientation: "h", y: -0.25 } };
const CONFIG = { displaylogo: false, responsive: true };

function plot(id, traces, layout) {
  Plotly.react(id, traces, Object.assign({}, LAYOUT, layout || {}), CONFIG);
}

// A log axis with ticks where they can be read: at the values plotted (when there are a
// few, e.g. a model-size ladder) and at the powers of ten, labelled "20M", "1k", never
// Plotly's default "2 3 ... 100M 2 3" minor digits.
function logAxis(values, title) {
  const v = values.filter((x) => x > 0);
  if (!v.length) return { type: "log", title: { text: title } };
  const lo = Math.min(...v), hi = Math.max(...v);
  const pad = lo === hi ? 0.5 : 0.15;
  const range = [Math.log10(lo) - pad, Math.log10(hi) + pad];
  const distinct = [...new Set(v)].sort((a, b) => a - b);
  const ticks = distinct.length <= 8 ? distinct.slice() : [];
  const mults = distinct.length > 8 && range[1] - range[0] < 1.5 ? [1, 2, 5] : [1];
  for (let e = Math.floor(range[0]); e <= Math.ceil(range[1]); e++) {
    for (const k of mults) {
      const t = k * Math.pow(10, e);
      if (!ticks.some((x) => Math.abs(Math.log10(x / t)) < 0.12)) ticks.push(t);
    }
  }
  ticks.sort((a, b) => a - b);
  return { type: "log", range, tickvals: ticks, ticktext: ticks.map(fmtSI),
           title: { text: title } };
}

// Rows sorted by ``value(row, key)`` in direction ``dir``; missing values last either way.
function sortedRows(rows, value, key, dir) {
  return [...rows].sort((a, b) => {
    const x = value(a, key), y = value(b, key);
    const nx = x === null || x === undefined, ny = y === null || y === undefined;
    if (nx || ny) return nx === ny ? 0 : nx ? 1 : -1;
    return (x < y ? -1 : x > y ? 1 : 0) * dir;
  });
}

// -- studies list ---------------------------------------------------------------------

let indexKey = "id", indexDir = 1, lastStudies = [];

function indexValue(s, key) {
  const c = s.counts, b = s.budget || {};
  switch (key) {
    case "done": return c.completed || 0;
    case "running": return c.running || 0;
    case "queued": return c.queued || 0;
    case "failed": return (c.failed || 0) + (c.abandoned || 0);
    case "budget": return b.cost || b.trials || null;
    case "target": return s.target ? s.target.model_size : null;
    case "best": return s.best ? s.best.predicted_objective : null;
    default: return s[key];
  }
}

function bestText(best) {
  if (!best) return "-";
  let text = fmt(best.predicted_objective);
  if (best.interval) text += " (" + fmt(best.interval[0]) + " to " + fmt(best.interval[1]) + ")";
  return text;
}

async function renderIndex() {
  const data = await getJSON("/dashboard/studies");
  lastStudies = data.studies;
  drawIndex();
  setStatus("updated " + new Date().toLocaleTimeString());
}

function drawIndex() {
  const body = document.querySelector("#studies tbody");
  body.replaceChildren();
  document.getElementById("empty").hidden = lastStudies.length > 0;
  for (const s of sortedRows(lastStudies, indexValue, indexKey, indexDir)) {
    const tr = document.createElement("tr");
    cell(tr, s.id);
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/ui/studies/" + encodeURIComponent(s.id);
    a.textContent = s.name;
    name.appendChild(a);
    tr.appendChild(name);
    tr.dataset.studyId = String(s.id);
    cell(tr, s.state, "state-" + s.state);
    cell(tr, s.strategy);
    cell(tr, s.counts.completed || 0);
    cell(tr, s.counts.running || 0);
    cell(tr, s.counts.queued || 0);
    cell(tr, (s.counts.failed || 0) + (s.counts.abandoned || 0));
    cell(tr, fmt(s.cost_spent, 2));
    const b = s.budget || {};
    cell(tr, [b.cost ? "cost " + fmt(b.cost, 2) : "", b.trials ? b.trials + " trials" : ""]
      .filter(Boolean).join(", ") || "none");
    cell(tr, s.target ? fmtSI(s.target.model_size) + " x " + fmtSI(s.target.steps) : "-");
    const best = cell(tr, bestText(s.best), "best");
    if (s.best) best.title = "recommendation fitted on " + s.best.trials_used + " trials";
    tr.onclick = () => { window.location.href = a.href; };
    body.appendChild(tr);
  }
}

// -- one study ------------------------------------------------------------------------

let sortKey = "id", sortDir = 1, selectedTrial = null, lastData = null, tablePage = 0;
const TABLE_PAGE = 100;  // rows drawn at a time: a 10,000-trial table is 100 pages
const MENU_TRIALS = 200;  // newest trials offered in the per-domain menu
const SURROGATE_KEYS = ["recommendation", "uniform_prediction", "slices", "progress"];
let surrogateAt = -Infinity, surrogateTook = 0;  // when it was last asked for, and how long
// Trials with their measurements, fetched (GET /trials/{id}) when one is drawn alone and
// the page got only summaries (a large study); kept while their measurement count holds.
const details = new Map();
// When the page first had its panels drawn (ms since navigation): the browser tests and
// bench/README.md read these.
window.mfmsTimings = window.mfmsTimings || {};

function sizeColors(trials) {
  const sizes = [...new Set(trials.map((t) => t.model_size))].sort((a, b) => a - b);
  const colors = {};
  sizes.forEach((m, i) => { colors[m] = PALETTE[i % PALETTE.length]; });
  return colors;
}

function drawMixture(d) {
  const doms = d.domains.map(esc);
  const traces = [{ type: "bar", name: "uniform (stratified)", x: doms,
                    y: d.domains.map((k) => d.uniform[k]), marker: { color: "#98a2b3" } }];
  const text = document.getElementById("rec-text");
  if (d.recommendation) {
    const r = d.recommendation;
    traces.push({ type: "bar", name: "recommended", x: doms,
                  y: d.domains.map((k) => r.mixture[k]), marker: { color: "#175cd3" } });
    let line = "Recommended: predicted objective " + fmt(r.predicted_objective);
    if (r.interval) line += " (90% interval " + fmt(r.interval[0]) + " to " + fmt(r.interval[1]) + ")";
    if (d.uniform_prediction) {
      const u = d.uniform_prediction;
      line += "; uniform: " + fmt(u.predicted_objective) + " (" + fmt(u.interval[0]) + " to " +
        fmt(u.interval[1]) + ")";
    }
    text.textContent = line + ", at model size " + fmtSI(r.model_size) + ", " + r.steps + " steps.";
  } else if (!("recommendation" in d)) {
    text.textContent = "Fitting the surrogate\u2026";
  } else {
    text.textContent = "No recommendation yet: no trial has reported losses.";
  }
  plot("plot-mixture", traces, { barmode: "group", yaxis: { title: { text: "weight" } } });
}

function drawProgress(d) {
  if (!d.progress) return;  // the surrogate's part has not arrived yet
  const pts = d.progress.filter((p) => p.best !== null);
  plot("plot-progress", [{ type: "scatter", mode: "lines+markers", line: { shape: "hv" },
    x: pts.map((p) => p.cost), y: pts.map((p) => p.best), name: "best so far",
    text: pts.map((p) => "trial " + p.trial_id) }],
  { xaxis: { title: { text: "cumulative cost" } },
    yaxis: { title: { text: "predicted target objective" } }, showlegend: false });
}

// One trace per model size, its trials' curves joined by gaps: a few traces however many
// trials (the server sends at most a few hundred curves, evenly spaced in creation order).
function drawCurves(d) {
  const colors = sizeColors(d.trials);
  const bySize = new Map();
  for (const c of d.curves.trials) {
    let tr = bySize.get(c.model_size);
    if (!tr) { tr = { x: [], y: [], text: [] }; bySize.set(c.model_size, tr); }
    if (tr.x.length) { tr.x.push(null); tr.y.push(null); tr.text.push(""); }
    for (let i = 0; i < c.step.length; i++) {
      tr.x.push(c.step[i]);
      tr.y.push(c.objective[i]);
      tr.text.push("trial " + c.id);
    }
  }
  const many = d.curves.trials.length > 100;
  const traces = [...bySize.entries()].sort((a, b) => a[0] - b[0]).map(([m, tr]) => ({
    type: "scatter", mode: "lines", x: tr.x, y: tr.y, text: tr.text, connectgaps: false,
    line: { color: colors[m], width: many ? 0.8 : 1.3 }, opacity: many ? 0.45 : 1,
    name: fmtSI(m), legendgroup: String(m) }));
  plot("plot-curves", traces, { xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "objective" } } });
  const note = document.getElementById("curves-note");
  note.hidden = d.curves.of <= d.curves.trials.length;
  note.textContent = note.hidden ? "" : d.curves.trials.length + " of " + d.curves.of +
    " trials' curves, evenly spaced in creation order.";
}

function statesText(states) {
  return Object.entries(states).map(([k, n]) => n + " " + k).join(", ");
}

// One marker per (model size, steps) with its trial count written on it: sixteen trials
// at one fidelity are one marker labelled 16, not sixteen dots drawn as one.
function drawFidelities(d) {
  const cells = d.spend.cells;
  const max = Math.max(1e-12, ...cells.map((c) => c.cost));
  const where = (c) => fmtSI(c.model_size) + " x " + fmtSI(c.steps) + " steps";
  const traces = [{ type: "scatter", mode: "markers+text", name: "trials",
    x: cells.map((c) => c.model_size), y: cells.map((c) => c.steps),
    text: cells.map((c) => String(c.trials)), textposition: "middle center",
    textfont: { color: "#fff", size: 11 }, hoverinfo: "text",
    hovertext: cells.map((c) => where(c) + ": " + c.trials + " trials (" + statesText(c.states) +
      "), cost " + fmt(c.cost, 3)),
    marker: { size: cells.map((c) => 20 + 22 * Math.sqrt(c.cost / max)), color: "#175cd3",
              opacity: 0.8 } },
  { type: "scatter", mode: "markers", name: "target", x: [d.target.model_size],
    y: [d.target.steps], hoverinfo: "text",
    hovertext: ["target: " + fmtSI(d.target.model_size) + " x " + fmtSI(d.target.steps) + " steps"],
    marker: { symbol: "star", size: 14, color: "#d92d20" } }];
  const xs = cells.map((c) => c.model_size).concat([d.target.model_size]);
  const ys = cells.map((c) => c.steps).concat([d.target.steps]);
  plot("plot-fidelities", traces, { xaxis: logAxis(xs, "model size (parameters)"),
    yaxis: logAxis(ys, "steps"), showlegend: false });
}

// Model sizes down, step counts across: each cell's cost and number of trials, shaded by
// cost, with row and column totals. ``data-cost`` holds the unrounded sums.
function drawSpend(d) {
  const sp = d.spend;
  const table = document.getElementById("spend");
  const [head, body, foot] = [table.tHead, table.tBodies[0], table.tFoot];
  head.replaceChildren(); body.replaceChildren(); foot.replaceChildren();
  const at = {};
  for (const c of sp.cells) at[c.model_size + "|" + c.steps] = c;
  const max = Math.max(1e-12, ...sp.cells.map((c) => c.cost));
  const sum = (cs) => ({ cost: cs.reduce((a, c) => a + c.cost, 0),
                         trials: cs.reduce((a, c) => a + c.trials, 0) });
  const put = (tr, agg, cls) => {
    const td = cell(tr, agg.trials ? fmt(agg.cost, 2) + " (" + agg.trials + ")" : "", cls);
    td.dataset.cost = String(agg.cost);
    td.dataset.trials = String(agg.trials);
    return td;
  };
  const hr = document.createElement("tr");
  cell(hr, "size \\ steps");
  for (const z of sp.steps) cell(hr, fmtSI(z));
  cell(hr, "total");
  head.appendChild(hr);
  for (const m of sp.model_sizes) {
    const tr = document.createElement("tr");
    cell(tr, fmtSI(m), "row-head");
    for (const z of sp.steps) {
      const c = at[m + "|" + z];
      const td = put(tr, c || { cost: 0, trials: 0 }, "spend-cell");
      td.dataset.modelSize = String(m);
      td.dataset.steps = String(z);
      if (c) {
        td.title = statesText(c.states);
        td.style.background = "rgba(23, 92, 211, " + (0.06 + 0.45 * c.cost / max).toFixed(3) + ")";
      }
    }
    put(tr, sum(sp.cells.filter((c) => c.model_size === m)), "row-total");
    body.appendChild(tr);
  }
  const fr = document.createElement("tr");
  cell(fr, "total", "row-head");
  for (const z of sp.steps) put(fr, sum(sp.cells.filter((c) => c.steps === z)), "col-total");
  put(fr, sum(sp.cells), "spend-total").id = "spend-total";
  foot.appendChild(fr);
}

// Small multiples: one panel per domain, all on the same objective scale so the panels
// compare; the dashed line is the recommended weight of that domain.
function drawSlices(d) {
  if (!d.slices) return;  // the surrogate's part has not arrived yet
  const box = document.getElementById("slices");
  const key = JSON.stringify(d.slices.map((s) => s.domain));
  if (box.dataset.key !== key) {
    for (const el of box.querySelectorAll(".plot-small")) Plotly.purge(el);
    box.replaceChildren();
    d.slices.forEach((s, i) => {
      const panel = document.createElement("div");
      panel.className = "slice-panel";
      const h = document.createElement("h3");
      h.textContent = s.domain;
      const div = document.createElement("div");
      div.className = "plot-small";
      div.id = "slice-" + i;
      panel.append(h, div);
      box.appendChild(panel);
    });
    if (!d.slices.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No surrogate yet: no trial has reported losses.";
      box.appendChild(p);
    }
    box.dataset.key = key;
  }
  if (!d.slices.length) return;
  const lo = Math.min(...d.slices.flatMap((s) => s.lo));
  const hi = Math.max(...d.slices.flatMap((s) => s.hi));
  const pad = 0.05 * (hi - lo || 1);
  d.slices.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const rec = d.recommendation ? d.recommendation.mixture[s.domain] : undefined;
    const traces = [
      { type: "scatter", mode: "lines", x: s.weight.concat([...s.weight].reverse()),
        y: s.hi.concat([...s.lo].reverse()), fill: "toself", fillcolor: c + "33",
        line: { width: 0 }, hoverinfo: "skip" },
      { type: "scatter", mode: "lines", x: s.weight, y: s.mean, name: esc(s.domain),
        line: { color: c } }];
    const layout = { margin: { l: 45, r: 8, t: 6, b: 35 }, showlegend: false,
      hovermode: "closest", xaxis: { title: { text: "weight" } },
      yaxis: { range: [lo - pad, hi + pad] } };
    if (rec !== undefined) {
      layout.shapes = [{ type: "line", x0: rec, x1: rec, yref: "paper", y0: 0, y1: 1,
                         line: { dash: "dash", color: "#475467", width: 1 } }];
    }
    Plotly.react("slice-" + i, traces, layout, CONFIG);
  });
}

// The chosen trial (a clicked row or the menu), else the newest one with losses.
function shownTrial(d) {
  const withLosses = d.trials.filter((t) => t.n_measurements > 0);
  return withLosses.find((t) => t.id === selectedTrial) || withLosses[withLosses.length - 1];
}

// The chosen trial if it mixed online, else the newest one that did.
function shownMixing(d) {
  const withProps = d.trials.filter((t) => t.has_proportions);
  return withProps.find((t) => t.id === selectedTrial) || withProps[withProps.length - 1];
}

// ``t`` with its measurements: as sent (a small study) or as fetched, if still current.
function detailOf(t) {
  if (t.measurements) return t;
  const got = details.get(t.id);
  return got && got.measurements.length === t.n_measurements ? got : undefined;
}

function lossDomains(d, ms) {
  const seen = new Set(d.domains);
  const extra = new Set();
  for (const m of ms) for (const k of Object.keys(m.losses)) if (!seen.has(k)) extra.add(k);
  return d.domains.concat([...extra].sort());
}

// The menu: the newest trials with losses (and the shown one), newest last.
function drawMenu(d, shown) {
  const withLosses = d.trials.filter((t) => t.n_measurements > 0);
  const offered = withLosses.slice(-MENU_TRIALS);
  if (shown && !offered.includes(shown)) offered.unshift(shown);
  const sel = document.getElementById("domain-trial");
  sel.replaceChildren(...offered.map((t) => {
    const o = document.createElement("option");
    o.value = String(t.id);
    o.textContent = t.id + " (" + fmtSI(t.model_size) + " x " + fmtSI(t.steps) + ", " +
      t.state + ")";
    return o;
  }));
  if (shown) sel.value = String(shown.id);
}

// Each domain's loss vs step for one trial, and the losses at its last reported step.
function drawDomainCurves(d, t) {
  document.getElementById("domain-empty").hidden = Boolean(t);
  const tbody = document.querySelector("#domain-final tbody");
  tbody.replaceChildren();
  if (!t) return;
  const ms = [...t.measurements].sort((a, b) => a.step - b.step);
  const doms = lossDomains(d, ms);
  const traces = doms.map((dom, i) => ({ type: "scatter", mode: "lines+markers", name: esc(dom),
    x: ms.map((m) => m.step), y: ms.map((m) => (dom in m.losses ? m.losses[dom] : null)),
    line: { color: PALETTE[i % PALETTE.length] } }));
  traces.push({ type: "scatter", mode: "lines", name: "objective", x: ms.map((m) => m.step),
    y: ms.map((m) => m.objective), line: { color: "#1d2433", dash: "dash", width: 1.5 } });
  plot("plot-domain-curves", traces, { xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "loss" } } });
  const last = ms[ms.length - 1];
  for (const dom of doms) {
    const tr = document.createElement("tr");
    cell(tr, dom, "domain");
    cell(tr, dom in last.losses ? fmt(last.losses[dom]) : "");
    tbody.appendChild(tr);
  }
}

function drawSelection(d) {
  const t = shownTrial(d);
  for (const tr of document.querySelectorAll("#trials tbody tr")) {
    tr.classList.toggle("selected", Boolean(t) && tr.dataset.trialId === String(t.id));
  }
}

function drawTrajectory(d, t) {
  const card = document.getElementById("trajectory-card");
  if (!t) { card.hidden = true; return; }
  card.hidden = false;
  document.getElementById("trajectory-trial").textContent = String(t.id);
  const ms = t.measurements.filter((m) => m.proportions);
  plot("plot-trajectory", d.domains.map((dom, i) => ({ type: "scatter", mode: "lines+markers",
    name: esc(dom), x: ms.map((m) => m.step), y: ms.map((m) => m.proportions[dom] || 0),
    line: { color: PALETTE[i % PALETTE.length] } })),
  { xaxis: { title: { text: "step" } }, yaxis: { title: { text: "proportion" } } });
}

function sortValue(t, key) {
  if (key === "mixture") return mixText(t.mixture);
  const v = t[key];
  return v === null || v === undefined ? (sortDir > 0 ? Infinity : -Infinity) : v;
}

function drawTable(d) {
  const body = document.querySelector("#trials tbody");
  const rows = [...d.trials].sort((a, b) => {
    const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
    return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
  });
  const pages = Math.max(1, Math.ceil(rows.length / TABLE_PAGE));
  tablePage = Math.min(Math.max(0, tablePage), pages - 1);
  const first = tablePage * TABLE_PAGE;
  const shown = rows.slice(first, first + TABLE_PAGE);
  document.getElementById("trial-pager").hidden = pages === 1;
  document.getElementById("page-info").textContent = "rows " + (first + 1) + "\u2013" +
    (first + shown.length) + " of " + rows.length;
  document.getElementById("page-prev").disabled = tablePage === 0;
  document.getElementById("page-next").disabled = tablePage === pages - 1;
  body.replaceChildren();
  for (const t of shown) {
    const tr = document.createElement("tr");
    tr.dataset.trialId = String(t.id);
    cell(tr, t.id);
    cell(tr, t.state, "state-" + t.state);
    cell(tr, mixText(t.mixture), "mix");
    cell(tr, fmtSI(t.model_size));
    cell(tr, t.steps);
    cell(tr, fmt(t.cost, 3));
    cell(tr, fmt(t.objective));
    cell(tr, t.worker_id);
    cell(tr, fmtTime(t.started_at));
    cell(tr, fmtTime(t.finished_at));
    const why = t.fail_reason || "";
    cell(tr, why.length > 80 ? why.slice(0, 79) + "\u2026" : why, "fail-reason").title = why;
    tr.onclick = () => { selectedTrial = t.id; drawChosen(lastData); };
    body.appendChild(tr);
  }
  document.getElementById("trial-count").textContent = "(" + d.trials.length + ")";
  drawSelection(d);
}

// The chosen trial's per-domain curves and mixing trajectory; a trial the page has only
// as a summary is fetched first (once: ``details`` keeps it).
function drawChosen(d) {
  const t = shownTrial(d), mixing = shownMixing(d);
  drawMenu(d, t);
  drawSelection(d);
  const missing = [t, mixing].filter((x) => x && !detailOf(x));
  if (!missing.length) {
    drawDomainCurves(d, t && detailOf(t));
    drawTrajectory(d, mixing && detailOf(mixing));
    return;
  }
  Promise.all(missing.map((x) => getJSON("/trials/" + encodeURIComponent(x.id))
    .then((full) => { details.set(x.id, full); })))
    .then(() => { if (lastData === d && missing.every((x) => detailOf(x))) drawChosen(d); })
    .catch((err) => setStatus(err.message));
}

// A strategy that failed is replaced by random proposals; say so until it succeeds again.
function drawProposalError(e) {
  const p = document.getElementById("proposal-error");
  p.hidden = !(e && e.message);
  p.textContent = p.hidden ? "" :
    "The strategy's latest proposal failed at " + fmtTime(e.at) + "; a random trial was " +
    "proposed instead (" + e.failures + " failed so far): " + e.message;
}

function drawPause(id, pause) {
  const p = document.getElementById("pause-reason");
  p.hidden = !(pause && pause.message);
  p.textContent = p.hidden ? "" :
    "Since " + fmtTime(pause.at) + ": " + pause.message + ". Resume with the button " +
    "below, `mfms study resume " + id + "` or POST /studies/" + id + "/resume.";
}

// -- study controls (admin token) -----------------------------------------------------

function adminToken() { return document.getElementById("admin-token").value.trim(); }

// An admin API call; a refusal throws the server's own reason (its JSON ``detail``).
async function adminCall(method, url, body) {
  const headers = {};
  const tok = adminToken();
  if (tok) headers.Authorization = "Bearer " + tok;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers,
                               body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    let detail = "";
    try {
      const j = await r.json();
      detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
    } catch (e) { detail = ""; }
    if (r.status === 401) window.sessionStorage.removeItem(ADMIN_KEY);
    throw new Error("HTTP " + r.status + (detail ? ": " + detail : ""));
  }
  if (tok) window.sessionStorage.setItem(ADMIN_KEY, tok);
  return r.json();
}

function controlMessage(text, isError) {
  const p = document.getElementById("ctl-message");
  p.hidden = false;
  p.className = isError ? "alert" : "ok";
  p.textContent = text;
}

function drawControls(s) {
  const live = s.state === "running" || s.state === "paused";
  document.getElementById("ctl-pause").disabled = s.state !== "running";
  document.getElementById("ctl-resume").disabled = s.state !== "paused";
  document.getElementById("ctl-stop").disabled = !live;
  const b = s.budget || {};
  for (const [id, v] of [["ctl-trials", b.trials], ["ctl-cost", b.cost]]) {
    const input = document.getElementById(id);
    if (!input.dataset.edited) input.value = v === null || v === undefined ? "" : String(v);
  }
}

function budgetValue(id, integer) {
  const raw = document.getElementById(id).value.trim();
  if (raw === "") return null;
  const v = Number(raw);
  return integer && Number.isInteger(v) ? v : integer ? raw : v;
}

function installControls(id, refresh) {
  const base = "/studies/" + encodeURIComponent(id);
  document.getElementById("admin-token").value = window.sessionStorage.getItem(ADMIN_KEY) || "";
  const buttons = ["ctl-pause", "ctl-resume", "ctl-stop", "ctl-budget"]
    .map((b) => document.getElementById(b));
  const run = async (what, method, url, body) => {
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const s = await adminCall(method, url, body);
      controlMessage(what + ": done; the study is " + s.state + ".", false);
      for (const i of ["ctl-trials", "ctl-cost"]) delete document.getElementById(i).dataset.edited;
    } catch (err) {
      controlMessage(what + " refused: " + err.message, true);
    } finally {
      document.getElementById("ctl-budget").disabled = false;
      await refresh();  // redraws the buttons for the state the server now reports
    }
  };
  document.getElementById("ctl-pause").onclick = () => run("Pause", "POST", base + "/pause");
  document.getElementById("ctl-resume").onclick = () => run("Resume", "POST", base + "/resume");
  document.getElementById("ctl-stop").onclick = () => {
    if (window.confirm("Stop this study? Its queued trials are cancelled; it cannot resume.")) {
      run("Stop", "POST", base + "/stop");
    }
  };
  document.getElementById("ctl-budget").onclick = () => run("Budget", "PATCH", base,
    { budget: { trials: budgetValue("ctl-trials", true), cost: budgetValue("ctl-cost", false) } });
  for (const i of ["ctl-trials", "ctl-cost"]) {
    document.getElementById(i).oninput = (e) => { e.target.dataset.edited = "1"; };
  }
}

// The overview (the database's part) is drawn as soon as it arrives; the surrogate's
// panels follow when its fit answers (on a large study the fit takes far longer).
async function renderStudy(id) {
  const base = "/studies/" + encodeURIComponent(id) + "/dashboard";
  // The first overview was asked for by study.html while Plotly loaded.
  const early = window.mfmsEarly;
  window.mfmsEarly = undefined;
  const d = await getJSON(base + "?part=overview", early);
  if (lastData) for (const k of SURROGATE_KEYS) if (k in lastData) d[k] = lastData[k];
  lastData = d;
  const s = d.study;
  document.getElementById("study-name").textContent = s.name;
  document.getElementById("study-state").textContent = s.state;
  document.title = s.name + " - mfms-bo";
  const b = s.budget || {};
  document.getElementById("study-summary").textContent =
    d.domains.length + " domains; target " + fmtSI(d.target.model_size) + " x " +
    d.target.steps + " steps; " + (s.counts.completed || 0) + " completed, " +
    (s.counts.running || 0) + " running, " + (s.counts.queued || 0) + " queued, " +
    ((s.counts.failed || 0) + (s.counts.abandoned || 0)) + " failed; cost " +
    fmt(s.cost_spent, 2) + (b.cost ? " of " + fmt(b.cost, 2) : "") +
    (b.trials ? "; budget " + b.trials + " trials" : "");
  drawPause(s.id, s.pause);
  drawProposalError(s.proposal_error);
  drawControls(s);
  drawMixture(d);
  drawProgress(d);
  drawCurves(d);
  drawFidelities(d);
  drawSpend(d);
  drawSlices(d);
  drawTable(d);
  drawChosen(d);
  if (window.mfmsTimings.overview === undefined) window.mfmsTimings.overview = performance.now();
  // The surrogate's part is asked for again no sooner than three times what it took last
  // time: on a large study each answer reads every trial, and a poll every 5 s would keep
  // the server busy with nothing else.
  if (performance.now() - surrogateAt >= 3 * surrogateTook) {
    setStatus("updated " + new Date().toLocaleTimeString() + "; fitting the surrogate\u2026");
    const t0 = performance.now();
    const sg = await getJSON(base + "?part=surrogate");
    surrogateAt = performance.now();
    surrogateTook = surrogateAt - t0;
    if (lastData === d) {
      Object.assign(d, sg);
      drawMixture(d);
      drawProgress(d);
      drawSlices(d);
    }
  }
  if (window.mfmsTimings.surrogate === undefined) window.mfmsTimings.surrogate = performance.now();
  setStatus("updated " + new Date().toLocaleTimeString());
  return s.state;
}

function installSorting() {
  for (const th of document.querySelectorAll("#trials th[data-key]")) {
    th.onclick = () => {
      const key = th.dataset.key;
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      tablePage = 0;
      if (lastData) drawTable(lastData);
    };
  }
  document.getElementById("page-prev").onclick = () => {
    tablePage -= 1;
    if (lastData) drawTable(lastData);
  };
  document.getElementById("page-next").onclick = () => {
    tablePage += 1;
    if (lastData) drawTable(lastData);
  };
  document.getElementById("domain-trial").onchange = (e) => {
    selectedTrial = Number(e.target.value);
    if (lastData) drawChosen(lastData);
  };
}

function installIndexSorting() {
  for (const th of document.querySelectorAll("#studies th[data-key]")) {
    th.onclick = () => {
      const key = th.dataset.key;
      indexDir = key === indexKey ? -indexDir : 1;
      indexKey = key;
      drawIndex();
    };
  }
}

async function main() {
  const page = document.body.dataset.page;
  let timer = null;
  // One pending refresh at most: a control calls tick() directly, which replaces the
  // scheduled one (and restarts refreshing when e.g. a raised budget reopens a study).
  const tick = async () => {
    clearTimeout(timer);
    try {
      const state = page === "study" ? await renderStudy(document.body.dataset.studyId)
        : (await renderIndex(), "running");
      // Live refresh while something can still change.
      clearTimeout(timer);
      if (state === "running" || state === "paused") timer = setTimeout(tick, REFRESH_MS);
    } catch (err) {
      if (err.message !== "unauthorized") setStatus(err.message);
    }
  };
  if (page === "study") {
    installSorting();
    installControls(document.body.dataset.studyId, tick);
  } else {
    installIndexSorting();
  }
  await tick();
}

main();
