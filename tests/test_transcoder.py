"""The line formats and the per-direction transcoder every carrier's audio goes through."""

from __future__ import annotations

import audioop

import numpy as np
import pytest

from bridge.audio import L16_8K, L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat, Transcoder


def tone(rate: int, ms: int, freq: float = 1000.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def test_frame_sizes_and_silence_of_each_line() -> None:
    assert (PCMU_8K.frame_bytes(), PCMA_8K.frame_bytes(), L16_16K.frame_bytes()) == (160, 160, 640)
    assert PCMU_8K.to_pcm16(PCMU_8K.silence(4)) == bytes(8)
    assert PCMA_8K.to_pcm16(PCMA_8K.silence(4)) == audioop.alaw2lin(bytes([0xD5]) * 4, 2)
    assert max(abs(x) for x in np.frombuffer(PCMA_8K.to_pcm16(PCMA_8K.silence(4)), "<i2")) <= 8


def test_same_format_is_passed_through_untouched() -> None:
    data = bytes(range(256))
    assert Transcoder(PCMU_8K, PCMU_8K).process(data) is data


@pytest.mark.parametrize(("src", "dst"), [(PCMU_8K, PCMA_8K), (PCMA_8K, PCMU_8K)])
def test_g711_to_g711_is_a_table_that_keeps_the_waveform(src: AudioFormat, dst: AudioFormat) -> None:
    pcm = tone(8000, 100)
    coded = src.from_pcm16(pcm)
    out = Transcoder(src, dst).process(coded)
    assert len(out) == len(coded)
    error = np.frombuffer(dst.to_pcm16(out), "<i2").astype(float) - np.frombuffer(pcm, "<i2")
    assert np.sqrt(np.mean(error**2)) < 8000 * 0.05  # two companding steps, a few percent at most


def test_wideband_line_is_resampled_straight_to_the_model_rate() -> None:
    """16 kHz L16 (Vonage) keeps its 4-8 kHz band: a 6 kHz tone reaches the model at 24 kHz."""
    up = Transcoder(L16_16K, L16_24K)
    out = b"".join(up.process(chunk) for chunk in _chunks(tone(16000, 200, freq=6000.0), 640))
    assert len(out) == 2 * 24000 * 200 // 1000
    spectrum = np.abs(np.fft.rfft(np.frombuffer(out, "<i2")[2400:]))
    assert abs(np.argmax(spectrum) * 24000 / (len(out) // 2 - 2400) - 6000) < 50
    assert up.delay_ms == pytest.approx(1.0)


def test_a_sample_split_across_chunks_is_held_not_lost() -> None:
    pcm = tone(16000, 40)
    whole = Transcoder(L16_16K, L16_24K).process(pcm)
    split = Transcoder(L16_16K, L16_24K)
    pieces = [split.process(pcm[i : i + 101]) for i in range(0, len(pcm), 101)]
    assert b"".join(pieces) == whole


def test_passthrough_model_side_from_a_linear_line() -> None:
    """µ-law to the model (AUDIO_PASSTHROUGH) from an L16 8 kHz line: encoding only, no resampler."""
    down = Transcoder(L16_8K, PCMU_8K)
    assert down.delay_ms == 0.0
    pcm = tone(8000, 20)
    assert down.process(pcm) == PCMU_8K.from_pcm16(pcm)


def test_flush_returns_the_tail_and_resets() -> None:
    t = Transcoder(L16_24K, PCMU_8K)
    body = t.process(tone(24000, 20))
    tail = t.flush()
    assert len(body) == 160 and 0 < len(tail) <= 32  # the 2 ms filter delay, both sides of it
    assert t.process(tone(24000, 20)) == body  # fresh state after the flush


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
