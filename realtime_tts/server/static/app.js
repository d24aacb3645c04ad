// realtime-tts demo page: speaks through the native WebSocket (/v1/tts/stream) as 24 kHz
// pcm_s16le and plays each chunk as a scheduled AudioBuffer. No build step, no dependencies.
"use strict";

const EMOTIONS = ["happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm"];
const RATE = 24000;
const JITTER_S = 0.15; // start-up buffer: the first chunk plays this far in the future
const HEADER_BYTES = 8; // binary frame: version, kind, slot (u16 BE), seq (u32 BE)

const $ = (id) => document.getElementById(id);

// Counters the browser test reads; handy in the console too.
const stats = (window.rtts = {
  framesReceived: 0, bytesReceived: 0, buffersScheduled: 0, samplesScheduled: 0,
  sourcesActive: 0, sentences: [], ttfaMs: null, state: "idle", lastError: null,
  cancelSent: 0, cancelledAcks: 0, doneCount: 0, droppedFrames: 0, ready: false,
});

// ---- settings ------------------------------------------------------------------------------
const keyInput = $("apiKey");
keyInput.value = localStorage.getItem("rtts.apiKey") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("rtts.apiKey", keyInput.value.trim());
  closeSocket();
  loadVoices();
});
const apiKey = () => keyInput.value.trim();
const authHeaders = () => (apiKey() ? { Authorization: "Bearer " + apiKey() } : {});

function setError(msg) {
  stats.lastError = msg || null;
  $("error").textContent = msg || "";
}
function setState(s) {
  stats.state = s;
  $("state").textContent = s;
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    return (body.error && body.error.message) || JSON.stringify(body);
  } catch (e) {
    return resp.status + " " + resp.statusText;
  }
}

// ---- health and voices -----------------------------------------------------------------------
async function checkHealth() {
  const pill = $("health");
  try {
    const r = await fetch("/health");
    const body = await r.json().catch(() => ({}));
    pill.textContent = r.ok ? "ready" + (body.engine ? " · " + (body.engine.name || body.engine) : "") : "loading…";
    pill.className = "pill " + (r.ok ? "ok" : "bad");
  } catch (e) {
    pill.textContent = "offline";
    pill.className = "pill bad";
  }
}

async function loadVoices(selectId) {
  const sel = $("voice");
  const keep = selectId || sel.value;
  const r = await fetch("/v1/audio/voices", { headers: authHeaders() });
  if (!r.ok) {
    setError("voices: " + (await apiError(r)));
    return;
  }
  const body = await r.json();
  sel.replaceChildren(new Option("(default voice)", ""));
  for (const v of body.data) {
    const label = v.name && v.name !== v.id ? `${v.name} (${v.id})` : v.id;
    sel.add(new Option(`${label} · ${v.duration.toFixed(1)} s`, v.id));
  }
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "";
  stats.voicesLoaded = body.data.length;
}

$("refreshVoices").addEventListener("click", () => loadVoices());
$("uploadForm").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("uploadFile").files[0];
  if (!file) {
    $("uploadStatus").textContent = "choose a clip first (5-15 s of clean speech works best)";
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if ($("uploadName").value.trim()) form.append("name", $("uploadName").value.trim());
  $("uploadStatus").textContent = "uploading…";
  const r = await fetch("/v1/audio/voices", { method: "POST", body: form, headers: authHeaders() });
  if (!r.ok) {
    $("uploadStatus").textContent = "upload failed: " + (await apiError(r));
    return;
  }
  const v = await r.json();
  $("uploadStatus").textContent = `stored ${v.id} (${v.duration.toFixed(1)} s)`;
  await loadVoices(v.id);
});

// ---- emotion and speed ----------------------------------------------------------------------
const sliders = {};
for (const name of EMOTIONS) {
  const label = document.createElement("label");
  label.textContent = name;
  const input = Object.assign(document.createElement("input"), { type: "range", min: 0, max: 1, step: 0.05, value: 0, id: "emo_" + name });
  const out = document.createElement("output");
  out.textContent = "0.00";
  input.addEventListener("input", () => (out.textContent = Number(input.value).toFixed(2)));
  label.htmlFor = input.id;
  $("sliders").append(label, input, out);
  sliders[name] = { input, out };
}
document.querySelectorAll("[data-preset]").forEach((btn) =>
  btn.addEventListener("click", () => {
    for (const name of EMOTIONS) {
      const v = name === btn.dataset.preset ? 0.8 : 0;
      sliders[name].input.value = v;
      sliders[name].out.textContent = v.toFixed(2);
    }
  })
);
$("speed").addEventListener("input", () => ($("speedOut").textContent = Number($("speed").value).toFixed(2)));

