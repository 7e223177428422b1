// Progressive enhancement only: every page works without this script.
"use strict";

// Upload: drag and drop onto the drop zone, and list the chosen files.
(function () {
  const drop = document.getElementById("drop");
  const input = document.getElementById("files");
  const list = document.getElementById("file-list");
  if (!drop || !input) return;
  const show = () => {
    list.replaceChildren(...Array.from(input.files, (f) => {
      const li = document.createElement("li");
      li.textContent = `${f.name} (${Math.ceil(f.size / 1024)} KB)`;  // text, never markup
      return li;
    }));
  };
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((e) => drop.addEventListener(e, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    if (ev.dataTransfer && ev.dataTransfer.files.length) { input.files = ev.dataTransfer.files; show(); }
  });
  document.getElementById("upload-form").addEventListener("submit", () => {
    const b = document.getElementById("submit"); b.disabled = true; b.textContent = "Uploading…";
  });
})();

// Job page: re-fetch the progress panel until the job is finished.
(function () {
  const panel = document.getElementById("panel");
  if (!panel || panel.dataset.final === "1") return;
  const tick = async () => {
    if (document.querySelector("#panel details[open]")) return setTimeout(tick, 1500);  // don't close an open form
    try {
      const r = await fetch(panel.dataset.url, { credentials: "same-origin" });
      if (r.redirected || !r.ok) return setTimeout(tick, 3000);
      panel.innerHTML = await r.text();  // server-rendered, autoescaped HTML from our own origin
      if (r.headers.get("X-Job-Final") === "1") { panel.dataset.final = "1"; return; }
    } catch (e) { /* network blip: try again */ }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
})();
