// realtime-tts demo page: speaks through the native WebSocket (/v1/tts/stream) as 24 kHz pcm_s16le,
// plays each chunk as a scheduled AudioBuffer, and shows the sentence being heard. No build step.
import { Player, RATE, firstAudible, wavBlob } from "./player.js";

const EMOTIONS = ["happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm"];
const HEADER_BYTES = 8; // binary frame: version, kind, slot (u16 BE), seq (u32 BE)
const KEEP_SECONDS = 600; // the last turn is kept for replay and download up to this long
const $ = (id) => document.getElementById(id);

// Counters the browser test reads; handy in the console too.
const stats = (window.rtts = {
  framesReceived: 0, bytesReceived: 0, buffersScheduled: 0, samplesScheduled: 0, sourcesActive: 0,
  sentences: [], sentenceStartsMs: [], current: -1, heardMs: 0, turnSamples: 0, firstFrameMs: null, ttfaMs: null, state: "idle",
  lastError: null, cancelSent: 0, cancelledAcks: 0, doneCount: 0, droppedFrames: 0, ready: false,
  previewPlays: 0, replays: 0, downloads: 0, engine: null, warnings: [],
});

const player = new Player();

// ---- settings, status, errors ------------------------------------------------------------------
const keyInput = $("apiKey");
keyInput.value = localStorage.getItem("rtts.apiKey") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("rtts.apiKey", keyInput.value.trim());
  closeSocket();
  loadVoices();
  loadFormats();
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
function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  Object.assign(document.createElement("a"), { href: url, download: name }).click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  stats.downloads += 1;
}

// ---- health: engine facts, the honest notice, languages ------------------------------------------
function showEngine(info) {
  stats.engine = info;
  // The engine's capability fields (/health engine_info): what it does with a voice and an emotion.
  const notice = $("notice");
  const noEmotion = Array.isArray(info.emotion) && info.emotion.length === 0;
  const unused = [info.voice_cloning === false && "uploaded voices", noEmotion && "emotion"].filter(Boolean);
  if (unused.length) {
    notice.textContent = (info.voice_cloning === false
      ? `The ${info.name} engine speaks with its own built-in voice: `
      : `The ${info.name} engine has no emotion control: `) +
      `${unused.join(" and ")} ${unused.length > 1 ? "are" : "is"} kept but not used. ` +
      "Install the IndexTTS2 weights (realtime-tts download) to clone voices and use emotions.";
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
  const languages = info.languages || [];
  const select = $("language");
  if (languages.length && select.options.length === 1) {
    for (const lang of languages) select.add(new Option(lang, lang));
    $("languageRow").hidden = false;
  }
}

async function checkHealth() {
  const pill = $("health");
  try {
    const r = await fetch("/health");
    const body = await r.json().catch(() => ({}));
    pill.textContent = r.ok ? "ready · " + body.engine : "loading…";
    pill.className = "pill " + (r.ok ? "ok" : "bad");
    if (r.ok && body.engine_info) showEngine(body.engine_info);
  } catch (e) {
    pill.textContent = "offline";
    pill.className = "pill bad";
  }
}

// Download formats the server offers besides the local WAV of what was heard.
async function loadFormats() {
  const r = await fetch("/v1/models", { headers: authHeaders() }).catch(() => null);
  if (!r || !r.ok) return;
  const caps = ((await r.json()).data || [])[0]?.capabilities || {};
  const select = $("format");
  select.replaceChildren(new Option("wav (as heard)", "wav"));
  for (const fmt of caps.response_formats || []) {
    if (fmt !== "pcm") select.add(new Option(`${fmt} (synthesized again)`, "server:" + fmt));
  }
}

// ---- voices: list, upload, preview, delete ---------------------------------------------------
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
  voiceChosen();
  stats.voicesLoaded = body.data.length;
}
function voiceChosen() {
  $("previewVoice").disabled = $("deleteVoice").disabled = !$("voice").value;
}
$("voice").addEventListener("change", voiceChosen);
$("refreshVoices").addEventListener("click", () => loadVoices());