function emotion() {
  const text = $("emoText").value.trim();
  if (text) return { text };
  const vector = EMOTIONS.map((n) => Number(sliders[n].input.value));
  return vector.some((v) => v > 0) ? { vector } : null;
}
function turnSettings() {
  const s = { speed: Number($("speed").value) };
  if ($("voice").value) s.voice = $("voice").value;
  const emo = emotion();
  if (emo) s.emotion = emo;
  return s;
}

// ---- audio playback --------------------------------------------------------------------------
let audioCtx = null;
let cursor = 0; // AudioContext time at which the next chunk starts
let sources = [];

function ensureAudio() {
  // Created / resumed only inside a click handler (browser autoplay policy).
  if (!audioCtx) audioCtx = new AudioContext({ latencyHint: "interactive" });
  if (audioCtx.state === "suspended") audioCtx.resume();
}

function playPcm(bytes) {
  const n = bytes.byteLength >> 1;
  if (!n) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
  const buf = audioCtx.createBuffer(1, n, RATE); // Web Audio resamples to the context rate
  const ch = buf.getChannelData(0);
  for (let i = 0; i < n; i++) ch[i] = view.getInt16(i * 2, true) / 32768;
  const src = audioCtx.createBufferSource();
  src.buffer = buf;
  src.connect(audioCtx.destination);
  cursor = Math.max(cursor, audioCtx.currentTime + JITTER_S);
  src.start(cursor);
  cursor += buf.duration;
  sources.push(src);
  stats.sourcesActive = sources.length;
  stats.buffersScheduled += 1;
  stats.samplesScheduled += n;
  $("audioMs").textContent = Math.round((stats.samplesScheduled / RATE) * 1000) + " ms";
  src.onended = () => {
    sources = sources.filter((s) => s !== src);
    stats.sourcesActive = sources.length;
    if (!sources.length && stats.state === "playing") setState("idle");
  };
}

function stopAudio() {
  for (const s of sources) {
    try { s.stop(); } catch (e) { /* already stopped */ }
  }
  sources = [];
  stats.sourcesActive = 0;
  cursor = 0;
}

// ---- the native streaming socket -----------------------------------------------------------
let ws = null;
let wsReady = null; // Promise resolved on the server's "ready"
const slots = new Map(); // binary slot -> context_id
const cancelled = new Set(); // contexts whose late audio is dropped
let current = null; // { id, t0, gotAudio, done }
let ctxCounter = 0;

function socketUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = apiKey() ? "?api_key=" + encodeURIComponent(apiKey()) : "";
  return `${proto}//${location.host}/v1/tts/stream${q}`;
}

function closeSocket() {
  if (ws) ws.close();
  ws = null;
  wsReady = null;
}

