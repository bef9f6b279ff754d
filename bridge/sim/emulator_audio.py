"""Audio for the emulators: G.711 tables, crude resampling and the recorded greeting.

Quality is irrelevant here, cost is not: every emulated session decodes and encodes its audio with these
numpy tables. Formats use the Realtime beta names (`pcm16`, `g711_ulaw`, `g711_alaw`).
"""

from __future__ import annotations

import functools
import re
import wave
from importlib import resources

import numpy as np

from bridge.sim.realtime_schema import FORMAT_RATES


@functools.cache
def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


@functools.cache
def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


@functools.cache
def _ulaw_encode_table() -> np.ndarray:
    # The classic Sun g711.c on 14-bit input, as audioop does it, so both produce identical bytes.
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(x), 8159) + 0x21
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), value)
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((value >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


@functools.cache
def _alaw_encode_table() -> np.ndarray:
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    value = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), value)
    low = np.where(seg < 2, value >> 1, value >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | low)
    return (code ^ mask).astype(np.uint8)


def decode_g711(data: bytes, fmt: str) -> np.ndarray:
    table = _ulaw_decode_table() if fmt == "g711_ulaw" else _alaw_decode_table()
    return table[np.frombuffer(data, dtype=np.uint8)]


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst or pcm.size == 0:
        return pcm
    if src % dst == 0:  # integer decimation: a box filter is enough to keep aliasing tolerable
        factor = src // dst
        usable = pcm[: pcm.size - pcm.size % factor].astype(np.int32)
        return (usable.reshape(-1, factor).sum(axis=1) // factor).astype(np.int16)
    n = round(pcm.size * dst / src)
    positions = np.arange(n) * (src / dst)
    return np.interp(positions, np.arange(pcm.size), pcm).round().astype(np.int16)


def encode_output(pcm: np.ndarray, rate: int, fmt: str, out_rate: int | None = None) -> bytes:
    """`pcm` at `rate` in the output format `fmt`, at `out_rate` (default: the format's usual rate)."""
    samples = resample(pcm, rate, out_rate or FORMAT_RATES[fmt])
    if fmt == "pcm16":
        return samples.astype("<i2").tobytes()
    table = _ulaw_encode_table() if fmt == "g711_ulaw" else _alaw_encode_table()
    return table[samples.view(np.uint16)].tobytes()


def bytes_per_ms(fmt: str) -> int:
    return 48 if fmt == "pcm16" else 8


@functools.cache
def greeting_pcm24k() -> bytes:
    with resources.files(__package__).joinpath("assets", "greeting.wav").open("rb") as fh, wave.open(fh) as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, 24000):
            raise ValueError("greeting.wav must be PCM16 24 kHz mono")
        return w.readframes(w.getnframes())


_VOWELS = re.compile(r"[aeiouyäöüáéíóúàèìòùâêîôûæøå]+", re.IGNORECASE)
_RATE = 24000
_PAUSES_S = {",": 0.22, ";": 0.22, ":": 0.22, ".": 0.38, "!": 0.38, "?": 0.38}


@functools.cache
def _syllable(rise: int, falling: bool) -> np.ndarray:
    """170 ms of buzz at about 150 Hz, shaped like an open vowel (strong harmonics around
    500-1200 Hz), then 30 ms of silence; `rise` lifts the pitch a little, `falling` ends a sentence."""
    t = np.arange(int(0.17 * _RATE)) / _RATE
    pitch = 150.0 * np.linspace(1.0 + 0.04 * rise, 0.8 if falling else 1.0, t.size)
    phase = 2 * np.pi * np.cumsum(pitch) / _RATE
    buzz = sum(np.sin(k * phase) / k * (1.6 if 3 <= k <= 8 else 1.0) for k in range(1, 16))
    envelope = np.minimum(1.0, np.minimum(t / 0.02, (t[-1] - t) / 0.04))
    shaped = buzz * envelope
    return np.concatenate([shaped / np.max(np.abs(shaped)), np.zeros(int(0.03 * _RATE))])


def murmur_pcm24k(text: str, dbfs: float = -18.0) -> np.ndarray:
    """A voice-like hum with the rhythm of `text` (PCM16 24 kHz): a syllable of buzz for each vowel
    group of each word, short gaps between words, longer ones at punctuation, the pitch falling at the
    end of a sentence. The emulator has no voice of its own; this is how it "says" given words."""
    pieces: list[np.ndarray] = []
    words = text.split()
    for index, word in enumerate(words):
        syllables = max(1, len(_VOWELS.findall(word)))
        final = word[-1] in ".!?" or index == len(words) - 1
        for syllable in range(syllables):
            pieces.append(_syllable((index + syllable) % 3, final and syllable == syllables - 1))
        pieces.append(np.zeros(int(_PAUSES_S.get(word[-1], 0.07) * _RATE)))
    if not pieces:
        return np.zeros(0, dtype="<i2")
    return (np.concatenate(pieces) * 32767 * 10 ** (dbfs / 20)).astype("<i2")
