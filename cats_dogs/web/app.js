// The page of export.py --web: classifies a photo in this browser with ONNX Runtime Web (ort/, same origin).
// Everything about the model (class names, size, mean, std, threshold, words) comes from config.json, which
// export.py writes from the checkpoint and the project's code: nothing of it is repeated here.
"use strict";

const $ = (id) => document.getElementById(id);
const language = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
const state = { config: null, session: null, words: null, camera: null, lastInput: null, lastProbabilities: null };
window.catsDogs = state; // for the tests, which compare the page's input with Python's

function say(key, values = {}) {
  return state.words[key].replace(/\{(\w+)\}/g, (_, name) => (name in values ? values[name] : ""));
}

const percent = (p, digits) => (100 * p).toFixed(digits) + "%";

// --- Preprocessing: cats_dogs/preprocessing.py and images.open_image, in the browser --------------------------

// The photo upright (EXIF orientation applied) and with its pixel values as stored: Pillow applies no colour
// profile, so neither does the page.
function decode(blob) {
  return createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none" });
}

// RGBA pixels of the whole frame on white: transparent areas become white, as images.to_rgb does.
function pixelsOf(source, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  context.drawImage(source, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

// Pillow's bilinear filter with antialiasing (what torch's uint8 resize reproduces): for each output pixel, a
// triangle of weights as wide as the scale, over the input pixels it covers.
function filterTaps(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // the bilinear filter's support is 1, widened by the scale when shrinking
  const taps = [];
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const last = Math.min(Math.trunc(center + support + 0.5), inSize);
    const weights = [];
    let total = 0;
    for (let x = first; x < last; x++) {
      const w = Math.max(0, 1 - Math.abs((x - center + 0.5) / filterScale));
      weights.push(w);
      total += w;
    }
    taps.push({ first, weights: weights.map((w) => (total ? w / total : 0)) });
  }
  return taps;
}

// One pass along x (the width) or y, on RGBA bytes, rounded to bytes in between as Pillow and torch do.
function resamplePass(pixels, width, height, outWidth, outHeight, alongX) {
  const taps = alongX ? filterTaps(width, outWidth) : filterTaps(height, outHeight);
  const out = new Uint8ClampedArray(outWidth * outHeight * 4);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const { first, weights } = taps[alongX ? x : y];
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) {
          const at = alongX ? (y * width + first + k) * 4 : ((first + k) * width + x) * 4;
          sum += weights[k] * pixels[at + c];
        }
        out[(y * outWidth + x) * 4 + c] = Math.round(sum);
      }
    }
  }
  return out;
}

// The model's input: squashed to size×size (no crop), scaled to 0..1, normalized; 1×3×size×size, channels first.
function preprocess(pixels, width, height) {
  const { image_size: size, mean, std } = state.config;
  const wide = resamplePass(pixels, width, height, size, height, true);
  const square = resamplePass(wide, size, height, size, size, false);
  const input = new Float32Array(3 * size * size);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < size * size; i++) {
      input[c * size * size + i] = (square[i * 4 + c] / 255 - mean[c]) / std[c];
    }
  }
  return input;
}

// --- The model ------------------------------------------------------------------------------------------------

async function classify(source, width, height, name) {
  const started = performance.now();
  const input = preprocess(pixelsOf(source, width, height), width, height);
  const size = state.config.image_size;
  const feeds = { [state.config.input]: new ort.Tensor("float32", input, [1, 3, size, size]) };
  const logits = Array.from((await state.session.run(feeds))[state.config.output].data);
  const top = Math.max(...logits);
  const exps = logits.map((z) => Math.exp(z - top));
  const total = exps.reduce((a, b) => a + b, 0);
  state.lastInput = input;
  state.lastProbabilities = exps.map((e) => e / total);
  show(state.lastProbabilities, name, performance.now() - started);
}