function connect() {
  if (wsReady) return wsReady;
  wsReady = new Promise((resolve, reject) => {
    const sock = new WebSocket(socketUrl());
    sock.binaryType = "arraybuffer";
    ws = sock;
    sock.onopen = () => {
      sock.send(JSON.stringify({
        type: "config", output: { encoding: "pcm_s16le", sample_rate: RATE }, audio_transport: "binary",
        sentence_timestamps: true,
      }));
    };
    sock.onmessage = (ev) => {
      if (typeof ev.data === "string") onEvent(JSON.parse(ev.data), resolve);
      else onAudio(ev.data);
    };
    sock.onerror = () => setError("WebSocket error (is the API key right?)");
    sock.onclose = (ev) => {
      if (ws === sock) { ws = null; wsReady = null; }
      stats.ready = false;
      if (ev.code !== 1000 && ev.code !== 1005) setError(`connection closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
      reject(new Error("closed"));
    };
  });
  wsReady.catch(() => {});
  return wsReady;
}

function onEvent(msg, resolveReady) {
  switch (msg.type) {
    case "ready":
      stats.ready = true;
      resolveReady();
      break;
    case "context_started":
      slots.set(msg.slot, msg.context_id);
      break;
    case "sentence_start":
      if (cancelled.has(msg.context_id)) break;
      stats.sentences.push(msg.text);
      $("subtitle").textContent = msg.text;
      $("sentences").append(Object.assign(document.createElement("li"), { textContent: msg.text }));
      break;
    case "done":
      stats.doneCount += 1;
      if (current && msg.context_id === current.id) {
        current.done = true; // all its audio is here: Stop only silences the speakers
        if (stats.state !== "playing") setState("idle");
      }
      break;
    case "cancelled":
      stats.cancelledAcks += 1;
      break;
    case "error":
      setError(`${msg.code}: ${msg.message}`);
      break;
    default:
      break; // flushed, sentence_end, ... are not needed here
  }
}

function onAudio(data) {
  const bytes = new Uint8Array(data);
  stats.framesReceived += 1;
  stats.bytesReceived += bytes.byteLength;
  if (bytes.byteLength < HEADER_BYTES || bytes[0] !== 1 || bytes[1] !== 0) return;
  const slot = (bytes[2] << 8) | bytes[3];
  const contextId = slots.get(slot);
  if (!current || contextId !== current.id || cancelled.has(contextId)) {
    stats.droppedFrames += 1;
    return;
  }
  if (!current.gotAudio) {
    current.gotAudio = true;
    stats.ttfaMs = Math.round(performance.now() - current.t0);
    $("ttfa").textContent = stats.ttfaMs + " ms";
  }
  setState("playing");
  playPcm(bytes.subarray(HEADER_BYTES));
}

function newTurn() {
  cancelCurrent();
  current = { id: "page-" + ++ctxCounter + "-" + Date.now().toString(36), t0: performance.now(), gotAudio: false, done: false };
  $("subtitle").textContent = "";
  $("sentences").replaceChildren();
  stats.sentences = [];
  $("ttfa").textContent = "…";
  setError("");
  setState("synthesizing");
  return current;
}

function cancelCurrent() {
  stopAudio();
  if (current) {
    cancelled.add(current.id);
    if (!current.done && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "cancel", context_id: current.id }));
      stats.cancelSent += 1;
    }
  }
  current = null;
}

let streamTimer = null;

$("speak").addEventListener("click", async () => {
  ensureAudio();
  clearInterval(streamTimer);
  const text = $("text").value;
  if (!text.trim()) return setError("type some text first");
  try { await connect(); } catch (e) { return; }
  const turn = newTurn();
  ws.send(JSON.stringify({ type: "text", context_id: turn.id, text, ...turnSettings() }));
  ws.send(JSON.stringify({ type: "end", context_id: turn.id }));
});

$("streamLlm").addEventListener("click", async () => {
  ensureAudio();
  clearInterval(streamTimer);
  const text = $("text").value;
  if (!text.trim()) return setError("type some text first");
  try { await connect(); } catch (e) { return; }
  const turn = newTurn();
  // LLM-like tokens: a word (or 2 CJK characters) every 50 ms.
  const tokens = text.match(/[\u3000-\u9fff\uff00-\uffef]{1,2}|\s*[^\s\u3000-\u9fff\uff00-\uffef]+\s*|\s+/g) || [text];
  let i = 0;
  let first = true;
  streamTimer = setInterval(() => {
    if (!current || current.id !== turn.id || !ws || ws.readyState !== WebSocket.OPEN) return clearInterval(streamTimer);
    if (i < tokens.length) {
      const msg = { type: "text", context_id: turn.id, text: tokens[i++] };
      ws.send(JSON.stringify(first ? { ...msg, ...turnSettings() } : msg));
      if (first) { first = false; }
    } else {
      ws.send(JSON.stringify({ type: "end", context_id: turn.id }));
      clearInterval(streamTimer);
    }
  }, 50);
});

$("stop").addEventListener("click", () => {
  clearInterval(streamTimer);
  cancelCurrent();
  setState("stopped");
});

$("download").addEventListener("click", async () => {
  const text = $("text").value;
  if (!text.trim()) return setError("type some text first");
  const s = turnSettings();
  const body = { model: "realtime-tts", input: text, voice: s.voice || "alloy", speed: s.speed, response_format: "wav", stream: false };
  if (s.emotion) body.emotion = s.emotion;
  const r = await fetch("/v1/audio/speech", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body: JSON.stringify(body) });
  if (!r.ok) return setError("download: " + (await apiError(r)));
  const url = URL.createObjectURL(await r.blob());
  Object.assign(document.createElement("a"), { href: url, download: "speech.wav" }).click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

checkHealth();
setInterval(checkHealth, 10000);
loadVoices();
