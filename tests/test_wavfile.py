from __future__ import annotations

import math
import re
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.wavfile import read_wav_mono, write_wav

PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def riff(
    tag: int, channels: int, rate: int, bits: int, frames: bytes, extensible_tag: int | None = None
) -> bytes:
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if extensible_tag is not None:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_tag) + PCM_GUID_TAIL
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(frames))
        + frames
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_raw(path: Path, channels: int, width: int, rate: int, frames: bytes) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)


def sine(freq: float, rate: int, seconds: float, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)


def pcm(samples: np.ndarray) -> bytes:
    return np.rint(samples).astype("<i2").tobytes()


def samples_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def test_write_then_read_at_the_same_rate_is_lossless(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(-32768, 32768, 4000).astype("<i2").tobytes()
    path = tmp_path / "a.wav"
    write_wav(path, data, 16000)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
    assert read_wav_mono(path, 16000) == data
    assert read_wav_mono(str(path), 16000) == data


def test_stereo_44k1_is_mixed_down_and_resampled_in_time(tmp_path: Path) -> None:
    seconds = 0.5
    left = sine(440, 44100, seconds, 12000)
    right = sine(440, 44100, seconds, 8000)
    path = tmp_path / "stereo.wav"
    write_raw(path, 2, 2, 44100, pcm(np.stack([left, right], axis=1).reshape(-1)))

    out = samples_of(read_wav_mono(path, 24000))
    assert out.size == math.ceil(left.size * 24000 / 44100)
    ideal = sine(440, 24000, seconds, 10000)
    interior = slice(240, -240)
    assert np.max(np.abs(out[interior] - ideal[interior])) <= 2


def test_opposite_channels_cancel(tmp_path: Path) -> None:
    left = sine(1000, 8000, 0.1, 20000)
    path = tmp_path / "cancel.wav"
    write_raw(path, 2, 2, 8000, pcm(np.stack([left, -left], axis=1).reshape(-1)))
    assert not np.any(samples_of(read_wav_mono(path, 8000)))


def test_8_bit_is_read_as_unsigned(tmp_path: Path) -> None:
    raw = bytes([0, 1, 127, 128, 129, 200, 255])
    path = tmp_path / "u8.wav"
    write_raw(path, 1, 1, 8000, raw)
    assert list(samples_of(read_wav_mono(path, 8000))) == [(b - 128) * 256 for b in raw]


def test_8_bit_tone_resamples_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "u8tone.wav"
    write_raw(path, 1, 1, 8000, (np.rint(sine(500, 8000, 0.5, 100)) + 128).astype(np.uint8).tobytes())
    out = samples_of(read_wav_mono(path, 24000))
    ideal = sine(500, 24000, 0.5, 100 * 256)
    assert np.max(np.abs(out[240:-240] - ideal[240:-240])) <= 256


@pytest.mark.parametrize("width", [3, 4])
def test_24_and_32_bit_are_rounded_to_16_bit(tmp_path: Path, width: int) -> None:
    bits = 8 * width
    values = [
        0,
        1,
        -1,
        1 << (bits - 17),
        -(1 << (bits - 17)),
        (1 << (bits - 1)) - 1,
        -(1 << (bits - 1)),
        123456,
    ]
    frames = b"".join(v.to_bytes(width, "little", signed=True) for v in values)
    path = tmp_path / f"{bits}.wav"
    write_raw(path, 1, width, 8000, frames)
    shift = bits - 16
    expected = [min(32767, (v + (1 << (shift - 1))) >> shift) for v in values]
    assert list(samples_of(read_wav_mono(path, 8000))) == expected


def test_extensible_pcm_header_is_accepted(tmp_path: Path) -> None:
    values = np.array([0, 1 << 8, -(1 << 8), 1 << 20], dtype=np.int64)
    frames = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)
    path = tmp_path / "ext.wav"
    path.write_bytes(riff(0xFFFE, 1, 8000, 24, frames, extensible_tag=0x0001))
    assert list(samples_of(read_wav_mono(path, 8000))) == [0, 1, -1, 1 << 12]


def test_round_trip_8k_to_24k_and_back(tmp_path: Path) -> None:
    original = np.rint(sine(1000, 8000, 0.5, 20000) + sine(3000, 8000, 0.5, 5000))
    narrow = tmp_path / "narrow.wav"
    wide = tmp_path / "wide.wav"
    write_wav(narrow, pcm(original), 8000)
    write_wav(wide, read_wav_mono(narrow, 24000), 24000)
    back = samples_of(read_wav_mono(wide, 8000))
    assert back.size == original.size
    assert np.max(np.abs(back[80:-80] - original[80:-80])) <= 3


@pytest.mark.parametrize(
    ("tag", "name"), [(0x0003, "IEEE float"), (0x0006, "A-law"), (0x0007, "µ-law"), (0x0002, "ADPCM")]
)
def test_non_pcm_encodings_are_refused_by_name(tmp_path: Path, tag: int, name: str) -> None:
    path = tmp_path / "enc.wav"
    path.write_bytes(riff(tag, 1, 8000, 32 if tag == 3 else 8, bytes(64)))
    with pytest.raises(ValueError, match=name):
        read_wav_mono(path, 8000)


def test_extensible_float_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "extf.wav"
    path.write_bytes(riff(0xFFFE, 1, 8000, 32, bytes(64), extensible_tag=0x0003))
    with pytest.raises(ValueError, match="IEEE float"):
        read_wav_mono(path, 8000)


def test_garbage_and_truncated_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"ID3\x03 this is an mp3")
    with pytest.raises(ValueError, match="not a RIFF/WAVE"):
        read_wav_mono(path, 8000)
    path.write_bytes(riff(0x0001, 1, 8000, 16, bytes(100))[:30])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_wav_mono(path, 8000)


def test_write_refuses_odd_byte_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        write_wav(tmp_path / "odd.wav", b"\x00\x00\x00", 8000)
