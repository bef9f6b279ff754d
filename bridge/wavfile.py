"""WAV files in and out: any integer-PCM WAV becomes PCM16 LE mono at the rate the caller works in."""

from __future__ import annotations

import io
import math
import struct
import wave
from pathlib import Path

import numpy as np

from bridge.audio import StreamingResampler

_PCM = 0x0001
_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "µ-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
}


def read_wav_mono(path: str | Path, rate: int) -> bytes:
    """Read an integer-PCM WAV (8/16/24/32-bit, any rate, any channel count) as PCM16 LE mono at `rate`.

    Channels are averaged. Resampling uses StreamingResampler, flushed, with its delay removed, so sample k
    of the result sits at time k / rate in the file and the result has ceil(frames * rate / file_rate)
    samples.
    """
    data = _as_plain_pcm(Path(path).read_bytes(), path)
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            file_rate = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({str(exc) or 'truncated'})") from exc
    if not 1 <= width <= 4:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported (8, 16, 24 or 32-bit only)")
    if file_rate <= 0:
        raise ValueError(f"{path}: bad sample rate {file_rate}")
    usable = len(frames) - len(frames) % (width * channels)
    samples = _to_int16(frames[:usable], width)
    if channels > 1:
        samples = np.rint(samples.reshape(-1, channels).mean(axis=1)).astype("<i2")
    pcm = samples.tobytes()
    if file_rate == rate:
        return pcm

    resampler = StreamingResampler(file_rate, rate)
    out = resampler.process(pcm) + resampler.flush()
    lag = round(resampler.delay_ms * rate / 1000)
    length = math.ceil(samples.size * rate / file_rate)
    return out[2 * lag : 2 * (lag + length)]


def write_wav(path: str | Path, pcm16: bytes, rate: int) -> None:
    """Write PCM16 LE mono."""
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm16)}")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)


def _as_plain_pcm(data: bytes, path: str | Path) -> bytes:
    """Reject non-PCM encodings with a clear message; relabel WAVE_FORMAT_EXTENSIBLE PCM as plain PCM.

    Python 3.11's `wave` refuses the extensible header that most 24-bit and multichannel files carry.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"fmt " and size >= 16:
            (tag,) = struct.unpack_from("<H", data, pos + 8)
            if tag == _EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack_from("<H", data, pos + 32)
                if tag == _PCM:
                    return data[: pos + 8] + struct.pack("<H", _PCM) + data[pos + 10 :]
            if tag != _PCM:
                name = _FORMAT_NAMES.get(tag, "compressed")
                raise ValueError(f"{path}: WAV format 0x{tag:04x} ({name}) is not integer PCM")
            return data
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: WAV file has no fmt chunk")


def _to_int16(frames: bytes, width: int) -> np.ndarray:
    if width == 1:
        # 8-bit WAV is unsigned with silence at 128.
        return ((np.frombuffer(frames, dtype=np.uint8).astype(np.int16) - 128) << 8).astype("<i2")
    if width == 2:
        return np.frombuffer(frames, dtype="<i2")
    raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, width)
    value = raw[:, -1].astype(np.int8).astype(np.int64)
    for byte in range(width - 2, -1, -1):
        value = (value << 8) | raw[:, byte]
    shift = 8 * (width - 2)
    return np.clip((value + (1 << (shift - 1))) >> shift, -32768, 32767).astype("<i2")
