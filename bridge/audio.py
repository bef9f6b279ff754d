"""Audio path of a call: G.711 µ-law 8 kHz from the carrier, PCM16 LE mono 24 kHz for the model, and back.

`StreamingResampler` is a polyphase windowed-sinc FIR (rational ratio L/M = to/from reduced by gcd), one
object per direction per call, so filter state carries across 20 ms frames.

Filter: linear phase, 2 * 16 * max(L, M) + 1 taps at the intermediate rate from * L, Kaiser window (beta 9),
-6 dB cutoff at 0.484375 of the lower rate (3875 Hz for 8 kHz); for 8k<->24k that is 97 taps at 24 kHz.
Measured for both 8k->24k and 24k->8k (tests/test_audio.py, bench/bench_resampler.py):
  * passband 100 Hz - 3.4 kHz flat within 0.16 dB (the only droop is at the 3.4 kHz end);
  * whatever would fold onto 0 - 3.4 kHz (tones >= 4.6 kHz for 24k->8k, the images of 100 Hz - 3.4 kHz
    tones for 8k->24k) is at least 89 dB below full scale (a full-scale 6 kHz tone at 24 kHz comes out as
    digital silence once the 4 ms onset transient has passed);
  * group delay exactly 2.0 ms (16 samples of the lower rate: 48 at 24 kHz, 16 at 8 kHz; 1 ms for
    16k<->24k);
  * about 16 µs per 20 ms frame either way on an idle 2-core VM (more when it is busy), mostly the fixed
    cost of a dozen numpy calls.

Streaming rule: after n input samples in total, exactly ceil(n * L / M) output samples have been returned
(a 160-sample 8 kHz frame always gives 480 samples and a 480-sample 24 kHz frame always gives 160, with no
drift), holding the input delayed by `delay_ms`. `flush` returns the rest of the full convolution, so a
flushed stream totals floor(((n - 1) * L + 2 * D) / M) + 1 samples, D being the delay in samples of the
intermediate rate (D = 48 for 8k<->24k).

Chunking never changes a byte of output: coefficients sit on a 2**-32 grid and samples are integers, so every
product and partial sum (< 2**49 grid steps) is exact in float64 and BLAS may add them in any order.
Results are clipped to int16 and rounded half to even.
"""

from __future__ import annotations

import audioop
import math
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np

ULAW_BYTES_PER_MS = 8

_PCM16 = np.dtype("<i2")
_HALF_TAPS_AT_LOW_RATE = 16
_CUTOFF_OF_LOW_RATE = 0.484375
_KAISER_BETA = 9.0
_COEF_STEP = 2.0**-32
# Cycles (M inputs, L outputs) per matmul row: fewer mean fewer zero weights, more mean fewer rows.
_CYCLES_PER_ROW = 8
# process() feeds at most this many cycles of input at a time (the work arrays are sized for it).
_PIECE_CYCLES = 2048


def _ulaw_encode_table() -> np.ndarray:
    """G.711 µ-law code for every 16-bit sample, indexed by the sample's unsigned bit pattern.

    Not audioop.lin2ulaw: it shifts negative samples to 14 bits before taking the magnitude, so it is one
    step off the 16-bit reference algorithm (bias 0x84, clip 32635) for 381 negative inputs.
    """
    sample = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    sign = np.where(sample < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(sample), 32635) + 0x84
    exponent = np.zeros_like(magnitude)
    for segment in range(1, 8):
        exponent += magnitude >= (1 << (segment + 7))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


_ULAW_ENCODE = _ulaw_encode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 µ-law to PCM16 LE. audioop's decoder matches the reference exactly and is the fastest here."""
    pcm = audioop.ulaw2lin(data, 2)
    return pcm if sys.byteorder == "little" else audioop.byteswap(pcm, 2)


def pcm16_to_ulaw(data: bytes) -> bytes:
    """PCM16 LE to G.711 µ-law by the 16-bit reference algorithm (through a 64 KiB table)."""
    if len(data) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(data)}")
    return _ULAW_ENCODE.take(np.frombuffer(data, dtype="<u2")).tobytes()


def swap_pcm16_byte_order(data: bytes) -> bytes:
    """Big-endian PCM16 (RTP's L16, RFC 3551) <-> the bridge's little-endian PCM16, whatever the host's
    byte order: the same swap both ways."""
    return audioop.byteswap(data, 2)


def _design_filter(up: int, down: int) -> np.ndarray:
    """Low-pass taps at the intermediate rate with gain `up` (zero-stuffing divides by it), on the grid."""
    if up == down == 1:
        return np.ones(1)
    ratio = max(up, down)
    half = _HALF_TAPS_AT_LOW_RATE * ratio
    n = np.arange(-half, half + 1)
    cutoff = _CUTOFF_OF_LOW_RATE / ratio
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(n.size, _KAISER_BETA)
    taps *= up / taps.sum()
    return np.round(taps / _COEF_STEP) * _COEF_STEP


