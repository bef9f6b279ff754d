from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from bridge.audio import (
    ULAW_BYTES_PER_MS,
    StreamingResampler,
    pcm16_to_ulaw,
    swap_pcm16_byte_order,
    ulaw_to_pcm16,
)

FULL_SCALE = 32767.0

# --- G.711 µ-law reference (the classic 16-bit algorithm, written out independently of the module) ---

_BIAS = 0x84
_CLIP = 32635
_SEGMENT_ENDS = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)
_SEGMENT_BASES = (0, 132, 396, 924, 1980, 4092, 8316, 16764)


def reference_ulaw_encode(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0x00
    magnitude = min(-sample if sample < 0 else sample, _CLIP) + _BIAS
    segment = next(i for i, end in enumerate(_SEGMENT_ENDS) if magnitude <= end)
    mantissa = (magnitude >> (segment + 3)) & 0x0F
    return ~(sign | (segment << 4) | mantissa) & 0xFF


def reference_ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    segment = (code >> 4) & 0x07
    magnitude = _SEGMENT_BASES[segment] + ((code & 0x0F) << (segment + 3))
    return -magnitude if code & 0x80 else magnitude


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    every_sample = np.arange(-32768, 32768, dtype="<i2")
    expected = bytes(reference_ulaw_encode(int(s)) for s in every_sample)
    assert pcm16_to_ulaw(every_sample.tobytes()) == expected


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    expected = np.array([reference_ulaw_decode(code) for code in range(256)], dtype="<i2")
    assert ulaw_to_pcm16(bytes(range(256))) == expected.tobytes()


def test_ulaw_codes_survive_decode_encode() -> None:
    decoded = ulaw_to_pcm16(bytes(range(256)))
    # 0x7F is "negative zero": it decodes to 0, which encodes as positive zero 0xFF.
    assert pcm16_to_ulaw(decoded) == bytes(range(127)) + b"\xff" + bytes(range(128, 256))


def test_ulaw_framing_helpers() -> None:
    assert ULAW_BYTES_PER_MS * 20 == 160
    assert pcm16_to_ulaw(b"") == b""
    assert ulaw_to_pcm16(b"") == b""
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_ulaw(b"\x00\x01\x02")


# --- Resampler helpers ---


def tone(freq: float, rate: int, seconds: float, amplitude: float = FULL_SCALE) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")


def resample(from_rate: int, to_rate: int, samples: np.ndarray, flush: bool = False) -> np.ndarray:
    resampler = StreamingResampler(from_rate, to_rate)
    out = resampler.process(samples.astype("<i2").tobytes())
    if flush:
        out += resampler.flush()
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def amplitude_at(signal: np.ndarray, freq: float, rate: int, start: int) -> float:
    """Amplitude of one frequency over exactly one second (a whole number of cycles, so no leakage)."""
    window = signal[start : start + rate]
    assert window.size == rate
    phase = np.exp(-2j * np.pi * freq * np.arange(rate) / rate)
    return float(2 * abs(np.dot(window, phase)) / rate)


def db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


def measured_delay_ms(from_rate: int, to_rate: int) -> float:
    """Cross-correlate the output for a chirp with the same chirp sampled ideally at the output rate."""
    seconds = 0.25

    def chirp(rate: int) -> np.ndarray:
        t = np.arange(round(rate * seconds)) / rate
        sweep = np.sin(2 * np.pi * (200 * t + (3000 - 200) / seconds * t * t / 2))
        return 16000 * sweep * np.hanning(t.size)

    out = resample(from_rate, to_rate, np.rint(chirp(from_rate)), flush=True)
    ideal = chirp(to_rate)
    corr = np.correlate(out, ideal, "full")
    peak = int(np.argmax(corr))
    left, mid, right = corr[peak - 1 : peak + 2]
    fraction = 0.5 * (left - right) / (left - 2 * mid + right)
    return (peak + fraction - (ideal.size - 1)) * 1000 / to_rate


DIRECTIONS = [(8000, 24000), (24000, 8000)]
ALL_PAIRS = [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000), (8000, 16000), (16000, 8000)]


# --- Resampler quality ---


