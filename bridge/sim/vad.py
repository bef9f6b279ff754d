"""Energy voice-activity detector used by the Realtime emulator's server VAD.

Plain synchronous code: feed PCM16 samples, get speech start/stop events back. All times are sample
positions counted from the first sample ever fed, so results depend on the audio only, never on how
fast or in what chunk sizes it arrives. Energy is computed per 10 ms window with numpy; the start and
end of speech are then refined to the first/last sample above the threshold amplitude, which makes
them sample-accurate for a clean signal instead of window-accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    sample: int  # first sample above the threshold amplitude


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    sample: int  # where the trailing silence reached silence_duration_ms: the commit point
    speech_end: int  # one past the last sample above the threshold amplitude


VadEvent = SpeechStarted | SpeechStopped


def dbfs_to_amplitude(dbfs: float) -> float:
    return FULL_SCALE * 10.0 ** (dbfs / 20.0)


class EnergyVad:
    """Window energy vs a dBFS threshold (RMS relative to full scale), with hysteresis in time.

    Speech starts after `start_windows` consecutive loud windows and stops after `silence_duration_ms`
    without a loud window.
    """

    def __init__(
        self,
        rate: int,
        threshold_dbfs: float = -40.0,
        silence_duration_ms: int = 500,
        start_windows: int = 2,
        window_ms: int = 10,
    ) -> None:
        if rate <= 0 or rate * window_ms % 1000:
            raise ValueError(f"rate {rate} does not divide into {window_ms} ms windows")
        self.rate = rate
        self.window = rate * window_ms // 1000
        self.start_windows = max(1, start_windows)
        self.samples_fed = 0
        self.speaking = False
        self._pending = np.zeros(0, dtype=np.int16)
        self._run = 0
        self._onset = 0
        self._last_loud: np.ndarray | None = None
        self._last_loud_start = 0
        self.configure(threshold_dbfs=threshold_dbfs, silence_duration_ms=silence_duration_ms)

    def configure(
        self, *, threshold_dbfs: float | None = None, silence_duration_ms: int | None = None
    ) -> None:
        if threshold_dbfs is not None:
            self.threshold_dbfs = threshold_dbfs
            self._amplitude = dbfs_to_amplitude(threshold_dbfs)
            self._energy_sum = self._amplitude**2 * self.window  # mean square threshold, as a sum
        if silence_duration_ms is not None:
            self.silence_duration_ms = max(0, silence_duration_ms)
            self._silence = math.ceil(self.silence_duration_ms * self.rate / 1000)

    def reset(self) -> None:
        """Forget any speech in progress (buffer cleared or committed); the clock keeps running."""
        self.speaking = False
        self._run = 0
        self._last_loud = None

    @property
    def last_loud_sample(self) -> int:
        """Start of the latest loud window of the speech in progress (or of the last speech)."""
        return self._last_loud_start

    def ms(self, sample: int) -> float:
        return sample * 1000.0 / self.rate

    def feed(self, pcm: bytes | np.ndarray) -> list[VadEvent]:
        samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray | memoryview) else pcm
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        base = self.samples_fed - self._pending.size
        n = samples.size // self.window
        self._pending = samples[n * self.window :].copy()
        self.samples_fed = base + samples.size
        if n == 0:
            return []
        # This runs for every append of every session; a batched matmul is the cheapest sum of squares for
        # a few short windows, and plain Python booleans are cheaper to walk than numpy scalars.
        frames = samples[: n * self.window].astype(np.float32).reshape(n, self.window)
        energy = (frames[:, None, :] @ frames[:, :, None]).ravel()
        loud = [e > self._energy_sum for e in energy.tolist()]
        # Nearly all windows of a call are plain silence or plain speech: skip the per-window walk.
        if not self.speaking and self._run == 0 and not any(loud):
            return []
        if self.speaking and all(loud):
            self._last_loud, self._last_loud_start = frames[-1], base + (n - 1) * self.window
            return []
        events: list[VadEvent] = []
        for i in range(n):
            start = base + i * self.window
            if self.speaking:
                if loud[i]:
                    self._last_loud, self._last_loud_start = frames[i], start
                elif start - self._last_loud_start >= self._silence:
                    end = self._speech_end()
                    events.append(SpeechStopped(sample=end + self._silence, speech_end=end))
                    self.reset()
            elif loud[i]:
                if self._run == 0:
                    self._onset = start + self._first_loud(frames[i])
                self._run += 1
                if self._run >= self.start_windows:
                    self.speaking = True
                    self._last_loud, self._last_loud_start = frames[i], start
                    events.append(SpeechStarted(sample=self._onset))
            else:
                self._run = 0
        return events

    def _first_loud(self, frame: np.ndarray) -> int:
        above = np.flatnonzero(np.abs(frame) > self._amplitude)
        return int(above[0]) if above.size else 0

    def _speech_end(self) -> int:
        frame = self._last_loud
        if frame is None:
            return self._last_loud_start
        above = np.flatnonzero(np.abs(frame) > self._amplitude)
        return self._last_loud_start + (int(above[-1]) + 1 if above.size else frame.size)
