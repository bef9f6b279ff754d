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
# Work arrays hold this many blocks; process() feeds at most _PIECE_BLOCKS blocks of input at a time.
_BUFFER_BLOCKS = 64
_PIECE_BLOCKS = 32


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


def pcm16_duration_ms(n_bytes: int, rate: int) -> float:
    return n_bytes / 2 * 1000.0 / rate


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

    Work goes in blocks of P = K * M input and Q = K * L output samples, P being at least the filter's reach
    into the past, so each block's outputs depend only on that block and the one before. One matmul of rows
    [previous block | block] against a fixed (2P, Q) matrix then yields every output of a call; a partial
    last block is computed whole and its unready outputs dropped.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        common = math.gcd(from_rate, to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._up = to_rate // common
        self._down = from_rate // common
        taps = _design_filter(self._up, self._down)
        self._taps = taps.size
        self._delay_ms = (taps.size - 1) / 2 * 1000.0 / (from_rate * self._up)

        reach = (taps.size - 1) // self._up
        cycles = max(1, -(-reach // self._down))
        self._block_in = cycles * self._down
        self._block_out = cycles * self._up
        # Row q + P holds the weight of input q (relative to the block start, -P <= q < P) for each output.
        out_index = np.arange(self._block_out)[None, :]
        in_index = np.arange(-self._block_in, self._block_in)[:, None]
        tap = out_index * self._down - in_index * self._up
        inside = (tap >= 0) & (tap < taps.size)
        self._coef = np.where(inside, taps[np.clip(tap, 0, taps.size - 1)], 0.0)

        # Input lives in _buf[_head:_tail], _head being the start of the block before the one holding the
        # next output. Beyond _tail lie stale samples (finite, never NaN) that only meet zero weights.
        self._buf = np.zeros(_BUFFER_BLOCKS * self._block_in)
        self._pairs = np.empty((_BUFFER_BLOCKS, 2 * self._block_in))
        self._sum = np.empty((_BUFFER_BLOCKS, self._block_out))
        self.reset()

    @property
    def delay_ms(self) -> float:
        return self._delay_ms

    def reset(self) -> None:
        self._buf[: self._block_in] = 0.0
        self._head = 0
        self._tail = self._block_in
        self._n_in = 0
        self._n_out = 0

    def process(self, pcm16: bytes) -> bytes:
        if len(pcm16) % 2:
            raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm16)}")
        piece = 2 * _PIECE_BLOCKS * self._block_in
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
        samples = np.frombuffer(pcm16, dtype=_PCM16)
        block_in = self._block_in
        block_out = self._block_out
        n_out = self._n_out
        self._n_in += samples.size
        ready = -(-self._n_in * self._up // self._down)
        first_block = n_out // block_out
        rows = (ready - 1) // block_out - first_block + 2 if ready > n_out else 1
        if max(self._tail + samples.size, self._head + rows * block_in) > self._buf.size:
            self._compact(rows * block_in + samples.size)
        head = self._head
        tail = self._tail + samples.size
        self._buf[self._tail : tail] = samples
        self._tail = tail
        if ready == n_out:
            return b""

        # Copying each block next to its predecessor is cheaper than a second matmul plus an add.
        blocks = self._buf[head : head + rows * block_in].reshape(rows, block_in)
        pairs = self._pairs[: rows - 1]
        pairs[:, :block_in] = blocks[:-1]
        pairs[:, block_in:] = blocks[1:]
        summed = np.matmul(pairs, self._coef, out=self._sum[: rows - 1])
        out = summed.reshape(-1)[n_out - first_block * block_out : ready - first_block * block_out]
        out.clip(-32768.0, 32767.0, out=out)
        self._n_out = ready
        self._head = head + (ready // block_out - first_block) * block_in
        return np.rint(out, out=out).astype(_PCM16).tobytes()

    def _compact(self, room: int) -> None:
        """Move the live input to the buffer start; grow the work arrays if `room` more samples won't fit."""
        live = self._tail - self._head
        size = self._buf.size
        if live + room > size:
            size = max(2 * size, -(-(live + room) // self._block_in) * self._block_in)
            rows = size // self._block_in
            self._pairs = np.empty((rows, 2 * self._block_in))
            self._sum = np.empty((rows, self._block_out))
            buf = np.zeros(size)
        else:
            buf = self._buf
        buf[:live] = self._buf[self._head : self._tail]
        self._buf = buf
        self._head = 0
        self._tail = live


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

    @property
    def delay_ms(self) -> float:
        return self._resampler.delay_ms if self._resampler is not None else 0.0

    def process(self, data: bytes) -> bytes:
        if self.src == self.dst:
            return data
        if self._table is not None:
            return data.translate(self._table)
        if self.src.encoding == "l16":
            data = self._odd + data
            whole = len(data) - len(data) % 2
            self._odd = data[whole:]
            data = data[:whole]
        pcm = self.src.to_pcm16(data)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self.dst.from_pcm16(pcm) if pcm else b""

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
