// SAM's image encoder and prompt decoder in the page, with onnxruntime-web (WebAssembly).
// The graphs are the ones `mobilesam export` writes; the arithmetic around them
// follows SamPredictor: resize the long side to the model's input size (PIL's
// bilinear filter), scale prompt coordinates the same way, pad a prompt without a
// box with the point (0, 0) labelled -1, keep logits above the mask threshold.
"use strict";

const LocalSam = (() => {
  const VENDOR = "static/vendor/onnxruntime-web/";

  /** Whether onnxruntime-web loaded; sets where its WebAssembly lives and how many threads it may use. */
  function available() {
    if (typeof ort === "undefined") return false;
    ort.env.wasm.wasmPaths = new URL(VENDOR, document.baseURI).href;
    // Threads need SharedArrayBuffer, which only a cross-origin isolated page has.
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 4) : 1;
    return true;
  }

  async function session(url, headers = {}) {
    const response = await fetch(url, { headers });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { session: await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] }), bytes: bytes.length };
  }

  /** SamPredictor's resized size: the long side becomes `side`, each size rounded half up. */
  function resizedSize(height, width, side) {
    const scale = side / Math.max(height, width);
    return [Math.floor(height * scale + 0.5), Math.floor(width * scale + 0.5)];
  }

  // ---- the image ------------------------------------------------------------

  // PIL's bilinear resampling along one axis: for each output index, the first input index and the
  // weights of a triangle filter widened by the shrink factor (antialiasing), normalised to sum 1.
  function axisTaps(inSize, outSize) {
    const scale = inSize / outSize;
    const widen = Math.max(scale, 1);
    const width = Math.ceil(widen) * 2 + 1;
    const first = new Int32Array(outSize), count = new Int32Array(outSize);
    const weights = new Float32Array(outSize * width);
    for (let o = 0; o < outSize; o++) {
      const centre = (o + 0.5) * scale;
      const lo = Math.max(Math.floor(centre - widen + 0.5), 0);
      const hi = Math.min(Math.floor(centre + widen + 0.5), inSize);
      let total = 0;
      for (let i = lo; i < hi; i++) total += Math.max(0, 1 - Math.abs((i - centre + 0.5) / widen));
      for (let i = lo; i < hi; i++) weights[o * width + i - lo] = total ? Math.max(0, 1 - Math.abs((i - centre + 0.5) / widen)) / total : 0;
      first[o] = lo;
      count[o] = hi - lo;
    }
    return { first, count, weights, width };
  }

  /** (H, W) RGBA pixels -> (h, w) RGB as PIL's Image.resize(BILINEAR): rows first, rounded to 8 bits, then columns. */
  function resizeRgb(rgba, height, width, newHeight, newWidth) {
    const across = axisTaps(width, newWidth), down = axisTaps(height, newHeight);
    const wide = new Uint8ClampedArray(height * newWidth * 3); // (H, w, 3)
    for (let y = 0; y < height; y++) {
      const row = y * width * 4, out = y * newWidth * 3;
      for (let x = 0; x < newWidth; x++) {
        let r = 0, g = 0, b = 0;
        for (let k = 0, i = row + across.first[x] * 4, t = x * across.width; k < across.count[x]; k++, i += 4, t++) {
          const w = across.weights[t];
          r += w * rgba[i];
          g += w * rgba[i + 1];
          b += w * rgba[i + 2];
        }
        // Sums are convex combinations of bytes, so never negative: | 0 floors, as PIL rounds half up.
        wide[out + 3 * x] = (r + 0.5) | 0;
        wide[out + 3 * x + 1] = (g + 0.5) | 0;
        wide[out + 3 * x + 2] = (b + 0.5) | 0;
      }
    }
    const line = newWidth * 3;
    const out = new Uint8ClampedArray(newHeight * line);
    const sums = new Float32Array(line);
    for (let y = 0; y < newHeight; y++) {
      sums.fill(0);
      for (let k = 0, t = y * down.width; k < down.count[y]; k++, t++) {
        const w = down.weights[t], source = (down.first[y] + k) * line;
        for (let j = 0; j < line; j++) sums[j] += w * wide[source + j];
      }
      for (let j = 0, o = y * line; j < line; j++) out[o + j] = (sums[j] + 0.5) | 0;
    }
    return out;
  }

  /** The encoder's input: (1, 3, S, S) float32, resized, normalised, zero-padded at the bottom and right. */
  function encoderInput(imageData, config) {
    const side = config.image_size;
    const [h, w] = resizedSize(imageData.height, imageData.width, side);
    const rgb = resizeRgb(imageData.data, imageData.height, imageData.width, h, w);
    const input = new Float32Array(3 * side * side);
    for (let c = 0; c < 3; c++) {
      const mean = config.pixel_mean[c], std = config.pixel_std[c];
      const plane = c * side * side;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) input[plane + y * side + x] = (rgb[(y * w + x) * 3 + c] - mean) / std;
      }
    }
    return { tensor: new ort.Tensor("float32", input, [1, 3, side, side]), inputSize: [h, w] };
  }

  async function encode(encoder, imageData, config) {
    const { tensor, inputSize } = encoderInput(imageData, config);
    const outputs = await encoder.run({ [encoder.inputNames[0]]: tensor });
    return { embedding: outputs[encoder.outputNames[0]], inputSize, originalSize: [imageData.height, imageData.width] };
  }

  // ---- an embedding from the service ----------------------------------------

  const HALF_TO_FLOAT = (() => {
    const table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
      if (exponent === 0) table[h] = sign * 2 ** -14 * (fraction / 1024);
      else if (exponent === 31) table[h] = fraction ? NaN : sign * Infinity;
      else table[h] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
    }
    return table;
  })();

  /** The service's /embedding answer -> the embedding tensor and the sizes the decoder needs. */
  async function fetchEmbedding(url, headers = {}) {
    const response = await fetch(url, { headers });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    const sizes = (name) => response.headers.get(name).split(",").map(Number);
    const shape = sizes("X-Embedding-Shape");
    const raw = await response.arrayBuffer();
    let values;
    if (response.headers.get("X-Embedding-Dtype") === "float16") {
      const halves = new Uint16Array(raw);
      values = new Float32Array(halves.length);
      for (let i = 0; i < halves.length; i++) values[i] = HALF_TO_FLOAT[halves[i]];
    } else {
      values = new Float32Array(raw);
    }
    return {
      embedding: new ort.Tensor("float32", values, shape),
      inputSize: sizes("X-Input-Size"),
      originalSize: sizes("X-Original-Size"),
      bytes: raw.byteLength,
    };
  }

  // ---- decoding -------------------------------------------------------------

  /**
   * Masks for one object, as SamPredictor.predict gives them.
   * @param image {embedding, inputSize, originalSize}
   * @param prompt {points: [[x, y]], labels: [1|0], box: [x0, y0, x1, y1] | null} in image pixels
   * @param multimask the best of SAM's three multimask outputs (one click), else its single-mask output
   * @returns {mask: Uint8Array (H*W, row-major 0/1), score, scores, width, height}
   */
  async function decode(decoder, image, prompt, multimask, threshold = 0) {
    const [height, width] = image.originalSize;
    const sx = image.inputSize[1] / width, sy = image.inputSize[0] / height;
    const coords = prompt.points.map(([x, y]) => [x * sx, y * sy]);
    const labels = prompt.labels.slice();
    if (prompt.box) {
      coords.push([prompt.box[0] * sx, prompt.box[1] * sy], [prompt.box[2] * sx, prompt.box[3] * sy]);
      labels.push(2, 3);
    } else {
      coords.push([0, 0]);
      labels.push(-1);
    }
    const maskSide = 4 * image.embedding.dims[3];
    const feeds = {
      image_embeddings: image.embedding,
      point_coords: new ort.Tensor("float32", Float32Array.from(coords.flat()), [1, coords.length, 2]),
      point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, labels.length]),
      mask_input: new ort.Tensor("float32", new Float32Array(maskSide * maskSide), [1, 1, maskSide, maskSide]),
      has_mask_input: new ort.Tensor("float32", Float32Array.of(0), [1]),
      orig_im_size: new ort.Tensor("float32", Float32Array.of(height, width), [2]),
    };
    const outputs = await decoder.run(feeds, ["masks", "iou_predictions"]);
    const scores = Array.from(outputs.iou_predictions.data);
    let best = 0;
    if (multimask) {
      best = 1;
      for (let k = 2; k < scores.length; k++) if (scores[k] > scores[best]) best = k;
    }
    const logits = outputs.masks.data.subarray(best * height * width, (best + 1) * height * width);
    const mask = new Uint8Array(height * width);
    for (let i = 0; i < mask.length; i++) mask[i] = logits[i] > threshold ? 1 : 0;
    for (const output of Object.values(outputs)) output.dispose?.();
    return { mask, score: scores[best], scores: multimask ? scores.slice(1) : [scores[0]], width, height };
  }

  // ---- masks ----------------------------------------------------------------

  /** Row-major 0/1 mask -> COCO compressed RLE {size: [h, w], counts}, as pycocotools writes it. */
  function encodeRle(mask, height, width) {
    const runs = [];
    let value = 0, run = 0;
    for (let x = 0; x < width; x++) {
      for (let y = 0; y < height; y++) {
        if (mask[y * width + x] !== value) {
          runs.push(run);
          run = 0;
          value ^= 1;
        }
        run += 1;
      }
    }
    runs.push(run);
    let text = "";
    runs.forEach((count, i) => {
      let x = i > 2 ? count - runs[i - 2] : count;
      let more = true;
      while (more) {
        let c = x & 0x1f;
        x >>= 5;
        more = c & 0x10 ? x !== -1 : x !== 0;
        if (more) c |= 0x20;
        text += String.fromCharCode(c + 48);
      }
    });
    return { size: [height, width], counts: text };
  }

  /** Area and XYWH bounding box of a row-major 0/1 mask. */
  function maskStats(mask, height, width) {
    let area = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (!mask[y * width + x]) continue;
        area += 1;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    return { area, bbox: area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0] };
  }

  return { available, session, resizedSize, resizeRgb, encode, fetchEmbedding, decode, encodeRle, maskStats };
})();
