// Comparing attempts: overlaid curves (one colour per attempt, validation dotted) and
// the toggle between the differing command fields and all of them.
"use strict";
(function () {
  const m = window.metalearn;
  const data = m.pageData();
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const loss = [];
  const acc = [];
  data.curves.forEach((c, i) => {
    const color = palette[i % palette.length];
    const group = `a${i}`;
    const name = m.esc(c.name);  // drawn as written, never as plotly's markup
    loss.push({ name, legendgroup: group, x: c.epoch, y: c.loss, mode: "lines", line: { color } });
    if (c.val_loss.some((v) => v !== null)) {
      loss.push({ name: `${name} (val)`, legendgroup: group, showlegend: false, x: c.epoch, y: c.val_loss, mode: "lines", line: { color, dash: "dot" } });
      acc.push({ name, legendgroup: group, x: c.epoch, y: c.val_accuracy, mode: "lines", line: { color } });
    }
  });
  const many = data.curves.length > 12;
  const legend = many ? { showlegend: false } : {};
  const largest = Math.max(1, ...data.curves.map((c) => c.epoch.length ? Math.max(...c.epoch) : 0));
  const lossValues = data.curves.flatMap((c) => c.loss.concat(c.val_loss));
  Plotly.newPlot("loss-chart", loss, m.layout(Object.assign({ xaxis: m.wholeAxis("epoch", largest), yaxis: m.logAxis(lossValues) }, legend)), m.config);
  Plotly.newPlot("accuracy-chart", acc, m.layout(Object.assign({
    xaxis: m.wholeAxis("epoch", largest),
    yaxis: { range: [0, 1], gridcolor: "#eef0f3" },
    annotations: acc.length ? [] : m.emptyNote("none of them recorded validation values"),
  }, legend)), m.config)
    .then(() => { window.metalearnRendered = performance.now(); });

  document.getElementById("show-all").addEventListener("change", (event) => {
    document.getElementById("fields").classList.toggle("all", event.target.checked);
  });
})();