@pytest.mark.parametrize(("from_rate", "to_rate"), DIRECTIONS)
def test_passband_is_flat_from_100_hz_to_3400_hz(from_rate: int, to_rate: int) -> None:
    amplitude = 16000.0
    worst = 0.0
    for freq in range(100, 3401, 100):
        out = resample(from_rate, to_rate, tone(freq, from_rate, 1.5, amplitude))
        gain = db(amplitude_at(out, freq, to_rate, to_rate // 4) / amplitude)
        worst = max(worst, abs(gain))
    assert worst <= 0.5


@pytest.mark.parametrize(("from_rate", "to_rate"), DIRECTIONS)
def test_full_scale_1khz_keeps_unity_gain(from_rate: int, to_rate: int) -> None:
    out = resample(from_rate, to_rate, tone(1000, from_rate, 1.5))
    assert abs(db(amplitude_at(out, 1000, to_rate, to_rate // 4) / FULL_SCALE)) <= 0.5


def test_downsampling_suppresses_everything_that_would_fold_into_the_passband() -> None:
    # From 24 kHz to 8 kHz a tone at f folds to |f - 8000k|; from 4.6 kHz up it would land below 3.4 kHz.
    worst = -math.inf
    for freq in range(4600, 12000, 100):
        out = resample(24000, 8000, tone(freq, 24000, 1.0))[2000:6000]
        worst = max(worst, db(math.sqrt(np.mean(out**2)) / (FULL_SCALE / math.sqrt(2))))
    assert worst <= -70

    folded_6k = resample(24000, 8000, tone(6000, 24000, 1.5))
    assert db(amplitude_at(folded_6k, 2000, 8000, 2000) / FULL_SCALE) <= -70


def test_upsampling_suppresses_images() -> None:
    worst = -math.inf
    for freq in range(100, 3401, 100):
        out = resample(8000, 24000, tone(freq, 8000, 1.5))
        for image in (8000 - freq, 8000 + freq):
            worst = max(worst, db(amplitude_at(out, image, 24000, 6000) / FULL_SCALE))
    assert worst <= -70

    out = resample(8000, 24000, tone(1000, 8000, 1.5))
    assert db(amplitude_at(out, 7000, 24000, 6000) / FULL_SCALE) <= -70
    assert db(amplitude_at(out, 9000, 24000, 6000) / FULL_SCALE) <= -70


@pytest.mark.parametrize(("from_rate", "to_rate"), ALL_PAIRS)
def test_delay_measured_by_chirp_is_small_and_matches_the_property(from_rate: int, to_rate: int) -> None:
    delay = measured_delay_ms(from_rate, to_rate)
    assert 0 <= delay <= 3.0
    assert delay == pytest.approx(StreamingResampler(from_rate, to_rate).delay_ms, abs=0.02)


def test_impulse_peaks_exactly_two_ms_later() -> None:
    impulse = np.zeros(400, dtype="<i2")
    impulse[100] = 20000
    out = resample(8000, 24000, impulse, flush=True)
    assert int(np.argmax(out)) == 300 + 48
    out = resample(24000, 8000, np.repeat(impulse, 3), flush=True)
    assert int(np.argmax(out)) == 100 + 16


# --- Resampler streaming behaviour ---


@pytest.mark.parametrize(("from_rate", "to_rate"), [*ALL_PAIRS, (44100, 24000), (24000, 44100), (8000, 8000)])
def test_any_chunking_gives_byte_identical_output(from_rate: int, to_rate: int) -> None:
    rng = np.random.default_rng(from_rate * 7 + to_rate)
    signal = rng.integers(-32768, 32768, 6000).astype("<i2")
    whole = StreamingResampler(from_rate, to_rate)
    expected = whole.process(signal.tobytes()) + whole.flush()

    for sizes in (
        lambda: 1,
        lambda: int(rng.integers(0, 50)),
        lambda: int(rng.choice([0, 1, 2, 3, 159, 481])),
    ):
        chunked = StreamingResampler(from_rate, to_rate)
        parts = []
        pos = 0
        while pos < signal.size:
            size = sizes()
            parts.append(chunked.process(signal[pos : pos + size].tobytes()))
            pos += size
        parts.append(chunked.flush())
        assert b"".join(parts) == expected


@pytest.mark.parametrize(("from_rate", "to_rate", "frame"), [(8000, 24000, 160), (24000, 8000, 480)])
def test_sine_in_20ms_frames_has_no_click(from_rate: int, to_rate: int, frame: int) -> None:
    signal = tone(440, from_rate, 1.0, 30000)
    resampler = StreamingResampler(from_rate, to_rate)
    framed = b"".join(
        resampler.process(signal[i : i + frame].tobytes()) for i in range(0, signal.size, frame)
    )
    assert framed == StreamingResampler(from_rate, to_rate).process(signal.tobytes())

    out = np.frombuffer(framed, dtype="<i2").astype(np.float64)
    steepest_step = 2 * np.pi * 440 / to_rate * 30000
    assert np.max(np.abs(np.diff(out[to_rate // 100 :]))) <= steepest_step * 1.01 + 2


@pytest.mark.parametrize(("from_rate", "to_rate"), ALL_PAIRS)
def test_output_count_is_ceil_of_input_times_ratio_after_every_call(from_rate: int, to_rate: int) -> None:
    up, down = to_rate // math.gcd(from_rate, to_rate), from_rate // math.gcd(from_rate, to_rate)
    rng = np.random.default_rng(1)
    resampler = StreamingResampler(from_rate, to_rate)
    n_in = n_out = 0
    for _ in range(2000):
        size = int(rng.integers(0, 700))
        n_out += len(resampler.process(bytes(2 * size))) // 2
        n_in += size
        assert n_out == -(-n_in * up // down)


@pytest.mark.parametrize(
    ("from_rate", "to_rate", "frame", "expected"), [(8000, 24000, 160, 480), (24000, 8000, 480, 160)]
)
def test_ten_minutes_of_frames_never_drift(from_rate: int, to_rate: int, frame: int, expected: int) -> None:
    resampler = StreamingResampler(from_rate, to_rate)
    chunk = tone(1000, from_rate, frame / from_rate, 10000).tobytes()
    for _ in range(10 * 60 * 50):
        assert len(resampler.process(chunk)) == 2 * expected


@pytest.mark.parametrize(("from_rate", "to_rate"), ALL_PAIRS)
def test_flush_drains_the_full_convolution_as_zero_padding_would(from_rate: int, to_rate: int) -> None:
    up, down = to_rate // math.gcd(from_rate, to_rate), from_rate // math.gcd(from_rate, to_rate)
    signal = np.random.default_rng(2).integers(-20000, 20000, 1001).astype("<i2")
    flushed = StreamingResampler(from_rate, to_rate)
    out = flushed.process(signal.tobytes()) + flushed.flush()
    delay = round(flushed.delay_ms * from_rate * up / 1000)
    assert len(out) // 2 == ((signal.size - 1) * up + 2 * delay) // down + 1

    padded = StreamingResampler(from_rate, to_rate)
    zeros = bytes(2 * (from_rate // 100))
    assert (padded.process(signal.tobytes()) + padded.process(zeros)).startswith(out)
    # After the tail the filter is silent and the object starts over.
    assert flushed.flush() == b""
    assert flushed.process(signal.tobytes()) == StreamingResampler(from_rate, to_rate).process(
        signal.tobytes()
    )


def test_reset_forgets_history() -> None:
    noise = np.random.default_rng(3).integers(-30000, 30000, 777).astype("<i2").tobytes()
    signal = tone(500, 8000, 0.1).tobytes()
    resampler = StreamingResampler(8000, 24000)
    resampler.process(noise)
    resampler.reset()
    assert resampler.process(signal) == StreamingResampler(8000, 24000).process(signal)


@pytest.mark.parametrize(("from_rate", "to_rate"), DIRECTIONS)
def test_overshoot_saturates_instead_of_wrapping(from_rate: int, to_rate: int) -> None:
    square = np.where(tone(300, from_rate, 0.5) >= 0, 32766, -32766).astype("<i2")
    full = resample(from_rate, to_rate, square)
    half = resample(from_rate, to_rate, (square // 2).astype("<i2"))
    ideal = 2 * half
    assert ideal.max() > 32767 and ideal.min() < -32768, "the test signal must overshoot"
    inside = np.abs(ideal) <= 32000
    assert np.all(np.abs(full[inside] - ideal[inside]) <= 2)
    assert np.all(full[ideal > 32767 + 2] == 32767)
    assert np.all(full[ideal < -32768 - 2] == -32768)


def test_same_rate_is_a_passthrough() -> None:
    signal = np.random.default_rng(4).integers(-32768, 32768, 1234).astype("<i2").tobytes()
    resampler = StreamingResampler(16000, 16000)
    assert resampler.delay_ms == 0
    assert resampler.process(signal) + resampler.flush() == signal


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamingResampler(0, 8000)
    resampler = StreamingResampler(8000, 24000)
    with pytest.raises(ValueError, match="even number of bytes"):
        resampler.process(b"\x00\x00\x00")
    assert resampler.process(b"") == b""
    assert resampler.flush() == b""


def test_swap_pcm16_byte_order_turns_rtp_l16_into_little_endian_and_back() -> None:
    samples = (1, -2, 32767, -32768, 0x1234)
    big_endian = struct.pack(f">{len(samples)}h", *samples)
    little_endian = swap_pcm16_byte_order(big_endian)
    assert little_endian == struct.pack(f"<{len(samples)}h", *samples)
    assert swap_pcm16_byte_order(little_endian) == big_endian
