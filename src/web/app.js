// rnnd's built-in page (docs/api.md, 4.12): the models, live charts from /metrics and a
// generation playground. Plain JavaScript, no build step; it talks to this server only.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "rnnd.key";
let apiKey = sessionStorage.getItem(KEY_STORE) || "";

function notice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
}

// fetch with the API key, if one was given; a 401 asks for one, a 403 says what is missing
async function api(path, opts) {
  const o = Object.assign({}, opts || {});
  o.headers = Object.assign({}, o.headers || {});
  if (apiKey) o.headers.Authorization = "Bearer " + apiKey;
  const resp = await fetch(path, o);
  if (resp.status === 401) {
    $("keyform").hidden = false;
    notice("This server needs an API key: enter one above.");
    throw new Error("401");
  }
  if (resp.status === 403) {
    notice("Your API key may not call " + path + " (403" +
           (path === "/metrics" ? ": the charts need a key of scope admin)" : ")"));
    throw new Error("403");
  }
  return resp;
}

async function errorText(resp) {
  try {
    const j = await resp.json();
    return resp.status + " " + (j.error ? j.error.code + ": " + j.error.message : "");
  } catch (e) {
    return String(resp.status);
  }
}

// ---- models ------------------------------------------------------------------------------

async function loadModels() {
  const resp = await api("/v1/models");
  if (!resp.ok) throw new Error(await errorText(resp));
  const list = (await resp.json()).models;
  const details = await Promise.all(list.map(async (m) => {
    const r = await api("/v1/models/" + encodeURIComponent(m.name));
    return r.ok ? r.json() : m;
  }));
  const body = $("models").tBodies[0];
  body.textContent = "";
  const select = $("p-model");
  const chosen = select.value;
  select.textContent = "";
  for (const m of details) {
    const types = m.layer_types || [];
    const cells = [...new Set(types.map((t) => t.type))].join(", ");
    const hidden = [...new Set(types.map((t) => t.hidden_size))].join(", ");
    const tr = body.insertRow();
    tr.dataset.model = m.name;
    const cols = [m.name, cells, m.layers, hidden,
                  m.input_kind + (m.input_kind === "tokens" ? " (" + m.vocab_size + ")" :
                                  " (" + m.input_dim + ")"),
                  m.weights];
    cols.forEach((v, i) => {
      const td = tr.insertCell();
      td.textContent = v === undefined || v === null ? "" : String(v);
      if (i === 2) td.className = "num";
    });
    if (m.tokenizer && m.stateful && m.output_dim === m.vocab_size) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = m.name;
      select.appendChild(opt);
    }
  }
  if (chosen) select.value = chosen;
  $("p-start").disabled = !select.options.length;
  if (!select.options.length) $("p-info").textContent = "no text model is loaded";
}

// ---- charts ------------------------------------------------------------------------------

const POINTS = 90;
const charts = {
  steps: { values: [], digits: 0 },
  batch: { values: [], digits: 2 },
  latency: { values: [], digits: 2 },
  sessions: { values: [], digits: 0 },
};

// Prometheus text: the sum of every sample of each name, PICK deciding which samples count
function parseMetrics(text, pick) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || (pick && !pick(m[1], m[2] || ""))) continue;
    sums[m[1]] = (sums[m[1]] || 0) + Number(m[3]);
  }
  return sums;
}

function draw(name) {
  const c = charts[name];
  const canvas = $("c-" + name);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 4;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#d0d5dd";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, h - pad + 0.5);
  ctx.lineTo(w, h - pad + 0.5);
  ctx.stroke();
  const vals = c.values;
  if (!vals.length) return;
  const max = Math.max(1e-9, ...vals.filter((v) => v !== null));
  ctx.fillStyle = "#667085";
  ctx.font = "11px sans-serif";
  ctx.fillText(max.toFixed(c.digits), 4, 12);
  ctx.strokeStyle = "#2563eb";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.fillStyle = ctx.strokeStyle;
  let started = false;
  vals.forEach((v, i) => {
    if (v === null) { started = false; return; }
    const x = w - 3 - (vals.length - 1 - i) * ((w - 6) / (POINTS - 1));
    const y = h - pad - (v / max) * (h - 2 * pad - 14);
    if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    ctx.fillRect(x - 2, y - 2, 4, 4); // a point: an isolated value shows too
    started = true;
  });
  ctx.stroke();
  canvas.dataset.max = String(max);
}

function push(name, v) {
  const c = charts[name];
  c.values.push(v);
  if (c.values.length > POINTS) c.values.shift();
  $("v-" + name).textContent = v === null ? "–" : v.toFixed(c.digits);
  draw(name);
}

let last = null;
let metricsTimer = null;