$("uploadForm").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("uploadFile").files[0];
  const status = $("uploadStatus");
  if (!file) {
    status.textContent = "choose a clip first (5-15 s of clean speech works best)";
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if ($("uploadName").value.trim()) form.append("name", $("uploadName").value.trim());
  status.textContent = "uploading…";
  const r = await fetch("/v1/audio/voices", { method: "POST", body: form, headers: authHeaders() });
  if (!r.ok) {
    status.textContent = "upload failed: " + (await apiError(r));
    return;
  }
  const v = await r.json();
  status.textContent = r.status === 201 ? `stored ${v.id} (${v.duration.toFixed(1)} s)`
    : `this clip is already stored as ${v.id}: selected it`;
  await loadVoices(v.id);
});

let previewAudio = null;
$("previewVoice").addEventListener("click", async () => {
  const id = $("voice").value;
  const r = await fetch(`/v1/audio/voices/${encodeURIComponent(id)}/audio`, { headers: authHeaders() });
  if (!r.ok) return setError("preview: " + (await apiError(r)));
  if (previewAudio) previewAudio.pause();
  const url = URL.createObjectURL(await r.blob());
  previewAudio = new Audio(url);
  previewAudio.onended = () => URL.revokeObjectURL(url);
  try {
    await previewAudio.play();
    stats.previewPlays += 1;
  } catch (e) {
    setError("preview: the browser would not play the clip (" + e.message + ")");
  }
});

$("deleteVoice").addEventListener("click", async () => {
  const id = $("voice").value;
  if (!id || !confirm(`Delete the voice ${id}? This cannot be undone.`)) return;
  const r = await fetch(`/v1/audio/voices/${encodeURIComponent(id)}`, { method: "DELETE", headers: authHeaders() });
  if (!r.ok) return setError("delete: " + (await apiError(r)));
  $("uploadStatus").textContent = `deleted ${id}`;
  await loadVoices("");
});

// ---- emotion, speed, language -----------------------------------------------------------------
const sliders = {};
for (const name of EMOTIONS) {
  const input = Object.assign(document.createElement("input"),
    { type: "range", min: 0, max: 1, step: 0.05, value: 0, id: "emo_" + name });
  const label = Object.assign(document.createElement("label"), { textContent: name, htmlFor: input.id });
  const out = Object.assign(document.createElement("output"), { textContent: "0.00" });
  out.htmlFor = input.id;
  input.addEventListener("input", () => (out.textContent = Number(input.value).toFixed(2)));
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
  if ($("language").value) s.language = $("language").value;
  const emo = emotion();
  if (emo) s.emotion = emo;
  return s;
}

// ---- the turn: what was sent, what arrived, what is heard ---------------------------------------
let turn = null; // the current or last turn
let ctxCounter = 0;

function newTurn(text) {
  cancelCurrent();
  turn = {
    id: "page-" + ++ctxCounter + "-" + Date.now().toString(36), text, settings: turnSettings(),
    t0: performance.now(), samples: 0, chunks: [], kept: 0, truncated: false, sentences: [],
    done: false, stopped: false, current: -1, heard: -1,
  };
  Object.assign(stats, { sentences: [], sentenceStartsMs: [], current: -1, heardMs: 0, turnSamples: 0, firstFrameMs: null, ttfaMs: null });
  $("subtitle").textContent = "";
  $("sentences").replaceChildren();
  $("ttfa").textContent = "…";
  $("audioMs").textContent = "0 ms";
  $("replay").disabled = $("download").disabled = true;
  setError("");
  setState("synthesizing");
  showProgress();
  return turn;
}

function onSentence(msg) {
  const li = Object.assign(document.createElement("li"), { textContent: msg.text });
  turn.sentences.push({ text: msg.text, pos: turn.samples, li }); // it starts with the next sample
  stats.sentences.push(msg.text);
  stats.sentenceStartsMs.push(Math.round((turn.samples / RATE) * 1000));
  $("sentences").append(li);
  showProgress();
}

function onTurnAudio(pcm) {
  if (stats.firstFrameMs === null) stats.firstFrameMs = Math.round(performance.now() - turn.t0);
  const t = player.schedule(pcm, turn.samples);
  if (stats.ttfaMs === null) {
    const i = firstAudible(pcm); // time to first audio: the click to the first audible sample's playout
    if (i >= 0) {
      stats.ttfaMs = Math.round(player.performanceTimeOf(t + i / RATE) - turn.t0);
      $("ttfa").textContent = stats.ttfaMs + " ms";
    }
  }
  turn.samples += pcm.length;
  if (turn.kept + pcm.length <= KEEP_SECONDS * RATE) {
    turn.chunks.push(pcm);
    turn.kept += pcm.length;
  } else {
    turn.truncated = true;
  }
  stats.buffersScheduled += 1;
  stats.samplesScheduled += pcm.length;
  stats.sourcesActive = player.active;
  stats.turnSamples = turn.samples;
  $("audioMs").textContent = Math.round((turn.samples / RATE) * 1000) + " ms";
  if (stats.state === "synthesizing") setState("playing");
}

