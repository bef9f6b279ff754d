"""What a caller on a Twilio line hears: the carrier's outbound buffer, marks and clear, as a plain model.

Driven by an explicit clock (`now_ms`, any monotonic millisecond scale) so it can be unit-tested without
sleeping. Semantics follow docs/protocols.md §T4, §T5: outbound µ-law is buffered and played in order
at 8 bytes per ms; a mark is echoed when all audio queued before it has played, at once if nothing is
buffered, and every pending mark is echoed at once by a `clear`, which drops all unplayed audio.

The model is advanced lazily: every method first plays whatever was due up to `now_ms`, and echoes are
stamped with the exact time they became due, not the time `advance` happened to be called.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from bridge.audio import PCMU_8K, AudioFormat

BYTES_PER_MS = 8  # µ-law 8 kHz, the default line
ULAW_SILENCE = 0xFF


class MarkStatus(Enum):
    PENDING = "pending"
    PLAYED = "played"
    CLEARED = "cleared"


@dataclass
class PlayedSlice:
    """Audio the caller heard without a gap, from start_ms to end_ms."""

    start_ms: float
    end_ms: float
    audio: bytearray = field(repr=False)

    @property
    def nbytes(self) -> int:
        return len(self.audio)


@dataclass
class MarkRecord:
    name: str
    received_at_ms: float
    # Audio buffered ahead of the mark when it arrived: 0 means it was echoed immediately.
    bytes_ahead: int
    echoed_at_ms: float | None = None
    status: MarkStatus = MarkStatus.PENDING
    # Filled by whoever transports the echo (the emulator), after any network delay.
    echo_sent_at_ms: float | None = None
    # Stream byte offset (all bytes ever queued) the mark sits at.
    offset: int = 0


@dataclass
class ClearRecord:
    received_at_ms: float
    dropped_bytes: int
    marks_echoed: list[str]
    # Number of media arrivals before this clear: arrivals[media_index:] came after it.
    media_index: int


@dataclass
class MediaArrival:
    received_at_ms: float
    nbytes: int
    # When its first byte started playing; None while unplayed or if a clear dropped it whole.
    started_ms: float | None = None
    offset: int = 0


class Playout:
    def __init__(
        self, origin_ms: float, *, playout_delay_ms: float = 0.0, line: AudioFormat = PCMU_8K
    ) -> None:
        self.origin_ms = origin_ms
        self.line = line
        self._bpm = line.bytes_per_ms
        self.playout_delay_ms = playout_delay_ms
        self.slices: list[PlayedSlice] = []
        self.marks: list[MarkRecord] = []
        self.clears: list[ClearRecord] = []
        self.arrivals: list[MediaArrival] = []
        self.now_ms = origin_ms
        # Byte offsets count every byte ever queued; consumed = played + dropped.
        self._queued = 0
        self._consumed = 0
        self._played = 0
        self._buffer = bytearray()
        self._next_byte_ms: float | None = None
        self._pending_marks: deque[MarkRecord] = deque()
        self._unstarted: deque[MediaArrival] = deque()
        self._echoes: list[MarkRecord] = []

    # ---- inputs -------------------------------------------------------------------------------

    def on_media(self, now_ms: float, payload: bytes) -> None:
        now_ms = self.advance(now_ms)
        arrival = MediaArrival(now_ms, len(payload), offset=self._queued)
        self.arrivals.append(arrival)
        if not payload:
            return
        if not self._buffer:
            # The carrier's jitter buffer holds audio that reaches an idle line before the caller hears it.
            self._next_byte_ms = now_ms + self.playout_delay_ms
        self._buffer += payload
        self._queued += len(payload)
        self._unstarted.append(arrival)

    def on_mark(self, now_ms: float, name: str) -> MarkRecord:
        now_ms = self.advance(now_ms)
        mark = MarkRecord(name, now_ms, bytes_ahead=len(self._buffer), offset=self._queued)
        self.marks.append(mark)
        if self._buffer:
            self._pending_marks.append(mark)
        else:
            self._echo(mark, now_ms, MarkStatus.PLAYED)
        return mark

    def on_clear(self, now_ms: float) -> ClearRecord:
        now_ms = self.advance(now_ms)
        dropped = len(self._buffer)
        self._consumed += dropped
        self._buffer.clear()
        self._next_byte_ms = None
        self._unstarted.clear()
        names = []
        while self._pending_marks:
            mark = self._pending_marks.popleft()
            self._echo(mark, now_ms, MarkStatus.CLEARED)
            names.append(mark.name)
        record = ClearRecord(now_ms, dropped, names, media_index=len(self.arrivals))
        self.clears.append(record)
        return record

    def advance(self, now_ms: float) -> float:
        """Play what is due up to now_ms, echo marks whose audio finished by then; return the model time.

        The model clock never goes backwards: an earlier now_ms is treated as the current model time.
        """
        now_ms = max(now_ms, self.now_ms)
        self.now_ms = now_ms
        start = self._next_byte_ms
        if start is None or not self._buffer or now_ms <= start:
            return now_ms
        # The epsilon absorbs float error when woken exactly at a computed due time.
        count = min(len(self._buffer), self._bytes_in(now_ms - start, int))
        if count <= 0:
            return now_ms
        first = self._consumed
        self._play(start, bytes(self._buffer[:count]))
        del self._buffer[:count]
        self._consumed += count
        self._played += count
        self._next_byte_ms = start + count / self._bpm
        while self._unstarted and self._unstarted[0].offset < self._consumed:
            arrival = self._unstarted.popleft()
            arrival.started_ms = start + (arrival.offset - first) / self._bpm
        while self._pending_marks and self._pending_marks[0].offset <= self._consumed:
            mark = self._pending_marks.popleft()
            self._echo(mark, start + (mark.offset - first) / self._bpm, MarkStatus.PLAYED)
        if not self._buffer:
            self._next_byte_ms = None
        return now_ms

    def take_echoes(self) -> list[MarkRecord]:
        """Marks echoed since the last call, in echo order."""
        echoes, self._echoes = self._echoes, []
        return echoes

    # ---- state and queries --------------------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    @property
    def played_bytes(self) -> int:
        return self._played

    @property
    def played_ms_total(self) -> float:
        return self._played / self._bpm

    def next_due_ms(self) -> float | None:
        """When the next pending mark's audio finishes, if playback continues uninterrupted."""
        if not self._pending_marks or self._next_byte_ms is None:
            return None
        return self._next_byte_ms + (self._pending_marks[0].offset - self._consumed) / self._bpm

    def last_played_ms(self) -> float | None:
        return self.slices[-1].end_ms if self.slices else None

    def is_playing(self) -> bool:
        return bool(self._buffer)

    def played_ms_since(self, t_ms: float) -> float:
        return self.played_ms_between(t_ms, float("inf"))

    def played_ms_between(self, t0_ms: float, t1_ms: float) -> float:
        total = 0.0
        for piece in self.slices:
            total += max(0.0, min(piece.end_ms, t1_ms) - max(piece.start_ms, t0_ms))
        return total

    def first_heard_ms(self, after_ms: float | None = None) -> float | None:
        """Start of the first audio heard at or after `after_ms` (default: at all)."""
        if after_ms is None:
            return self.slices[0].start_ms if self.slices else None
        for piece in self.slices:
            if piece.end_ms > after_ms:
                return max(piece.start_ms, after_ms)
        return None

    def reply_started_ms(self, after_ms: float) -> float | None:
        """When the first audio that arrived after `after_ms` started playing (a reply to what was
        said until then), or None if none has."""
        starts = [
            a.started_ms for a in self.arrivals if a.received_at_ms >= after_ms and a.started_ms is not None
        ]
        return min(starts) if starts else None

    def audio_received_after_clear(self, clear_index: int) -> int:
        """Bytes of media that arrived after the given clear (check `arrivals` for when)."""
        index = self.clears[clear_index].media_index
        return sum(arrival.nbytes for arrival in self.arrivals[index:])

    def heard_line(
        self, include_silence: bool = True, from_ms: float | None = None, to_ms: float | None = None
    ) -> bytes:
        """What the caller heard, in the line's format; with silence, aligned to real time from `from_ms`."""
        start = self.origin_ms if from_ms is None else from_ms
        end = self.now_ms if to_ms is None else to_ms
        out = bytearray()
        for piece in self.slices:
            lo = max(piece.start_ms, start)
            hi = min(piece.end_ms, end)
            if hi <= lo:
                continue
            first = self._bytes_in(lo - piece.start_ms)
            last = self._bytes_in(hi - piece.start_ms)
            if include_silence:
                # Position by absolute time so rounding never accumulates into drift.
                at = self._bytes_in(lo - start)
                out += self.line.silence(max(0, at - len(out)))
            out += piece.audio[first:last]
        if include_silence:
            out += self.line.silence(max(0, self._bytes_in(end - start) - len(out)))
        return bytes(out)

    def heard_pcm(
        self, include_silence: bool = True, from_ms: float | None = None, to_ms: float | None = None
    ) -> bytes:
        """PCM16 LE at the line's rate of what the caller heard (see heard_line)."""
        return self.line.to_pcm16(self.heard_line(include_silence, from_ms, to_ms))

    def heard_ulaw(
        self, include_silence: bool = True, from_ms: float | None = None, to_ms: float | None = None
    ) -> bytes:
        if self.line != PCMU_8K:
            raise ValueError(f"the line is {self.line.encoding} at {self.line.rate} Hz, not µ-law")
        return self.heard_line(include_silence, from_ms, to_ms)

    # ---- internals ----------------------------------------------------------------------------

    def _bytes_in(self, ms: float, to_int: Callable[[float], int] = round) -> int:
        """Whole samples' worth of bytes in `ms` (a PCM16 sample is never split)."""
        samples = to_int(ms * self.line.rate / 1000 + (1e-6 if to_int is int else 0.0))
        return samples * self.line.bytes_per_sample

    def _play(self, start_ms: float, audio: bytes) -> None:
        end_ms = start_ms + len(audio) / self._bpm
        if self.slices and self.slices[-1].end_ms == start_ms:
            self.slices[-1].audio += audio
            self.slices[-1].end_ms = end_ms
        else:
            self.slices.append(PlayedSlice(start_ms, end_ms, bytearray(audio)))

    def _echo(self, mark: MarkRecord, at_ms: float, status: MarkStatus) -> None:
        mark.echoed_at_ms = at_ms
        mark.status = status
        self._echoes.append(mark)