class StreamingResampler:
    """Streaming rational resampler for PCM16 LE mono; the module docstring gives the exact rules.

    Polyphase form: with L/M the reduced ratio, output n = c * L + p (cycle c, phase p) is the dot product
    of the W inputs from c * M + R (R <= 0) onwards with column p of a fixed (W, L) matrix holding only
    the taps that phase uses. G cycles go in one row: a row is W + (G - 1) * M consecutive inputs against
    a (W + (G - 1) * M, G * L) matrix, rows G * M inputs apart, so one matmul of a strided view of the
    input buffer yields every output of a call; outputs of a partial last row not yet due are dropped.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        common = math.gcd(from_rate, to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        up = self._up = to_rate // common
        down = self._down = from_rate // common
        taps = _design_filter(up, down)
        self._taps = taps.size
        self._delay_ms = (taps.size - 1) / 2 * 1000.0 / (from_rate * up)

        # Output c * L + p takes inputs i with 0 <= (c * L + p) * M - i * L < taps: i - c * M in
        # [first, last] for every phase p.
        first = -((taps.size - 1) // up)
        last = (up - 1) * down // up
        group = _CYCLES_PER_ROW
        width = last - first + 1 + (group - 1) * down
        offset = np.arange(width)[:, None] + first  # input index relative to the row's first cycle * M
        out = np.arange(group * up)[None, :]  # output index relative to the row's first cycle * L
        tap = out * down - offset * up
        inside = (tap >= 0) & (tap < taps.size)
        self._coef = np.where(inside, taps[np.clip(tap, 0, taps.size - 1)], 0.0)
        self._row_in = group * down
        self._row_out = group * up
        self._history = -first  # inputs before the first one: the filter starts on silence

        # Input i lives at _buf[i + shift]; _start is where the row holding the next output begins (a
        # multiple of _row_in). Beyond the newest input lie stale samples (finite) that meet zero weights.
        self._piece = _PIECE_CYCLES * down
        size = self._piece + 4 * (width + self._row_in)
        size -= size % self._row_in
        self._buf = np.zeros(size)
        rows = (size - width) // self._row_in + 1
        self._rows = np.lib.stride_tricks.as_strided(
            self._buf, shape=(rows, width), strides=(self._row_in * 8, 8), writeable=False
        )
        self._sum = np.empty((self._piece // self._row_in + 3, self._row_out))
        self._sum_flat = self._sum.reshape(-1)
        self._pcm = np.empty(self._sum.size, dtype=_PCM16)
        self._room = size - width - self._row_in  # past this the newest row could leave the buffer
        self.reset()

    @property
    def delay_ms(self) -> float:
        return self._delay_ms

    def reset(self) -> None:
        self._buf[: self._history] = 0.0
        self._start = 0
        self._tail = self._history
        self._n_in = 0
        self._n_out = 0

    def process(self, pcm16: bytes) -> bytes:
        if len(pcm16) % 2:
            raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm16)}")
        piece = 2 * self._piece
        if len(pcm16) <= piece:
            return self._process(pcm16)
        view = memoryview(pcm16)
        return b"".join(self._process(view[i : i + piece]) for i in range(0, len(pcm16), piece))

    def flush(self) -> bytes:
        """Feed silence until the last input has left the filter, return that tail, and reset."""
        if self._n_in == 0:
            return b""
        before = self._n_out
        total = ((self._n_in - 1) * self._up + self._taps - 1) // self._down + 1
        silence = max(0, -(-total * self._down // self._up) - self._n_in)
        tail = self.process(bytes(2 * silence))[: 2 * (total - before)]
        self.reset()
        return tail

    def _process(self, pcm16: bytes | memoryview) -> bytes:
        # One 20 ms frame per call on the audio path: each numpy call here costs about a microsecond
        # whatever its size, so there are as few as the work allows (views are made once, in __init__).
        samples = np.frombuffer(pcm16, dtype=_PCM16)
        n = samples.size
        tail = self._tail
        if tail + n > self._room:
            tail = self._compact()
        self._buf[tail : tail + n] = samples
        self._tail = tail + n
        self._n_in += n
        n_out = self._n_out
        ready = -(-self._n_in * self._up // self._down)
        if ready == n_out:
            return b""
        row_out = self._row_out
        first = n_out // row_out
        rows = (ready - 1) // row_out - first + 1
        row = self._start // self._row_in
        np.dot(self._rows[row : row + rows], self._coef, out=self._sum[:rows])
        out = self._sum_flat[n_out - first * row_out : ready - first * row_out]
        out.clip(-32768.0, 32767.0, out=out)
        self._n_out = ready
        self._start += (ready // row_out - first) * self._row_in
        pcm = self._pcm[: ready - n_out]
        np.rint(out, out=pcm, casting="unsafe")  # integral and in range by now: the cast is exact
        return pcm.tobytes()

    def _compact(self) -> int:
        """Move the live input (from the next row's start) to the buffer start; returns the new tail."""
        start = self._start
        live = self._tail - start
        self._buf[:live] = self._buf[start : self._tail]
        self._start = 0
        self._tail = live
        return live


Encoding = Literal["pcmu", "pcma", "l16"]
_SILENCE = {"pcmu": 0xFF, "pcma": 0xD5, "l16": 0x00}


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Mono audio on one side of the bridge: G.711 µ-law or A-law, or PCM16 LE (L16) at `rate`."""

    encoding: Encoding
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "l16" else 1

    @property
    def bytes_per_ms(self) -> int:
        return self.rate * self.bytes_per_sample // 1000

    def frame_bytes(self, ms: int = 20) -> int:
        return ms * self.bytes_per_ms

    def silence(self, n_bytes: int) -> bytes:
        return bytes([_SILENCE[self.encoding]]) * n_bytes

    def to_pcm16(self, data: bytes) -> bytes:
        if self.encoding == "pcmu":
            return ulaw_to_pcm16(data)
        if self.encoding == "pcma":
            pcm = audioop.alaw2lin(data, 2)
            return pcm if sys.byteorder == "little" else audioop.byteswap(pcm, 2)
        return data

    def rms(self, data: bytes) -> float:
        """Root-mean-square amplitude of `data` (whole samples), on PCM16's scale (full scale 32768)."""
        pcm = self.to_pcm16(data)
        native = pcm if sys.byteorder == "little" else audioop.byteswap(pcm, 2)
        return float(audioop.rms(native, 2))

    def from_pcm16(self, pcm16: bytes) -> bytes:
        if self.encoding == "pcmu":
            return pcm16_to_ulaw(pcm16)
        if self.encoding == "pcma":
            native = pcm16 if sys.byteorder == "little" else audioop.byteswap(pcm16, 2)
            return audioop.lin2alaw(native, 2)
        return pcm16


PCMU_8K = AudioFormat("pcmu", 8000)
PCMA_8K = AudioFormat("pcma", 8000)
L16_8K = AudioFormat("l16", 8000)
L16_16K = AudioFormat("l16", 16000)
L16_24K = AudioFormat("l16", 24000)  # what the Realtime model hears and speaks (audio/pcm)


def _g711_table(src: AudioFormat, dst: AudioFormat) -> bytes:
    return dst.from_pcm16(src.to_pcm16(bytes(range(256))))


class Transcoder:
    """One direction of a call's audio, `src` in and `dst` out, streaming (state kept across chunks).

    Same format: passed through. G.711 to G.711 at one rate: a byte table. Anything else: decode to
    PCM16, resample with a `StreamingResampler` if the rates differ, encode. A PCM16 sample split
    across two chunks is held until its other half arrives.
    """

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        self._table: bytes | None = None
        self._resampler: StreamingResampler | None = None
        if src != dst and src.rate == dst.rate and "l16" not in (src.encoding, dst.encoding):
            self._table = _g711_table(src, dst)
        elif src.rate != dst.rate:
            self._resampler = StreamingResampler(src.rate, dst.rate)
        self._odd = b""
        # Decided once: process() runs for every frame of every call.
        self._same = src == dst
        self._split_samples = src.encoding == "l16"
        self._decode = None if self._split_samples else src.to_pcm16
        self._encode = None if dst.encoding == "l16" else dst.from_pcm16

    @property
    def delay_ms(self) -> float:
        return self._resampler.delay_ms if self._resampler is not None else 0.0

    def process(self, data: bytes) -> bytes:
        if self._same:
            return data
        if self._table is not None:
            return data.translate(self._table)
        if self._split_samples:
            if self._odd or len(data) % 2:
                data = self._odd + data
                whole = len(data) - len(data) % 2
                self._odd = data[whole:]
                data = data[:whole]
            pcm = data
        else:
            pcm = self._decode(data)  # type: ignore[misc]
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if not pcm:
            return b""
        return pcm if self._encode is None else self._encode(pcm)

    def flush(self) -> bytes:
        """The resampler's tail (the end of the last input); the transcoder is reset afterwards."""
        self._odd = b""
        if self._resampler is None:
            return b""
        tail = self._resampler.flush()
        return self.dst.from_pcm16(tail) if tail else b""

    def reset(self) -> None:
        self._odd = b""
        if self._resampler is not None:
            self._resampler.reset()
