// A study: optimization history, intermediate values (pruned trials marked), parallel
// coordinates of the parameters (pruned trials dimmed), the parameters' importances,
// the trials table, all live while the study runs.
"use strict";
(function () {
  const m = window.metalearn;
  let data = m.pageData();
  const name = data.study.name;
  const lines = new Map();  // trial number -> its intermediate-values trace index
  window.metalearnStudyUpdates = 0;

  function history() {
    const done = data.trials.filter((t) => t.value !== null);
    const best = [];
    let sofar = null;
    done.forEach((t) => {
      if (sofar === null || (data.maximize ? t.value > sofar : t.value < sofar)) sofar = t.value;
      best.push(sofar);
    });
    return Plotly.react("history-chart", [
      { name: "trial", x: done.map((t) => t.number), y: done.map((t) => t.value), mode: "markers", marker: { size: 8 } },
      { name: "best so far", x: done.map((t) => t.number), y: best, mode: "lines", line: { shape: "hv" } },
    ], m.layout({ xaxis: m.wholeAxis("trial", data.study.n_trials) }), m.config);
  }

  function intermediate() {
    lines.clear();
    const traces = [];
    let longest = 1;
    data.intermediate.forEach((t) => {
      const pruned = t.state === "pruned";
      lines.set(t.trial, traces.length);
      longest = Math.max(longest, ...t.epoch);
      traces.push({
        name: `trial ${t.trial}${pruned ? " (pruned)" : ""}`, x: t.epoch, y: t.value, mode: "lines+markers",
        line: { dash: pruned ? "dot" : "solid", width: pruned ? 1.5 : 2 },
        marker: { size: pruned ? 5 : 4, symbol: t.epoch.map((_, i) => (pruned && i === t.epoch.length - 1 ? "x" : "circle")) },
      });
    });
    return Plotly.react("intermediate-chart", traces, m.layout({ showlegend: traces.length <= 12, xaxis: m.wholeAxis("epoch", longest) }), m.config);
  }

  // Viridis, as plotly draws it, for the trials' lines by their value.
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function viridis(f) {
    const x = Math.min(Math.max(f, 0), 1) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
    const c = VIRIDIS[i].map((v, k) => Math.round(v + (VIRIDIS[i + 1][k] - v) * (x - i)));
    return `rgb(${c.join(",")})`;
  }

  // One vertical axis of the parallel coordinates: where a value sits on it (0 to 1)
  // and its tick labels. Categories by name, log ranges in powers, numbers rounded.
  function axisOf(label, values, space) {
    const present = values.filter((v) => v !== null && v !== undefined);
    const categorical = (space && space.kind === "categorical") || present.some((v) => typeof v !== "number");
    if (categorical) {
      const names = Array.from(new Set([...((space && space.choices) || []), ...present.map(String)]));
      const at = (v) => (names.length < 2 ? 0.5 : names.indexOf(String(v)) / (names.length - 1));
      return { label, at, ticks: names.map((n) => [at(n), n]) };
    }
    const log = Boolean(space && space.log);
    const f = (v) => (log ? Math.log10(v) : v);
    let lo = space && space.low !== undefined ? space.low : Math.min(...present);
    let hi = space && space.high !== undefined ? space.high : Math.max(...present);
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
    const span = f(hi) - f(lo);
    const at = (v) => (span > 0 ? (f(v) - f(lo)) / span : 0.5);
    // Round values for ticks: powers of ten on a log axis, 1-2-5 steps on a linear one.
    let marks = [];
    if (log) {
      for (let e = Math.ceil(f(lo) - 1e-9); e <= Math.floor(f(hi) + 1e-9); e += 1) marks.push(10 ** e);
    } else if (span > 0) {
      const raw = span / 4;
      const unit = 10 ** Math.floor(Math.log10(raw));
      const step = [1, 2, 5, 10].map((k) => k * unit).find((k) => k >= raw);
      for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) marks.push(v);
    }
    if (marks.length < 2) marks = [lo, hi];
    const ticks = marks.map((v) => [at(v), m.fmt(v)]);
    return { label, at, ticks: span > 0 ? ticks : [[0.5, m.fmt(lo)]] };
  }

  // Parallel coordinates drawn as lines (plotly's parcoords draws hairlines and cannot
  // dim a line): every trial with params, complete ones coloured by their value, pruned
  // ones grey and dotted at the value they had reached; the best one thickest. Every
  // text here (paths, choices) reaches plotly escaped: a choice is any JSON a writer
  // gave, and plotly would draw its <a href> as a link.
  function parallel() {
    const shown = data.trials.filter((t) => t.reached !== null && t.reached !== undefined);
    const space = Object.fromEntries((data.space || []).map((s) => [s.path, s]));
    // A choice as the server wrote it (as the axis's choices are): a list or an object
    // is its JSON, not JavaScript's "a,b" or "[object Object]".
    const param = (t, p) => (space[p] && space[p].kind === "categorical" && p in t.params_text ? t.params_text[p] : t.params[p]);
    const axes = data.params.map((p) => axisOf(p, shown.map((t) => param(t, p)), space[p]));
    axes.push(axisOf(data.objective, shown.map((t) => t.reached), null));
    const values = shown.filter((t) => t.value !== null).map((t) => t.value);
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    const shade = (v) => viridis(hi > lo ? (data.maximize ? (v - lo) / (hi - lo) : (hi - v) / (hi - lo)) : 1);
    const x = axes.map((_, i) => i);
    const traces = shown.map((t) => {
      const raw = data.params.map((p) => param(t, p)).concat([t.reached]);
      const pruned = t.value === null;
      return {
        type: "scatter", mode: "lines+markers", x, showlegend: false,
        y: raw.map((v, i) => (v === undefined || v === null ? null : axes[i].at(v))),
        line: pruned ? { color: "#98a2b3", width: 1.5, dash: "dot" } : { color: shade(t.value), width: t.best ? 4 : 2.5 },
        marker: { size: pruned ? 4 : 6, color: pruned ? "#98a2b3" : shade(t.value) },
        opacity: pruned ? 0.55 : 1,
        text: raw.map((v, i) => `trial ${t.number}${pruned ? " (pruned)" : ""}<br>${m.esc(axes[i].label)} = ${m.esc(typeof v === "number" ? m.fmt(v) : v)}`),
        hovertemplate: "%{text}<extra></extra>",
      };
    });
    // Pruned first, so complete trials are drawn over them.
    traces.sort((a, b) => a.opacity - b.opacity);
    if (values.length) {  // the colour scale, from an invisible trace
      traces.push({
        type: "scatter", mode: "markers", x: [x[x.length - 1]], y: [0], hoverinfo: "skip", showlegend: false,
        marker: { size: 0.1, opacity: 0, color: [lo, hi], cmin: lo, cmax: hi, colorscale: "Viridis", reversescale: !data.maximize, showscale: true, colorbar: { thickness: 12, len: 0.9, x: 1.02 } },
      });
    }
    const annotations = [];
    const shapes = [];
    axes.forEach((a, i) => {
      shapes.push({ type: "line", x0: i, x1: i, y0: 0, y1: 1, line: { color: "#667085", width: 1 } });
      annotations.push({ x: i, y: 1.04, text: m.esc(a.label), showarrow: false, yanchor: "bottom", font: { size: 12, color: "#1d2330" } });
      a.ticks.forEach(([at, text]) => annotations.push({ x: i, y: at, text: m.esc(text), showarrow: false, xanchor: "right", xshift: -4, font: { size: 11, color: "#344054" }, bgcolor: "rgba(255,255,255,0.75)" }));
    });
    if (!shown.length) annotations.push(...m.emptyNote("no trial has reported a value yet"));
    return Plotly.react("parallel-chart", traces, {
      margin: { l: 90, r: 40, t: 40, b: 20 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff", hovermode: "closest",
      xaxis: { visible: false, range: [-0.45, axes.length - 0.8] },
      yaxis: { visible: false, range: [-0.05, 1.1] },
      shapes, annotations,
    }, m.config);
  }

  // Optuna's hyperparameter importances (fANOVA), computed by the dashboard's server.
  function importance() {
    const imp = data.importance || { params: [], values: [], note: "" };
    const order = imp.params.map((p, i) => [p, imp.values[i]]).reverse();  // most important on top
    return Plotly.react("importance-chart", [{
      type: "bar", orientation: "h", y: order.map((o) => m.esc(o[0])), x: order.map((o) => o[1]),
      text: order.map((o) => m.fmt(o[1])), textposition: "auto", marker: { color: "#1f77b4" },
      hovertemplate: "%{y}: %{x:.3f}<extra></extra>",
    }], m.layout({
      showlegend: false,
      margin: { l: 140, r: 16, t: 30, b: 44 },
      xaxis: { title: { text: "importance (sums to 1)" }, range: [0, 1], gridcolor: "#eef0f3" },
      yaxis: { automargin: true },
      annotations: imp.params.length ? [] : m.emptyNote(imp.note || "no importances yet"),
    }), m.config);
  }

  function table() {
    const body = document.querySelector("#trials tbody");
    body.replaceChildren(...data.trials.map((t) => {
      const row = document.createElement("tr");
      if (t.best) row.className = "best";
      const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.append(td); return td; };
      cell(String(t.number), "n");
      const link = document.createElement("a");
      link.href = `/attempts/${t.attempt_id}`;
      link.textContent = t.attempt;
      cell("").append(link);
      const chip = document.createElement("span");
      chip.className = `chip state-${t.state}`;
      chip.textContent = t.state;
      cell("").append(chip);
      cell(t.value === null ? "–" : t.value.toFixed(4), "n");
      cell(String(t.epochs), "n");
      data.params.forEach((p) => cell(p in t.params_text ? t.params_text[p] : ""));
      cell(t.error);
      return row;
    }));
    const s = data.study;
    document.getElementById("study-state").textContent = s.state;
    document.getElementById("study-state").className = `chip state-${s.state}`;
    document.getElementById("trials-made").textContent = String(s.trials_made);
    document.getElementById("best-value").textContent = s.best_value === null ? "–" : `${s.best_value.toFixed(4)} (trial ${s.best_trial})`;
    if (data.best_command) document.getElementById("best-command").textContent = data.best_command;
  }

  function drawAll() {
    return Promise.all([history(), intermediate(), parallel(), importance()]).then(table);
  }

  let pending = null;
  function refresh() {  // at most one reload of the study's data a second
    if (pending) return;
    pending = setTimeout(async () => {
      try {
        const reply = await fetch(`/studies/${encodeURIComponent(name)}/data`, { credentials: "same-origin" });
        if (reply.ok) {
          data = await reply.json();
          await drawAll();
          window.metalearnStudyUpdates += 1;
        }
      } finally {
        pending = null;
      }
    }, 1000);
  }

  drawAll();
  if (data.study.state === "running" || data.study.state === "stopping") {
    const source = new EventSource(`/studies/${encodeURIComponent(name)}/events`);
    source.addEventListener("epoch", (event) => {
      const e = JSON.parse(event.data);
      const value = data.objective.includes("loss") ? e.val_loss : e.val_accuracy;
      const chart = document.getElementById("intermediate-chart");
      if (lines.has(e.trial)) {
        Plotly.extendTraces(chart, { x: [[e.epoch]], y: [[value]] }, [lines.get(e.trial)]);
      } else {
        lines.set(e.trial, chart.data.length);
        Plotly.addTraces(chart, { name: `trial ${e.trial}`, x: [e.epoch], y: [value], mode: "lines+markers", marker: { size: 4 } });
        Plotly.relayout(chart, { showlegend: chart.data.length <= 12 });
      }
      window.metalearnStudyUpdates += 1;
    });
    source.addEventListener("trial", refresh);
    const live = document.getElementById("study-live");
    source.addEventListener("reconnecting", (event) => {
      const r = JSON.parse(event.data);
      live.textContent = `the gateway is unreachable (${r.message}): trying again in ${r.delay.toFixed(1)} s`;
    });
    source.addEventListener("trial", () => { live.textContent = ""; });
    source.addEventListener("epoch", () => { live.textContent = ""; });
    source.addEventListener("failure", (event) => { m.flash(JSON.parse(event.data).message); source.close(); });
    source.addEventListener("end", () => { source.close(); refresh(); });
  }
})();
