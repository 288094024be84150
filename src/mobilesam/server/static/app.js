// Click-to-segment page for `mobilesam serve`. Plain JS, no build step.
// The image is uploaded once (the service caches its embedding); every click
// sends all prompts of the current object to /segment and redraws its mask.
"use strict";

const $ = (id) => document.getElementById(id);
const imageCanvas = $("image-canvas");
const maskCanvas = $("mask-canvas");
const promptCanvas = $("prompt-canvas");
const stage = $("stage");
const statusLine = $("status");
const DRAG_PIXELS = 5; // a press that moves less than this (on screen) is a click
const COLOURS = [
  [30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
  [0, 206, 209], [255, 140, 0], [220, 20, 60], [154, 205, 50], [100, 149, 237],
];

const state = {
  file: null, name: "image", imageId: null, width: 0, height: 0,
  points: [], labels: [], box: null, history: [],
  masks: [], // [{segmentation: {size, counts}, score, area, bbox}]
  mode: "object", // "object": masks of the clicked object; "everything": generator output
  request: 0, // id of the newest segment request; older answers are dropped
};

function setStatus(text, kind = "ready") {
  statusLine.textContent = text;
  statusLine.dataset.state = kind;
}

function apiKeyHeaders() {
  const key = localStorage.getItem("mobilesam-api-key");
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...apiKeyHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    const key = window.prompt("This service needs an API key:");
    if (key) {
      localStorage.setItem("mobilesam-api-key", key);
      return api(path, options);
    }
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- loading an image -----------------------------------------------------

async function openFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus(`Not an image: ${file ? file.name : "nothing"}`, "error");
    return;
  }
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
  if (!bitmap) {
    setStatus(`The browser cannot read ${file.name}`, "error");
    return;
  }
  Object.assign(state, { file, name: file.name.replace(/\.[^.]+$/, "") || "image", imageId: null });
  for (const canvas of [imageCanvas, maskCanvas, promptCanvas]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  stage.classList.remove("empty");
  resetPrompts();
  await upload();
}

async function upload() {
  setStatus("Computing the image embedding…", "busy");
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  try {
    const info = await api("/v1/images", { method: "POST", body: form });
    Object.assign(state, { imageId: info.image_id, width: info.width, height: info.height });
    setStatus(`Ready: ${info.width}×${info.height}, embedding ${info.cached ? "cached" : "computed"} in ${info.milliseconds.toFixed(0)} ms. Click on an object.`);
    updateButtons();
  } catch (error) {
    setStatus(`Upload failed: ${error.message}`, "error");
  }
}

// A call on the cached image; if the service has evicted it, upload again and retry once.
async function onImage(path, body) {
  const call = () => api(`/v1/images/${state.imageId}/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  try {
    return await call();
  } catch (error) {
    if (error.status !== 404) throw error;
    await upload();
    return call();
  }
}

$("file").addEventListener("change", (event) => openFile(event.target.files[0]));
for (const name of ["dragenter", "dragover"]) {
  document.addEventListener(name, (event) => { event.preventDefault(); stage.classList.add("dragover"); });
}
document.addEventListener("dragleave", () => stage.classList.remove("dragover"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("dragover");
  openFile(event.dataTransfer.files[0]);
});

// ---- prompts ----------------------------------------------------------------

// Canvas pixels are image pixels; the canvas may be displayed smaller.
function toImage(event) {
  const rect = promptCanvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (promptCanvas.width / rect.width);
  const y = (event.clientY - rect.top) * (promptCanvas.height / rect.height);
  return [Math.min(Math.max(x, 0), promptCanvas.width - 1), Math.min(Math.max(y, 0), promptCanvas.height - 1)];
}

let press = null; // {screen: [x, y], image: [x, y], button}

promptCanvas.addEventListener("contextmenu", (event) => event.preventDefault());
promptCanvas.addEventListener("mousedown", (event) => {
  if (!state.imageId) return;
  press = { screen: [event.clientX, event.clientY], image: toImage(event), button: event.button };
});
promptCanvas.addEventListener("mousemove", (event) => {
  if (!press || press.button !== 0 || !isDrag(press, event)) return;
  drawPrompts(boxFrom(press.image, toImage(event)));
});
window.addEventListener("mouseup", (event) => {
  if (!press) return;
  const start = press;
  press = null;
  if (start.button === 0 && isDrag(start, event)) {
    pushHistory();
    state.box = boxFrom(start.image, toImage(event));
  } else if (start.button === 0 || start.button === 2) {
    pushHistory();
    state.points.push(start.image);
    state.labels.push(start.button === 0 ? 1 : 0);
  } else {
    return;
  }
  state.mode = "object";
  segment();
});

function isDrag(start, event) {
  return Math.hypot(event.clientX - start.screen[0], event.clientY - start.screen[1]) >= DRAG_PIXELS;
}

function boxFrom(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

function pushHistory() {
  state.history.push({ points: state.points.slice(), labels: state.labels.slice(), box: state.box });
}

function resetPrompts() {
  Object.assign(state, { points: [], labels: [], box: null, history: [], masks: [], mode: "object" });
  drawMasks();
  drawPrompts();
  updateButtons();
}

$("undo").addEventListener("click", () => {
  const previous = state.history.pop();
  if (!previous) return;
  Object.assign(state, previous, { mode: "object" });
  segment();
});
$("clear").addEventListener("click", () => {
  resetPrompts();
  setStatus("Cleared. Click on an object.");
});

// ---- calls ------------------------------------------------------------------

async function segment() {
  drawPrompts();
  updateButtons();
  const request = ++state.request;
  if (!state.points.length && !state.box) {
    state.masks = [];
    drawMasks();
    updateButtons();
    return;
  }
  const body = { multimask: state.points.length === 1 && !state.box };
  if (state.points.length) Object.assign(body, { points: state.points, labels: state.labels });
  if (state.box) body.box = state.box;
  setStatus("Segmenting…", "busy");
  try {
    const answer = await onImage("segment", body);
    if (request !== state.request) return;
    state.masks = answer.masks.slice(0, 1); // best first: keep the best candidate
    drawMasks();
    const scores = answer.masks.map((m) => m.score.toFixed(3)).join(", ");
    setStatus(`Mask: score ${answer.masks[0].score.toFixed(3)}, ${answer.masks[0].area} pixels (candidates: ${scores}) in ${answer.milliseconds.toFixed(0)} ms.`);
  } catch (error) {
    if (request === state.request) setStatus(`Segment failed: ${error.message}`, "error");
  }
  updateButtons();
}

$("everything").addEventListener("click", async () => {
  const side = Math.max(1, Math.min(64, parseInt($("grid").value, 10) || 16));
  Object.assign(state, { points: [], labels: [], box: null, history: [], mode: "everything" });
  const request = ++state.request;
  drawPrompts();
  setStatus(`Segmenting everything (${side}×${side} points)…`, "busy");
  try {
    const answer = await onImage("everything", { points_per_side: side });
    if (request !== state.request) return;
    state.masks = answer.masks.map((m) => ({ ...m, score: m.predicted_iou }));
    drawMasks();
    setStatus(`Everything: ${answer.masks.length} masks in ${(answer.milliseconds / 1000).toFixed(1)} s.`);
  } catch (error) {
    if (request === state.request) setStatus(`Segment everything failed: ${error.message}`, "error");
  }
  updateButtons();
});

function updateButtons() {
  $("everything").disabled = !state.imageId;
  $("undo").disabled = !state.history.length;
  $("clear").disabled = !state.imageId || (!state.points.length && !state.box && !state.masks.length);
  $("download-png").disabled = $("download-coco").disabled = !state.masks.length;
}

// ---- drawing ----------------------------------------------------------------

// pycocotools' compressed RLE string -> run lengths (column-major, zeros first).
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Mask as a row-major Uint8Array of 0/1.
function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  let position = 0, value = 0;
  for (const run of rleCounts(rle.counts)) {
    if (value) {
      for (let i = position; i < position + run; i++) mask[(i % h) * w + Math.floor(i / h)] = 1;
    }
    position += run;
    value ^= 1;
  }
  return mask;
}

function paintMasks(context, alpha, background) {
  const { width, height } = maskCanvas;
  const pixels = context.createImageData(width, height);
  if (background) for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255;
  state.masks.forEach((m, index) => {
    const colour = state.mode === "object" && background ? [255, 255, 255] : COLOURS[index % COLOURS.length];
    const mask = decodeRle(m.segmentation);
    for (let i = 0; i < mask.length; i++) {
      if (!mask[i]) continue;
      pixels.data.set(colour, 4 * i);
      pixels.data[4 * i + 3] = alpha;
    }
  });
  context.putImageData(pixels, 0, 0);
}

function drawMasks() {
  const context = maskCanvas.getContext("2d");
  context.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
  if (state.masks.length) paintMasks(context, 120, false);
}

function drawPrompts(preview = null) {
  const context = promptCanvas.getContext("2d");
  context.clearRect(0, 0, promptCanvas.width, promptCanvas.height);
  // Sizes in screen pixels, whatever the display scale.
  const scale = promptCanvas.width / (promptCanvas.getBoundingClientRect().width || promptCanvas.width);
  for (const box of [state.box, preview]) {
    if (!box) continue;
    context.lineWidth = 2 * scale;
    context.strokeStyle = box === preview ? "rgba(255,255,255,0.9)" : "rgb(34,197,94)";
    context.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  state.points.forEach(([x, y], i) => {
    context.beginPath();
    context.arc(x, y, 6 * scale, 0, 2 * Math.PI);
    context.fillStyle = state.labels[i] ? "rgb(34,197,94)" : "rgb(239,68,68)";
    context.fill();
    context.lineWidth = 2 * scale;
    context.strokeStyle = "white";
    context.stroke();
  });
}

// ---- downloads --------------------------------------------------------------

function save(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

$("download-png").addEventListener("click", () => {
  // One object: white on black. Everything: each mask in its colour on black.
  const canvas = document.createElement("canvas");
  canvas.width = maskCanvas.width;
  canvas.height = maskCanvas.height;
  paintMasks(canvas.getContext("2d"), 255, true);
  canvas.toBlob((blob) => save(blob, `${state.name}_masks.png`), "image/png");
});

$("download-coco").addEventListener("click", () => {
  const coco = {
    images: [{ id: 1, file_name: state.file.name, width: state.width, height: state.height }],
    categories: [{ id: 1, name: "object" }],
    annotations: state.masks.map((m, i) => ({
      id: i + 1, image_id: 1, category_id: 1, iscrowd: 0,
      segmentation: m.segmentation, area: m.area, bbox: m.bbox, score: m.score,
    })),
  };
  save(new Blob([JSON.stringify(coco)], { type: "application/json" }), `${state.name}_coco.json`);
});
