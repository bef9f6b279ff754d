"""After the call: a spool becomes a stereo WAV and a FLAC copy. Blocking; run it in a worker thread.

Both files are 16-bit PCM at the line's rate, two channels: **left the caller, right the assistant**.
Sample 0 is the spool's `started_at`. The spool is laid out in two passes (its records first, payloads
skipped, then the audio) and written in blocks of `BLOCK_S` seconds, so a long call never needs the
whole recording in memory.

A third file, `.peaks`, is the waveform a call page draws: per channel the loudest sample of every
`PEAK_MS`, one byte each (90 KB a channel for an hour), as JSON. Made from the blocks already in hand,
so drawing an hour-long call never means decoding it in the browser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from bridge.audio import AudioFormat
from bridge.recording.call_recording import CALLER_GAP_MS
from bridge.recording.spool import (
    ASSISTANT,
    AUDIO,
    CALLER,
    CHANNELS,
    CUT,
    END,
    RUN,
    SpoolHeader,
    read_header,
    scan_records,
)

BLOCK_S = 10
FORMATS = ("wav", "flac", "peaks")  # every recording is stored in all; the first is the exact audio
PEAK_MS = 20


class RecordingFailed(Exception):
    """The recording could not be made or stored; str() is the reason the call log shows."""


@dataclass(frozen=True, slots=True)
class RenderedRecording:
    call_id: str
    rate: int
    started_at: datetime
    samples: int
    files: dict[str, Path]  # format -> file

    @property
    def duration_s(self) -> float:
        return round(self.samples / self.rate, 3)


@dataclass(slots=True)
class _Run:
    start: int = 0
    keep: int | None = None  # a clear kept only this many samples
    pieces: list[tuple[int, int, int]] = field(default_factory=list)  # (offset in run, file offset, bytes)


@dataclass(frozen=True, slots=True)
class _Segment:
    at: int  # sample on the recording's timeline
    samples: int
    file_offset: int


def render(spool_path: Path, out_dir: Path, stem: str) -> RenderedRecording:
    """Write `out_dir/stem.wav`, `.flac` and `.peaks` from the spool. Raises RecordingFailed."""
    wav_path, flac_path, peaks_path = (out_dir / f"{stem}.{fmt}" for fmt in FORMATS)
    try:
        with spool_path.open("rb") as spool:
            header = read_header(spool)
            line = AudioFormat(header.encoding, header.rate)
            segments, end = _lay_out(spool, header)
            total = max(end, *(s[-1].at + s[-1].samples for s in segments if s), 0)
            out_dir.mkdir(parents=True, exist_ok=True)
            with (
                wave.open(str(wav_path), "wb") as wav,
                soundfile.SoundFile(
                    flac_path, "w", samplerate=header.rate, channels=2, format="FLAC", subtype="PCM_16"
                ) as flac,
            ):
                wav.setnchannels(2)
                wav.setsampwidth(2)
                wav.setframerate(header.rate)
                peaks = Peaks(header.rate)
                for block in _blocks(spool, line, segments, total):
                    wav.writeframes(block.tobytes())
                    flac.write(block)
                    peaks.add(block)
            peaks_path.write_text(json.dumps(peaks.document()))
    # soundfile reports a short write without a libsndfile error code with an assert.
    except (OSError, ValueError, RuntimeError, EOFError, AssertionError) as exc:
        for path in (wav_path, flac_path, peaks_path):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise RecordingFailed(_reason(exc, out_dir)) from exc
    return RenderedRecording(
        call_id=header.call_id,
        rate=header.rate,
        started_at=datetime.fromisoformat(header.started_at),
        samples=total,
        files={"wav": wav_path, "flac": flac_path, "peaks": peaks_path},
    )


class Peaks:
    """Per channel, the loudest sample of every PEAK_MS (0-255, linear in amplitude; any sound at all is
    at least 1), fed the recording's blocks in order."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.bucket = max(1, rate * PEAK_MS // 1000)
        self.samples = 0
        self._parts: list[np.ndarray] = []
        self._carry = np.zeros((0, 2), dtype="<i2")  # samples of a bucket the last block began

    def add(self, block: np.ndarray) -> None:
        self.samples += block.shape[0]
        if self._carry.shape[0]:
            block = np.concatenate([self._carry, block])
        whole = block.shape[0] - block.shape[0] % self.bucket
        if whole:
            self._parts.append(_loudest(block[:whole], self.bucket))
        self._carry = block[whole:]

    def document(self) -> dict[str, object]:
        carry = self._carry
        parts = [*self._parts, _loudest(carry, carry.shape[0])] if carry.size else self._parts
        peaks = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int32)
        scaled = np.ceil(peaks * 255 / 32768).astype(np.uint8)
        return {
            "rate": self.rate,
            "bucket_ms": PEAK_MS,
            "samples": self.samples,
            "channels": ["caller", "assistant"],
            # base64 of one byte per bucket: a quarter of the size of a JSON list of numbers.
            "caller": base64.b64encode(scaled[:, 0].tobytes()).decode(),
            "assistant": base64.b64encode(scaled[:, 1].tobytes()).decode(),
        }


