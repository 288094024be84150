// Click-to-segment page. Plain JS, no build step.
// Served (`mobilesam serve`): the image is uploaded once (the service caches its
// embedding); the page fetches the embedding and decodes every click, box and
// hover in the browser (local.js), or, where that cannot load, sends the prompts
// to /segment. Static (`mobilesam export --format web`): the page embeds the
// image itself too, and no request leaves it once the model is loaded.
"use strict";

const $ = (id) => document.getElementById(id);
const imageCanvas = $("image-canvas");
const maskCanvas = $("mask-canvas");
const promptCanvas = $("prompt-canvas");
const stage = $("stage");
const statusLine = $("status");
const DRAG_PIXELS = 5; // a press that moves less than this (on screen) is a click
const STATIC = document.querySelector('meta[name="mobilesam-page"]').content === "static";
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
  local: null, // {embedding, inputSize, originalSize}: the image as the page's decoder takes it
};

// What runs where, and how long it took, for the page's users and benchmarks/browser.py.
const stats = {
  decoding: null, // "page" or "service", once known
  fallback: null, // why the page decodes on the service
  modelBytes: 0, embeddingBytes: 0, embedMs: null,
  clicks: [], // [{where, decodeMs, totalMs}]
  hoverFrames: 0, hoverMs: [],
};
window.mobilesamStats = stats;

// The page's graphs: {decoder, encoder (static page only), config (static page only)}.
const page = { decoder: null, encoder: null, config: null, ready: null };
// One decoder run at a time: onnxruntime-web runs a session's calls one after another anyway.
let decoderQueue = Promise.resolve();
function onDecoder(job) {
  const run = decoderQueue.then(job);
  decoderQueue = run.catch(() => {});
  return run;
}

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
  Object.assign(state, { file, name: file.name.replace(/\.[^.]+$/, "") || "image", imageId: null, local: null });
  for (const canvas of [imageCanvas, maskCanvas, promptCanvas]) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  stage.classList.remove("empty");
  resetPrompts();
  if (STATIC) {
    await page.ready;
    if (page.encoder) await embedInPage();
  } else {
    await upload();
  }
}

async function upload() {
  setStatus("Computing the image embedding…", "busy");
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  try {
    const info = await api("v1/images", { method: "POST", body: form });
    Object.assign(state, { imageId: info.image_id, width: info.width, height: info.height, local: null });
    await page.ready;
    if (page.decoder) await fetchEmbedding();
    const where = state.local ? "clicks decoded in the page" : "clicks decoded by the service";
    setStatus(`Ready: ${info.width}×${info.height}, embedding ${info.cached ? "cached" : "computed"} in ${info.milliseconds.toFixed(0)} ms; ${where}. Click on an object.`);
    updateButtons();
  } catch (error) {
    setStatus(`Upload failed: ${error.message}`, "error");
  }
}

async function fetchEmbedding() {
  try {
    const image = await LocalSam.fetchEmbedding(`v1/images/${state.imageId}/embedding?dtype=float16`, apiKeyHeaders());
    state.local = image;
    stats.embeddingBytes = image.bytes;
  } catch (error) {
    fallBack(`the embedding could not be fetched (${error.message})`);
  }
}

function fallBack(reason) {
  console.warn(`mobilesam: decoding on the service: ${reason}`);
  Object.assign(page, { decoder: null, encoder: null });
  state.local = null;
  Object.assign(stats, { decoding: "service", fallback: reason });
}

// The static page embeds the image with its own encoder.
async function embedInPage() {
  setStatus("Computing the image embedding in the page…", "busy");
  const started = performance.now();
  try {
    const pixels = imageCanvas.getContext("2d").getImageData(0, 0, imageCanvas.width, imageCanvas.height);
    state.local = await onDecoder(() => LocalSam.encode(page.encoder, pixels, page.config));
    stats.embedMs = performance.now() - started;
    Object.assign(state, { imageId: "page", width: imageCanvas.width, height: imageCanvas.height });
    setStatus(`Ready: ${state.width}×${state.height}, embedding computed in the page in ${stats.embedMs.toFixed(0)} ms (${$("encoder-variant").value} encoder). Click on an object.`);
  } catch (error) {
    setStatus(`The page could not embed the image: ${error.message}`, "error");
  }
  updateButtons();
}

