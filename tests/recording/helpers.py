"""Building recordings by hand and reading what was rendered, sample for sample."""

from __future__ import annotations

import asyncio
import io
import statistics
import time
import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bridge.audio import PCMU_8K, AudioFormat
from bridge.recording import CallRecording, render
from bridge.recording.finish import RenderedRecording

T0 = 5000.0  # the call clock's reading at the recording's first sample
STARTED_AT = datetime(2025, 11, 23, 15, 0, 0, tzinfo=UTC)


def new_recording(line: AudioFormat = PCMU_8K, call_id: str = "CA-test") -> CallRecording:
    return CallRecording(call_id, line, T0, STARTED_AT)


def noise(n_bytes: int, seed: int) -> bytes:
    """Line audio whose every sample differs from its neighbours: a misplaced sample shows."""
    return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()


def feed_caller(recording: CallRecording, audio: bytes, from_ms: float = 0.0, frame_ms: int = 20) -> None:
    """`audio` as consecutive frames, each arriving the moment its last sample was spoken (from
    `from_ms` after the recording's start)."""
    frame = recording.line.frame_bytes(frame_ms)
    for k in range(0, len(audio) // frame):
        recording.caller(audio[k * frame : (k + 1) * frame], T0 + from_ms + frame_ms * (k + 1))


def spool_to_file(recording: CallRecording, path: Path, spooled: bytes = b"") -> Path:
    path.write_bytes(spooled + recording.take_spool())
    return path


def rendered(
    recording: CallRecording, tmp_path: Path, spooled: bytes = b""
) -> tuple[RenderedRecording, np.ndarray]:
    """Finish-side view: render the spool and read the WAV back as (samples, 2) int16."""
    spool = spool_to_file(recording, tmp_path / "call.spool", spooled)
    result = render(spool, tmp_path / "out", "call")
    return result, read_wav(result.files["wav"])


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)


def pcm(line: AudioFormat, payload: bytes) -> np.ndarray:
    return np.frombuffer(line.to_pcm16(payload), dtype="<i2")


def expected_channel(total: int, placed: list[tuple[int, np.ndarray]]) -> np.ndarray:
    out = np.zeros(total, dtype="<i2")
    for at, samples in placed:
        out[at : at + samples.size] = samples
    return out


# -- a recorded call read back through the API, against what the emulators heard and said ------------


@dataclass
class ReadBack:
    """A call's recording as GET /api/calls/{id}/recording?format=wav serves it."""

    rate: int
    caller: np.ndarray
    assistant: np.ndarray
    started_ms: float  # sample 0 on this process's monotonic clock (the emulators' clock)
    call: dict[str, Any]  # the call as /api/calls/{id} shows it

    @property
    def per_ms(self) -> float:
        return self.rate / 1000

    def sample(self, at_ms: float) -> int:
        return round((at_ms - self.started_ms) * self.per_ms)


async def read_back(
    base_url: str, call_id: str, headers: dict[str, str], timeout_s: float = 15.0
) -> ReadBack:
    """Wait until the call's recording is stored, then fetch it and the call."""
    async with aiohttp.ClientSession(headers=headers) as http:
        deadline = time.monotonic() + timeout_s
        while True:
            async with http.get(f"{base_url}/api/calls/{call_id}") as response:
                call = await response.json() if response.status == 200 else {}
            recording = call.get("recording") or {}
            if recording.get("status") == "ready":
                break
            assert recording.get("status") != "failed", recording
            assert time.monotonic() < deadline, f"no recording ready: {recording}"
            await asyncio.sleep(0.05)
        async with http.get(f"{base_url}{recording['url']}?format=wav") as response:
            assert response.status == 200
            data = await response.read()
    with wave.open(io.BytesIO(data)) as wav:
        rate = wav.getframerate()
        both = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    # The wall clock's `started_at` on the monotonic clock the emulators stamp with (one process).
    offset_ms = time.time() * 1000 - time.monotonic() * 1000
    started_ms = datetime.fromisoformat(recording["started_at"]).timestamp() * 1000 - offset_ms
    return ReadBack(rate, both[:, 0].copy(), both[:, 1].copy(), started_ms, call)


def placed(channel: np.ndarray, samples: np.ndarray, near: int, within: int) -> int:
    """Where `samples` lie in `channel` exactly, searched within `within` samples of `near`."""
    for offset in sorted(range(-within, within + 1), key=abs):
        at = near + offset
        if at >= 0 and np.array_equal(channel[at : at + samples.size], samples):
            return at
    raise AssertionError(f"those {samples.size} samples are nowhere within {within} samples of {near}")


def kept(channel: np.ndarray, at: int, samples: np.ndarray) -> int:
    """How many of `samples` the channel holds from `at` on, before it differs."""
    window = channel[at : at + samples.size]
    differ = np.flatnonzero(window != samples[: window.size])
    return int(differ[0]) if differ.size else window.size


ALIGNED_MS = 20  # both channels within this of where the caller heard / said it
LEDGER_MS = (
    40  # a barge-in's cut: the ledger's bound on what it thinks was heard (tests/test_e2e_barge_in.py)
)


@dataclass
class Stretch:
    """Audio heard or said without a break, from `start_ms` (the monotonic clock), as PCM16."""

    start_ms: float
    samples: np.ndarray


@dataclass
class Alignment:
    assistant_ms: list[float]  # per stretch the caller heard: the recording's place minus the line's
    caller_ms: list[float]  # per stretch the caller said: the same

    def line(self, name: str) -> str:
        def figures(values: list[float]) -> str:
            worst = max(values, key=abs)
            return f"median {statistics.median(values):+.1f} ms, worst {worst:+.1f} ms ({len(values)})"

        return f"{name}: assistant {figures(self.assistant_ms)}; caller {figures(self.caller_ms)}"


def assert_recorded_as_heard(
    back: ReadBack, heard: list[Stretch], said: list[Stretch], clears: int
) -> Alignment:
    """Every stretch the caller heard is in the assistant channel sample for sample, within ALIGNED_MS
    of when they heard it; one a clear cut short is cut within LEDGER_MS of where it was cut, and the
    channel holds nothing else. Every stretch the caller said is in the caller channel, sample for
    sample, within ALIGNED_MS of when they said it."""
    per_ms = back.per_ms
    within = round(ALIGNED_MS * per_ms)
    covered = np.zeros(back.assistant.size, dtype=bool)
    assistant_ms = []
    for stretch in heard:
        near = back.sample(stretch.start_ms)
        at = placed(back.assistant, stretch.samples[: round(100 * per_ms)], near, within)
        assistant_ms.append((at - near) / per_ms)
        n = kept(back.assistant, at, stretch.samples)
        missing = (stretch.samples.size - n) / per_ms
        assert missing <= LEDGER_MS, f"{missing:.1f} ms heard but not recorded"
        covered[at : at + n] = True
    extra = np.flatnonzero(back.assistant[~covered]).size / per_ms
    assert extra <= clears * LEDGER_MS, f"{extra:.1f} ms recorded but never heard"
    caller_ms = []
    for stretch in said:
        near = back.sample(stretch.start_ms)
        caller_ms.append((placed(back.caller, stretch.samples, near, within) - near) / per_ms)
    return Alignment(assistant_ms, caller_ms)
