// The page: loads a trained model into remem's wasm build, on WebGPU when the browser offers an
// adapter and on the CPU otherwise, runs a question segment by segment and draws what each
// segment attended to and what the memory kept.
import init, { Demo, RetentionDemo } from './pkg/remem_web.js';

const $ = (id) => document.getElementById(id);
const started = performance.now();
const params = new URLSearchParams(location.search);

/** Timings the browser tests read (milliseconds since the page started). */
window.remem = { ready: false, loadedMs: null, firstAnswerMs: null, segmentsMs: [], device: null, retention: null };
/** The retention demo's length, exactly (for the tests, or the console). */
window.remem.setSegments = (n) => setSegments(n);

let models = [];
let demo = null;
let info = null;
/** The retention demo's model, when the chosen model is a memorize model. */
let keeper = null;
let keeperInfo = null;
/** Held-out book text (assets/noise.txt), fetched once. */
let bookText = null;
let views = [];
let selected = -1;
let busy = false;
let adapterName = '';

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  window.remem.error = message;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function message(e) {
  if (e instanceof Error) return e.message;
  return String(e);
}

window.addEventListener('unhandledrejection', (e) => showError(`Unexpected error: ${message(e.reason)}`));
window.addEventListener('error', (e) => showError(`Unexpected error: ${e.message}`));

// Burn's WebGPU kernels read the subgroup size, so their WGSL says `enable subgroups;`, but wgpu
// (30) does not ask the browser for the `subgroups` feature when it creates the device, and the
// browser then refuses those shaders. Ask for it on every device this page creates.
if (globalThis.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (descriptor = {}) {
    const features = new Set(descriptor.requiredFeatures ?? []);
    if (this.features.has('subgroups')) features.add('subgroups');
    return requestDevice.call(this, { ...descriptor, requiredFeatures: [...features] });
  };
}
// Some of those kernels call subgroup reductions under branches that Dawn's uniformity analysis
// cannot prove subgroup-uniform (native drivers accept them); the browser tests check that the
// answers computed this way are right.
if (globalThis.GPUDevice) {
  const createShaderModule = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (descriptor) {
    if (typeof descriptor?.code === 'string' && descriptor.code.includes('enable subgroups;')) {
      descriptor = { ...descriptor, code: `diagnostic(off, subgroup_uniformity);\n${descriptor.code}` };
    }
    return createShaderModule.call(this, descriptor);
  };
}

/** Why WebGPU cannot be used here, or null when an adapter is offered. */
async function webgpuProblem() {
  if (!('gpu' in navigator)) return 'this browser offers no WebGPU';
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return 'the browser offers no WebGPU adapter';
    const info = adapter.info ?? {};
    adapterName = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ');
    if (!adapter.features.has('subgroups')) {
      return "the WebGPU adapter lacks subgroups, which Burn's kernels need in a browser";
    }
    return null;
  } catch (e) {
    return `WebGPU failed: ${message(e)}`;
  }
}

function setBusy(on) {
  busy = on;
  for (const id of ['example', 'step', 'play', 'reset', 'model', 'force-cpu', 'bury', 'draw-fact', 'length', 'who', 'verb', 'place']) {
    $(id).disabled = on;
  }
}

