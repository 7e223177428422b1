// Touch-up: keep/remove strokes and a box over the photo, the refined mask shown after each one.
// Pointer events, so a mouse, a pen and a finger all paint (the canvas takes no touch scrolling).
// Coordinates sent to the server are the photo's own pixels; the canvas shows it smaller.
"use strict";

(function () {
  const root = document.getElementById("touchup");
  if (!root) return;
  root.hidden = false;
  const W = +root.dataset.width, H = +root.dataset.height;  // the photo, px
  const DW = +root.dataset.displayWidth, DH = +root.dataset.displayHeight;  // the canvas, px
  const scale = W / DW;  // photo px per canvas px
  const canvas = document.getElementById("view");
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("touchup-status");
  const saveButton = document.getElementById("save");
  const undoButton = document.getElementById("undo");
  const resetButton = document.getElementById("reset");
  const brush = document.getElementById("brush");
  const blocked = !!document.getElementById("blocked");

  let tool = "keep";
  const strokes = [];  // {mode, radius (photo px), points: [[x, y] photo px]}
  let box = null;  // [x0, y0, x1, y1] photo px
  const undo = [];  // per action: "stroke", or {box: the box before}
  let photo = null, original = null, overlay = null, current = null;
  let seq = 0, timer = null;

  const say = (text) => { status.textContent = text; };
  const edit = () => ({ strokes, box });

  // The removed part of the mask, dimmed: a canvas-sized layer from a greyscale mask image.
  function overlayFrom(maskImage) {
    const layer = document.createElement("canvas");
    layer.width = DW; layer.height = DH;
    const g = layer.getContext("2d");
    g.drawImage(maskImage, 0, 0, DW, DH);
    const img = g.getImageData(0, 0, DW, DH), d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      const keep = d[i];
      d[i] = 25; d[i + 1] = 20; d[i + 2] = 60; d[i + 3] = Math.round((255 - keep) * 0.72);
    }
    g.putImageData(img, 0, 0);
    return layer;
  }

  function drawStroke(s) {
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = s.mode === "keep" ? "rgba(30, 170, 80, 0.6)" : "rgba(225, 45, 45, 0.6)";
    ctx.lineWidth = (2 * s.radius) / scale;
    ctx.lineCap = ctx.lineJoin = "round";
    const p = s.points;
    ctx.beginPath();
    if (p.length === 1) {
      ctx.arc(p[0][0] / scale, p[0][1] / scale, s.radius / scale, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.moveTo(p[0][0] / scale, p[0][1] / scale);
      for (const q of p.slice(1)) ctx.lineTo(q[0] / scale, q[1] / scale);
      ctx.stroke();
    }
    ctx.restore();
  }

  function draw() {
    ctx.clearRect(0, 0, DW, DH);
    if (photo) ctx.drawImage(photo, 0, 0, DW, DH);
    if (overlay) ctx.drawImage(overlay, 0, 0);
    strokes.forEach(drawStroke);
    if (current && current.points) drawStroke(current);
    const b = current && current.box ? current.box : box;
    if (b) {
      ctx.save();
      ctx.setLineDash([8, 6]);
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#1f6feb";
      ctx.strokeRect(b[0] / scale, b[1] / scale, (b[2] - b[0]) / scale, (b[3] - b[1]) / scale);
      ctx.restore();
    }
  }

  // Where a pointer is, in photo px (clamped to the photo).
  function at(ev) {
    const r = canvas.getBoundingClientRect();
    const x = ((ev.clientX - r.left) * DW) / r.width, y = ((ev.clientY - r.top) * DH) / r.height;
    const round = (v) => Math.round(v * 10) / 10;
    return [round(Math.min(W, Math.max(0, x * scale))), round(Math.min(H, Math.max(0, y * scale)))];
  }

  canvas.addEventListener("pointerdown", (ev) => {
    if (blocked || !photo || ev.button > 0) return;
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    const p = at(ev);
    current = tool === "box" ? { box: [p[0], p[1], p[0], p[1]], start: p }
                             : { mode: tool, radius: Math.max(0.5, +brush.value * scale), points: [p] };
    draw();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!current) return;
    const p = at(ev);
    if (current.box) {
      const s = current.start;
      current.box = [Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])];
    } else {
      const last = current.points[current.points.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= Math.max(1, current.radius / 4)) current.points.push(p);
    }
    draw();
  });
  const finish = () => {
    if (!current) return;
    if (current.box) {
      const b = current.box;
      if (b[2] - b[0] >= 4 && b[3] - b[1] >= 4) { undo.push({ box }); box = b; }
    } else if (strokes.length < 500) {
      strokes.push({ mode: current.mode, radius: current.radius, points: current.points });
      undo.push("stroke");
    }
    current = null;
    changed();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  document.querySelectorAll("#touchup .tool").forEach((button) => button.addEventListener("click", () => {
    tool = button.dataset.tool;
    document.querySelectorAll("#touchup .tool").forEach((b) => {
      b.classList.toggle("active", b === button);
      b.setAttribute("aria-pressed", String(b === button));
    });
  }));
  undoButton.addEventListener("click", () => {
    const last = undo.pop();
    if (last === "stroke") strokes.pop();
    else if (last) box = last.box;
    changed();
  });
  resetButton.addEventListener("click", () => {
    strokes.length = 0; undo.length = 0; box = null;
    changed();
  });
  document.getElementById("save-form").addEventListener("submit", (ev) => {
    if (!strokes.length && !box) { ev.preventDefault(); return; }
    document.getElementById("edit-json").value = JSON.stringify(edit());
    saveButton.disabled = true;
    saveButton.textContent = "Saving…";
  });

  function changed() {
    undoButton.disabled = resetButton.disabled = !undo.length;
    draw();
    clearTimeout(timer);
    timer = setTimeout(refresh, 120);  // a burst of undos asks once
  }

  // Ask the server for the mask these strokes make (not saved) and show it.
  async function refresh() {
    const mine = ++seq;
    if (!strokes.length && !box) {
      overlay = original;
      saveButton.disabled = true;
      draw();
      say("Paint on the photo to fix the cut-out.");
      return;
    }
    saveButton.disabled = true;
    say("Refining…");
    const t0 = performance.now();
    try {
      const r = await fetch(root.dataset.preview, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf },
        body: JSON.stringify(edit()),
      });
      if (mine !== seq) return;  // a newer stroke asked again
      if (!r.ok) {
        const doc = await r.json().catch(() => null);
        say(`Could not refine: ${(doc && doc.error) || r.status}`);
        return;
      }
      const mask = await createImageBitmap(await r.blob());
      if (mine !== seq) return;
      overlay = overlayFrom(mask);
      draw();
      saveButton.disabled = blocked;
      root.dataset.previews = String(mine);
      say(`Refined in ${((performance.now() - t0) / 1000).toFixed(1)} s. Save to re-render this photo's variants.`);
    } catch (e) {
      if (mine === seq) say("Could not reach the server: try again.");
    }
  }

  async function load() {
    const image = new Image();
    image.src = root.dataset.photo;
    const maskAnswer = await fetch(root.dataset.mask, { credentials: "same-origin" });
    if (!maskAnswer.ok) throw new Error(`the mask did not load (${maskAnswer.status})`);
    const [mask] = await Promise.all([maskAnswer.blob().then((b) => createImageBitmap(b)), image.decode()]);
    photo = image;
    original = overlay = overlayFrom(mask);
    draw();
    root.dataset.state = "ready";
    say(blocked ? "Saving is off until the work on this photo is finished." : "Paint on the photo to fix the cut-out.");
  }
  load().catch((e) => say(`Could not load the photo: ${e.message}`));
})();
