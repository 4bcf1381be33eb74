// A task: ask the gateway for a suggested command (SuggestCommand) on demand.
"use strict";
(function () {
  const m = window.metalearn;
  const button = document.getElementById("suggest");
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "Asking…";
    try {
      const reply = await fetch(`/tasks/${button.dataset.fingerprint}/suggestion.json`, { credentials: "same-origin" });
      const body = await reply.json();
      if (!reply.ok) throw new Error(body.message || reply.statusText);
      const sources = body.sources.map((s) => `${s.attempt} (val acc ${s.val_accuracy === null ? "–" : s.val_accuracy.toFixed(3)}, distance ${s.distance === null ? "–" : s.distance.toFixed(3)})`);
      document.getElementById("suggestion-reason").textContent =
        body.reason + (sources.length ? ` From: ${sources.join(", ")}.` : "");
      document.getElementById("suggested-command").textContent = body.command;
      document.getElementById("suggestion").hidden = false;
    } catch (err) {
      m.flash(err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Suggest a command";
    }
  });
})();