async function fetchBytes(file) {
  const response = await fetch(`assets/${file}`);
  if (!response.ok) throw new Error(`the model asset ${file} could not be loaded (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Load `bytes` with `Kind.load` on WebGPU, or on the CPU when WebGPU is refused or fails. */
async function openOn(Kind, bytes, file) {
  let problem = $('force-cpu').checked ? 'chosen with "Run on the CPU"' : await webgpuProblem();
  let loaded = null;
  if (problem === null) {
    try {
      loaded = await Kind.load(bytes, file, false);
    } catch (e) {
      problem = `WebGPU failed (${message(e)})`;
    }
  }
  if (loaded === null) loaded = await Kind.load(bytes, file, true);
  let device = loaded.device();
  if (device === 'WebGPU' && adapterName) device = `WebGPU (${adapterName})`;
  window.remem.device = device;
  $('device').textContent = problem ? `${device}: ${problem}` : device;
  return loaded;
}

async function loadModel() {
  const entry = models[$('model').value];
  setBusy(true);
  clearError();
  demo = null;
  keeper = null;
  $('device').textContent = `Loading ${entry.title}…`;
  const retention = entry.kind === 'retention';
  $('char-demo').hidden = retention;
  $('retention-demo').hidden = !retention;
  try {
    const bytes = await fetchBytes(entry.file);
    if (retention) {
      keeper = await openOn(RetentionDemo, bytes, entry.file);
      await showRetentionModel(entry);
    } else {
      demo = await openOn(Demo, bytes, entry.file);
      info = JSON.parse(demo.info());
      $('model-note').textContent =
        `${entry.title}: ${info.layers} layers, ${info.heads} heads, segments of ${info.segment_len} tokens` +
        (info.memory_tokens ? `, ${info.memory_tokens} memory tokens` : '') +
        `, trained ${info.trained_steps} steps on ${info.segments} segments. Held-out: ${entry.accuracy}. ` +
        `Made with: ${entry.command}`;
      $('alphabet').textContent = `Alphabet: ${info.alphabet}, separator ${info.separator}. ${entry.format}`;
      fillSelect($('layer'), info.layers, 'layer');
      fillSelect($('head'), info.heads, 'head');
      $('density-section').hidden = info.model !== 'infinity';
      newExample(Number(params.get('seed') ?? 1));
    }
    window.remem.loadedMs ??= performance.now() - started;
  } catch (e) {
    showError(`The model could not be loaded: ${message(e)}`);
    $('device').textContent = 'No model loaded.';
  } finally {
    setBusy(false);
  }
}

function fillSelect(select, n, name) {
  select.innerHTML = '';
  select.append(new Option('mean', 'mean'));
  for (let i = 0; i < n; i++) select.append(new Option(`${name} ${i}`, String(i)));
}

let exampleSeed = 1;
function newExample(seed) {
  exampleSeed = seed ?? exampleSeed + 1;
  const example = JSON.parse(demo.example(exampleSeed));
  $('question').value = example.question;
  reset();
}

function reset() {
  views = [];
  selected = -1;
  $('segments').innerHTML = '';
  $('answer').textContent = '';
  $('truth').textContent = '';
  $('verdict').textContent = '';
  $('status').textContent = '';
  $('attention-title').textContent = 'a segment';
  for (const id of ['attention', 'memory', 'retention', 'density']) clear($(id));
  started_run = false;
}

let started_run = false;
function begin() {
  if (started_run) return true;
  clearError();
  try {
    demo.start($('question').value);
  } catch (e) {
    showError(`This question cannot be read: ${message(e)}`);
    return false;
  }
  started_run = true;
  return true;
}

/** Process one segment; false once the answer is complete. */
async function stepOnce() {
  const text = await demo.step();
  if (text !== null) {
    const view = JSON.parse(text);
    views.push(view);
    addSegment(view);
    select(views.length - 1);
    drawMemory();
  }
  const outcome = JSON.parse(demo.outcome());
  showOutcome(outcome);
  window.remem.segmentsMs.push(Math.round(performance.now() - started));
  if (outcome.finished && window.remem.firstAnswerMs === null) {
    window.remem.firstAnswerMs = performance.now() - started;
  }
  return text !== null || !outcome.finished;
}

async function run(all) {
  if (busy || !demo || !begin()) return;
  setBusy(true);
  try {
    do {
      const more = await stepOnce();
      if (!more) break;
      await new Promise((r) => requestAnimationFrame(() => r()));
    } while (all);
  } catch (e) {
    showError(`The model stopped: ${message(e)}. Reload the page to start again.`);
  } finally {
    setBusy(false);
  }
}

function addSegment(view) {
  const box = document.createElement('span');
  box.className = 'segment';
  const index = views.length - 1;
  box.innerHTML = `<span class="i">${view.index + 1}</span>`;
  view.tokens.forEach((t, i) => {
    const s = document.createElement('span');
    s.textContent = t;
    if (view.generated[i]) s.className = 'gen';
    box.append(s);
  });
  box.addEventListener('click', () => select(index));
  $('segments').append(box);
}

function showOutcome(o) {
  const answer = $('answer');
  answer.innerHTML = '';
  [...o.answer].forEach((ch, i) => {
    const s = document.createElement('span');
    s.textContent = ch;
    if (o.correct.length > i) s.className = o.correct[i] ? 'ok' : 'bad';
    answer.append(s);
  });
  $('truth').textContent = o.truth ?? '(not known for this task)';
  const verdict = $('verdict');
  if (o.finished) {
    verdict.textContent = o.solved ? 'Correct: the answer equals the truth.' : 'Wrong: the answer differs from the truth.';
    verdict.className = `verdict ${o.solved ? 'ok' : 'bad'}`;
  } else {
    verdict.textContent = '';
  }
  const total = window.remem.firstAnswerMs;
  $('status').textContent = `${o.segments} segments read` +
    (o.finished ? '; answer complete' : '') +
    (total !== null ? ` (first answer ${(total / 1000).toFixed(2)} s after the page started)` : '');
}

function select(index) {
  selected = index;
  document.querySelectorAll('.segment').forEach((el, i) => el.classList.toggle('selected', i === index));
  $('attention-title').textContent = `segment ${views[index].index + 1}`;
  drawAttention();
  drawDensity();
}

// ----- drawing -----

function clear(canvas) {
  const g = canvas.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, canvas.width, canvas.height);
}

/** White (0) to dark blue (1). */
function colour(v) {
  const x = Math.max(0, Math.min(1, v));
  const r = Math.round(255 - x * (255 - 16));
  const g = Math.round(255 - x * (255 - 52));
  const b = Math.round(255 - x * (255 - 128));
  return `rgb(${r},${g},${b})`;
}

function choice(select) {
  return select.value === 'mean' ? null : Number(select.value);
}

/** Mean over the chosen layer and head (null: all): rows x cols. */
function attentionMatrix(a, layer, head) {
  const rows = a.rows.length, cols = a.cols.length;
  const out = new Float32Array(rows * cols);
  let n = 0;
  for (let l = 0; l < a.layers; l++) {
    if (layer !== null && l !== layer) continue;
    for (let h = 0; h < a.heads; h++) {
      if (head !== null && h !== head) continue;
      const base = (l * a.heads + h) * rows * cols;
      for (let i = 0; i < rows * cols; i++) out[i] += a.weights[base + i];
      n++;
    }
  }
  for (let i = 0; i < out.length; i++) out[i] /= n;
  return out;
}

function drawAttention() {
  clear($('attention'));
  if (selected < 0) return;
  drawAttentionOn($('attention'), views[selected].attention, choice($('layer')), choice($('head')));
}

/** Draw attention `a` on `canvas`, averaged over every layer and head or the chosen ones. */
function drawAttentionOn(canvas, a, layer, head) {
  const m = attentionMatrix(a, layer, head);
  const rows = a.rows.length, cols = a.cols.length;
  const g = canvas.getContext('2d');
  const left = 44, top = 44;
  const cell = Math.max(2, Math.min(28, Math.floor((canvas.width - left) / cols)));
  canvas.height = top + rows * cell + 16;
  clear(canvas);
  // Scale so the largest weight is darkest: rows sum to 1, so raw weights are pale on long rows.
  let max = 0;
  for (const v of m) max = Math.max(max, v);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      g.fillStyle = colour(m[r * cols + c] / (max || 1));
      g.fillRect(left + c * cell, top + r * cell, cell, cell);
    }
  }
  g.fillStyle = '#333';
  g.font = `${Math.min(11, cell)}px monospace`;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  a.rows.forEach((label, r) => g.fillText(label, left - 3, top + r * cell + cell / 2));
  g.save();
  g.textAlign = 'left';
  a.cols.forEach((label, c) => {
    g.save();
    g.translate(left + c * cell + cell / 2, top - 3);
    g.rotate(-Math.PI / 2);
    g.fillText(label, 0, 0);
    g.restore();
  });
  g.restore();
  // Block boundaries, and the two blocks the page is about.
  g.strokeStyle = '#9aa6bb';
  g.lineWidth = 1;
  for (const grp of a.col_groups) {
    g.beginPath();
    g.moveTo(left + grp.start * cell + 0.5, top);
    g.lineTo(left + grp.start * cell + 0.5, top + rows * cell);
    g.stroke();
  }
  for (const grp of a.row_groups) {
    g.beginPath();
    g.moveTo(left, top + grp.start * cell + 0.5);
    g.lineTo(left + cols * cell, top + grp.start * cell + 0.5);
    g.stroke();
  }
  const col = (name) => a.col_groups.find((x) => x.name === name);
  const row = (name) => a.row_groups.find((x) => x.name === name);
  const outline = (r, c, label) => {
    if (!r || !c) return;
    g.strokeStyle = '#e8710a';
    g.lineWidth = 2;
    g.strokeRect(left + c.start * cell, top + r.start * cell, c.len * cell, r.len * cell);
    g.fillStyle = '#e8710a';
    g.textAlign = 'left';
    g.font = '11px sans-serif';
    g.fillText(label, left + c.start * cell + 2, top + r.start * cell - 0 + r.len * cell + 8);
  };
  outline(row('segment'), col('read memory'), 'segment → read memory');
  outline(row('write memory'), col('segment'), 'write memory ← segment');
  outline(row('segment'), col('cache'), 'segment → cache');
}

function drawGrid(canvas, rows, cols, value, labelRows) {
  clear(canvas);
  if (!rows || !cols) return;
  const g = canvas.getContext('2d');
  const left = 34, top = 6;
  const cw = (canvas.width - left - 4) / cols;
  const ch = (canvas.height - top - 16) / rows;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      g.fillStyle = colour(value(r, c));
      g.fillRect(left + c * cw, top + r * ch, Math.ceil(cw), Math.ceil(ch));
    }
  }
  g.fillStyle = '#333';
  g.font = '10px monospace';
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  const every = Math.ceil(rows / 16);
  for (let r = 0; r < rows; r += every) g.fillText(labelRows(r), left - 3, top + r * ch + ch / 2);
}

function drawMemory() {
  const withMemory = views.filter((v) => v.memory);
  $('memory-section').hidden = withMemory.length === 0 && views.length > 0;
  if (withMemory.length === 0) return;
  $('memory-what').textContent = `Slots: ${withMemory[0].memory.what}.`;
  const slots = withMemory[0].memory.change.length;
  const cols = withMemory.length;
  drawGrid($('memory'), slots, cols, (r, c) => 1 - withMemory[c].memory.change[r], (r) => `m${r}`);
  drawGrid($('retention'), slots, cols, (r, c) => withMemory[c].memory.retention[r], (r) => `m${r}`);
}

function drawDensity() {
  const canvas = $('density');
  clear(canvas);
  if (selected < 0 || !views[selected].density) return;
  const d = views[selected].density;
  const layer = choice($('layer'));
  const value = (q, p) => {
    let sum = 0, n = 0;
    for (let l = 0; l < d.layers; l++) {
      if (layer !== null && l !== layer) continue;
      sum += d.values[(l * d.queries + q) * d.points + p];
      n++;
    }
    return sum / n;
  };
  let max = 0;
  for (let q = 0; q < d.queries; q++) for (let p = 0; p < d.points; p++) max = Math.max(max, value(q, p));
  const tokens = views[selected].tokens;
  drawGrid(canvas, d.queries, d.points, (q, p) => value(q, p) / (max || 1), (q) => tokens[q]);
  const g = canvas.getContext('2d');
  g.fillStyle = '#333';
  g.textAlign = 'left';
  g.fillText('0 (oldest)', 34, canvas.height - 6);
  g.textAlign = 'right';
  g.fillText('1 (newest)', canvas.width - 4, canvas.height - 6);
}

// ----- the retention demo: a fact buried in book text -----

/** Segments asked for exactly (the page's `segments` parameter), until the slider moves. */
let exactSegments = null;

/** Segments the length slider stands for: log-spaced from the fewest to the most. */
function sliderSegments() {
  if (exactSegments !== null) return exactSegments;
  const { min_segments: lo, max_segments: hi } = keeperInfo;
  const x = Number($('length').value) / Number($('length').max);
  return Math.max(lo, Math.min(hi, Math.round(lo * Math.pow(hi / lo, x))));
}

function showLength() {
  if (!keeperInfo) return;
  const n = sliderSegments();
  const bytes = n * keeperInfo.segment_len;
  const trained = keeperInfo.trained_segments;
  $('length-label').textContent =
    `${bytes.toLocaleString('en')} bytes of text (${n} segments, ${(n / trained).toFixed(1)}× the training length)`;
}

/** Put the slider nearest `segments`, and read exactly that many until it moves. */
function setSegments(segments) {
  const { min_segments: lo, max_segments: hi } = keeperInfo;
  exactSegments = Math.max(lo, Math.min(hi, Math.round(segments)));
  const x = Math.log(exactSegments / lo) / Math.log(hi / lo);
  $('length').value = String(Math.round(x * Number($('length').max)));
  showLength();
}

async function showRetentionModel(entry) {
  keeperInfo = JSON.parse(keeper.info());
  const k = keeperInfo;
  $('model-note').textContent =
    `${entry.title}: ${k.layers} layers, ${k.heads} heads, segments of ${k.segment_len} bytes` +
    (k.memory_tokens ? `, ${k.memory_tokens} memory tokens` : '') +
    `, trained ${k.trained_steps} steps on ${k.trained_segments} segments ` +
    `(${(k.trained_segments * k.segment_len).toLocaleString('en')} bytes). Held-out: ${entry.accuracy}. ` +
    `Made with: ${entry.command}`;
  for (const [id, words] of [['who', k.people], ['verb', k.verbs], ['place', k.places]]) {
    $(id).innerHTML = '';
    for (const w of words) $(id).append(new Option(w, w));
    const wanted = params.get(id);
    if (wanted && words.includes(wanted)) $(id).value = wanted;
  }
  setSegments(Number(params.get('segments') ?? 16 * k.trained_segments));
  if (bookText === null) {
    try {
      const response = await fetch('assets/noise.txt');
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      bookText = new Uint8Array(await response.arrayBuffer());
      $('text-note').textContent =
        `Book text: ${bookText.length.toLocaleString('en')} bytes of public-domain books the model never trained on. ` +
        'Names of people, places and objects in it are masked with x, so only your fact can give the answer.';
    } catch (e) {
      bookText = new Uint8Array();
      $('text-note').textContent =
        `No book text came with this page (assets/noise.txt: ${message(e)}; web/README.md says how to write it): ` +
        'paste a text above.';
    }
  }
}

let survival = [];

async function bury() {
  if (busy || !keeper) return;
  clearError();
  const own = $('own-text').value;
  const text = own.trim() ? new TextEncoder().encode(own) : bookText;
  let plan;
  try {
    plan = JSON.parse(keeper.start($('who').value, $('verb').value, $('place').value, text, sliderSegments()));
  } catch (e) {
    showError(`The fact cannot be buried: ${message(e)}`);
    return;
  }
  setBusy(true);
  survival = [];
  for (const id of ['r-answer', 'r-truth', 'r-verdict', 'reading-status']) $(id).textContent = '';
  for (const id of ['survival', 'slots', 'fact-attention', 'question-attention']) clear($(id));
  $('plan').textContent =
    `"${plan.fact}", then ${plan.noise.toLocaleString('en')} bytes of text, then "${plan.question}": ` +
    `${plan.tokens.toLocaleString('en')} bytes in ${plan.segments} segments.`;
  const t0 = performance.now();
  window.remem.retention = null;
  try {
    // Read in chunks, so the page shows progress between them.
    let progress;
    do {
      progress = JSON.parse(await keeper.read(64));
      survival.push(...progress.probes);
      $('reading').max = progress.total;
      $('reading').value = progress.read;
      $('reading-status').textContent =
        `${progress.read} of ${progress.total} segments of text read (${((performance.now() - t0) / 1000).toFixed(1)} s)`;
      drawSurvival();
      await new Promise((r) => requestAnimationFrame(() => r()));
    } while (progress.read < progress.total);
    const outcome = JSON.parse(await keeper.finish());
    const seconds = (performance.now() - t0) / 1000;
    $('r-answer').textContent = outcome.answer;
    $('r-truth').textContent = outcome.truth;
    $('r-verdict').textContent = outcome.correct
      ? `Correct: the fact survived ${plan.noise.toLocaleString('en')} bytes of text.`
      : 'Wrong: the model lost the fact (or never kept it).';
    $('r-verdict').className = `verdict ${outcome.correct ? 'ok' : 'bad'}`;
    $('reading-status').textContent += `; answered after ${seconds.toFixed(1)} s`;
    drawAttentionOn($('fact-attention'), outcome.fact_attention, null, null);
    drawAttentionOn($('question-attention'), outcome.question_attention, null, null);
    window.remem.retention = { ...outcome, fact_attention: undefined, question_attention: undefined,
      plan, probes: survival, seconds };
  } catch (e) {
    showError(`The model stopped: ${message(e)}. Reload the page to start again.`);
  } finally {
    setBusy(false);
  }
}

function drawSurvival() {
  const canvas = $('survival');
  clear(canvas);
  if (survival.length === 0) return;
  const g = canvas.getContext('2d');
  const left = 40, right = 10, top = 10, bottom = 28;
  const w = canvas.width - left - right, h = canvas.height - top - bottom;
  const most = Math.max(...survival.map((p) => p.distance), 10);
  const fewest = Math.min(...survival.map((p) => p.distance));
  const x = (d) => left + w * Math.log(d / fewest) / Math.log(Math.max(most / fewest, 1.0001));
  const y = (p) => top + h * (1 - p);
  g.strokeStyle = '#9aa6bb';
  g.strokeRect(left, top, w, h);
  g.setLineDash([4, 4]);
  g.beginPath();
  g.moveTo(left, y(1 / 6));
  g.lineTo(left + w, y(1 / 6));
  g.stroke();
  g.setLineDash([]);
  g.strokeStyle = '#1f5fbf';
  g.lineWidth = 2;
  g.beginPath();
  survival.forEach((p, i) => (i ? g.lineTo(x(p.distance), y(p.p_answer)) : g.moveTo(x(p.distance), y(p.p_answer))));
  g.stroke();
  g.lineWidth = 1;
  g.fillStyle = '#333';
  g.font = '10px sans-serif';
  g.textAlign = 'right';
  for (const p of [0, 0.5, 1]) g.fillText(String(p), left - 4, y(p) + 3);
  g.textAlign = 'left';
  g.fillText(`${fewest.toLocaleString('en')} bytes`, left, canvas.height - 8);
  g.textAlign = 'right';
  g.fillText(`${most.toLocaleString('en')} bytes`, left + w, canvas.height - 8);
  const slots = survival[0].similarity.length;
  if (slots) drawGrid($('slots'), slots, survival.length, (r, c) => survival[c].similarity[r], (r) => `m${r}`);
}

// ----- start -----

async function main() {
  try {
    await init();
  } catch (e) {
    showError(`remem's WebAssembly could not be loaded: ${message(e)}`);
    return;
  }
  try {
    const response = await fetch('assets/models.json');
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    models = await response.json();
  } catch (e) {
    showError(`The list of models could not be loaded: ${message(e)}`);
    return;
  }
  models.forEach((m, i) => $('model').append(new Option(m.title, String(i))));
  const wanted = models.findIndex((m) => m.id === params.get('model'));
  $('model').value = String(Math.max(0, wanted));
  $('force-cpu').checked = params.get('cpu') === '1';
  $('model').addEventListener('change', loadModel);
  $('force-cpu').addEventListener('change', loadModel);
  $('example').addEventListener('click', () => newExample());
  $('reset').addEventListener('click', reset);
  $('question').addEventListener('input', reset);
  $('step').addEventListener('click', () => run(false));
  $('play').addEventListener('click', () => run(true));
  $('layer').addEventListener('change', () => { drawAttention(); drawDensity(); });
  $('head').addEventListener('change', drawAttention);
  $('bury').addEventListener('click', bury);
  $('draw-fact').addEventListener('click', () => {
    for (const id of ['who', 'verb', 'place']) {
      const options = $(id).options;
      $(id).selectedIndex = Math.floor(Math.random() * options.length);
    }
  });
  $('length').addEventListener('input', () => {
    exactSegments = null;
    showLength();
  });
  await loadModel();
  window.remem.ready = demo !== null || keeper !== null;
}

main();
