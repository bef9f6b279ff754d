"""When a call is without the model: how long it may try to get a session, and what its record says.

A call without a session (at its start, or after the session dropped or expired) tries to open one on
a fixed schedule counted from that moment: at once, then 0.2, 0.5 and 1 s after the attempt before,
then every second, no attempt starting once the budget is spent, and each allowed only what is left
of it. The caller hears silence meanwhile, so the budget is what a caller waits before giving up on
the line. Plain code on any monotonic millisecond clock, so it is tested with a made-up one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.log_records import LogRecord, RecordKind

CONNECT_BUDGET_S = 4.0
BACKOFF_S = (0.2, 0.5, 1.0)  # the pause after each attempt; the last one repeats


@dataclass(frozen=True, slots=True)
class ConnectReport:
    """What trying to open a session took, for the call log."""

    attempts_ms: tuple[float, ...] = ()  # when each attempt began, ms after the session was needed
    spent_ms: float = 0.0  # from then until a session was open, or until giving up

    def data(self) -> dict[str, Any]:
        return {
            "attempts": len(self.attempts_ms),
            "attempt_ms": [round(at) for at in self.attempts_ms],
            "spent_ms": round(self.spent_ms),
        }


NOT_TRIED = ConnectReport()


class ConnectAttempts:
    """The attempts to open a session, counted from `since`, when one was first needed."""

    def __init__(self, since: float, budget_s: float = CONNECT_BUDGET_S) -> None:
        self.since = since
        self.deadline = since + budget_s * 1000
        self.started: list[float] = []  # when each attempt began, on the clock

    def first(self, now: float) -> float:
        """When the first attempt may begin. It is always allowed, however late: a call never gives
        up without one try."""
        return max(now, self.since)

    def due(self, now: float) -> float | None:
        """When the next attempt may begin (never before `now`), or None once the budget is spent."""
        if not self.started:
            return self.first(now)
        pause = BACKOFF_S[min(len(self.started), len(BACKOFF_S)) - 1]
        at = max(now, self.started[-1] + pause * 1000)
        return at if at < self.deadline else None

    def begin(self, now: float) -> float:
        """An attempt begins `now`; returns how long it may take (ms): what is left of the budget."""
        self.started.append(now)
        return max(0.0, self.deadline - now)

    def report(self, now: float) -> ConnectReport:
        return ConnectReport(tuple(at - self.since for at in self.started), now - self.since)


@dataclass(frozen=True, slots=True)
class UpstreamLoss:
    """Why a call lost the model for good: the error event its record ends with."""

    code: str  # connect, reconnect, too_many_sessions, or the service's own error code
    message: str
    connecting: ConnectReport = NOT_TRIED  # the attempts made to get a session back, if any

    def record(self) -> LogRecord:
        data = {"source": "upstream", "code": self.code, "message": self.message, **self.connecting.data()}
        return LogRecord(RecordKind.ERROR, data)
