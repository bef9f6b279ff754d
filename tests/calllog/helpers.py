"""Small waiting and seeding helpers shared by the call-log tests."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import make_url

from bridge.calllog import CallRecorder
from tests.calllog.sample_calls import start


async def wait_until(condition: Callable[[], bool], within: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


def record_simple_call(
    recorder: CallRecorder,
    call_id: str,
    started_at: datetime,
    *,
    from_number: str = "+15550000000",
    to_number: str = "+15557654321",
    said: str = "hello",
    reason: str | None = "caller_hangup",
) -> None:
    start(recorder, call_id, started_at, from_number=from_number, to_number=to_number)
    utterance = {"item_id": "u1", "text": said}
    recorder.event(call_id, "caller_transcript", utterance, started_at + timedelta(seconds=1))
    if reason is not None:
        recorder.call_ended(call_id, reason, at=started_at + timedelta(seconds=30))


@contextlib.asynccontextmanager
async def database_outage(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[None]:
    """Make the database refuse the store's writes (PostgreSQL: every connection) until the block ends."""
    if db_url.startswith("sqlite"):
        # Root ignores file permissions, so a read-only directory proves nothing here; another
        # process holding the write lock is SQLite's real-world outage ("database is locked").
        locker = sqlite3.connect(make_url(db_url).database, isolation_level=None, timeout=0)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    database = request.node.postgres_database
    admin = await database.admin()
    try:
        await admin.execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database.name
        )
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS true')
        await admin.close()
