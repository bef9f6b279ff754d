// Signal processing shared by the page and its audio worklets: G.711 µ-law and a windowed-sinc resampler.
// An ES module, so the worklets import it and the tests can evaluate it in the page.

// G.711 µ-law by the 16-bit reference algorithm (bias 0x84, clip 32635), byte for byte what the server's
// bridge/audio.py pcm16_to_ulaw produces.
export function ulawEncode(sample) {
  let sign = 0;
  let magnitude = sample;
  if (magnitude < 0) {
    sign = 0x80;
    magnitude = -magnitude;
  }
  magnitude = Math.min(magnitude, 32635) + 0x84;
  let exponent = 7;
  for (let bit = 0x4000; exponent > 0 && (magnitude & bit) === 0; bit >>= 1) exponent--;
  const mantissa = (magnitude >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

export function ulawDecode(code) {
  const u = ~code & 0xff;
  const exponent = (u >> 4) & 7;
  const magnitude = ((((u & 0x0f) << 3) + 0x84) << exponent) - 0x84;
  return u & 0x80 ? -magnitude : magnitude;
}

const ENCODE = new Uint8Array(65536); // indexed by the sample's unsigned 16-bit pattern
for (let i = 0; i < 65536; i++) ENCODE[i] = ulawEncode(i < 32768 ? i : i - 65536);

export const ULAW_TO_FLOAT = new Float32Array(256);
for (let code = 0; code < 256; code++) ULAW_TO_FLOAT[code] = ulawDecode(code) / 32768;

export function floatToUlaw(x) {
  const sample = Math.max(-32768, Math.min(32767, Math.round(x * 32768)));
  return ENCODE[sample & 0xffff];
}

// Windowed-sinc resampling for any pair of rates (the AudioContext may run at 44.1, 48 or 96 kHz).
// The kernel is a sinc cut off at `cutoffHz`, Kaiser-windowed over `halfWidth` periods of the lower rate
// on each side, so downsampling low-passes before decimating and upsampling removes the images. It is
// tabulated finely and read with linear interpolation, and each output is divided by the sum of the
// weights it used, which keeps the gain at exactly 1 whatever the fractional position.
const TABLE_STEPS = 512; // table entries per period of the lower rate

function besselI0(x) {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50 && term > 1e-12 * sum; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}

function kernelTable(cutoff, halfWidth, beta) {
  const table = new Float32Array(halfWidth * TABLE_STEPS + 2); // the tail entries stay 0
  const norm = besselI0(beta);
  for (let i = 0; i <= halfWidth * TABLE_STEPS; i++) {
    const u = i / TABLE_STEPS;
    const arg = 2 * cutoff * u;
    const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
    const r = u / halfWidth;
    table[i] = (sinc * besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r)))) / norm;
  }
  return table;
}

export class SincResampler {
  constructor(inRate, outRate, { cutoffHz = 3700, halfWidth = 24, beta = 7 } = {}) {
    const low = Math.min(inRate, outRate);
    this.step = inRate / outRate; // input samples per output sample
    this.scale = low / inRate; // input samples to kernel units
    this.span = Math.ceil(halfWidth / this.scale); // the kernel's reach, in input samples, each side
    this.halfWidth = halfWidth;
    this.table = kernelTable(cutoffHz / low, halfWidth, beta);
    this.buf = new Float32Array(4 * this.span + 1024);
    this.out = new Float32Array(256);
    this.reset();
  }

  // Forget all input: the next output starts from silence.
  reset() {
    this.buf.fill(0);
    this.len = this.span; // `span` samples of silence before the first input
    this.pos = this.span; // input position of the next output sample
  }

  // Latency from input to output, in input samples.
  get delay() {
    return this.span;
  }

  // Feed input samples; returns the outputs they complete (a view, valid until the next call).
  process(input) {
    if (this.len + input.length > this.buf.length) {
      const grown = new Float32Array(2 * (this.len + input.length));
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const most = Math.ceil((this.len - this.pos) / this.step) + 1;
    if (most > this.out.length) this.out = new Float32Array(2 * most);
    let n = 0;
    while (this.pos + this.span < this.len) {
      this.out[n++] = this.sampleAt(this.pos);
      this.pos += this.step;
    }
    const drop = Math.floor(this.pos) - this.span;
    if (drop > 0) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
    return this.out.subarray(0, n);
  }

  sampleAt(pos) {
    const { buf, table, scale, span } = this;
    const base = Math.floor(pos);
    const frac = pos - base;
    const limit = this.halfWidth * TABLE_STEPS;
    let acc = 0;
    let weights = 0;
    for (let j = 1 - span; j <= span; j++) {
      const x = Math.abs(frac - j) * scale * TABLE_STEPS;
      if (x >= limit) continue;
      const i = x | 0;
      const w = table[i] + (table[i + 1] - table[i]) * (x - i);
      acc += w * buf[base + j];
      weights += w;
    }
    return acc / weights;
  }
}
