// The assistant's voice: G.711 µ-law 8 kHz in, played in real time at the AudioContext rate.
// It behaves like Twilio's playout buffer (docs/protocols.md §T5): audio plays in order, a mark is released
// once the audio queued before it has been played (at once when nothing is queued), and a clear drops
// everything queued and releases every pending mark.
import { SincResampler, ULAW_TO_FLOAT } from "./dsp.js";

const RATE = 8000;
const JITTER_S = 0.06; // buffered before playing starts, so network jitter does not make gaps
const PROGRESS_EVERY_S = 0.05;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new SincResampler(RATE, sampleRate);
    this.chunks = []; // decoded audio waiting to play, oldest first
    this.head = 0; // samples of chunks[0] already played
    this.queued = 0; // samples waiting in chunks
    this.received = 0; // samples ever queued: a mark waits until `played` reaches its count
    this.played = 0; // samples handed to the resampler
    this.marks = []; // { name, at }, in the order they came
    this.playing = false;
    this.waitingSince = 0; // when the audio now waiting to start arrived
    this.pending = new Float32Array(1024); // resampled output not yet rendered
    this.pendingLength = 0;
    this.feed = new Float32Array(128);
    this.energy = 0;
    this.energySamples = 0;
    this.lastProgress = 0;
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(message) {
    if (message.type === "audio") {
      const audio = new Float32Array(message.data.length);
      for (let i = 0; i < audio.length; i++) audio[i] = ULAW_TO_FLOAT[message.data[i]];
      if (this.queued === 0 && !this.playing) this.waitingSince = currentTime;
      this.chunks.push(audio);
      this.queued += audio.length;
      this.received += audio.length;
    } else if (message.type === "mark") {
      if (this.queued === 0) this.port.postMessage({ type: "marks", names: [message.name] });
      else this.marks.push({ name: message.name, at: this.received });
    } else if (message.type === "clear") {
      const dropped = this.queued;
      const names = this.marks.map((mark) => mark.name);
      this.chunks = [];
      this.head = 0;
      this.queued = 0;
      this.received = this.played;
      this.marks = [];
      this.playing = false;
      this.resampler.reset(); // nor may the filter's tail of the dropped audio be heard
      this.pendingLength = 0;
      this.port.postMessage({ type: "cleared", names, droppedMs: (dropped * 1000) / RATE });
    }
  }

  // Fill `feed` with the next `count` samples to play: queued audio once playing, silence otherwise.
  take(count) {
    if (count > this.feed.length) this.feed = new Float32Array(count);
    const feed = this.feed.subarray(0, count);
    if (!this.playing && this.queued > 0) {
      this.playing = this.queued >= JITTER_S * RATE || currentTime - this.waitingSince >= JITTER_S;
    }
    let n = 0;
    while (this.playing && n < count && this.queued > 0) {
      const chunk = this.chunks[0];
      const k = Math.min(count - n, chunk.length - this.head);
      feed.set(chunk.subarray(this.head, this.head + k), n);
      n += k;
      this.head += k;
      this.queued -= k;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    if (n > 0) {
      if (this.played === 0) this.port.postMessage({ type: "first" });
      this.played += n;
    }
    if (this.playing && this.queued === 0) this.playing = false; // ran dry: buffer again before resuming
    feed.fill(0, n);
    return feed;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    while (this.pendingLength < out.length) {
      const want = Math.ceil(((out.length - this.pendingLength) * RATE) / sampleRate) + 1;
      const produced = this.resampler.process(this.take(want));
      this.pending.set(produced, this.pendingLength);
      this.pendingLength += produced.length;
    }
    out.set(this.pending.subarray(0, out.length));
    this.pending.copyWithin(0, out.length, this.pendingLength);
    this.pendingLength -= out.length;

    const released = [];
    while (this.marks.length > 0 && this.marks[0].at <= this.played) released.push(this.marks.shift().name);
    if (released.length > 0) this.port.postMessage({ type: "marks", names: released });

    for (const x of out) this.energy += x * x;
    this.energySamples += out.length;
    if (currentTime - this.lastProgress >= PROGRESS_EVERY_S) {
      const rms = Math.sqrt(this.energy / this.energySamples);
      this.port.postMessage({ type: "progress", played: this.played, queuedMs: (this.queued * 1000) / RATE, rms });
      this.lastProgress = currentTime;
      this.energy = 0;
      this.energySamples = 0;
    }
    return true;
  }
}

registerProcessor("softphone-playback", PlaybackProcessor);
