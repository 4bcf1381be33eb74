// Shared by every page: the CSRF value, POSTs, copy buttons, the page's JSON, and
// plotly's common layout. Text from the server is only ever set with textContent, and
// reaches a chart only through `esc`.
"use strict";
window.metalearn = (function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function flash(message) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.hidden = !message;
  }

  async function post(url) {
    const reply = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" },
    });
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(body.message || reply.statusText);
    return body;
  }

  function pageData() {
    const node = document.getElementById("page-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  // Text as a chart draws it. Plotly reads a little HTML of its own in every text it
  // draws (ticks, legends, tooltips, annotations, titles): <a href> becomes a link, <b>
  // bold, <br> a new line. So every text that is not our own (a label, a name, a
  // choice) is escaped first; plotly turns the entities back into the characters, and
  // the text is drawn exactly as written, never as markup. Only &, < and > matter:
  // plotly's tags need "<", its entities "&".
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  // A number as people read it: 4 significant digits at most (0.04612, not 0.046116328).
  function fmt(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "–";
    return String(Number(x.toPrecision(4)));
  }

  // An axis of whole numbers (epochs, trials): ticks on integers only, about 10 of them
  // up to `largest`, never 1.5 or 2.5.
  function wholeAxis(title, largest) {
    const steps = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000];
    const top = Math.max(largest || 1, 1);
    const step = steps.find((s) => top / s <= 10) || Math.ceil(top / 10);
    return { title: { text: esc(title) }, gridcolor: "#eef0f3", zeroline: false, tickmode: "linear", tick0: 0, dtick: step, tickformat: "d" };
  }

  // A log axis with readable ticks: powers of ten when the values span three or more
  // of them, else 1-2-5 steps, else every digit; each labelled in full (0.02, 0.1),
  // never plotly's cramped "2 5 0.1 2" minor digits. A narrow range keeps plotly's.
  function logAxis(values) {
    const v = values.filter((x) => x !== null && x > 0 && Number.isFinite(x));
    const axis = { type: "log", gridcolor: "#eef0f3", zeroline: false };
    if (!v.length) return axis;
    const lo = Math.min(...v) / 1.15;
    const hi = Math.max(...v) * 1.15;
    // Within a factor of 3 plotly labels a log axis like a linear one (2.16 2.18 2.2).
    if (hi / lo < 3) return axis;
    for (const digits of [[1], [1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
      const ticks = [];
      for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e += 1) {
        digits.forEach((d) => { const t = d * 10 ** e; if (t >= lo && t <= hi) ticks.push(Number(t.toPrecision(6))); });
      }
      if (ticks.length >= 3 || digits.length === 9) {
        return Object.assign(axis, { tickmode: "array", tickvals: ticks, ticktext: ticks.map(fmt) });
      }
    }
    return axis;
  }

  // Every chart's layout: titles are the HTML captions above the charts (so the tool
  // bar never covers one), the legend at the right (never on an axis title).
  function layout(extra) {
    return Object.assign({
      margin: { l: 56, r: 16, t: 30, b: 44 },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      showlegend: true,
      legend: { x: 1.02, xanchor: "left", y: 1, yanchor: "top", font: { size: 11 } },
      xaxis: wholeAxis("epoch", 10),
      yaxis: { gridcolor: "#eef0f3", zeroline: false },
      hovermode: "closest",
    }, extra || {});
  }

  // A note in the middle of an empty chart, saying why it is empty.
  function emptyNote(text) {
    return [{ text: esc(text), showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { size: 13, color: "#667085" } }];
  }
  const config = { displaylogo: false, responsive: true };

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const text = document.getElementById(button.dataset.copy).textContent;
    navigator.clipboard.writeText(text).then(
      () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); },
      () => flash("The browser did not allow copying: select the text instead."));
  });

  return { csrf, flash, post, pageData, layout, config, esc, fmt, wholeAxis, logAxis, emptyNote };
})();
