"""What the caller has heard: the one place `audio_end_ms` is computed.

The carrier plays our audio in real time, far behind the model, and tells us progress only through
mark echoes, which arrive late (network) and which also come back when a `clear` discards audio
(PROTOCOLS.md A5). The ledger keeps, per outbound frame, which assistant item it belonged to and
when it was sent, and answers "how much of each item did the caller hear when our clear arrived?"
by replaying the carrier's playout clock:

* anchor on the last mark echoed *before* the clear was sent (that audio surely played, and the
  carrier reached it half a round trip before we saw the echo);
* extrapolate playback from there in real time, frame by frame, but a frame cannot play before it
  reached the carrier (its send time plus half a round trip, plus the carrier's own start-up
  buffering when it arrived at an empty buffer): a model that stalled gave the caller silence,
  and silence the caller sat through is not speech they heard;
* stop at the moment the clear reaches the carrier (half a round trip after we sent it);
* clamp to what was sent for the item.

The round trip is measured with probe marks sent while nothing is queued (Twilio echoes those at
once); the carrier's start-up buffering is measured from the first echo of each burst of audio.
Times are milliseconds on any monotonic clock the caller of this class supplies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

ULAW_BYTES_PER_MS = 8
_EWMA = 0.3


@dataclass(slots=True)
class _Frame:
    item_id: str
    content_index: int
    item_offset: int  # bytes of this item sent before this frame
    size: int
    sent_at: float
    mark: str | None = None


@dataclass(frozen=True, slots=True)
class ItemPlayback:
    """One assistant item's audio as of a clear: what was sent and what the caller heard."""

    item_id: str
    content_index: int
    sent_ms: int
    heard_ms: int
    started: bool  # any of it reached the caller's ear


@dataclass(slots=True)
class _Item:
    content_index: int
    sent_bytes: int = 0
    played_bytes: int = 0  # confirmed by echoes received before any clear