def _loudest(samples: np.ndarray, bucket: int) -> np.ndarray:
    """(n, 2) int16, n a multiple of `bucket` -> (n / bucket, 2): each bucket's largest magnitude.

    Channel by channel, each contiguous (reducing the interleaved pairs is thirty times slower), and
    without widening every sample (abs(-32768) does not fit an int16)."""
    by_channel = np.ascontiguousarray(samples.T).reshape(2, -1, bucket)
    loudest = np.maximum(by_channel.max(axis=2).astype(np.int32), -by_channel.min(axis=2).astype(np.int32))
    return loudest.T


def _lay_out(spool: BinaryIO, header: SpoolHeader) -> tuple[list[list[_Segment]], int]:
    """Each channel's audio as segments in time order (never overlapping), and the END length."""
    runs: list[dict[int, _Run]] = [{}, {}]
    width = 2 if header.encoding == "l16" else 1
    end = 0
    for record in scan_records(spool):
        if record.kind == END:
            end = max(end, record.value)
            continue
        if record.channel not in CHANNELS:
            continue
        run = runs[record.channel].setdefault(record.run, _Run())
        if record.kind == RUN:
            run.start = record.value
        elif record.kind == CUT:
            run.keep = record.value if run.keep is None else min(run.keep, record.value)
        elif record.kind == AUDIO:
            run.pieces.append((record.value, record.payload_offset, record.payload_length))
    gap = round(CALLER_GAP_MS * header.rate / 1000)
    segments: list[list[_Segment]] = [[], []]
    for channel in (CALLER, ASSISTANT):
        previous_end: int | None = None
        for index in sorted(runs[channel]):
            run = runs[channel][index]
            length = max((offset + size // width for offset, _, size in run.pieces), default=0)
            if run.keep is not None:
                length = min(length, run.keep)
            if length <= 0:
                continue
            # A run may begin before the recording did (the caller was talking as the stream started):
            # what came before sample 0 is left out, the rest stays where it was.
            start = run.start
            if previous_end is not None:
                start = max(start, previous_end)
                if channel == CALLER and start - previous_end < gap:
                    start = previous_end  # jitter split the run, the carrier did not pause
            for offset, file_offset, size in sorted(run.pieces):
                samples = min(size // width, length - offset)
                early = max(0, -(start + offset))
                if samples > early:
                    at, skip = start + offset + early, early * width
                    segments[channel].append(_Segment(at, samples - early, file_offset + skip))
            previous_end = start + length
    return segments, end


def _blocks(
    spool: BinaryIO, line: AudioFormat, segments: list[list[_Segment]], total: int
) -> Iterator[np.ndarray]:
    block = BLOCK_S * line.rate
    width = line.bytes_per_sample
    next_segment = [0, 0]
    for begin in range(0, total, block):
        stop = min(begin + block, total)
        out = np.zeros((stop - begin, 2), dtype="<i2")
        for channel in CHANNELS:
            queue = segments[channel]
            i = next_segment[channel]
            while i < len(queue) and queue[i].at < stop:
                segment = queue[i]
                lo, hi = max(segment.at, begin), min(segment.at + segment.samples, stop)
                if lo < hi:
                    spool.seek(segment.file_offset + (lo - segment.at) * width)
                    pcm = line.to_pcm16(spool.read((hi - lo) * width))
                    out[lo - begin : hi - begin, channel] = np.frombuffer(pcm, dtype="<i2")
                if segment.at + segment.samples > stop:
                    break  # it goes on in the next block
                i += 1
            next_segment[channel] = i
        yield out


def _reason(exc: BaseException, out_dir: Path) -> str:
    # libsndfile reports a full disk as a bare "System error."; say what an operator needs to know.
    reason = f"could not write the recording files: {type(exc).__name__}: {exc}"
    try:
        free = shutil.disk_usage(out_dir if out_dir.exists() else out_dir.parent).free
    except OSError:
        return reason
    if free < 1024 * 1024:
        reason += f" ({free} bytes free on {out_dir})"
    return reason