async function pollMetrics() {
  let resp;
  try {
    resp = await api("/metrics");
  } catch (e) {
    if (e.message === "403") clearInterval(metricsTimer); // no admin key: no charts
    return;
  }
  if (!resp.ok) return;
  // the page's own polls of /metrics do not count as latency
  const s = parseMetrics(await resp.text(), (n, labels) =>
    !(n.startsWith("rnnd_http_request_duration_seconds") &&
      labels.includes('endpoint="/metrics"')));
  const now = { t: performance.now() / 1000,
    steps: (s.rnnd_session_steps_total || 0) + (s.rnnd_infer_steps_total || 0),
    bsum: s.rnnd_batch_size_sum || 0, bcount: s.rnnd_batch_size_count || 0,
    lsum: s.rnnd_http_request_duration_seconds_sum || 0,
    lcount: s.rnnd_http_request_duration_seconds_count || 0 };
  if (last) {
    const dt = Math.max(now.t - last.t, 1e-3);
    const db = now.bcount - last.bcount, dl = now.lcount - last.lcount;
    push("steps", Math.max(0, now.steps - last.steps) / dt);
    push("batch", db > 0 ? (now.bsum - last.bsum) / db : null);
    push("latency", dl > 0 ? 1000 * (now.lsum - last.lsum) / dl : null);
  }
  push("sessions", s.rnnd_sessions || 0);
  last = now;
}

// ---- playground --------------------------------------------------------------------------

let running = null; // the AbortController of the generation streaming now

function setRunning(ctrl) {
  running = ctrl;
  $("p-start").disabled = !!ctrl;
  $("p-stop").disabled = !ctrl;
}

// read server-sent events (docs/api.md, 4.10) from RESP, calling ON(data) for each event
async function readEvents(resp, on) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) on(event, data.join("\n"));
    }
  }
}

async function generate(ev) {
  ev.preventDefault();
  if (running) return;
  const out = $("p-out"), info = $("p-info");
  const prompt = $("p-prompt").value;
  const body = { prompt: prompt, stream: true,
    max_tokens: Number($("p-max").value) || 1,
    temperature: Number($("p-temp").value) };
  // seeds are 64-bit: written and read as digits, never through a Number (53 bits)
  const seed = $("p-seed").value.trim();
  let json = JSON.stringify(body);
  if (/^[0-9]+$/.test(seed)) json = json.slice(0, -1) + ',"seed":' + seed + "}";
  out.textContent = "";
  const p = document.createElement("span");
  p.className = "prompt";
  p.textContent = prompt;
  const gen = document.createElement("span");
  gen.id = "p-text";
  out.append(p, gen);
  info.textContent = "generating…";
  out.dataset.state = "running";
  const ctrl = new AbortController();
  setRunning(ctrl);
  let tokens = 0, finish = "";
  const t0 = performance.now();
  try {
    const resp = await api("/v1/models/" + encodeURIComponent($("p-model").value) + "/generate",
      { method: "POST", headers: { "Content-Type": "application/json" },
        body: json, signal: ctrl.signal });
    if (!resp.ok) throw new Error(await errorText(resp));
    await readEvents(resp, (event, data) => {
      if (data === "[DONE]") return;
      const j = JSON.parse(data);
      if (event === "error") throw new Error(j.error.code + ": " + j.error.message);
      if (j.text !== undefined && j.token !== undefined) {
        gen.textContent += j.text;
        tokens++;
      } else if (j.finish_reason) {
        const s = /"seed":\s*([0-9]+)/.exec(data);
        finish = j.finish_reason + (s ? ", seed " + s[1] : "");
      }
    });
    const s = (performance.now() - t0) / 1000;
    info.textContent = tokens + " tokens in " + s.toFixed(2) + " s (" + finish + ")";
    out.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      info.textContent = "stopped after " + tokens + " tokens";
      out.dataset.state = "stopped";
    } else {
      info.textContent = "error: " + e.message;
      out.dataset.state = "error";
    }
  } finally {
    ctrl.abort(); // an error event or a bad event: the stream is closed, its generation ends
    setRunning(null);
  }
}

// ---- start -------------------------------------------------------------------------------

async function start() {
  try {
    await loadModels();
    notice("");
    $("keyform").hidden = true;
  } catch (e) {
    if (e.message !== "401" && e.message !== "403") notice("Could not list the models: " +
                                                          e.message);
    return;
  }
  if (metricsTimer) clearInterval(metricsTimer);
  last = null;
  pollMetrics();
  metricsTimer = setInterval(pollMetrics, 1000);
}

$("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  apiKey = $("key").value.trim();
  sessionStorage.setItem(KEY_STORE, apiKey);
  start();
});
$("play").addEventListener("submit", generate);
$("p-stop").addEventListener("click", () => { if (running) running.abort(); });
Object.keys(charts).forEach(draw);
start();
