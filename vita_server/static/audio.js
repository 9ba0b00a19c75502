// Web Audio plumbing shared by the TTS box and the conversation: one AudioContext, players, the
// microphone, and the PCM16 / base64 / streamed-WAV conversions.

let context = null;

export async function audioContext() {
  // Made on the first click (browsers only let a page start audio from a user gesture).
  if (!context) {
    context = new AudioContext({ latencyHint: 'interactive' });
    await context.audioWorklet.addModule('/static/worklets.js');
  }
  if (context.state !== 'running') await context.resume();
  return context;
}

export function setStat(id, value, text = String(value)) {
  // Each counter is an element with an id whose data-value holds the raw number (read by the tests).
  const el = document.getElementById(id);
  el.dataset.value = value;
  el.textContent = text;
  return el;
}

export const ms = (v) => (v === null || v === undefined ? '-' : `${Math.round(v)} ms`);

export class Player {
  // A jitter-buffered output stream; `onStats`, `onStarted` and `onDrained` are called from its worklet's reports.
  constructor(ctx, prebufferSeconds) {
    this.ctx = ctx;
    this.node = new AudioWorkletNode(ctx, 'vita-player', {
      numberOfInputs: 0, outputChannelCount: [1], processorOptions: { prebuffer: prebufferSeconds },
    });
    this.node.connect(ctx.destination);
    this.played = 0; // seconds, over the player's life
    this.underruns = 0;
    this.buffered = 0;
    this.onStats = () => {};
    this.onStarted = () => {};
    this.onDrained = () => {};
    this.node.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === 'started') {
        this.onStarted(performance.now() + 1000 * (ctx.outputLatency || ctx.baseLatency || 0));
        return;
      }
      this.played = m.played / ctx.sampleRate;
      this.underruns = m.underruns;
      if (m.type === 'stats') this.buffered = m.buffered / ctx.sampleRate;
      else this.buffered = 0;
      this.onStats(this);
      if (m.type === 'drained') this.onDrained(this);
    };
  }

  begin() { this.node.port.postMessage({ type: 'begin' }); } // drops what is queued: a new stream, or barge-in
  push(samples, rate) { this.node.port.postMessage({ type: 'push', samples, rate }, [samples.buffer]); }
  end() { this.node.port.postMessage({ type: 'end' }); }
}

export function pcm16ToFloat(bytes) {
  // Little-endian 16-bit samples (a Uint8Array of even length) -> Float32Array in [-1, 1).
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

export function base64ToBytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

export function bytesToBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let raw = '';
  for (let i = 0; i < bytes.length; i += 0x8000) raw += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(raw);
}

export class WavStream {
  // A WAV file arriving in pieces (its sizes may be left open, as vita streams it): the header is read
  // once it has arrived, then every piece gives its whole 16-bit frames as mono float samples.
  constructor() {
    this.pending = new Uint8Array(0);
    this.rate = 0;
    this.channels = 0;
    this.inData = false;
  }

  push(chunk) {
    const joined = new Uint8Array(this.pending.length + chunk.length);
    joined.set(this.pending);
    joined.set(chunk, this.pending.length);
    let start = 0;
    if (!this.inData) {
      start = this.header(joined);
      if (start < 0) {
        this.pending = joined;
        return new Float32Array(0);
      }
    }
    const frame = 2 * this.channels;
    const end = start + Math.floor((joined.length - start) / frame) * frame;
    this.pending = joined.slice(end);
    const all = pcm16ToFloat(joined.subarray(start, end));
    if (this.channels === 1) return all;
    const mono = new Float32Array(all.length / this.channels);
    for (let i = 0; i < mono.length; i++) mono[i] = all[i * this.channels];
    return mono;
  }

  header(b) {
    // The offset of the first sample, or -1 while the header has not fully arrived.
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const tag = (at) => String.fromCharCode(...b.subarray(at, at + 4));
    if (b.length < 12) return -1;
    if (tag(0) !== 'RIFF' || tag(8) !== 'WAVE') throw new Error('the server did not send a WAV stream');
    for (let at = 12; at + 8 <= b.length;) {
      const size = view.getUint32(at + 4, true);
      if (tag(at) === 'data') {
        if (!this.rate) throw new Error('the WAV stream has no fmt chunk before its data');
        this.inData = true;
        return at + 8;
      }
      if (at + 8 + size > b.length) return -1;
      if (tag(at) === 'fmt ') {
        if (view.getUint16(at + 8, true) !== 1 || view.getUint16(at + 22, true) !== 16) {
          throw new Error('the WAV stream is not 16-bit PCM');
        }
        this.channels = view.getUint16(at + 10, true);
        this.rate = view.getUint32(at + 12, true);
      }
      at += 8 + size + (size & 1);
    }
    return -1;
  }
}

export async function microphone(ctx, rate, chunkSamples, onChunk) {
  // The microphone, low-passed below the target's Nyquist and resampled to `rate` by the capture
  // worklet; `onChunk` gets each ArrayBuffer of 16-bit PCM. Returns a function that stops it.
  if (!navigator.mediaDevices) throw new Error('browsers give the microphone only to HTTPS or localhost pages');
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
  });
  const source = ctx.createMediaStreamSource(stream);
  const lowpass = new BiquadFilterNode(ctx, { type: 'lowpass', frequency: 0.45 * rate, Q: Math.SQRT1_2 });
  const capture = new AudioWorkletNode(ctx, 'vita-capture', {
    numberOfOutputs: 1, outputChannelCount: [1], processorOptions: { rate, chunk: chunkSamples },
  });
  capture.port.onmessage = (e) => onChunk(e.data);
  source.connect(lowpass).connect(capture).connect(ctx.destination); // the capture node outputs silence
  return () => {
    stream.getTracks().forEach((t) => t.stop());
    source.disconnect();
    capture.disconnect();
  };
}
