"""What the caller has heard: the one place `audio_end_ms` is computed.

The carrier plays our audio in real time, far behind the model, and tells us progress only through
mark echoes, which arrive late (network) and which also come back when a `clear` discards audio
(docs/protocols.md §T5, §C3). The ledger keeps, per outbound frame, which assistant item it belonged to and
when it was sent, and answers "how much of each item did the caller hear when our clear arrived?"
by replaying the carrier's playout clock:

* anchor on the last mark echoed *before* the clear was sent (that audio surely played, and the
  carrier reached it half a round trip before we saw the echo);
* extrapolate playback from there in real time, frame by frame, but a frame cannot play before it
  reached the carrier (its send time plus half a round trip, plus the carrier's own start-up
  buffering when it arrived at an empty buffer): a model that stalled gave the caller silence,
  and silence the caller sat through is not speech they heard;
* stop at the moment the clear reaches the carrier (half a round trip after we sent it);
* clamp to what was sent for the item;
* and, for the model (`ItemPlayback.audio_end_ms`), move it back by the outbound resampler's delay
  (what we send lags the model's audio by it) and clamp it to the model audio the service sent for
  the item (a truncate past that is refused).

The round trip is measured with probe marks sent while nothing is queued (Twilio echoes those at
once). Jitter and scheduling delays only ever lengthen a sample, and every estimate here moves by
exactly the error in the round trip, so the ledger uses the smallest recent sample (as NTP does):
a round trip guessed too long would count audio the caller never heard. The carrier's start-up
buffering is measured from the first echo of each burst of audio.
Times are milliseconds on any monotonic clock the caller of this class supplies.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.audio import ULAW_BYTES_PER_MS

_EWMA = 0.3
RTT_WINDOW = 8  # recent probe samples kept; the smallest is the estimate


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
    audio_end_ms: int  # what the caller heard on the model's clock: the truncate's audio_end_ms


@dataclass(slots=True)
class _Item:
    content_index: int
    sent_bytes: int = 0
    played_bytes: int = 0  # confirmed by echoes received before any clear


class PlaybackLedger:
    def __init__(self, bytes_per_ms: int = ULAW_BYTES_PER_MS, output_lag_ms: float = 0.0) -> None:
        """`bytes_per_ms`: of the line's audio. `output_lag_ms`: how far what we send lags the model's
        audio (the outbound resampler's delay)."""
        self.bytes_per_ms = bytes_per_ms
        self.output_lag_ms = output_lag_ms
        self._received_ms: dict[str, float] = {}  # model audio per item: what the service holds
        self._rtt_samples: deque[float] = deque(maxlen=RTT_WINDOW)  # probes: pure round trips
        self._rtt_bounds: deque[float] = deque(maxlen=RTT_WINDOW)  # first echoes: round trip + buffering
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

    def received(self, item_id: str, model_ms: float) -> None:
        """The model sent `model_ms` more of `item_id`'s audio (before resampling for the line)."""
        received = self._received_ms
        received[item_id] = received.get(item_id, 0.0) + model_ms

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
            self._rtt_samples.append(now - self._probes.pop(name))
            return False
        if name in self._discarded:
            self._discarded.discard(name)
            return False
        if not any(f.mark == name for f in self._frames):
            return False
        half = self.half_rtt
        candidate = now - half  # when the carrier finished it, if this echo had the shortest delay
        projected = self._projected_end(name, half) if self._burst_start is None else None
        burst_start = self._burst_start
        played = 0
        while self._frames:
            frame = self._frames.popleft()
            self._items[frame.item_id].played_bytes = frame.item_offset + frame.size
            played += frame.size
            if frame.mark == name:
                break
        if burst_start is not None:
            # The first echo of a burst took a round trip plus the carrier's buffering: an upper bound
            # on the round trip that corrects a probe inflated by a busy moment.
            self._rtt_bounds.append(now - burst_start - played / self.bytes_per_ms)
            half = self.half_rtt
            candidate = now - half
            # Audio that arrived at an idle carrier started late by the carrier's own buffering.
            sample = max(0.0, candidate - (burst_start + half) - played / self.bytes_per_ms)
            weight = 1.0 if self._playout_samples == 0 else _EWMA
            self.playout_delay_ms += weight * (sample - self.playout_delay_ms)
            self._playout_samples += 1
            self._anchor = candidate
        else:
            # A late echo says less than an early one: keep the earlier of this echo and what the
            # last anchor projects, but no earlier than the jitter seen on this line allows.
            self._anchor = max(min(candidate, projected or candidate), candidate - self.rtt_spread_ms)
        self._burst_start = None
        return True

    def _projected_end(self, mark: str, half_rtt: float) -> float | None:
        """When the carrier finishes the frames up to `mark`, projected from the current anchor
        (`half_rtt`: the current `half_rtt`, worked out once by the caller, not once per frame)."""
        if self._anchor is None:
            return None
        t = self._anchor
        for frame in self._frames:
            t = self._frame_start(t, frame, half_rtt) + frame.size / self.bytes_per_ms
            if frame.mark == mark:
                return t
        return None

    # -- questions -----------------------------------------------------------------------------

    @property
    def rtt_ms(self) -> float | None:
        samples = [*self._rtt_samples, *self._rtt_bounds]
        return max(0.0, min(samples)) if samples else None

    @property
    def rtt_spread_ms(self) -> float:
        """How much longer than the shortest a round trip has recently been (jitter, scheduling)."""
        return max(self._rtt_samples) - min(self._rtt_samples) if self._rtt_samples else 0.0

    def _typical_half_rtt(self) -> float:
        """Half the median probe, capped by the first-echo bounds (a round trip cannot exceed them)."""
        if not self._rtt_samples:
            return self.half_rtt
        cap = min(self._rtt_bounds, default=float("inf"))
        # A leg that reports a mark the moment its frame is sent (SIP) gives first-echo bounds below
        # zero; a clear cannot arrive before it was sent.
        return max(0.0, min(statistics.median(self._rtt_samples), cap)) / 2

    @property
    def half_rtt(self) -> float:
        return (self.rtt_ms or 0.0) / 2

    def pending(self) -> bool:
        """Audio was sent that the carrier has not yet confirmed played."""
        return bool(self._frames)

    def playing(self, item_id: str) -> bool:
        """Audio of `item_id` was sent that the carrier has not yet confirmed played."""
        item = self._items.get(item_id)
        return item is not None and item.played_bytes < item.sent_bytes

    def _frame_start(self, t: float, frame: _Frame, half_rtt: float) -> float:
        arrival = frame.sent_at + half_rtt
        return t if arrival <= t else arrival + self.playout_delay_ms

    def heard(self, now: float, stopped_at: float | None = None) -> list[ItemPlayback]:
        """Per item with unconfirmed audio: sent and heard by the time a clear sent `now` arrives, or
        by `stopped_at` if the carrier stopped playing then (the caller hung up)."""
        # The clear's own trip is jittered like any message: expect a typical one, not the shortest.
        clear_arrives = now + self._typical_half_rtt() if stopped_at is None else stopped_at
        # A mark not yet echoed means its audio had not finished half a round trip ago: whatever the
        # clock model says, the caller cannot have heard more than that plus one round trip.
        ceiling = self._unconfirmed_ceiling()
        heard: dict[str, int] = {}
        t = self._anchor if self._anchor is not None else float("-inf")
        position = 0  # bytes of unconfirmed audio the carrier will have played
        half = self.half_rtt
        for frame in self._frames:
            start = self._frame_start(t, frame, half)
            if start >= clear_arrives or position >= ceiling:
                break
            played = min(frame.size, int((clear_arrives - start) * self.bytes_per_ms), ceiling - position)
            heard[frame.item_id] = frame.item_offset + played
            position += played
            t = start + frame.size / self.bytes_per_ms
        result = []
        for item_id in dict.fromkeys(f.item_id for f in self._frames):
            item = self._items[item_id]
            heard_bytes = min(max(heard.get(item_id, 0), item.played_bytes), item.sent_bytes)
            result.append(self._playback(item_id, item, heard_bytes))
        return result

    def _playback(self, item_id: str, item: _Item, heard_bytes: int) -> ItemPlayback:
        heard_ms = heard_bytes // self.bytes_per_ms
        audio_end_ms = 0
        if heard_bytes > 0:
            heard_model_ms = max(0, round(heard_ms - self.output_lag_ms))
            audio_end_ms = min(heard_model_ms, int(self._received_ms.get(item_id, 0.0)))
        return ItemPlayback(
            item_id=item_id,
            content_index=item.content_index,
            sent_ms=item.sent_bytes // self.bytes_per_ms,
            heard_ms=heard_ms,
            started=heard_bytes > 0,
            audio_end_ms=audio_end_ms,
        )

    def _unconfirmed_ceiling(self) -> int:
        """Bytes of unconfirmed audio that can have played: up to the first pending mark, plus the
        longest recent round trip (an upper bound must assume the slowest line)."""
        longest = max(self._rtt_samples) if self._rtt_samples else 0.0
        upto = 0
        for frame in self._frames:
            upto += frame.size
            if frame.mark is not None:
                return upto + int(longest * self.bytes_per_ms)
        return upto

    def clear(
        self, now: float, unfinished: Iterable[str] = (), stopped_at: float | None = None
    ) -> list[ItemPlayback]:
        """We are sending `clear` now (or playback stopped at `stopped_at`: the line closed): settle
        what was heard; later echoes of these marks mean discarded.

        `unfinished`: items the model is still speaking. One whose audio so far was all confirmed
        played has nothing pending, yet the model has more to say: it is settled too, heard whole."""
        result = self.heard(now, stopped_at)
        self._discarded.update(f.mark for f in self._frames if f.mark)
        self._frames.clear()
        self._anchor = None
        self._burst_start = None
        for p in result:
            del self._items[p.item_id]
            self._received_ms.pop(p.item_id, None)
        settled = {p.item_id for p in result}
        for item_id in unfinished:
            if item_id not in settled:
                # Less than a frame of it may have come yet: then nothing of it was heard.
                item = self._items.get(item_id) or _Item(content_index=0)
                result.append(self._playback(item_id, item, item.sent_bytes))
        return result

    def forget(self, item_id: str) -> None:
        """The item's audio is complete and needs no more bookkeeping once confirmed played."""
        if not any(f.item_id == item_id for f in self._frames):
            self._items.pop(item_id, None)
            self._received_ms.pop(item_id, None)

    def sent_ms(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return item.sent_bytes // self.bytes_per_ms if item else 0
