// Shared by every page: the CSRF value, POSTs, copy buttons, the page's JSON, and
// plotly's common layout. Text from the server is only ever set with textContent.
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

  function layout(title, extra) {
    return Object.assign({
      title: { text: title, font: { size: 14 }, x: 0.01, xanchor: "left" },
      margin: { l: 56, r: 16, t: 40, b: 44 },
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      legend: { orientation: "h", y: -0.2, font: { size: 11 } },
      xaxis: { title: { text: "epoch" }, gridcolor: "#eef0f3", zeroline: false },
      yaxis: { gridcolor: "#eef0f3", zeroline: false },
      hovermode: "closest",
    }, extra || {});
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

  return { csrf, flash, post, pageData, layout, config };
})();
