// A task: ask the gateway for a suggested command (SuggestCommand) on demand, and let a
// writer queue it (the "Train this" form posts it with the page's CSRF value).
"use strict";
(function () {
  const m = window.metalearn;
  const button = document.getElementById("suggest");
  if (!button) return;  // a task that cannot be profiled: nothing to suggest
  const sentence = (text) => (/[.!?]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "Asking…";
    try {
      const reply = await fetch(`/tasks/${button.dataset.fingerprint}/suggestion.json`, { credentials: "same-origin" });
      const body = await reply.json();
      if (!reply.ok) throw new Error(body.message || reply.statusText);
      // The reason is a sentence of its own; its sources are a list under it.
      document.getElementById("suggestion-reason").textContent =
        sentence(body.reason) + (body.sources.length ? " It comes from:" : "");
      document.getElementById("suggestion-sources").replaceChildren(...body.sources.map((s) => {
        const item = document.createElement("li");
        const link = document.createElement("a");
        link.href = `/attempts/${s.attempt_id}`;
        link.textContent = s.attempt;
        item.append(link, ` (val acc ${m.fmt(s.val_accuracy)}, distance ${m.fmt(s.distance)})`);
        return item;
      }));
      document.getElementById("suggested-command").textContent = body.command;
      const command = document.getElementById("train-command");
      if (command) command.value = body.command;
      document.getElementById("suggestion").hidden = false;
    } catch (err) {
      m.flash(err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Suggest a command";
    }
  });
})();