function turnFinished() {
  turn.done = true;
  finishable();
  if (!player.active) setState("idle");
}

// Replay and download need a complete (or stopped) turn with its audio kept.
function finishable() {
  const ok = turn && turn.samples > 0 && (turn.done || turn.stopped) && !turn.truncated;
  $("replay").disabled = $("download").disabled = !ok;
  if (turn && turn.truncated) setError(`this turn is longer than ${KEEP_SECONDS / 60} min: not kept for replay or download`);
}

// Which sentence is being heard: the last one that starts at or before the playout position.
function follow() {
  stats.sourcesActive = player.active;
  if (!turn || turn.stopped) return;
  const pos = player.heardPosition();
  if (pos < 0 || pos === turn.heard) return;
  turn.heard = pos;
  let idx = -1;
  turn.sentences.forEach((s, i) => { if (s.pos <= pos) idx = i; });
  if (idx !== turn.current) highlight(idx);
  stats.heardMs = Math.round((pos / RATE) * 1000);
  showProgress();
}

function highlight(idx) {
  turn.current = stats.current = idx;
  turn.sentences.forEach((s, i) => {
    s.li.classList.toggle("heard", i < idx);
    if (i === idx) s.li.setAttribute("aria-current", "true");
    else s.li.removeAttribute("aria-current");
  });
  const now = turn.sentences[idx];
  $("subtitle").textContent = now ? now.text : "";
  if (now) now.li.scrollIntoView({ block: "nearest" });
}

function showProgress() {
  const bar = $("progress");
  const text = $("progressText");
  if (!turn) return;
  const n = turn.sentences.length;
  const heard = Math.max(0, turn.heard) / RATE;
  const got = turn.samples / RATE;
  bar.max = Math.max(got, 0.001);
  bar.value = Math.min(heard, got);
  const where = turn.current >= 0 ? `sentence ${turn.current + 1} of ${n}${turn.done ? "" : "+"}` : `${n} sentences so far`;
  const verb = turn.stopped ? "stopped at " : "";
  text.textContent = `${verb}${where} · ${heard.toFixed(1)} s of ${got.toFixed(1)} s`;
}

player.onIdle = () => {
  follow();
  stats.sourcesActive = 0;
  if (turn && turn.done && (stats.state === "playing" || stats.state === "replaying")) setState("idle");
};
setInterval(follow, 50);

// ---- the native streaming socket ----------------------------------------------------------
let ws = null;
let wsReady = null; // Promise resolved on the server's "ready"
const slots = new Map(); // binary slot -> context_id
const cancelled = new Set(); // contexts whose late audio is dropped

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
    sock.onopen = () => sock.send(JSON.stringify({
      type: "config", output: { encoding: "pcm_s16le", sample_rate: RATE }, audio_transport: "binary",
      sentence_timestamps: true,
    }));
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

const isCurrent = (contextId) => turn && contextId === turn.id && !cancelled.has(contextId);

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
      if (isCurrent(msg.context_id)) onSentence(msg);
      break;
    case "done":
      stats.doneCount += 1;
      if (isCurrent(msg.context_id)) turnFinished();
      break;
    case "cancelled":
      stats.cancelledAcks += 1;
      break;
    case "error":
      setError(`${msg.code}: ${msg.message}`);
      break;
    case "warning": // e.g. voice_ignored: the notice above already says why
      stats.warnings.push(msg.code);
      break;
    default:
      break; // flushed, sentence_end... are not needed here
  }
}

