"""The call-log database goes away under a running bridge (PostgreSQL stopped, as far as the bridge can
tell: a relay in front of it refuses connections and drops the open ones). Calls keep flowing; the
call-log API answers 503 with one log line per request; /readyz says the call log is degraded and
stays 200; once the database is back, the call made meanwhile is in the log."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
import structlog
from sqlalchemy.engine import make_url

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from tests.calllog.conftest import PostgresDatabase
from tests.e2e import ADMIN_TOKEN, eventually, running_bridge, running_emulator, tone
from tests.tcp_relay import TcpRelay

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url, headers=AUTH) as response:
        return response.status, await response.json()


async def test_while_postgresql_is_down_calls_flow_and_the_api_answers_503(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = PostgresDatabase(postgres_server_url)
    await database.create()
    server = make_url(database.url)
    relay = TcpRelay(server.host or "127.0.0.1", server.port or 5432)
    port = await relay.start()
    call_log_url = server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    caplog.set_level(logging.INFO)
    try:
        async with (
            running_emulator() as (_emulator, url),
            # No retention pass at start-up: one still running at the cut would be a fifth warning.
            running_bridge(url, CALL_LOG_URL=call_log_url, CALL_LOG_RETENTION_DAYS="0") as bridge,
            aiohttp.ClientSession() as http,
        ):
            base = bridge.base_url
            assert await get_json(http, base + "/api/calls") == (200, {"calls": [], "next_cursor": None})
            status, ready = await get_json(http, base + "/readyz")
            assert status == 200 and ready["call_log"] == {"status": "ok"}

            await relay.cut()
            with structlog.testing.capture_logs() as logs:
                for _ in range(3):
                    status, body = await get_json(http, base + "/api/calls")
                    assert status == 503
                    assert body == {"error": "the call-log database is unavailable; try again shortly"}
                caller = TwilioCallerEmulator(bridge.media_url)
                async with caller:
                    utterance = caller.say(tone(600, 440))
                    await caller.wait_said(utterance, timeout_s=10)
                    await caller.wait_heard(min_ms=400, timeout_s=10)
                await eventually(lambda: not bridge.bridge.active_calls)
                status, ready = await get_json(http, base + "/readyz")
            assert status == 200 and ready["status"] == "ready"
            call_log = ready["call_log"]
            assert call_log["status"] == "degraded"
            assert "does not make the server unready" in call_log["detail"]
            assert "ConnectionRefusedError" in call_log["error"]
            assert call_log["records_waiting"] > 0
            warnings = [e["event"] for e in logs if e["log_level"] in ("warning", "error", "critical")]
            # The call is admitted without its row (one line says so), then the writer finds the outage.
            assert warnings == ["calllog.api_database_unavailable"] * 3 + [
                "calllog.claim_unchecked",
                "calllog.database_unavailable",
            ]

            await relay.start()
            record = await bridge.logged_call(caller.call_sid)
            assert record is not None and record["end_reason"] == "caller_hangup"
            status, listed = await get_json(http, base + "/api/calls")
            assert status == 200 and [c["call_id"] for c in listed["calls"]] == [caller.call_sid]
            status, ready = await get_json(http, base + "/readyz")
            assert ready["call_log"] == {"status": "ok"}
    finally:
        await relay.close()
        await database.drop()
    # No traceback anywhere: aiohttp's "Error handling request" is an ERROR record with exc_info.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
