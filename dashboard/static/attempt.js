// One attempt: its curves (growing live through server-sent events while it runs), the
// confusion matrix, and the owner's cancel and test buttons.
"use strict";
(function () {
  const m = window.metalearn;
  const data = m.pageData();
  const c = data.curves;
  const seen = new Set(c.epoch);
  // When each epoch reached the chart (ms since the epoch), for the latency benchmark.
  window.metalearnDrawn = {};

  const lossTraces = [
    { name: "training loss", x: c.epoch.slice(), y: c.loss.slice(), mode: "lines+markers" },
    { name: "validation loss", x: c.epoch.slice(), y: c.val_loss.slice(), mode: "lines+markers", line: { dash: "dot" } },
  ];
  const accTraces = [
    { name: "validation accuracy", x: c.epoch.slice(), y: c.val_accuracy.slice(), mode: "lines+markers" },
  ];
  const lossChart = document.getElementById("loss-chart");
  const accChart = document.getElementById("accuracy-chart");
  Plotly.newPlot(lossChart, lossTraces, m.layout("loss", { yaxis: { type: "log", gridcolor: "#eef0f3" } }), m.config);
  Plotly.newPlot(accChart, accTraces, m.layout("validation accuracy", { yaxis: { range: [0, 1], gridcolor: "#eef0f3" } }), m.config);

  if (data.test && data.test.matrix.length) {
    const t = data.test;
    Plotly.newPlot("confusion-chart", [{
      type: "heatmap", z: t.matrix, x: t.labels, y: t.labels, colorscale: "Blues", reversescale: true,
      xgap: 2, ygap: 2,  // cells drawn one by one: sharp at any size
      hovertemplate: "true %{y}, predicted %{x}: %{z}<extra></extra>",
      // The counts in the cells, while there is room for them.
      texttemplate: t.labels.length <= 20 ? "%{z}" : "",
    }], m.layout("confusion matrix (rows: true label)", {
      xaxis: { title: { text: "predicted" }, type: "category" },
      yaxis: { title: { text: "true" }, type: "category", autorange: "reversed" },
    }), m.config);
  }

  function addEpoch(e) {
    if (seen.has(e.epoch)) return;  // a reconnect may repeat one
    seen.add(e.epoch);
    const drawn = [
      Plotly.extendTraces(lossChart, { x: [[e.epoch], [e.epoch]], y: [[e.loss], [e.val_loss]] }, [0, 1]),
      Plotly.extendTraces(accChart, { x: [[e.epoch]], y: [[e.val_accuracy]] }, [0]),
    ];
    Promise.all(drawn).then(() => { window.metalearnDrawn[e.epoch] = Date.now(); });
    document.getElementById("epochs").textContent = String(seen.size);
  }

  function showStatus(s) {
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
      const flags = p.flags.map((f) => `${f.kind.toLowerCase()} since ${f.since}`);
      if (p.predicted) flags.push(`final val accuracy ${p.final.toFixed(3)} (${p.low.toFixed(3)}–${p.high.toFixed(3)})`);
      if (p.hopeless) flags.push(`hopeless: ${p.hopeless_reason}`);
      document.getElementById("prognosis").textContent = `Prognosis at epoch ${p.epoch}: ${flags.join("; ") || "ok"}`;
    });
    source.addEventListener("test", (event) => {
      const p = JSON.parse(event.data);
      document.getElementById("live").textContent = `testing: ${p.done} of ${p.total} images`;
    });
    source.addEventListener("failure", (event) => {
      m.flash(JSON.parse(event.data).message);
      source.close();
    });
    source.addEventListener("end", () => {
      source.close();
      document.getElementById("live").textContent = "";
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