// A call on the cached image; if the service has evicted it, upload again and retry once.
async function onImage(path, body) {
  const call = () => api(`v1/images/${state.imageId}/${path}`, {
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
  if (!press) {
    hoverAt(toImage(event), [event.clientX, event.clientY]);
    return;
  }
  if (press.button !== 0 || !isDrag(press, event)) return;
  drawPrompts(boxFrom(press.image, toImage(event)));
});
promptCanvas.addEventListener("mouseleave", () => {
  hover.next = null;
  hover.screen = null;
  drawMasks();
});
window.addEventListener("mouseup", (event) => {
  if (!press) return;
  const start = press;
  press = null;
  clickStarted = performance.now();
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

// ---- hover preview (in-page decoding only) -----------------------------------

// The mask under the pointer, as if it were the next object point; one decode in
// flight, and the newest position waits for it (older ones are dropped).
const hover = { busy: false, next: null, screen: null };
let clickStarted = 0;

function hoverAt(point, screen) {
  if (!state.local || !page.decoder || state.mode !== "object") return;
  // The mouse moves onto a point it has just clicked: that point's mask is already drawn.
  if (hover.screen === null && state.points.length && Math.hypot(...point.map((v, i) => v - state.points.at(-1)[i])) < 1) return;
  hover.screen = screen;
  hover.next = point;
  if (!hover.busy) previewLoop();
}

async function previewLoop() {
  hover.busy = true;
  try {
    while (hover.next) {
      const point = hover.next;
      hover.next = null;
      const request = state.request;
      const started = performance.now();
      const prompt = { points: [...state.points, point], labels: [...state.labels, 1], box: state.box };
      const result = await onDecoder(() => LocalSam.decode(page.decoder, state.local, prompt, !state.points.length && !state.box));
      // A click or a new image since: this preview is stale.
      if (request !== state.request || !hover.screen) continue;
      paintPreview(result);
      stats.hoverFrames += 1;
      stats.hoverMs.push(performance.now() - started);
    }
  } catch (error) {
    console.warn(`mobilesam: hover preview failed: ${error.message}`);
  } finally {
    hover.busy = false;
  }
}

function paintPreview(result) {
  const context = maskCanvas.getContext("2d");
  const pixels = context.createImageData(maskCanvas.width, maskCanvas.height);
  for (let i = 0; i < result.mask.length; i++) {
    if (!result.mask[i]) continue;
    pixels.data.set([255, 255, 255, 110], 4 * i);
  }
  context.putImageData(pixels, 0, 0);
}

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
  hover.screen = null; // a preview resumes when the mouse moves again
  const multimask = state.points.length === 1 && !state.box;
  if (state.local && page.decoder) {
    try {
      await segmentInPage(request, multimask);
      return;
    } catch (error) {
      if (STATIC) {
        setStatus(`Segment failed: ${error.message}`, "error");
        return;
      }
      fallBack(`the page's decoder failed (${error.message})`);
    }
  }
  const body = { multimask };
  if (state.points.length) Object.assign(body, { points: state.points, labels: state.labels });
  if (state.box) body.box = state.box;
  setStatus("Segmenting…", "busy");
  try {
    const answer = await onImage("segment", body);
    if (request !== state.request) return;
    state.masks = answer.masks.slice(0, 1); // best first: keep the best candidate
    drawMasks();
    stats.decoding = "service";
    stats.clicks.push({ where: "service", decodeMs: answer.milliseconds, totalMs: performance.now() - clickStarted });
    const scores = answer.masks.map((m) => m.score.toFixed(3)).join(", ");
    setStatus(`Mask: score ${answer.masks[0].score.toFixed(3)}, ${answer.masks[0].area} pixels (candidates: ${scores}) in ${answer.milliseconds.toFixed(0)} ms on the service.`);
  } catch (error) {
    if (request === state.request) setStatus(`Segment failed: ${error.message}`, "error");
  }
  updateButtons();
}

async function segmentInPage(request, multimask) {
  const prompt = { points: state.points, labels: state.labels, box: state.box };
  const started = performance.now();
  const threshold = page.config ? page.config.mask_threshold : 0;
  const result = await onDecoder(() => LocalSam.decode(page.decoder, state.local, prompt, multimask, threshold));
  if (request !== state.request) return;
  const decodeMs = performance.now() - started;
  state.masks = [{ bitmap: result.mask, score: result.score, ...LocalSam.maskStats(result.mask, result.height, result.width) }];
  drawMasks();
  stats.decoding = "page";
  stats.clicks.push({ where: "page", decodeMs, totalMs: performance.now() - clickStarted });
  const scores = result.scores.map((score) => score.toFixed(3)).join(", ");
  setStatus(`Mask: score ${result.score.toFixed(3)}, ${state.masks[0].area} pixels (candidates: ${scores}) in ${decodeMs.toFixed(0)} ms in the page.`);
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
  $("everything").disabled = !state.imageId || STATIC;
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
    const mask = m.bitmap || decodeRle(m.segmentation);
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
      segmentation: m.segmentation || LocalSam.encodeRle(m.bitmap, state.height, state.width),
      area: m.area, bbox: m.bbox, score: m.score,
    })),
  };
  save(new Blob([JSON.stringify(coco)], { type: "application/json" }), `${state.name}_coco.json`);
});

