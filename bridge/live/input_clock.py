"""The caller's audio into a Live session at the wall clock's pace: the session's only clock.

A Live session's output advances with the input it receives (docs/protocols.md §L4), so what goes in
decides when the model can speak, and how much it says at once:

* before `session.started` nothing may be sent, and caller audio is **dropped, not held**: held and
  sent at once, it would come back as as much model audio at once, a delay the phone line then plays
  out for the rest of the call;
* while caller audio stops coming (a carrier stall, a SIP call on hold), silence takes its place once
  `FILL_AFTER_MS` has gone by without any, so the model can finish what it is saying; one frame of
  silence per frame of wall time from then on;
* caller audio that arrives late, after silence already took its place, is dropped up to what the
  silence replaced (at most `MAX_OWED_MS`): the session does not run ahead of the wall clock. Only
  audio that would put it more than a frame ahead is taken for late: audio that starts again after
  a pause (a SIP phone's silence suppression) is fresh speech, and comes at the wall clock's pace.

It also keeps when each stretch of session time was sent, so the model's output (whose position on
the session timeline is the amount of output so far) can be placed in wall time. Sans-IO: the caller of
this class sends what it says to send; times are milliseconds on any monotonic clock.
"""

from __future__ import annotations

import bisect

FRAME_MS = 20
FILL_AFTER_MS = 100.0  # no caller audio for this long (jitter on a mobile line stays well under it)
MAX_OWED_MS = 140.0  # late audio dropped after a fill, at most: what a network stall delays in a burst
EARLY_MS = 20.0  # audio this much ahead of the wall clock is within the carrier's own jitter
SENT_LOG = 1000  # (session ms, wall ms) pairs kept, at least: 20 s of frames


class InputClock:
    def __init__(self, frame_ms: int = FRAME_MS) -> None:
        self.frame_ms = frame_ms
        self.started = False
        self.session_ms = 0.0  # session time sent so far
        self._origin = 0.0  # wall time of session time 0, moved earlier by audio that comes early
        self._filling = False
        self._owed = 0.0  # silence sent in place of audio that may still arrive late
        self._sent_session: list[float] = []  # session ms at the end of each send
        self._sent_wall: list[float] = []  # ... and when it was sent
        self.dropped_before_start_ms = 0.0
        self.filled_ms = 0.0
        self.dropped_late_ms = 0.0

    def start(self, now: float) -> None:
        """`session.started`: the session clock starts now. Also after a replacement session started."""
        self.started = True
        self.session_ms = 0.0
        self._origin = now
        self._filling = False
        self._owed = 0.0
        self._sent_session.clear()
        self._sent_wall.clear()

    def stop(self) -> None:
        """The session is gone (a replacement is on its way): caller audio is dropped until it starts."""
        self.started = False

    def caller(self, ms: float, now: float) -> bool:
        """`ms` of caller audio arrived at `now`: True to send it, False to drop it."""
        if not self.started:
            self.dropped_before_start_ms += ms
            return False
        self._filling = False
        behind = now - self._origin - self.session_ms
        if behind < -EARLY_MS:
            if self._owed > 0:
                self._owed -= ms  # its place was taken by silence already
                self.dropped_late_ms += ms
                return False
            self._origin += behind  # the carrier runs early (clock drift): follow it
        self._sent(ms, now)
        return True

    def fill(self, now: float) -> int:
        """How many frames of silence to send now in place of caller audio that did not come."""
        if not self.started:
            return 0
        behind = now - self._origin - self.session_ms
        if not self._filling and behind <= FILL_AFTER_MS:
            return 0
        frames = int(behind // self.frame_ms)
        if frames <= 0:
            return 0
        self._filling = True
        ms = frames * self.frame_ms
        self._owed = min(self._owed + ms, MAX_OWED_MS)
        self.filled_ms += ms
        self._sent(ms, now)
        return frames

    def next_due(self) -> float | None:
        """When `fill` may next have something to send, if the caller sends nothing before."""
        if not self.started:
            return None
        wait = self.frame_ms if self._filling else FILL_AFTER_MS + 1
        return self._origin + self.session_ms + wait

    def sent_at(self, session_ms: float) -> float | None:
        """When the input reaching `session_ms` was sent (None: before what is remembered)."""
        i = bisect.bisect_left(self._sent_session, session_ms)
        if i == len(self._sent_session) or (i == 0 and session_ms < self._sent_session[0] - self.frame_ms):
            return None
        return self._sent_wall[i]

    def _sent(self, ms: float, now: float) -> None:
        self.session_ms += ms
        self._sent_session.append(self.session_ms)
        self._sent_wall.append(now)
        if len(self._sent_session) >= 2 * SENT_LOG:  # lists, not deques: bisect indexes them in C
            del self._sent_session[:SENT_LOG], self._sent_wall[:SENT_LOG]
