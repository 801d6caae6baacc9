// mfms-bo dashboard. Every value from the server is written with textContent (never
// innerHTML) and every label given to Plotly is entity-escaped, so names are shown, not run.
"use strict";

const REFRESH_MS = 5000;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function token() { return window.localStorage.getItem("mfmsToken") || ""; }

async function getJSON(url) {
  const headers = token() ? { Authorization: "Bearer " + token() } : {};
  const r = await fetch(url, { headers });
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

function fmtSize(m) {
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

// -- studies list ---------------------------------------------------------------------

async function renderIndex() {
  const data = await getJSON("/studies");
  const body = document.querySelector("#studies tbody");
  body.replaceChildren();
  document.getElementById("empty").hidden = data.studies.length > 0;
  for (const s of data.studies) {
    const tr = document.createElement("tr");
    cell(tr, s.id);
    const name = document.createElement("td");
    const a = document.createElement("a");
    a.href = "/ui/studies/" + encodeURIComponent(s.id);
    a.textContent = s.name;
    name.appendChild(a);
    tr.appendChild(name);
    cell(tr, s.state, "state-" + s.state);
    cell(tr, (s.config.strategy || {}).name || "mfms-bo");
    cell(tr, s.counts.completed || 0);
    cell(tr, s.counts.running || 0);
    cell(tr, s.counts.queued || 0);
    cell(tr, (s.counts.failed || 0) + (s.counts.abandoned || 0));
    cell(tr, fmt(s.cost_spent, 2));
    const b = s.config.budget || {};
    cell(tr, [b.cost ? "cost " + fmt(b.cost, 2) : "", b.trials ? b.trials + " trials" : ""]
      .filter(Boolean).join(", ") || "none");
    tr.onclick = () => { window.location.href = a.href; };
    body.appendChild(tr);
  }
  setStatus("updated " + new Date().toLocaleTimeString());
}

// -- one study ------------------------------------------------------------------------

let sortKey = "id", sortDir = 1, selectedTrial = null, lastData = null;

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
    text.textContent = line + ", at model size " + fmtSize(r.model_size) + ", " + r.steps + " steps.";
  } else {
    text.textContent = "No recommendation yet: no trial has reported losses.";
  }
  plot("plot-mixture", traces, { barmode: "group", yaxis: { title: { text: "weight" } } });
}

function drawProgress(d) {
  const pts = d.progress.filter((p) => p.best !== null);
  plot("plot-progress", [{ type: "scatter", mode: "lines+markers", line: { shape: "hv" },
    x: pts.map((p) => p.cost), y: pts.map((p) => p.best), name: "best so far",
    text: pts.map((p) => "trial " + p.trial_id) }],
  { xaxis: { title: { text: "cumulative cost" } },
    yaxis: { title: { text: "predicted target objective" } }, showlegend: false });
}

function drawCurves(d) {
  const colors = sizeColors(d.trials);
  const seen = new Set();
  const traces = [];
  for (const t of d.trials) {
    const ms = t.measurements.filter((m) => m.objective !== null);
    if (!ms.length) continue;
    const first = !seen.has(t.model_size);
    seen.add(t.model_size);
    traces.push({ type: "scatter", mode: "lines", x: ms.map((m) => m.step),
      y: ms.map((m) => m.objective), line: { color: colors[t.model_size], width: 1.3 },
      name: fmtSize(t.model_size), legendgroup: String(t.model_size), showlegend: first,
      text: ms.map(() => "trial " + t.id) });
  }
  plot("plot-curves", traces, { xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "objective" } } });
}

function drawFidelities(d) {
  const done = d.trials.filter((t) => t.cost !== null);
  const max = Math.max(1e-12, ...done.map((t) => t.cost));
  plot("plot-fidelities", [{ type: "scatter", mode: "markers",
    x: done.map((t) => t.model_size), y: done.map((t) => t.steps),
    text: done.map((t) => "trial " + t.id + ", cost " + fmt(t.cost, 3)),
    marker: { size: done.map((t) => 6 + 24 * Math.sqrt(t.cost / max)), color: "#175cd3",
              opacity: 0.55 } }],
  { xaxis: { type: "log", title: { text: "model size (parameters)" } },
    yaxis: { type: "log", title: { text: "steps" } }, showlegend: false });
}

