from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from bridge.calllog import CallRecorder, CallStore, run_retention
from tests.calllog.helpers import record_simple_call


async def test_zero_days_keeps_calls_forever(store: CallStore, recorder: CallRecorder) -> None:
    record_simple_call(recorder, "CA-ancient", datetime.now(UTC) - timedelta(days=3650))
    await recorder.flush()
    for days in (0, -3):
        # Returns at once (no purge loop left running) and deletes nothing, however old.
        await asyncio.wait_for(run_retention(store, days), 1)
        assert await store.get_call("CA-ancient") is not None


async def test_retention_purges_at_start_and_on_every_interval(
    store: CallStore, recorder: CallRecorder
) -> None:
    now = datetime.now(UTC)
    record_simple_call(recorder, "CA-ancient", now - timedelta(days=100))
    record_simple_call(recorder, "CA-recent", now - timedelta(days=1))
    await recorder.flush()

    task = asyncio.create_task(run_retention(store, 30, interval_s=0.05))
    try:
        for _ in range(100):
            if await store.get_call("CA-ancient") is None:
                break
            await asyncio.sleep(0.02)
        assert await store.get_call("CA-ancient") is None
        # A call that ages past the limit later goes in a following cycle.
        record_simple_call(recorder, "CA-later", now - timedelta(days=31))
        await recorder.flush()
        for _ in range(100):
            if await store.get_call("CA-later") is None:
                break
            await asyncio.sleep(0.02)
        assert await store.get_call("CA-later") is None
        assert await store.get_call("CA-recent") is not None
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
