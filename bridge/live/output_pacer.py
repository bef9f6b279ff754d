"""The model's Live audio on its way to the carrier at real time, the carrier never more than a lead ahead.

Realtime sends a response's audio faster than real time and truncates what the caller did not hear.
A Live model cannot be truncated: it stops by itself, and whatever the carrier still holds then is
audio the model already considers said. So the carrier must never hold much, and yet enough to ride
out the jitter of the network and of this process; that amount is the **lead** `L` (LIVE_LEAD_MS,
measured with bench/live_lead.py):

* a turn starts by gathering its first frame and `L` of audio behind it (or for `L` of wall time, for
  a turn shorter than that); the carrier then gets it at once, and starts playing with `L` in hand:
  any later frame may be up to `L` late without the caller hearing a gap;
* from then on each frame goes out as it arrives, as long as the carrier holds at most `L` (+ one
  frame) by our count of what it has played since; a burst (the network catching up after a stall)
  waits here instead of piling up at the carrier;
* while frames wait here, silent ones at the head are dropped, never speech: a backlog drains at the
  next pause between sentences;
* a frame that arrives after the carrier (by our count) ran out is an underrun: the carrier played a
  gap; the count restarts from there.

The count assumes the carrier plays from when we send, a little early (the network and the carrier's
own buffering only add to what it holds), so the lead bounds what it holds after our frames arrive.
Sans-IO: `push` what the model said, `pull` what to send now, `next_due` says when to pull again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FRAME_MS = 20
BACKLOG_FRAMES = 2  # frames waiting here beyond which silent ones are dropped
_EPSILON_MS = 1e-6


@dataclass(frozen=True, slots=True)
class PacedFrame:
    audio: bytes  # one frame in the session's format
    turn_id: str
    loud: bool  # speech, not silence (the SpeechGate's verdict)
    session_ms: float  # where it starts on the session timeline


class OutputPacer:
    def __init__(self, lead_ms: float, frame_ms: int = FRAME_MS) -> None:
        self.lead_ms = lead_ms
        self.frame_ms = frame_ms
        self._queue: deque[PacedFrame] = deque()
        self._gathering_since: float | None = None  # first frame of a turn waiting for the lead
        self._playing_from: float | None = None  # the carrier plays what we sent from here (None: idle)
        self._sent_ms = 0.0  # sent since `_playing_from`
        self._ending = False  # the turn ended: idle once the carrier has played what it holds
        self.underruns = 0
        self.dropped_silence_ms = 0.0
        self.max_waiting_ms = 0.0

    @property
    def waiting_ms(self) -> float:
        """Audio held here, not yet sent."""
        return len(self._queue) * self.frame_ms

    @property
    def next_turn_id(self) -> str | None:
        """The turn of the next frame to send, if one waits."""
        return self._queue[0].turn_id if self._queue else None

    def holds(self, turn_id: str) -> bool:
        """Frames of `turn_id` wait here."""
        return any(f.turn_id == turn_id for f in self._queue)

    @property
    def idle(self) -> bool:
        return self._playing_from is None and not self._queue

    def carrier_ms(self, now: float) -> float:
        """What the carrier holds by our count (never below zero)."""
        if self._playing_from is None:
            return 0.0
        return max(0.0, self._sent_ms - (now - self._playing_from))

    def push(self, frame: PacedFrame, now: float) -> None:
        if self._ending and not self._queue:
            # A new turn after the last one's audio was all sent: it gathers its own lead (what the
            # carrier may still hold of the last one is its trailing silence).
            self._playing_from = None
        self._ending = False
        if self._playing_from is None and self._gathering_since is None:
            self._gathering_since = now
        self._queue.append(frame)
        waiting = self.waiting_ms
        if waiting > self.max_waiting_ms:
            self.max_waiting_ms = waiting

    def pull(self, now: float) -> list[PacedFrame]:
        """The frames to send to the carrier now, in order."""
        queue = self._queue
        if self._playing_from is None:
            if not queue or self._gathering_since is None:
                return []
            gathered_for = now - self._gathering_since + _EPSILON_MS
            if self.waiting_ms <= self.lead_ms and gathered_for < self.lead_ms:
                return []  # gathering: the first frame goes with the lead's worth behind it
            self._gathering_since = None
            self._playing_from, self._sent_ms = now, 0.0
        held = self._sent_ms - (now - self._playing_from)
        if held < 0 and queue:
            # The carrier ran out before this frame came: it played a gap, and starts again from here.
            self.underruns += 1
            self._playing_from = now - self._sent_ms
            held = 0.0
        out = []
        frame_ms = self.frame_ms
        limit = self.lead_ms + _EPSILON_MS  # woken exactly at `next_due`: float error must not make it wait
        while queue and held <= limit:
            out.append(queue.popleft())
            self._sent_ms += frame_ms
            held += frame_ms
        while len(queue) > BACKLOG_FRAMES and not queue[0].loud:
            queue.popleft()
            self.dropped_silence_ms += frame_ms
        if self._ending and not queue and held <= 0:
            self._playing_from = None
        return out

    def next_due(self, now: float) -> float | None:
        """When `pull` may next send something (or go idle), if nothing is pushed before."""
        if self._playing_from is None:
            if self._gathering_since is None:
                return None
            return self._gathering_since + self.lead_ms
        drained = self._playing_from + self._sent_ms  # when the carrier will have played it all
        if self._queue:
            return drained - self.lead_ms
        return drained if self._ending else None

    def end_turn(self) -> None:
        """The turn ended: silence still waiting is not sent, and with nothing left the pacer goes idle
        once the carrier has played what it holds (the next turn gathers its lead again)."""
        self._queue = deque(f for f in self._queue if f.loud)
        self._ending = True
        if not self._queue:
            self._gathering_since = None

    def clear(self) -> list[PacedFrame]:
        """The carrier's playback was cleared: forget everything; returns what was still waiting."""
        waiting = list(self._queue)
        self._queue.clear()
        self._gathering_since = self._playing_from = None
        self._sent_ms = 0.0
        self._ending = False
        return waiting
