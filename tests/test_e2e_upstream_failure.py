"""When the model cannot be reached: retries, then an apology the caller hears, then the fallback."""

from __future__ import annotations

import aiohttp
import pytest

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatorConfig
from bridge.wavfile import read_wav_mono
from tests.e2e import eventually, running_bridge, running_emulator, similarity, tone

pytestmark = pytest.mark.e2e


async def connect_done(base_url: str, call_sid: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + "/twilio/connect-done", data={"CallSid": call_sid}) as response,
    ):
        assert response.status == 200
        return await response.text()


async def test_a_refusing_service_is_retried_then_the_caller_hears_the_apology_and_is_transferred() -> None:
    async with (
        running_emulator(EmulatorConfig(refuse_status=503)) as (emulator, url),
        running_bridge(url, FALLBACK_NUMBER="+15550001111") as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url)
        await caller.connect()
        try:
            await caller.wait_closed(timeout_s=20)
        finally:
            await caller.hangup()
        assert emulator.refused >= 3  # retried within the budget
        heard = caller.playout.heard_pcm(include_silence=False)
        apology = read_wav_mono("bridge/assets/apology.wav", 8000)
        assert len(heard) >= len(apology) - 2 * 160 and similarity(heard, apology) > 0.9
        assert "<Dial>+15550001111</Dial>" in await connect_done(bridge.base_url, caller.call_sid)
        # Only a call we failed is transferred; any other stream end just hangs up.
        assert "<Hangup" in await connect_done(bridge.base_url, "CA" + "7" * 32)


async def test_a_bad_key_is_not_retried() -> None:
    async with (
        running_emulator(EmulatorConfig(refuse_status=401)) as (emulator, url),
        running_bridge(url) as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url)
        await caller.connect()
        try:
            await caller.wait_closed(timeout_s=20)
        finally:
            await caller.hangup()
        assert emulator.refused == 1
        assert caller.playout.played_ms_total > 3000  # the apology, not silence


async def test_a_passing_refusal_is_retried_and_the_call_goes_on() -> None:
    async with (
        running_emulator(EmulatorConfig(refuse_status=429, refuse_times=2)) as (emulator, url),
        running_bridge(url, GREETING="Greet.") as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        await caller.wait_heard(min_ms=500, timeout_s=10)
        assert emulator.refused == 2 and len(emulator.sessions) == 1


async def test_an_upstream_killed_mid_call_is_replaced_and_the_conversation_goes_on() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, INPUT_TRANSCRIPTION_MODEL="gpt-4o-mini-transcribe") as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        caller.say(tone(700, 350))
        await caller.wait_heard(min_ms=500, timeout_s=10)
        await caller.wait_quiet(quiet_ms=400, timeout_s=10)
        first = emulator.sessions[0]
        await first.close(1011)
        second = await emulator.wait_for_session(2)
        # The new session got its configuration, then the conversation so far, before anything else.
        await eventually(lambda: len(second.client_events) >= 3)
        kinds = [e["type"] for e in second.client_events]
        assert kinds[0] == "session.update"
        restored = [e["item"] for e in second.client_events if e["type"] == "conversation.item.create"]
        assert [item["role"] for item in restored] == ["user", "assistant"]
        # The caller keeps talking and is answered by the new session.
        heard_before = caller.playout.played_ms_total
        caller.say(tone(700, 900))
        await caller.wait_heard(min_ms=500, timeout_s=10, since_ms=caller.clock())
        assert caller.playout.played_ms_total > heard_before
        assert not caller.ended and second.rejected == []


async def test_an_expired_session_is_replaced() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        first = await emulator.wait_for_session()
        first.send_server_event(
            {
                "type": "error",
                "event_id": "event_x",
                "error": {
                    "type": "invalid_request_error",
                    "code": "session_expired",
                    "message": "Your session hit the maximum duration of 60 minutes.",
                    "param": None,
                    "event_id": None,
                },
            }
        )
        await emulator.wait_for_session(2)
        caller.say(tone(600, 350))
        await caller.wait_heard(min_ms=400, timeout_s=10)
        assert not caller.ended


async def test_an_upstream_lost_for_good_leads_to_the_apology() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet.") as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url)
        await caller.connect()
        try:
            await caller.wait_heard(min_ms=300, timeout_s=10)
            emulator.config.refuse_status = 503  # no replacement can be had
            await emulator.sessions[0].close(1011)
            await caller.wait_closed(timeout_s=20)
        finally:
            await caller.hangup()
        await eventually(lambda: not bridge.bridge.active_calls)
        assert caller.playout.clears  # the greeting was cut for the apology
        assert caller.playout.played_ms_since(caller.playout.clears[0].received_at_ms) > 3000
