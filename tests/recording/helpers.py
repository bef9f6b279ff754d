"""Building recordings by hand and reading what was rendered, sample for sample."""

from __future__ import annotations

import wave
from datetime import UTC, datetime
from pathlib import Path

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
