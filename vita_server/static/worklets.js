// AudioWorklet processors of vita's page: the microphone's resampler to the server's rate, and the
// jitter-buffered player. They run on the audio thread and talk to the page through their ports.

class Resampler {
  // Linear interpolation from one rate to another, continuous across blocks (the last input sample
  // of a block is kept, so no click at block edges). Low-pass filtering, where needed, is done before.
  constructor(from, to) {
    this.step = from / to;
    this.t = 0; // position of the next output sample, in input samples from the current block's start
    this.prev = 0;
  }

  push(x) {
    const n = x.length;
    if (n === 0) return new Float32Array(0);
    const out = new Float32Array(Math.max(0, Math.ceil((n - 1 - this.t) / this.step)));
    let k = 0;
    let t = this.t;
    for (; t < n - 1 && k < out.length; t += this.step) {
      const i = Math.floor(t);
      const a = i < 0 ? this.prev : x[i];
      out[k++] = a + (x[i + 1] - a) * (t - i);
    }
    this.t = t - n;
    this.prev = x[n - 1];
    return out.subarray(0, k);
  }
}

class Capture extends AudioWorkletProcessor {
  // Microphone -> 16-bit PCM at `rate`, posted in chunks of `chunk` samples (transferred ArrayBuffers).
  constructor(options) {
    super();
    const { rate, chunk } = options.processorOptions;
    this.resampler = new Resampler(sampleRate, rate);
    this.size = chunk;
    this.chunk = new Int16Array(chunk);
    this.fill = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (const v of this.resampler.push(channel)) {
        this.chunk[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(v * 32768)));
        if (this.fill === this.size) {
          this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]); // detaches this.chunk
          this.chunk = new Int16Array(this.size);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

class Player extends AudioWorkletProcessor {
  // A jitter buffer: a stream starts playing once `prebuffer` seconds are queued (or it has ended);
  // when the queue runs dry mid-stream it waits to refill. An underrun is counted when audio arrives
  // after the queue ran dry before the stream's end, i.e. when the listener heard a gap.
  constructor(options) {
    super();
    this.prebuffer = Math.round(options.processorOptions.prebuffer * sampleRate);
    this.played = 0;
    this.underruns = 0;
    this.begin();
    this.port.onmessage = (e) => this.command(e.data);
    this.blocks = 0;
  }

  begin() {
    this.queue = [];
    this.offset = 0;
    this.buffered = 0;
    this.playing = false;
    this.starved = false;
    this.ended = false;
    this.started = false;
    this.resampler = null;
    this.rate = 0;
  }

  command(m) {
    if (m.type === 'begin') {
      this.begin();
    } else if (m.type === 'push') {
      if (m.rate !== this.rate) {
        this.rate = m.rate;
        this.resampler = new Resampler(m.rate, sampleRate);
      }
      const samples = this.resampler.push(m.samples);
      if (samples.length) {
        this.queue.push(samples);
        this.buffered += samples.length;
        if (this.starved) {
          this.underruns++;
          this.starved = false;
        }
      }
    } else if (m.type === 'end') {
      this.ended = true;
      this.starved = false;
      if (this.buffered === 0) this.finish();
    }
    this.report();
  }

  finish() {
    this.playing = false;
    this.port.postMessage({ type: 'drained', played: this.played, underruns: this.underruns });
  }

  report() {
    this.port.postMessage({ type: 'stats', played: this.played, underruns: this.underruns, buffered: this.buffered });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.buffered > 0 && (this.buffered >= this.prebuffer || this.ended)) {
      this.playing = true;
      if (!this.started) {
        this.started = true;
        this.port.postMessage({ type: 'started' });
      }
    }
    let k = 0;
    while (this.playing && k < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - k, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), k);
      k += n;
      this.offset += n;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    this.played += k;
    this.buffered -= k;
    if (this.playing && this.buffered === 0) {
      if (this.ended) this.finish();
      else {
        this.playing = false;
        this.starved = true;
      }
    }
    if (++this.blocks % 16 === 0) this.report();
    return true;
  }
}

registerProcessor('vita-capture', Capture);
registerProcessor('vita-player', Player);
