// Browser tests of the page, in headless Chromium driven by playwright-core: once with WebGPU
// (a real adapter, `--enable-unsafe-webgpu`) and once without (the CPU fallback). Each loads
// the page, plays a question of at least 8 segments, checks the answer shown is the truth, that
// the attention heatmap is drawn, and saves a screenshot; then bad inputs must show a message.
// The paper-size associative-retrieval model answers its first example on WebGPU too.
//
// Run from the repository root after `bash web/build.sh`: `node web/tests/browser.mjs`.
// CHROMIUM names the browser binary (default /usr/bin/chromium); REMEM_BROWSER_ONLY names the
// paths to run (default all).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shots = path.join(web, 'screenshots');
const types = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.txt': 'text/plain',
};

/** A static server over web/, on a free port. */
function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const file = path.join(web, decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname));
    if (!file.startsWith(web) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function launch(webgpu) {
  const args = [
    '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  ];
  if (webgpu) args.push('--enable-unsafe-webgpu', '--enable-features=Vulkan');
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args,
  });
}

/** Count distinct colours on a canvas: a drawn heatmap has many, a blank one has one. */
async function colours(page, id) {
  return page.evaluate((id) => {
    const c = document.getElementById(id);
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    return seen.size;
  }, id);
}

/** Save a full-page screenshot; on a busy machine software WebGPU can keep the page's main
 * thread past Playwright's default 30 s. */
async function screenshot(page, shot) {
  await page.screenshot({ path: shot, fullPage: true, timeout: 120_000 });
}

async function play(page) {
  // After clicking, Playwright waits for the page's main thread, which software WebGPU
  // (swiftshader) once kept busy past the default 30 s: give it the answer's budget.
  await page.click('#play', { timeout: 600_000 });
  await page.waitForFunction(() => document.getElementById('verdict').textContent !== '' ||
    window.remem.error, null, { timeout: 600_000 });
  const error = await page.evaluate(() => window.remem.error ?? null);
  check(error === null, `no error while playing (got: ${error})`);
}

/**
 * Load `model` on WebGPU or the CPU, play its first example (seed 1) and check the answer; on
 * the copy model, bad questions must show a message.
 */
async function runPath(base, name, webgpu, model = 'copy-rmt', minSegments = 8) {
  const browser = await launch(webgpu);
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  try {
    const t0 = Date.now();
    await page.goto(`${base}/?model=${model}`);
    await page.waitForFunction(() => window.remem.ready || window.remem.error, null, { timeout: 300_000 });
    const device = await page.textContent('#device');
    console.log(`[${name}] device: ${device}`);
    check(webgpu ? /^WebGPU/.test(device) : /^CPU/.test(device),
      `${name}: the page runs on ${webgpu ? 'WebGPU' : 'the CPU'} (device line: ${device})`);
    if (!webgpu) check(/no WebGPU/.test(device), `the CPU fallback says why (device line: ${device})`);

    await play(page);
    const seconds = (Date.now() - t0) / 1000;
    const answer = await page.textContent('#answer');
    const truth = await page.textContent('#truth');
    const verdict = await page.textContent('#verdict');
    const segments = await page.locator('.segment').count();
    console.log(`[${name}] ${await page.inputValue('#question')}: ${segments} segments, answer ${answer}, truth ${truth}: ${verdict}`);
    check(segments >= minSegments, `at least ${minSegments} segments were read (got ${segments})`);
    check(answer === truth && answer.length > 0, `the answer shown equals the truth (${answer} vs ${truth})`);
    check(verdict.startsWith('Correct'), `the verdict says correct (${verdict})`);
    const attention = await colours(page, 'attention');
    const memory = await colours(page, 'memory');
    check(attention > 20, `the attention heatmap is drawn (${attention} colours)`);
    check(memory > 5, `the memory change map is drawn (${memory} colours)`);
    const times = await page.evaluate(() => window.remem);
    fs.mkdirSync(shots, { recursive: true });
    const shot = path.join(shots, `${name}.png`);
    await screenshot(page, shot);

    // Bad input: a character outside the copy model's alphabet, then an empty question.
    if (model === 'copy-rmt') {
      await page.fill('#question', '12x4|');
      await page.click('#step');
      await page.waitForSelector('#error:not([hidden])');
      const outside = await page.textContent('#error');
      check(/outside|not in|unknown/i.test(outside), `a stray character is named (${outside})`);
      await page.fill('#question', '');
      await page.click('#step');
      await page.waitForFunction(() => /empty/.test(document.getElementById('error').textContent));
    }

    console.log(JSON.stringify({
      path: name, device, segments, load_ms: Math.round(times.loadedMs),
      first_answer_ms: Math.round(times.firstAnswerMs), steps_ms: times.segmentsMs, wall_s: seconds,
      screenshot: shot,
    }));
  } catch (e) {
    console.error(`[${name}] browser log:\n${logs.join('\n')}`);
    throw e;
  } finally {
    await browser.close();
  }
}

/** The infinity-former draws its density over the continuous memory. */
async function runInfinity(base) {
  const browser = await launch(false);
  const page = await browser.newPage({ viewport: { width: 1100, height: 1100 } });
  try {
    await page.goto(`${base}/?model=sort-infinity&cpu=1`);
    await page.waitForFunction(() => window.remem.ready || window.remem.error, null, { timeout: 300_000 });
    await play(page);
    const density = await colours(page, 'density');
    check(density > 20, `the infinity-former's density is drawn (${density} colours)`);
    const shot = path.join(shots, 'infinity.png');
    await screenshot(page, shot);
    console.log(JSON.stringify({ path: 'infinity (cpu)', verdict: await page.textContent('#verdict'), screenshot: shot }));
  } finally {
    await browser.close();
  }
}

