"""Speed and quality of the call audio path: `python bench/bench_resampler.py`.

Times are per 20 ms frame, best and median over many batches of time.perf_counter (shared machines are noisy).
Quality figures are measured on synthetic tones and a chirp, never copied from the code.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from bridge.audio import StreamingResampler, pcm16_to_ulaw, ulaw_to_pcm16

FULL_SCALE = 32767.0
BATCHES = 200
PER_BATCH = 250


def time_per_call_us(call: Callable[[], object]) -> tuple[float, float]:
    call()
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter()
        for _ in range(PER_BATCH):
            call()
        samples.append((time.perf_counter() - start) / PER_BATCH * 1e6)
    return min(samples), statistics.median(samples)


def tone(freq: float, rate: int, seconds: float, amplitude: float = FULL_SCALE) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def resample(from_rate: int, to_rate: int, pcm: bytes, flush: bool = False) -> np.ndarray:
    resampler = StreamingResampler(from_rate, to_rate)
    out = resampler.process(pcm) + (resampler.flush() if flush else b"")
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def amplitude_at(signal: np.ndarray, freq: float, rate: int, start: int) -> float:
    """Amplitude at one frequency over one second: a whole number of cycles, so no leakage."""
    window = signal[start : start + rate]
    return float(2 * abs(np.dot(window, np.exp(-2j * np.pi * freq * np.arange(rate) / rate))) / rate)


def db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


def passband_ripple_db(from_rate: int, to_rate: int) -> float:
    amplitude = 16000.0
    gains = []
    for freq in range(100, 3401, 50):
        out = resample(from_rate, to_rate, tone(freq, from_rate, 1.5, amplitude))
        gains.append(db(amplitude_at(out, freq, to_rate, to_rate // 4) / amplitude))
    return max(abs(g) for g in gains)


def worst_alias_db() -> float:
    """24k -> 8k: output level of full-scale tones from 4.6 kHz up, all of which would fold below 3.4 kHz."""
    worst = -math.inf
    for freq in range(4600, 12000, 50):
        out = resample(24000, 8000, tone(freq, 24000, 1.0))[2000:6000]
        worst = max(worst, db(math.sqrt(float(np.mean(out**2))) / (FULL_SCALE / math.sqrt(2))))
    return worst


def worst_image_db() -> float:
    """8k -> 24k: level of the images at 8 kHz +- f of full-scale tones from 100 Hz to 3.4 kHz."""
    worst = -math.inf
    for freq in range(100, 3401, 50):
        out = resample(8000, 24000, tone(freq, 8000, 1.5))
        for image in (8000 - freq, 8000 + freq):
            worst = max(worst, db(amplitude_at(out, image, 24000, 6000) / FULL_SCALE))
    return worst


def chirp_delay_ms(from_rate: int, to_rate: int) -> float:
    """Peak of the cross-correlation between the output and the chirp sampled ideally at the output rate."""
    seconds = 0.25

    def chirp(rate: int) -> np.ndarray:
        t = np.arange(round(rate * seconds)) / rate
        return 16000 * np.sin(2 * np.pi * (200 * t + 2800 / seconds * t * t / 2)) * np.hanning(t.size)

    out = resample(from_rate, to_rate, np.rint(chirp(from_rate)).astype("<i2").tobytes(), flush=True)
    ideal = chirp(to_rate)
    corr = np.correlate(out, ideal, "full")
    peak = int(np.argmax(corr))
    left, mid, right = corr[peak - 1 : peak + 2]
    return (peak + 0.5 * (left - right) / (left - 2 * mid + right) - (ideal.size - 1)) * 1000 / to_rate


def main() -> None:
    rng = np.random.default_rng(0)
    narrow = rng.integers(-20000, 20000, 160).astype("<i2").tobytes()
    wide = rng.integers(-20000, 20000, 480).astype("<i2").tobytes()
    ulaw = pcm16_to_ulaw(narrow)

    print("per 20 ms frame (best / median µs):")
    up = StreamingResampler(8000, 24000)
    down = StreamingResampler(24000, 8000)
    for label, call in [
        ("resample 8k->24k (160 in)", lambda: up.process(narrow)),
        ("resample 24k->8k (480 in)", lambda: down.process(wide)),
        ("µ-law encode (160 samples)", lambda: pcm16_to_ulaw(narrow)),
        ("µ-law decode (160 bytes)", lambda: ulaw_to_pcm16(ulaw)),
    ]:
        best, median = time_per_call_us(call)
        print(f"  {label:28s} {best:6.1f} / {median:6.1f}")

    print("quality:")
    print(f"  passband ripple 100-3400 Hz, 8k->24k   {passband_ripple_db(8000, 24000):.3f} dB")
    print(f"  passband ripple 100-3400 Hz, 24k->8k   {passband_ripple_db(24000, 8000):.3f} dB")
    print(f"  worst alias >= 4.6 kHz, 24k->8k        {worst_alias_db():.1f} dBFS")
    print(f"  worst image of 0.1-3.4 kHz, 8k->24k    {worst_image_db():.1f} dBFS")
    print(f"  delay by chirp, 8k->24k                {chirp_delay_ms(8000, 24000):.3f} ms")
    print(f"  delay by chirp, 24k->8k                {chirp_delay_ms(24000, 8000):.3f} ms")


if __name__ == "__main__":
    main()
