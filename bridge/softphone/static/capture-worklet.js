// Microphone -> 20 ms frames of G.711 µ-law at 8 kHz, on the audio thread.
// The AudioContext clock paces the frames, so they leave at the same real-time rate a phone sends them.
import { SincResampler, floatToUlaw } from "./dsp.js";

const FRAME_BYTES = 160; // 20 ms at 8 kHz

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new SincResampler(sampleRate, 8000);
    this.frame = new Uint8Array(FRAME_BYTES);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels.length === 0) return true; // not connected yet
    for (const x of this.resampler.process(channels[0])) {
      this.frame[this.filled++] = floatToUlaw(x);
      this.energy += x * x;
      if (this.filled === FRAME_BYTES) {
        const rms = Math.sqrt(this.energy / FRAME_BYTES);
        this.port.postMessage({ frame: this.frame, rms }, [this.frame.buffer]);
        this.frame = new Uint8Array(FRAME_BYTES);
        this.filled = 0;
        this.energy = 0;
      }
    }
    return true;
  }
}

registerProcessor("softphone-capture", CaptureProcessor);
