"""Small waiting and seeding helpers shared by the call-log tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

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
