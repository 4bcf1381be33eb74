// A study: optimization history, intermediate values (pruned trials marked), parallel
// coordinates of the parameters (their axis order and brushed ranges kept in this
// browser), the trials table, all live while the study runs.
"use strict";
(function () {
  const m = window.metalearn;
  let data = m.pageData();
  const name = data.study.name;
  const key = `metalearn.parcoords.${name}`;
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
    ], m.layout(`optimization history: ${data.objective}`, { xaxis: { title: { text: "trial" }, gridcolor: "#eef0f3" } }), m.config);
  }

  function intermediate() {
    lines.clear();
    const traces = [];
    data.intermediate.forEach((t) => {
      const pruned = t.state === "pruned";
      lines.set(t.trial, traces.length);
      traces.push({
        name: `trial ${t.trial}${pruned ? " (pruned)" : ""}`, x: t.epoch, y: t.value, mode: "lines+markers",
        line: { dash: pruned ? "dot" : "solid", width: pruned ? 1 : 2 },
        marker: { size: 4, symbol: t.epoch.map((_, i) => (pruned && i === t.epoch.length - 1 ? "x" : "circle")) },
      });
    });
    return Plotly.react("intermediate-chart", traces, m.layout(`intermediate values (${data.objective}); pruned: dotted, ×`, { showlegend: traces.length <= 12 }), m.config);
  }

  function parallel() {
    const done = data.trials.filter((t) => t.value !== null);
    const saved = JSON.parse(localStorage.getItem(key) || "{}");
    let dims = data.params.map((p) => {
      const values = done.map((t) => t.params[p]);
      const dim = { label: p, values };
      if (values.some((v) => typeof v !== "number")) {  // categorical: an axis of indexes
        const names = Array.from(new Set(values.map((v) => JSON.stringify(v))));
        dim.values = values.map((v) => names.indexOf(JSON.stringify(v)));
        dim.tickvals = names.map((_, i) => i);
        dim.ticktext = names;
      }
      if (saved.ranges && saved.ranges[p]) dim.constraintrange = saved.ranges[p];
      return dim;
    });
    dims.push({ label: data.objective, values: done.map((t) => t.value) });
    if (saved.order) {
      const at = (d) => { const i = saved.order.indexOf(d.label); return i < 0 ? 1e9 : i; };
      dims = dims.slice().sort((a, b) => at(a) - at(b));
    }
    return Plotly.react("parallel-chart", [{
      type: "parcoords", dimensions: dims,
      line: { color: done.map((t) => t.value), colorscale: "Viridis", showscale: true, reversescale: !data.maximize },
    }], { margin: { l: 80, r: 80, t: 48, b: 24 }, paper_bgcolor: "#fff" }, m.config);
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
      data.params.forEach((p) => cell(p in t.params ? String(t.params[p]) : ""));
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
    return Promise.all([history(), intermediate(), parallel()]).then(() => {
      table();
      const chart = document.getElementById("parallel-chart");
      chart.removeAllListeners && chart.removeAllListeners("plotly_restyle");
      chart.on("plotly_restyle", () => {
        const d = chart.data[0].dimensions;
        const ranges = {};
        d.forEach((x) => { if (x.constraintrange) ranges[x.label] = x.constraintrange; });
        localStorage.setItem(key, JSON.stringify({ order: d.map((x) => x.label), ranges }));
      });
    });
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
      }
      window.metalearnStudyUpdates += 1;
    });
    source.addEventListener("trial", refresh);
    source.addEventListener("failure", (event) => { m.flash(JSON.parse(event.data).message); source.close(); });
    source.addEventListener("end", () => { source.close(); refresh(); });
  }
})();