class PlaybackLedger:
    def __init__(self, bytes_per_ms: int = ULAW_BYTES_PER_MS) -> None:
        self.bytes_per_ms = bytes_per_ms
        self.rtt_ms: float | None = None
        self.playout_delay_ms = 0.0
        self._playout_samples = 0
        self._frames: deque[_Frame] = deque()  # sent, not yet confirmed played
        self._items: dict[str, _Item] = {}
        self._anchor: float | None = None  # when the carrier finished the last confirmed frame
        self._burst_start: float | None = None  # send time of the first frame after the buffer was idle
        self._marks_sent = 0
        self._probes: dict[str, float] = {}
        self._discarded: set[str] = set()  # marks whose echo means "cleared", not "played"

    # -- sending -----------------------------------------------------------------------------

    def sent(self, item_id: str, content_index: int, size: int, now: float) -> None:
        """`size` bytes of `item_id` were handed to the carrier."""
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item(content_index)
        if not self._frames:
            self._burst_start = now  # every earlier frame was confirmed played: the carrier is idle
        self._frames.append(_Frame(item_id, content_index, item.sent_bytes, size, now))
        item.sent_bytes += size

    def mark(self) -> str | None:
        """Name for a mark covering every frame sent since the previous mark (None if there are none)."""
        if not self._frames or self._frames[-1].mark is not None:
            return None
        self._marks_sent += 1
        name = f"a{self._marks_sent}"
        self._frames[-1].mark = name
        return name

    def probe(self, now: float) -> str | None:
        """A mark to measure the round trip, only while nothing is queued (else it would wait)."""
        if self._frames or self._probes:
            return None
        self._marks_sent += 1
        name = f"p{self._marks_sent}"
        self._probes[name] = now
        return name

    # -- carrier feedback ----------------------------------------------------------------------

    def acked(self, name: str, now: float) -> bool:
        """A mark came back. Returns True when it confirmed played audio."""
        if name in self._probes:
            sample = now - self._probes.pop(name)
            self.rtt_ms = sample if self.rtt_ms is None else self.rtt_ms + _EWMA * (sample - self.rtt_ms)
            return False
        if name in self._discarded:
            self._discarded.discard(name)
            return False
        if not any(f.mark == name for f in self._frames):
            return False
        half = self.half_rtt
        finished_at = now - half
        burst_start = self._burst_start
        played = 0
        while self._frames:
            frame = self._frames.popleft()
            self._items[frame.item_id].played_bytes = frame.item_offset + frame.size
            played += frame.size
            if frame.mark == name:
                break
        if burst_start is not None:
            # Audio that arrived at an idle carrier started late by the carrier's own buffering.
            sample = finished_at - (burst_start + half) - played / self.bytes_per_ms
            sample = max(0.0, sample)
            weight = 1.0 if self._playout_samples == 0 else _EWMA
            self.playout_delay_ms += weight * (sample - self.playout_delay_ms)
            self._playout_samples += 1
        self._burst_start = None
        self._anchor = finished_at
        return True

    # -- questions -----------------------------------------------------------------------------

    @property
    def half_rtt(self) -> float:
        return (self.rtt_ms or 0.0) / 2

    def pending(self) -> bool:
        """Audio was sent that the carrier has not yet confirmed played."""
        return bool(self._frames)

    def _predicted_end(self, now: float) -> float:
        """When the carrier will have finished everything we sent (by our model)."""
        t = self._anchor if self._anchor is not None else float("-inf")
        for frame in self._frames:
            t = self._frame_start(t, frame) + frame.size / self.bytes_per_ms
        return t

    def _frame_start(self, t: float, frame: _Frame) -> float:
        arrival = frame.sent_at + self.half_rtt
        return t if arrival <= t else arrival + self.playout_delay_ms

    def heard(self, now: float) -> list[ItemPlayback]:
        """Per item with unconfirmed audio: sent and heard by the time a clear sent `now` arrives."""
        clear_arrives = now + self.half_rtt
        heard: dict[str, int] = {}
        t = self._anchor if self._anchor is not None else float("-inf")
        for frame in self._frames:
            start = self._frame_start(t, frame)
            if start >= clear_arrives:
                break
            played_ms = min(frame.size / self.bytes_per_ms, clear_arrives - start)
            heard[frame.item_id] = frame.item_offset + int(played_ms * self.bytes_per_ms)
            t = start + frame.size / self.bytes_per_ms
        result = []
        for item_id in dict.fromkeys(f.item_id for f in self._frames):
            item = self._items[item_id]
            heard_bytes = min(max(heard.get(item_id, 0), item.played_bytes), item.sent_bytes)
            result.append(
                ItemPlayback(
                    item_id=item_id,
                    content_index=item.content_index,
                    sent_ms=item.sent_bytes // self.bytes_per_ms,
                    heard_ms=heard_bytes // self.bytes_per_ms,
                    started=heard_bytes > 0,
                )
            )
        return result

    def clear(self, now: float) -> list[ItemPlayback]:
        """We are sending `clear` now: settle what was heard; later echoes of these marks mean discarded."""
        result = self.heard(now)
        self._discarded.update(f.mark for f in self._frames if f.mark)
        self._frames.clear()
        self._anchor = None
        self._burst_start = None
        for item_id in [p.item_id for p in result]:
            del self._items[item_id]
        return result

    def forget(self, item_id: str) -> None:
        """The item's audio is complete and needs no more bookkeeping once confirmed played."""
        if not any(f.item_id == item_id for f in self._frames):
            self._items.pop(item_id, None)

    def played_ms(self, item_id: str) -> int:
        """Audio of the item confirmed played by echoes (a lower bound of what was heard)."""
        item = self._items.get(item_id)
        return item.played_bytes // self.bytes_per_ms if item else 0

    def sent_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return item.sent_bytes // self.bytes_per_ms if item else 0
