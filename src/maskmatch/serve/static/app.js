// maskmatch's page: pen, touch and mouse strokes (pointer events) or an image -> POST /api/recognize -> LaTeX,
// a KaTeX preview, and the decoder's attention for the token under the pointer drawn over the ink.
"use strict";

const $ = (id) => document.getElementById(id);
const board = $("board"), ink = $("ink"), heat = $("heat");
const DEBOUNCE_MS = 350; // recognition starts this long after the pen lifts

let strokes = [];     // [[[x, y], ...], ...] in the board's CSS pixels, y down
let drawing = null;   // the pointerId of the stroke being drawn
let image = null;     // {img, x, y, scale}: an uploaded image shown as the model reads it
let result = null;    // the last API answer
let chosen = null;    // the reading shown: the answer, or the alternative clicked
let shown = null;      // the token whose attention is drawn
let timer = 0, pending = null, sequence = 0;
let maxBody = 10 * 2 ** 20; // bytes: the server's limit, from /api/health when it answers
fetch("/api/health").then((r) => r.json()).then((h) => { if (h.max_body) maxBody = h.max_body; }).catch(() => {});

// ------------------------------------------------------------------ drawing

function resize() {
  const ratio = window.devicePixelRatio || 1, rect = board.getBoundingClientRect();
  for (const c of [ink, heat]) {
    c.width = Math.round(rect.width * ratio);
    c.height = Math.round(rect.height * ratio);
    c.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
  }
  redraw();
  showHeat(shown);
}

function redraw() {
  const ctx = ink.getContext("2d"), rect = board.getBoundingClientRect();
  ctx.clearRect(0, 0, rect.width, rect.height);
  if (image) {
    fitImage(rect);
    ctx.drawImage(image.img, image.x, image.y, image.img.width * image.scale, image.img.height * image.scale);
  }
  ctx.lineWidth = 3; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#1b1f24";
  for (const s of strokes) {
    ctx.beginPath();
    ctx.moveTo(s[0][0], s[0][1]);
    const rest = s.length > 1 ? s.slice(1) : [[s[0][0] + 0.01, s[0][1]]]; // a dot is a tiny line
    for (const [x, y] of rest) ctx.lineTo(x, y);
    ctx.stroke();
  }
  $("hint").hidden = strokes.length > 0 || image !== null;
}

function fitImage(rect) {
  const w = image.img.width, h = image.img.height;
  image.scale = Math.min(1.6, (rect.width - 32) / w, (rect.height - 32) / h);
  image.x = (rect.width - w * image.scale) / 2;
  image.y = (rect.height - h * image.scale) / 2;
}

function point(e) {
  const rect = ink.getBoundingClientRect();
  return [Math.round((e.clientX - rect.left) * 10) / 10, Math.round((e.clientY - rect.top) * 10) / 10];
}

ink.addEventListener("pointerdown", (e) => {
  if (e.pointerType === "mouse" && e.button !== 0) return;
  if (drawing !== null) return; // one stroke at a time (a palm or a second finger is ignored)
  e.preventDefault();
  ink.setPointerCapture(e.pointerId);
  if (image) { image = null; setResult(null); }
  drawing = e.pointerId;
  strokes.push([point(e)]);
  clearTimeout(timer);
  showHeat(null);
  redraw();
});

ink.addEventListener("pointermove", (e) => {
  if (e.pointerId !== drawing) return;
  const stroke = strokes[strokes.length - 1];
  for (const ev of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) stroke.push(point(ev));
  redraw();
});

function endStroke(e) {
  if (e.pointerId !== drawing) return;
  drawing = null;
  schedule();
}
ink.addEventListener("pointerup", endStroke);
ink.addEventListener("pointercancel", endStroke);

function undo() {
  if (drawing !== null) return;
  if (image) { clearAll(); return; }
  strokes.pop();
  redraw();
  schedule();
}

function clearAll() {
  strokes = []; image = null;
  clearTimeout(timer);
  if (pending) pending.abort();
  setResult(null);
  redraw();
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
  if (e.key === "Escape") clearAll();
});
window.addEventListener("resize", resize);

// ------------------------------------------------------------------ recognition

function schedule() {
  clearTimeout(timer);
  if (!strokes.length) { setResult(null); return; }
  timer = setTimeout(() => send(JSON.stringify({ strokes, attention: true }), "application/json"), DEBOUNCE_MS);
}

async function send(body, type) {
  if (pending) pending.abort();
  const mine = ++sequence, controller = new AbortController();
  pending = controller;
  status("recognizing…");
  try {
    const headers = type ? { "Content-Type": type } : {};
    const response = await fetch("/api/recognize", { method: "POST", body, headers, signal: controller.signal });
    const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (mine !== sequence) return; // a newer request is on its way
    if (!response.ok) {
      setResult(null); // the old answer was for other ink: do not leave it on screen
      status(answer.error || `HTTP ${response.status}`, true);
      if (response.status === 429 && type) setTimeout(schedule, 1000);
      return;
    }
    setResult(answer);
    status((answer.warnings || []).join("; "), Boolean(answer.warnings && answer.warnings.length));
  } catch (err) {
    if (err.name !== "AbortError" && mine === sequence) status(`no answer from the server (${err.message})`, true);
  }
}

