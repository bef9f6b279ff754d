"""Sessions prepared while a webhook is answered (bridge/session_pool.py), against the Realtime emulator:
closed at once when their stream started on another process, kept when the call log cannot say."""

from __future__ import annotations

import asyncio

from bridge.config import load_settings
from bridge.session_pool import PreparedSessions
from bridge.upstream import UpstreamSession, open_session
from tests.e2e import eventually, running_bridge, running_emulator


async def test_sessions_whose_stream_went_elsewhere_are_closed_and_the_rest_kept() -> None:
    async with running_emulator() as (emulator, url):
        settings = load_settings({"REALTIME_URL": url, "OPENAI_API_KEY": "sk-test"})

        async def opener() -> UpstreamSession:
            return await open_session(settings)

        elsewhere: set[str] = set()
        database_down = False
        asked: list[list[str]] = []

        async def claimed_elsewhere(call_ids: list[str]) -> set[str]:
            asked.append(sorted(call_ids))
            if database_down:
                raise ConnectionRefusedError("the call log is away")
            return elsewhere & set(call_ids)

        pool = PreparedSessions(claimed_elsewhere=claimed_elsewhere, check_every_s=0.05)
        try:
            pool.prepare("CA-there", opener)
            pool.prepare("CA-here", opener)
            await emulator.wait_for_session(2)
            await eventually(lambda: len(asked) >= 2)
            assert asked[-1] == ["CA-here", "CA-there"] and len(pool) == 2

            # While the call log cannot say, nothing is closed on a guess (the expiry still applies).
            database_down = True
            elsewhere.add("CA-there")
            checks = len(asked)
            await eventually(lambda: len(asked) >= checks + 3)
            assert len(pool) == 2 and not any(s.closed for s in emulator.sessions)

            database_down = False
            await eventually(lambda: len(pool) == 1)
            await eventually(lambda: sum(s.closed for s in emulator.sessions) == 1)
            claimed = await pool.claim("CA-here")
            assert claimed is not None and not claimed.socket.closed  # the one kept is the one claimed
            await claimed.socket.close()
            # Nothing left to watch: the watcher stops asking.
            await eventually(lambda: pool._watcher is None)
            settled = len(asked)
            await asyncio.sleep(0.2)
            assert len(asked) == settled
        finally:
            await pool.close()


async def test_a_session_dropped_while_it_is_being_configured_is_closed_not_leaked() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url) as running:
        bridge = running.bridge
        asked = asyncio.Event()

        async def still_asking_the_call_log() -> bool:
            asked.set()
            await asyncio.Event().wait()  # the database is slow to say whether others are alive
            return False

        bridge.greets_ahead = still_asking_the_call_log  # type: ignore[method-assign]
        bridge.prepared.prepare("CA-slow", bridge.open_prepared)
        session = await emulator.wait_for_session()
        await asyncio.wait_for(asked.wait(), 5)
        await bridge.prepared.close()  # e.g. its stream was admitted by another process
        await eventually(lambda: session.closed, timeout_s=3)
        assert session.client_events == []
