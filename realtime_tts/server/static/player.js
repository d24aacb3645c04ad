// Playback for the demo page: 16-bit PCM chunks scheduled back to back as Web Audio buffers,
// plus the bookkeeping that maps "what is being heard now" back to a position in the stream
// (for subtitles that follow playback) and a scheduled sample to the moment it is heard (for an
// honest time to first audio). No dependencies, no build step.

export const RATE = 24000;
const JITTER_S = 0.15; // start-up buffer: the first chunk plays this far in the future
const AUDIBLE = 33; // |sample| above this (about -60 dBFS) counts as sound, not silence

export class Player {
  constructor() {
    this.ctx = null;
    this.cursor = 0; // context time at which the next chunk starts
    this.sources = new Set();
    this.segments = []; // {pos, t, n}: stream samples [pos, pos+n) play from context time t
    this.onIdle = null; // called when the last scheduled source has ended
  }

  // Create or resume the AudioContext; only inside a user gesture (autoplay policy).
  ensure() {
    if (!this.ctx) this.ctx = new AudioContext({ latencyHint: "interactive" });
    if (this.ctx.state === "suspended") this.ctx.resume();
  }

  // Seconds between a sample leaving Web Audio and reaching the speaker.
  latency() {
    return this.ctx ? this.ctx.outputLatency || this.ctx.baseLatency || 0 : 0;
  }

  // Schedule samples (Int16Array) that sit at stream position `pos`; returns the context time
  // they start at.
  schedule(samples, pos) {
    const n = samples.length;
    const buf = this.ctx.createBuffer(1, n, RATE); // Web Audio resamples to the context rate
    const ch = buf.getChannelData(0);
    for (let i = 0; i < n; i++) ch[i] = samples[i] / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.ctx.destination);
    const t = Math.max(this.cursor, this.ctx.currentTime + JITTER_S);
    src.start(t);
    this.cursor = t + buf.duration;
    this.segments.push({ pos, t, n });
    this.sources.add(src);
    src.onended = () => {
      this.sources.delete(src);
      if (!this.sources.size && this.onIdle) this.onIdle();
    };
    return t;
  }

  // The stream position (in samples) being heard right now; -1 before the first sample.
  heardPosition() {
    if (!this.ctx || !this.segments.length) return -1;
    const now = this.ctx.currentTime - this.latency();
    let pos = -1;
    for (const s of this.segments) {
      if (now < s.t) break;
      pos = s.pos + Math.min(s.n, Math.floor((now - s.t) * RATE));
    }
    return pos;
  }

  // performance.now() time at which context time `t` reaches the speaker.
  performanceTimeOf(t) {
    const stamp = this.ctx.getOutputTimestamp ? this.ctx.getOutputTimestamp() : null;
    if (stamp && stamp.performanceTime > 0) return stamp.performanceTime + (t - stamp.contextTime) * 1000;
    return performance.now() + (t - this.ctx.currentTime + this.latency()) * 1000;
  }

  // Stop every source now and forget the timeline (the next chunk starts a fresh one).
  stop() {
    for (const src of this.sources) {
      src.onended = null;
      try { src.stop(); } catch (e) { /* never started */ }
    }
    this.sources.clear();
    this.segments = [];
    this.cursor = 0;
  }

  get active() {
    return this.sources.size;
  }
}

// Index of the first audible sample in `samples`, or -1.
export function firstAudible(samples) {
  for (let i = 0; i < samples.length; i++) if (samples[i] > AUDIBLE || samples[i] < -AUDIBLE) return i;
  return -1;
}

// A 16-bit mono WAV file of the given Int16Array chunks.
export function wavBlob(chunks, rate = RATE) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (off, s) => [...s].forEach((ch, i) => header.setUint8(off + i, ch.charCodeAt(0)));
  text(0, "RIFF"); header.setUint32(4, 36 + n * 2, true); text(8, "WAVE");
  text(12, "fmt "); header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, 1, true);
  header.setUint32(24, rate, true); header.setUint32(28, rate * 2, true); header.setUint16(32, 2, true);
  header.setUint16(34, 16, true); text(36, "data"); header.setUint32(40, n * 2, true);
  return new Blob([header, ...chunks.map((c) => new Uint8Array(c.buffer, c.byteOffset, c.byteLength))],
    { type: "audio/wav" });
}
