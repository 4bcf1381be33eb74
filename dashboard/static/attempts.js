// The attempts table: pick rows to compare; the filter syntax help.
"use strict";
(function () {
  const picks = () => Array.from(document.querySelectorAll("input.pick"));
  const button = document.getElementById("compare");
  const count = document.getElementById("selected-count");
  function update() {
    const n = picks().filter((p) => p.checked).length;
    button.disabled = n < 1;
    count.textContent = n ? `${n} selected` : "";
  }
  document.getElementById("attempts").addEventListener("change", update);
  document.getElementById("select-all").addEventListener("change", (event) => {
    picks().forEach((p) => { p.checked = event.target.checked; });
    update();
  });
  document.getElementById("filter-help-link").addEventListener("click", (event) => {
    event.preventDefault();
    const help = document.getElementById("filter-help");
    help.hidden = !help.hidden;
  });
  update();
})();