function upload(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { status(`${file.name} is not an image`, true); return; }
  if (file.size > maxBody) { // refused here: sending it would only bring back a 413
    setResult(null);
    status(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB: the server takes at most ${maxBody / 2 ** 20} MB`, true);
    return;
  }
  strokes = []; image = null;
  clearTimeout(timer);
  redraw();
  const form = new FormData();
  form.append("file", file);
  form.append("attention", "true");
  send(form, null);
}

$("file").addEventListener("change", (e) => { upload(e.target.files[0]); e.target.value = ""; });
board.addEventListener("dragover", (e) => { e.preventDefault(); board.classList.add("dragging"); });
board.addEventListener("dragleave", () => board.classList.remove("dragging"));
board.addEventListener("drop", (e) => {
  e.preventDefault();
  board.classList.remove("dragging");
  upload(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) upload(item.getAsFile());
});

// ------------------------------------------------------------------ result

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setResult(answer) {
  result = answer;
  const latex = answer ? answer.latex : "";
  $("latex").textContent = latex;
  $("copy").disabled = $("copy-mathml").disabled = !latex;
  chosen = answer;
  renderPreview(answer);
  const tokens = $("tokens");
  tokens.replaceChildren();
  (answer ? answer.tokens : []).forEach((t, i) => {
    const chip = document.createElement("button");
    chip.className = "token";
    chip.textContent = t;
    chip.dataset.index = i;
    for (const on of ["pointerenter", "focus"]) chip.addEventListener(on, () => showHeat(i));
    for (const off of ["pointerleave", "blur"]) chip.addEventListener(off, () => showHeat(null));
    tokens.append(chip);
  });
  const sure = answer && answer.confidence !== null && answer.confidence !== undefined
    ? `confidence ${Math.round(100 * answer.confidence)}%, ` : "";
  $("meta").textContent = answer
    ? `${answer.tokens.length} tokens, ${sure}score ${answer.score}, ${answer.ms} ms on the server; point at a token to see where the model looked`
    : "";
  showAlternatives(answer ? answer.alternatives || [] : []);
  const picture = answer?.attention?.image;
  if (picture && !strokes.length) {
    const img = new Image();
    img.onload = () => { image = { img }; redraw(); };
    img.src = picture;
  }
  showHeat(null);
}

// The beam's other readings: clicking one shows its LaTeX and preview (Copy copies it); the first is the answer.
function showAlternatives(alternatives) {
  const list = $("alternatives");
  list.replaceChildren();
  list.hidden = alternatives.length < 2;
  alternatives.forEach((a, i) => {
    const option = document.createElement("button");
    option.className = "alternative" + (i === 0 ? " chosen" : "");
    option.textContent = a.latex || "(nothing)";
    if (a.confidence !== null && a.confidence !== undefined) option.title = `confidence ${Math.round(100 * a.confidence)}%`;
    option.addEventListener("click", () => {
      $("latex").textContent = a.latex;
      $("copy").disabled = $("copy-mathml").disabled = !a.latex;
      chosen = a;
      renderPreview(a);
      list.querySelectorAll(".alternative").forEach((o) => o.classList.toggle("chosen", o === option));
    });
    list.append(option);
  });
}

function renderPreview(answer) {
  const preview = $("preview");
  preview.replaceChildren();
  if (!answer) return;
  if (!window.katex) {
    const note = document.createElement("span");
    note.className = "unavailable";
    note.textContent = "Preview unavailable: the server has no KaTeX (see maskmatch serve's log).";
    preview.append(note);
    return;
  }
  if (!answer.latex) { preview.textContent = "(nothing recognized)"; return; }
  window.katex.render(answer.latex, preview, { displayMode: true, throwOnError: false });
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea"); // fallback: copy a selection of the text
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  status(`${what} copied`);
}

$("copy").addEventListener("click", () => copy($("latex").textContent, "LaTeX"));
$("copy-mathml").addEventListener("click", () => copy(chosen?.mathml || "", "MathML"));

// ------------------------------------------------------------------ attention

// The token's map (rows x cols cells) over the ink: the server gives the grid's corner and cell size in the
// strokes' coordinates (board pixels), or in the normalized image's pixels for an upload.
function showHeat(index) {
  const ctx = heat.getContext("2d"), rect = board.getBoundingClientRect();
  ctx.clearRect(0, 0, rect.width, rect.height);
  shown = index;
  document.querySelectorAll(".token.active").forEach((c) => c.classList.remove("active"));
  const att = result?.attention;
  if (index === null || !att || !att.maps[index]) return;
  document.querySelector(`.token[data-index="${index}"]`)?.classList.add("active");
  const map = att.maps[index], top = Math.max(...map) || 1;
  const cells = document.createElement("canvas");
  cells.width = att.cols; cells.height = att.rows;
  const pixels = cells.getContext("2d").createImageData(att.cols, att.rows);
  map.forEach((v, i) => pixels.data.set([217, 72, 15, Math.round(220 * (v / top) ** 1.5)], 4 * i)); // faint cells fade
  cells.getContext("2d").putImageData(pixels, 0, 0);
  let { x, y, cell } = att.grid, k = 1, ox = 0, oy = 0;
  if (att.image && image) { k = image.scale; ox = image.x; oy = image.y; }
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(cells, ox + x * k, oy + y * k, att.cols * cell * k, att.rows * cell * k);
}

resize();
