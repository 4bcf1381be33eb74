// One attempt: its curves (growing live through server-sent events while it runs, and
// again after the gateway restarts), the confusion matrix, and the owner's cancel and
// test buttons.
"use strict";
(function () {
  const m = window.metalearn;
  const data = m.pageData();
  const c = data.curves;
  const seen = new Set(c.epoch);
  let best = data.best_val_accuracy;
  // When each epoch reached the chart (ms since the epoch), for the latency benchmark.
  window.metalearnDrawn = {};

  const lossTraces = [
    { name: "training", x: c.epoch.slice(), y: c.loss.slice(), mode: "lines+markers" },
    { name: "validation", x: c.epoch.slice(), y: c.val_loss.slice(), mode: "lines+markers", line: { dash: "dot" }, showlegend: data.has_validation || data.running },
  ];
  const accTraces = [
    { name: "validation", x: c.epoch.slice(), y: c.val_accuracy.slice(), mode: "lines+markers", showlegend: false },
  ];
  const lossChart = document.getElementById("loss-chart");
  const accChart = document.getElementById("accuracy-chart");
  const largest = () => Math.max(data.n_epoch || 0, ...seen);
  const lossValues = () => lossChart.data.flatMap((t) => t.y);
  const noValidation = data.running ? "no validation values yet" : "this attempt recorded no validation values";
  Plotly.newPlot(lossChart, lossTraces, m.layout({ xaxis: m.wholeAxis("epoch", largest()), yaxis: m.logAxis(c.loss.concat(c.val_loss)) }), m.config);
  Plotly.newPlot(accChart, accTraces, m.layout({
    xaxis: m.wholeAxis("epoch", largest()),
    yaxis: { range: [0, 1], gridcolor: "#eef0f3" },
    annotations: data.has_validation ? [] : m.emptyNote(noValidation),
  }), m.config);

  if (data.test && data.test.matrix.length) {
    const t = data.test;
    const labels = t.labels.map(m.esc);  // a label is text, never plotly's markup
    Plotly.newPlot("confusion-chart", [{
      type: "heatmap", z: t.matrix, x: labels, y: labels, colorscale: "Blues", reversescale: true,
      xgap: 2, ygap: 2,  // cells drawn one by one: sharp at any size
      hovertemplate: "true %{y}, predicted %{x}: %{z}<extra></extra>",
      // The counts in the cells, while there is room for them.
      texttemplate: t.labels.length <= 20 ? "%{z}" : "",
      // Counts: whole-number ticks on the colour bar too.
      colorbar: { tickformat: "d", tick0: 0, dtick: m.wholeAxis("", Math.max(...t.matrix.flat())).dtick },
    }], m.layout({
      showlegend: false,
      margin: { l: 24, r: 16, t: 24, b: 24 },
      // automargin: the axis titles go beside the tick labels, never over them.
      xaxis: { title: { text: "predicted", standoff: 12 }, type: "category", automargin: true },
      yaxis: { title: { text: "true", standoff: 12 }, type: "category", autorange: "reversed", automargin: true },
    }), m.config);
  }

  const live = document.getElementById("live");
  const liveText = live.textContent;

  function addEpoch(e) {
    live.textContent = liveText;
    if (seen.has(e.epoch)) return;  // a reconnect may repeat one
    seen.add(e.epoch);
    const drawn = [
      Plotly.extendTraces(lossChart, { x: [[e.epoch], [e.epoch]], y: [[e.loss], [e.val_loss]] }, [0, 1]),
      Plotly.extendTraces(accChart, { x: [[e.epoch]], y: [[e.val_accuracy]] }, [0]),
    ];
    Promise.all(drawn).then(() => {
      window.metalearnDrawn[e.epoch] = Date.now();
      Plotly.relayout(lossChart, { xaxis: m.wholeAxis("epoch", largest()), yaxis: m.logAxis(lossValues()) });
      const acc = { xaxis: m.wholeAxis("epoch", largest()) };
      if (e.val_accuracy !== null) acc.annotations = [];
      Plotly.relayout(accChart, acc);
    });
    document.getElementById("epochs").textContent = String(seen.size);
    if (e.val_accuracy !== null && (best === null || e.val_accuracy > best)) {
      best = e.val_accuracy;
      document.getElementById("best-val").textContent = best.toFixed(4);
    }
  }

  function showStatus(s) {
    live.textContent = liveText;
    const chip = document.getElementById("status");
    chip.textContent = s.status;
    chip.className = `chip status-${s.status}`;
    const error = document.getElementById("error");
    error.textContent = s.error || "";
    error.hidden = !s.error;
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.hidden = !["queued", "training", "testing"].includes(s.status);
  }

  if (data.running) {
    const source = new EventSource(`/attempts/${data.id}/events`);
    let status = data.status;
    source.addEventListener("epoch", (event) => addEpoch(JSON.parse(event.data)));
    source.addEventListener("status", (event) => {
      const s = JSON.parse(event.data);
      showStatus(s);
      status = s.status;
    });
    source.addEventListener("prognosis", (event) => {
      const p = JSON.parse(event.data);
      const box = document.getElementById("prognosis");
      const head = document.createElement("strong");
      head.textContent = "Prognosis";
      const text = document.createElement("span");
      text.id = "prognosis-text";
      text.textContent = p.text;
      box.replaceChildren(head, document.createTextNode(` after epoch ${p.epoch}: `), text);
      box.classList.toggle("bad", p.flags.length > 0 || p.hopeless);
    });
    source.addEventListener("test", (event) => {
      const p = JSON.parse(event.data);
      live.textContent = `testing: ${p.done} of ${p.total} images`;
    });
    // The gateway went away (a restart): the dashboard watches again, from the last
    // epoch this page has, and says so meanwhile.
    source.addEventListener("reconnecting", (event) => {
      const r = JSON.parse(event.data);
      live.textContent = `the gateway is unreachable (${r.message}): trying again in ${r.delay.toFixed(1)} s`;
    });
    source.addEventListener("failure", (event) => {
      m.flash(JSON.parse(event.data).message);
      source.close();
    });
    source.addEventListener("end", () => {
      source.close();
      live.textContent = "";
      // Its results (test, weights) are on the page only after a reload.
      if (status !== data.status) window.location.reload();
    });
  }

  document.querySelectorAll("button[data-action]").forEach((button) => {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await m.post(`/attempts/${data.id}/${button.dataset.action}`);
        window.location.reload();
      } catch (err) {
        m.flash(err.message);
        button.disabled = false;
      }
    });
  });
})();
