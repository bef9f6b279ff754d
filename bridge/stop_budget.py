"""One budget for a whole stop: SIGTERM to exit within SHUTDOWN_BUDGET_SECONDS, whatever the calls do.

Kubernetes and docker compose kill a container a fixed time after SIGTERM (terminationGracePeriodSeconds,
stop_grace_period): a process still writing its call log then loses it, and a caller still hearing
the goodbye hears it cut. So the stop is planned backwards from one deadline, the budget after the
signal (default DRAIN_SECONDS + 15; the deploy files grant it and a margin, tests/deploy checks):

    0 ── DRAIN_SECONDS ──────── budget - FINAL_S ──────── budget
    │ calls go on untouched │ each hears a goodbye │ calls still up are ended, their records
    │ (no new ones taken)   │ (capped to fit)      │ written, the lease released; then exit

Every wait of the stop is cut to what is left of its phase, and a process still alive at the
deadline (something hung) exits there, saying so, rather than wait for the SIGKILL.
"""

from __future__ import annotations

import time
from collections.abc import Callable

FINAL_S = 5.0  # ending the calls still up, writing the call log, storing recordings, the lease
DEFAULT_GOODBYE_S = 10.0  # the budget's default: DRAIN_SECONDS + DEFAULT_GOODBYE_S + FINAL_S
MIN_GOODBYE_S = 5.0  # a shorter goodbye window is refused by the settings


class StopClock:
    """The deadlines of one stop, started when the first signal came."""

    def __init__(self, budget_s: float, drain_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + budget_s
        self._drain_until = min(self.started + drain_s, self.deadline - FINAL_S)

    def hurry(self) -> None:
        """Stop now (a second signal, SIGINT): no more drain or goodbyes, only the final phase."""
        now = self._clock()
        self._drain_until = min(self._drain_until, now)
        self.deadline = min(self.deadline, now + FINAL_S)

    def drain_left(self) -> float:
        """Seconds calls may still go on untouched."""
        return max(self._drain_until - self._clock(), 0.0)

    def goodbye_left(self) -> float:
        """Seconds calls may still spend on their goodbyes."""
        return max(self.deadline - FINAL_S - self._clock(), 0.0)

    def left(self, keep_s: float = 0.0) -> float:
        """Seconds until the deadline, less `keep_s` kept for what comes after."""
        return max(self.deadline - keep_s - self._clock(), 0.0)
