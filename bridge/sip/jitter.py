"""An adaptive jitter buffer for one inbound RTP stream, played out one 20 ms frame per tick.

Packets are ordered by (extended) sequence number. Playout starts once the buffer holds its target
depth, which follows the RFC 3550 interarrival jitter estimate between MIN_MS and MAX_MS. A frame
missing when its turn comes while later ones are waiting is lost: it is concealed (the previous frame
repeated once, silence after that) and playout goes on rather than stalling. A frame missing with
nothing behind it is late: concealment plays while we wait for it (which deepens the buffer by that
much), and after MAX_WAIT_FRAMES the stream is taken to have paused (silence suppression, hold)
until the target depth is back. A buffer deeper than its target sheds a frame per tick back to it.
Late packets (their turn has passed) and duplicates are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FRAME_MS = 20
MIN_MS = 20
MAX_MS = 100
RESET_GAP = 50  # a packet this many frames ahead of playout is a new stream, not a long loss
MAX_WAIT_FRAMES = 3  # concealment played while waiting for a late frame, before pausing
JITTER_FACTOR = 3.0  # target depth = this many times the jitter estimate, rounded up to frames


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    late: int = 0
    duplicates: int = 0
    concealed: int = 0
    shed: int = 0  # frames dropped to bring a grown buffer back to its target
    underruns: int = 0


class JitterBuffer:
    def __init__(self, silence: bytes, samples_per_ms: int = 8) -> None:
        self.silence = silence
        self.samples_per_ms = samples_per_ms
        self.stats = JitterStats()
        self.jitter_ms = 0.0
        self._frames: dict[int, tuple[bytes, float]] = {}  # payload and arrival, by extended sequence
        self._next: int | None = None  # extended sequence number of the next frame to play
        self._highest: int | None = None
        self._playing = False
        self._last: bytes | None = None
        self._concealing = 0
        self._previous: tuple[float, int] | None = None  # (arrival ms, timestamp) of the last new packet
        self.popped_arrival_ms: float | None = None  # when the frame `pop` returned arrived (None: concealed)

    @property
    def target_frames(self) -> int:
        wanted = math.ceil(JITTER_FACTOR * self.jitter_ms / FRAME_MS)
        return max(MIN_MS // FRAME_MS, min(MAX_MS // FRAME_MS, wanted))

    @property
    def target_ms(self) -> int:
        return self.target_frames * FRAME_MS

    @property
    def depth(self) -> int:
        return len(self._frames)

    def reset(self) -> None:
        """A new stream (SSRC change): forget the old one's numbering, keep the jitter estimate."""
        self._frames.clear()
        self._next = self._highest = None
        self._playing = False
        self._previous = None

    def _extend(self, sequence: int) -> int:
        if self._highest is None:
            return sequence
        base = self._highest & ~0xFFFF
        candidates = (base - 0x10000 + sequence, base + sequence, base + 0x10000 + sequence)
        return min(candidates, key=lambda c: abs(c - self._highest))  # type: ignore[operator]

    def push(self, sequence: int, timestamp: int, payload: bytes, arrival_ms: float) -> bool:
        """Accept a packet; False when it was late or a duplicate."""
        ext = self._extend(sequence)
        if self._next is not None and ext - self._next > RESET_GAP:
            self.reset()
            ext = sequence
        if self._next is not None and ext < self._next:
            self.stats.late += 1
            return False
        if ext in self._frames:
            self.stats.duplicates += 1
            return False
        self.stats.received += 1
        self._frames[ext] = (payload, arrival_ms)
        if self._highest is None or ext > self._highest:
            self._update_jitter(arrival_ms, timestamp)
            self._highest = ext
        if self._next is None:
            self._next = ext
        return True

    def _update_jitter(self, arrival_ms: float, timestamp: int) -> None:
        if self._previous is not None:
            last_arrival, last_ts = self._previous
            ts_delta = ((timestamp - last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = (arrival_ms - last_arrival) - ts_delta / self.samples_per_ms
            self.jitter_ms += (abs(d) - self.jitter_ms) / 16
        self._previous = (arrival_ms, timestamp)

    def pop(self) -> bytes | None:
        """The frame for this tick: audio, a concealment, or None while (re)buffering or paused."""
        if not self._playing:
            if not self._frames or len(self._frames) < self.target_frames:
                return None
            self._playing = True
            self._concealing = 0
            self._next = max(self._next or 0, min(self._frames))
        assert self._next is not None
        if not self._frames:
            # Nothing here: the next frame is late (conceal and wait for it, which deepens the buffer
            # by a frame) or the talkspurt is over (after MAX_WAIT_FRAMES, stop until audio is back).
            if self._concealing >= MAX_WAIT_FRAMES:
                self._playing = False
                self.stats.underruns += 1
                return None
            return self._conceal()
        if len(self._frames) > self.target_frames + 2:
            self._frames.pop(self._next, None)  # too deep: shed the oldest frame
            self._next = min(self._frames) if self._frames else self._next + 1
            self.stats.shed += 1
        entry = self._frames.pop(self._next, None)
        self._next += 1
        if entry is not None:
            frame, self.popped_arrival_ms = entry
            self._last, self._concealing = frame, 0
            return frame
        return self._conceal()  # lost: later frames are here, this one never came

    def _conceal(self) -> bytes:
        self.popped_arrival_ms = None
        self.stats.concealed += 1
        self._concealing += 1
        if self._concealing == 1 and self._last is not None:
            return self._last
        return self.silence