function onAudio(data) {
  stats.framesReceived += 1;
  stats.bytesReceived += data.byteLength;
  const head = new Uint8Array(data, 0, Math.min(HEADER_BYTES, data.byteLength));
  if (data.byteLength < HEADER_BYTES || head[0] !== 1 || head[1] !== 0) return;
  const slot = (head[2] << 8) | head[3];
  if (!isCurrent(slots.get(slot)) || turn.stopped) {
    stats.droppedFrames += 1;
    return;
  }
  // s16le samples; every browser runs little-endian, so a typed-array view reads them as is
  const pcm = new Int16Array(data.slice(HEADER_BYTES, HEADER_BYTES + ((data.byteLength - HEADER_BYTES) & ~1)));
  if (pcm.length) onTurnAudio(pcm);
}

function cancelCurrent() {
  if (!turn) return;
  if (!turn.stopped && !turn.done) {
    turn.heard = player.heardPosition();
    cancelled.add(turn.id);
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "cancel", context_id: turn.id }));
      stats.cancelSent += 1;
    }
  }
  player.stop();
  stats.sourcesActive = 0;
}

// ---- buttons --------------------------------------------------------------------------------
let streamTimer = null;

async function startTurn() {
  player.ensure();
  clearInterval(streamTimer);
  const text = $("text").value;
  if (!text.trim()) {
    setError("type some text first");
    return null;
  }
  try { await connect(); } catch (e) { return null; }
  return newTurn(text);
}

$("speak").addEventListener("click", async () => {
  const t = await startTurn();
  if (!t) return;
  ws.send(JSON.stringify({ type: "text", context_id: t.id, text: t.text, ...t.settings }));
  ws.send(JSON.stringify({ type: "end", context_id: t.id }));
});

$("streamLlm").addEventListener("click", async () => {
  const t = await startTurn();
  if (!t) return;
  // LLM-like tokens: a word (or 2 CJK characters) every 50 ms.
  const tokens = t.text.match(/[\u3000-\u9fff\uff00-\uffef]{1,2}|\s*[^\s\u3000-\u9fff\uff00-\uffef]+\s*|\s+/g) || [t.text];
  let i = 0;
  streamTimer = setInterval(() => {
    if (turn !== t || t.stopped || !ws || ws.readyState !== WebSocket.OPEN) return clearInterval(streamTimer);
    if (i < tokens.length) {
      const msg = { type: "text", context_id: t.id, text: tokens[i] };
      ws.send(JSON.stringify(i++ === 0 ? { ...msg, ...t.settings } : msg));
    } else {
      ws.send(JSON.stringify({ type: "end", context_id: t.id }));
      clearInterval(streamTimer);
    }
  }, 50);
});

$("stop").addEventListener("click", () => {
  clearInterval(streamTimer);
  if (!turn) return;
  const pos = player.heardPosition();
  cancelCurrent();
  turn.stopped = true;
  turn.heard = pos;
  let idx = -1;
  turn.sentences.forEach((s, i) => { if (s.pos <= pos) idx = i; });
  highlight(idx); // the sentence that was being heard, not the last one received
  showProgress();
  finishable();
  setState("stopped");
});

$("replay").addEventListener("click", () => {
  if (!turn || !turn.chunks.length) return;
  player.ensure();
  player.stop();
  turn.stopped = false;
  turn.done = true;
  let pos = 0;
  for (const chunk of turn.chunks) {
    player.schedule(chunk, pos);
    pos += chunk.length;
    stats.buffersScheduled += 1;
    stats.samplesScheduled += chunk.length;
  }
  stats.replays += 1;
  setState("replaying");
});

$("download").addEventListener("click", async () => {
  if (!turn) return;
  const fmt = $("format").value;
  if (fmt === "wav") return saveFile(wavBlob(turn.chunks), `speech-${turn.id}.wav`);
  const format = fmt.slice("server:".length);
  const s = turn.settings;
  const body = { model: "realtime-tts", input: turn.text, voice: s.voice || "default", speed: s.speed,
                 response_format: format, stream: false };
  if (s.emotion) body.emotion = s.emotion;
  if (s.language) body.language = s.language;
  const r = await fetch("/v1/audio/speech", { method: "POST", body: JSON.stringify(body),
                                              headers: { "Content-Type": "application/json", ...authHeaders() } });
  if (!r.ok) return setError("download: " + (await apiError(r)));
  saveFile(await r.blob(), `speech-${turn.id}.${format === "opus" ? "ogg" : format}`);
});

checkHealth();
setInterval(checkHealth, 10000);
loadVoices();
loadFormats();