// ---- loading the page's graphs ----------------------------------------------

async function loadServedDecoder() {
  const health = await fetch("healthz").then((response) => response.json()).catch(() => ({}));
  if (!health.in_page_decoding) return fallBack("the service does not offer in-page decoding");
  if (!LocalSam.available()) return fallBack("onnxruntime-web did not load");
  try {
    const { session, bytes } = await LocalSam.session("v1/decoder.onnx", apiKeyHeaders());
    Object.assign(page, { decoder: session });
    Object.assign(stats, { decoding: "page", modelBytes: bytes });
  } catch (error) {
    fallBack(`the decoder graph did not load (${error.message})`);
  }
}

async function loadStaticModel() {
  for (const id of ["everything", "grid-choice"]) $(id).hidden = true;
  $("encoder-choice").hidden = false;
  const variant = new URLSearchParams(location.search).get("encoder");
  if (variant) $("encoder-variant").value = variant;
  setStatus("Loading the model…", "busy");
  try {
    if (!LocalSam.available()) throw new Error("onnxruntime-web did not load");
    page.config = await fetch("web.json").then((response) => response.json());
    const decoder = await LocalSam.session(page.config.decoder);
    const encoder = await LocalSam.session(page.config.encoders[$("encoder-variant").value]);
    Object.assign(page, { decoder: decoder.session, encoder: encoder.session });
    Object.assign(stats, { decoding: "page", modelBytes: decoder.bytes + encoder.bytes });
    setStatus(`Model loaded (${$("encoder-variant").value} encoder, ${self.crossOriginIsolated ? ort.env.wasm.numThreads : 1} thread(s)). Open an image.`);
  } catch (error) {
    setStatus(`The page could not load its model: ${error.message}`, "error");
  }
}

$("encoder-variant").addEventListener("change", async () => {
  page.ready = loadStaticModel();
  await page.ready;
  if (state.file) {
    resetPrompts();
    await embedInPage();
  }
});

page.ready = STATIC ? loadStaticModel() : loadServedDecoder();