// The verdict as app.py words it (TEXTS' sure / not_sure), then every class as text: "cat 97.1%".
function show(probabilities, name, ms) {
  const names = state.config.class_names;
  const order = names.map((_, i) => i).sort((a, b) => probabilities[b] - probabilities[a]);
  const best = order[0];
  const key = probabilities[best] >= state.config.threshold ? "sure" : "not_sure";
  const [headline, ...rest] = say(key, { best: names[best], p: percent(probabilities[best], 0),
                                         threshold: percent(state.config.threshold, 0) }).split("\n");
  $("headline").textContent = headline.replace(/^#+\s*/, "");
  $("detail").textContent = rest.join(" ").replace(/\*\*/g, "");
  $("probabilities").replaceChildren(...order.map((i) => {
    const item = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = percent(probabilities[i], 1);
    item.append(bar, `${names[i]} ${percent(probabilities[i], 1)}`);
    return item;
  }));
  $("speed").textContent = say("speed", { ms: Math.round(ms) });
  const answer = $("answer");
  answer.dataset.photo = name;
  answer.dataset.ms = ms.toFixed(1);
  answer.dataset.answers = Number(answer.dataset.answers || 0) + 1;
  answer.hidden = false;
}

async function classifyFile(file) {
  if (!file) return;
  let bitmap;
  try {
    bitmap = await decode(file);
  } catch {
    $("status").textContent = say("unusable_photo");
    $("answer").hidden = true;
    return;
  }
  $("status").textContent = "";
  stopCamera();
  const preview = $("preview");
  URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  await classify(bitmap, bitmap.width, bitmap.height, file.name);
  bitmap.close();
}

// --- The camera: live, one frame after another, as app.py's live tab -------------------------------------------

async function startCamera() {
  const video = $("camera");
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (error) {
    $("status").textContent = say("no_camera", { reason: error.name || String(error) });
    return;
  }
  await video.play();
  $("preview").hidden = true;
  video.hidden = false;
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  const camera = { running: true };
  state.camera = camera;
  while (camera.running) {
    if (video.videoWidth) await classify(video, video.videoWidth, video.videoHeight, "camera");
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
}

function stopCamera() {
  if (!state.camera) return;
  state.camera.running = false;
  state.camera = null;
  const video = $("camera");
  for (const track of video.srcObject ? video.srcObject.getTracks() : []) track.stop();
  video.srcObject = null;
  video.hidden = true;
  $("camera-start").hidden = false;
  $("camera-stop").hidden = true;
}

// --- Start ------------------------------------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  $("photo").addEventListener("change", (event) => classifyFile(event.target.files[0]));
  // Anywhere on the page: a photo dropped beside the zone would otherwise replace the page with itself.
  document.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  document.addEventListener("dragleave", () => drop.classList.remove("over"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classifyFile(event.dataTransfer.files[0]);
  });
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
}

function putWords() {
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
  const names = state.config.class_names.map((name) => name.charAt(0).toUpperCase() + name.slice(1)).join(" vs ");
  document.title = $("title").textContent = say("title", { names });
  $("private").textContent = say("private");
  $("choose").textContent = say("choose");
  $("camera-start").textContent = say("start_camera");
  $("camera-stop").textContent = say("stop_camera");
}

async function start() {
  if (location.protocol === "file:") { // browsers refuse to fetch the model from a file:// page
    const notServed = $("not-served");
    notServed.textContent = notServed.dataset[language];
    notServed.hidden = false;
    return;
  }
  state.config = await (await fetch("config.json")).json();
  state.words = state.config.words[language];
  putWords();
  $("status").textContent = say("loading");
  // Several threads need cross-origin isolation, which GitHub Pages and static Spaces cannot switch on.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  try {
    state.session = await ort.InferenceSession.create(state.config.model, { executionProviders: ["wasm"] });
  } catch (error) {
    $("status").textContent = say("load_failed", { reason: error.message || String(error) });
    return;
  }
  $("status").textContent = "";
  wire();
  $("photo").disabled = false;
  $("camera-start").disabled = false;
  document.body.dataset.ready = "true";
}

start();
