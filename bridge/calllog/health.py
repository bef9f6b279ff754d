"""Whether the call log's database is answering, for /readyz and the API's 503s.

A database outage degrades the call log, never the calls: they keep flowing, their records wait in
the recorder's memory and are written once the database is back. So /readyz reports the outage in
its detail and stays 200 for it; taking replicas out of rotation would turn a logging outage into
refused calls.

What is known comes from whoever last touched the database: the recorder's writer, an API request,
or a probe of its own. /readyz never waits on the database (a readiness probe has a second or two);
when nothing has read from it for a while, asking starts a probe in the background and the next
answer carries its result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bridge.calllog.store import CallStore

PROBE_AFTER_S = 10.0  # reads older than this are checked again when /readyz asks
PROBE_TIMEOUT_S = 5.0


class _Writer(Protocol):
    """What the call-log recorder exposes (bridge.calllog.recorder.CallRecorder)."""

    @property
    def backlog(self) -> int: ...

    outage_since: datetime | None


def describe(exc: BaseException) -> str:
    """One short line for a database error: the driver's own message, without SQLAlchemy's SQL and
    background link, and never longer than a log line should be."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {message}"[:200] if message else type(cause).__name__


class CallLogHealth:
    def __init__(
        self,
        store: CallStore,
        writer: _Writer | None = None,
        *,
        probe_after_s: float = PROBE_AFTER_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.writer = writer
        self.probe_after_s = probe_after_s
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._read_at: float | None = None  # when a read last succeeded or failed
        self._read_failed_since: datetime | None = None
        self._read_error = ""
        self._probe: asyncio.Task[None] | None = None

    def read_failed(self, exc: BaseException) -> None:
        self._read_at = self._clock()
        self._read_error = describe(exc)
        if self._read_failed_since is None:
            self._read_failed_since = datetime.now(UTC)

    def read_answered(self) -> None:
        self._read_at = self._clock()
        self._read_failed_since = None
        self._read_error = ""

    def report(self) -> dict[str, Any]:
        """The call log's state for /readyz, at once; a stale view starts a probe for next time."""
        if self._read_at is None or self._clock() - self._read_at >= self.probe_after_s:
            self._start_probe()
        writing_since = self.writer.outage_since if self.writer is not None else None
        if self._read_failed_since is None and writing_since is None:
            return {"status": "ok"}
        since = min(t for t in (self._read_failed_since, writing_since) if t is not None)
        report: dict[str, Any] = {
            "status": "degraded",
            "since": since.isoformat().replace("+00:00", "Z"),
            "detail": "the call-log database is unavailable; calls go on, and their records wait in "
            "memory until it is back. This does not make the server unready.",
        }
        if self._read_error:
            report["error"] = self._read_error
        if self.writer is not None:
            report["records_waiting"] = self.writer.backlog
        return report

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._run_probe(), name="calllog-probe")

    async def _run_probe(self) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout_s), self.store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # an outage of any kind is what the probe is there to see
            self.read_failed(exc)
        else:
            self.read_answered()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