function drawSlices(d) {
  const traces = [];
  d.slices.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    traces.push({ type: "scatter", mode: "lines", x: s.weight.concat([...s.weight].reverse()),
      y: s.hi.concat([...s.lo].reverse()), fill: "toself", fillcolor: c + "22",
      line: { width: 0 }, hoverinfo: "skip", showlegend: false, legendgroup: esc(s.domain) });
    traces.push({ type: "scatter", mode: "lines", x: s.weight, y: s.mean, name: esc(s.domain),
      line: { color: c }, legendgroup: esc(s.domain) });
  });
  plot("plot-slices", traces, { xaxis: { title: { text: "weight of the domain" } },
    yaxis: { title: { text: "predicted target objective" } } });
}

function drawTrajectory(d) {
  const withProps = d.trials.filter((t) => t.measurements.some((m) => m.proportions));
  const card = document.getElementById("trajectory-card");
  if (!withProps.length) { card.hidden = true; return; }
  let t = withProps.find((x) => x.id === selectedTrial);
  if (!t) t = withProps[withProps.length - 1];
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
  body.replaceChildren();
  for (const t of rows) {
    const tr = document.createElement("tr");
    tr.dataset.trialId = String(t.id);
    cell(tr, t.id);
    cell(tr, t.state, "state-" + t.state);
    cell(tr, mixText(t.mixture), "mix");
    cell(tr, fmtSize(t.model_size));
    cell(tr, t.steps);
    cell(tr, fmt(t.cost, 3));
    cell(tr, fmt(t.objective));
    cell(tr, t.worker_id);
    cell(tr, fmtTime(t.started_at));
    cell(tr, fmtTime(t.finished_at));
    const why = t.fail_reason || "";
    cell(tr, why.length > 80 ? why.slice(0, 79) + "\u2026" : why, "fail-reason").title = why;
    tr.onclick = () => { selectedTrial = t.id; drawTrajectory(lastData); };
    body.appendChild(tr);
  }
  document.getElementById("trial-count").textContent = "(" + d.trials.length + ")";
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
    "Since " + fmtTime(pause.at) + ": " + pause.message + ". Resume with `mfms study " +
    "resume " + id + "` (or POST /studies/" + id + "/resume).";
}

async function renderStudy(id) {
  const d = await getJSON("/studies/" + encodeURIComponent(id) + "/dashboard");
  lastData = d;
  const s = d.study;
  document.getElementById("study-name").textContent = s.name;
  document.getElementById("study-state").textContent = s.state;
  document.title = s.name + " - mfms-bo";
  const b = s.budget || {};
  document.getElementById("study-summary").textContent =
    d.domains.length + " domains; target " + fmtSize(d.target.model_size) + " x " +
    d.target.steps + " steps; " + (s.counts.completed || 0) + " completed, " +
    (s.counts.running || 0) + " running, " + (s.counts.queued || 0) + " queued, " +
    ((s.counts.failed || 0) + (s.counts.abandoned || 0)) + " failed; cost " +
    fmt(s.cost_spent, 2) + (b.cost ? " of " + fmt(b.cost, 2) : "") +
    (b.trials ? "; budget " + b.trials + " trials" : "");
  drawPause(s.id, s.pause);
  drawProposalError(s.proposal_error);
  drawMixture(d);
  drawProgress(d);
  drawCurves(d);
  drawFidelities(d);
  drawSlices(d);
  drawTrajectory(d);
  drawTable(d);
  setStatus("updated " + new Date().toLocaleTimeString());
  return s.state;
}

function installSorting() {
  for (const th of document.querySelectorAll("#trials th[data-key]")) {
    th.onclick = () => {
      const key = th.dataset.key;
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      if (lastData) drawTable(lastData);
    };
  }
}

async function main() {
  const page = document.body.dataset.page;
  const tick = async () => {
    try {
      const state = page === "study" ? await renderStudy(document.body.dataset.studyId)
        : (await renderIndex(), "running");
      // Live refresh while something can still change.
      if (state === "running" || state === "paused") setTimeout(tick, REFRESH_MS);
    } catch (err) {
      if (err.message !== "unauthorized") setStatus(err.message);
    }
  };
  if (page === "study") installSorting();
  await tick();
}

main();