/**
 * The retention demo: a fact buried in held-out book text `times` the training length, read
 * segment by segment, answered right; the survival curve and both attention maps drawn.
 * (On software WebGPU a segment takes about 0.3 s, so that path reads a shorter text.)
 */
async function runRetention(base, name, webgpu, times) {
  const browser = await launch(webgpu);
  const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  try {
    await page.goto(`${base}/?model=memorize-rmt&who=Julie&verb=journeyed&place=bathroom${webgpu ? '' : '&cpu=1'}`);
    await page.waitForFunction(() => window.remem.ready || window.remem.error, null, { timeout: 300_000 });
    const device = await page.textContent('#device');
    check(webgpu ? /^WebGPU/.test(device) : /^CPU/.test(device), `${name} runs where asked (${device})`);
    const note = await page.textContent('#text-note');
    check(/never trained on/.test(note), `held-out book text came with the page (${note})`);
    const info = await page.textContent('#model-note');
    const trained = Number(/on (\d+) segments/.exec(info)[1]);
    await page.evaluate((n) => window.remem.setSegments(n), times * trained);
    await page.click('#bury', { timeout: 600_000 });
    await page.waitForFunction(() => window.remem.retention || window.remem.error, null, { timeout: 600_000 });
    const error = await page.evaluate(() => window.remem.error ?? null);
    check(error === null, `no error while reading (got: ${error})`);
    const r = await page.evaluate(() => window.remem.retention);
    console.log(`[${name}] ${r.plan.fact} ... ${r.plan.question} over ${r.plan.tokens} bytes ` +
      `(${r.plan.segments} segments, ${r.seconds.toFixed(1)} s): ${r.answer} (truth ${r.truth})`);
    check(r.plan.segments === times * trained, `${r.plan.segments} segments are ${times} times the trained ${trained}`);
    check(r.correct && r.answer === r.truth, `the buried fact is answered (${r.answer} vs ${r.truth})`);
    check(r.probes.length >= 5 && r.probes.every((p) => p.p_answer >= 0 && p.p_answer <= 1),
      `the memory was probed along the way (${r.probes.length} probes)`);
    const last = r.probes[r.probes.length - 1];
    check(last.p_answer > 1 / 6, `just before the question the right place is above chance (${last.p_answer})`);
    for (const id of ['survival', 'slots', 'fact-attention', 'question-attention']) {
      const n = await colours(page, id);
      check(n > 5, `${id} is drawn (${n} colours)`);
    }
    const shot = path.join(shots, `retention-${name}.png`);
    fs.mkdirSync(shots, { recursive: true });
    await screenshot(page, shot);
    console.log(JSON.stringify({ path: `retention ${name}`, device, segments: r.plan.segments,
      seconds: r.seconds, p_answer: r.probes.map((p) => [p.distance, Number(p.p_answer.toFixed(3))]), screenshot: shot }));
  } catch (e) {
    console.error(`[retention ${name}] browser log:\n${logs.join('\n')}`);
    throw e;
  } finally {
    await browser.close();
  }
}

/** A model asset that fails to load shows a message, not a blank page. */
async function runMissingAsset(base) {
  const browser = await launch(false);
  const page = await browser.newPage();
  try {
    await page.route('**/assets/*.safetensors', (route) => route.fulfill({ status: 404, body: 'gone' }));
    await page.goto(`${base}/?cpu=1`);
    await page.waitForSelector('#error:not([hidden])', { timeout: 120_000 });
    const text = await page.textContent('#error');
    check(/could not be loaded/.test(text), `a missing model is reported (${text})`);
    console.log(`[missing asset] ${text}`);
  } finally {
    await browser.close();
  }
}

const server = await serve();
const base = `http://127.0.0.1:${server.address().port}`;
let failed = false;
// REMEM_BROWSER_ONLY=webgpu,cpu runs only the paths named (for timing one of them).
const only = process.env.REMEM_BROWSER_ONLY?.split(',');
// REMEM_BROWSER_SKIP names paths to leave out (tests/browser.rs: the retention demo when no
// book text could be had outside CI).
const skip = process.env.REMEM_BROWSER_SKIP?.split(',') ?? [];
for (const [name, fn] of [
  ['webgpu', () => runPath(base, 'webgpu', true)],
  ['cpu', () => runPath(base, 'cpu', false)],
  // The paper-size associative-retrieval model (6 layers): its first answer's time on WebGPU.
  ['associative-webgpu', () => runPath(base, 'associative-webgpu', true, 'associative-rmt', 3)],
  ['infinity', () => runInfinity(base)],
  ['retention-webgpu', () => runRetention(base, 'webgpu', true, 2)],
  ['retention-cpu', () => runRetention(base, 'cpu', false, 16)],
  ['missing asset', () => runMissingAsset(base)],
]) {
  if ((only && !only.includes(name)) || skip.includes(name)) {
    console.log(`skipped: ${name}`);
    continue;
  }
  try {
    await fn();
    console.log(`ok: ${name}`);
  } catch (e) {
    failed = true;
    console.error(`FAILED: ${name}: ${e.message}`);
  }
}
server.close();
process.exit(failed ? 1 : 0);
