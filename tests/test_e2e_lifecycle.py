"""Limits and lifecycle through real sockets: capacity, the call time limit, and a drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import bridge_process, eventually, running_bridge, running_emulator, stored_call, tone

pytestmark = pytest.mark.e2e


async def post_webhook(base_url: str, call_sid: str) -> str:
    form = {"CallSid": call_sid, "From": "+14155550123", "To": "+18005551212"}
    async with aiohttp.ClientSession() as http, http.post(base_url + "/twilio/voice", data=form) as response:
        assert response.status == 200
        return await response.text()


async def test_one_call_beyond_max_calls_is_turned_away() -> None:
    async with (
        running_emulator() as (_, url),
        running_bridge(url, MAX_CALLS="1", FALLBACK_NUMBER="+15550001111") as bridge,
        TwilioCallerEmulator(bridge.media_url) as first,
    ):
        await eventually(lambda: len(bridge.bridge.active_calls) == 1)
        twiml = await post_webhook(bridge.base_url, "CA" + "9" * 32)
        assert "<Say>" in twiml and "busy" in twiml and "<Dial>+15550001111</Dial>" in twiml
        assert "<Connect>" not in twiml
        second = TwilioCallerEmulator(bridge.media_url)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await second.connect()
        assert refused.value.status == 503
        assert not first.ended


async def test_a_call_whose_stream_started_counts_once_towards_max_calls() -> None:
    # Between its stream's start and its row in the call log, a call is live and still holds the
    # session its webhook prepared: counted twice, a burst of calls was turned away below MAX_CALLS.
    async with running_emulator() as (_, url), running_bridge(url, MAX_CALLS="2") as bridge:
        recorded = asyncio.Event()
        claim = bridge.bridge.call_log.claim_call

        async def slow_claim(**fields: object) -> bool:
            await recorded.wait()  # the database is slow to write the call's row
            return await claim(**fields)

        bridge.bridge.call_log.claim_call = slow_claim  # type: ignore[method-assign]
        first_sid = "CA" + "1" * 32
        assert "<Stream" in await post_webhook(bridge.base_url, first_sid)
        async with TwilioCallerEmulator(bridge.media_url, call_sid=first_sid):
            await eventually(lambda: first_sid in bridge.bridge.active_calls)
            assert len(bridge.bridge.prepared) == 1  # still held: its claim waits for the row

            assert "<Stream" in await post_webhook(bridge.base_url, "CA" + "2" * 32)
            assert "busy" in await post_webhook(bridge.base_url, "CA" + "3" * 32)
            recorded.set()


async def test_the_call_time_limit_ends_after_the_goodbye_was_heard() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, MAX_CALL_SECONDS="1") as bridge:
        goodbye = tone(1200, 700, rate=24000)
        emulator.script_reply(ScriptedReply(audio_pcm24k=goodbye, transcript="Time is up, goodbye."))
        caller = TwilioCallerEmulator(bridge.media_url)
        await caller.connect()
        try:
            await caller.wait_closed(timeout_s=15)
        finally:
            await caller.hangup()
        session = emulator.sessions[0]
        creates = [e for e in session.client_events if e["type"] == "response.create"]
        assert "time limit" in creates[0]["response"]["instructions"]
        # The caller heard the whole goodbye before the line closed.
        assert caller.playout.played_ms_total >= 1200 - 20
        assert caller.closed_by_server


async def test_sigterm_drains_calls_and_keeps_every_record(tmp_path: Path) -> None:
    async with (
        running_emulator() as (emulator, url),
        bridge_process(tmp_path, url, DRAIN_SECONDS="1") as server,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(800, 600, rate=24000), transcript="Goodbye."))
        caller = TwilioCallerEmulator(server.media_url)
        await caller.connect()
        await emulator.wait_for_session()
        server.process.send_signal(signal.SIGTERM)
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(server.base_url + "/readyz") as response:
                    if response.status == 503:
                        assert (await response.json())["status"] == "draining"
                        break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("/readyz never turned 503")
        assert "busy" in await post_webhook(server.base_url, "CA" + "8" * 32)
        await caller.wait_closed(timeout_s=15)
        await caller.hangup()
        assert await asyncio.to_thread(server.process.wait, 15) == 0
    assert caller.playout.played_ms_total >= 800 - 20  # the goodbye was heard whole
    call = await stored_call(server.call_log_url, caller.call_sid)
    assert call is not None and (call["status"], call["end_reason"]) == ("ended", "shutdown")


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_long_goodbye_at_sigterm_still_ends_within_the_stop_budget(
    tmp_path: Path, workers: str
) -> None:
    """The stop's budget, scaled down (1 s of drain, 11 s in all, where the deploy files grant 50 s to
    30 s of drain and a 45 s budget: tests/deploy checks those): a goodbye that would play for 30 s is
    cut so that the process, or the supervisor and its workers, has exited within the budget, every
    record written."""
    budget_s = 11.0
    async with (
        running_emulator() as (emulator, url),
        bridge_process(
            tmp_path,
            url,
            DRAIN_SECONDS="1",
            SHUTDOWN_BUDGET_SECONDS=str(budget_s),
            WORKERS=workers,
            TMPDIR=str(tmp_path),
        ) as server,
    ):
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(30_000, 500, rate=24000), transcript="Goodbye.")
        )
        await every_worker_ready(server.base_url)  # a worker still starting has no handler for SIGTERM
        caller = TwilioCallerEmulator(server.media_url)
        await caller.connect()
        await emulator.wait_for_session()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.process.wait, budget_s + 5)
        stopped_s = time.monotonic() - signalled
        await caller.wait_closed(timeout_s=5)
        await caller.hangup()
    print(f"stopped {stopped_s:.1f} s after SIGTERM (budget {budget_s:g} s)")
    assert code == 0 and stopped_s <= budget_s  # a clean exit, within the budget
    session = emulator.sessions[0]
    asked = [e["response"]["instructions"] for e in session.client_events if e["type"] == "response.create"]
    assert any("closing for maintenance" in text for text in asked)
    assert 2000 < caller.playout.played_ms_total < 20_000  # the goodbye was heard, and cut
    call = await stored_call(server.call_log_url, caller.call_sid)
    assert call is not None and (call["status"], call["end_reason"]) == ("ended", "shutdown")


async def every_worker_ready(base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            async with http.get(base_url + "/readyz") as response:
                body = await response.json()
            if response.status == 200 and all(w["state"] == "ready" for w in body.get("workers", [])):
                return
            await asyncio.sleep(0.05)
    pytest.fail("the workers never were all ready")


async def test_a_flooding_stream_is_closed_and_a_good_call_beside_it_goes_on() -> None:
    import base64
    import json

    frame = json.dumps(
        {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}, "streamSid": "MZ1"}
    )
    start = json.dumps(
        {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA" + "6" * 32}, "streamSid": "MZ1"}
    )
    async with (
        running_emulator() as (_, url),
        running_bridge(url, GREETING="Greet.") as bridge,
        TwilioCallerEmulator(bridge.media_url) as good,
        aiohttp.ClientSession() as http,
        http.ws_connect(bridge.media_url) as flood,
    ):
        await flood.send_str(start)
        for _ in range(2000):
            await flood.send_str(frame)
        async with asyncio.timeout(5):
            async for _ in flood:  # the probe mark, greeting audio ... then the server closes
                pass
        assert flood.closed
        await good.wait_heard(min_ms=500, timeout_s=10)
        assert not good.ended


async def test_a_second_signal_stops_at_once_and_still_writes_the_record(tmp_path: Path) -> None:
    async with (
        running_emulator() as (emulator, url),
        bridge_process(tmp_path, url, DRAIN_SECONDS="60") as server,
    ):
        caller = TwilioCallerEmulator(server.media_url)
        await caller.connect()
        await emulator.wait_for_session()
        server.process.send_signal(signal.SIGTERM)  # would drain for a minute ...
        await asyncio.sleep(0.3)
        server.process.send_signal(signal.SIGINT)  # ... but the operator insists
        assert await asyncio.to_thread(server.process.wait, 10) == 0
        await caller.wait_closed(timeout_s=5)
        await caller.hangup()
    call = await stored_call(server.call_log_url, caller.call_sid)
    assert call is not None and (call["status"], call["end_reason"]) == ("ended", "shutdown")
