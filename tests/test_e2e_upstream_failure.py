"""When the model cannot be reached: retries, then an apology the caller hears, then the fallback;
and whichever way a call lost the model, its record says why."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.pump import MAX_SESSION_REPLACEMENTS
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator
from bridge.upstream_loss import BACKOFF_S, CONNECT_BUDGET_S
from bridge.wavfile import read_wav_mono, write_wav
from tests.e2e import RunningBridge, eventually, running_bridge, running_emulator, similarity, tone

pytestmark = pytest.mark.e2e

BUDGET_MS = CONNECT_BUDGET_S * 1000


def scheduled_attempts_ms() -> list[float]:
    """When the attempts to open a session are due, in ms after the loss: at once, then after each
    pause (the last one repeated) for as long as the budget lasts."""
    due = [0.0]
    for pause in itertools.chain(BACKOFF_S, itertools.repeat(BACKOFF_S[-1])):
        if due[-1] + pause * 1000 >= BUDGET_MS:
            return due
        due.append(due[-1] + pause * 1000)
    raise AssertionError("unreachable")


async def lost_model(bridge: RunningBridge, call_sid: str) -> dict[str, Any]:
    """The record of a call that lost the model: checks it ended so, with one error, and returns it."""
    call = await bridge.logged_call(call_sid)
    assert call is not None
    errors = [e["data"] for e in call["events"] if e["kind"] == "error"]
    assert call["end_reason"] == "upstream_failure"
    assert call["error_count"] == len(errors) >= 1
    assert errors[-1]["source"] == "upstream"
    return errors[-1]


def assert_tried_for_the_whole_budget(error: dict[str, Any], emulator: RealtimeEmulator) -> None:
    """Every attempt the record lists reached the service, each no earlier than the schedule says, the
    last one within the budget; the call gave up once the next was due past it."""
    tried = error["attempt_ms"]
    schedule = scheduled_attempts_ms()
    assert error["attempts"] == len(tried) == emulator.refused == len(schedule)
    assert all(at >= due for at, due in zip(tried, schedule, strict=True))
    assert tried[-1] < BUDGET_MS <= tried[-1] + BACKOFF_S[-1] * 1000
    # Giving up came after the last refusal, and each attempt may only use what is left of the budget.
    assert tried[-1] <= error["spent_ms"] <= BUDGET_MS + 500


async def call_without_the_model(bridge: RunningBridge, caller: TwilioCallerEmulator) -> dict[str, Any]:
    """The caller calls and the model is never had: returns, once the line closed, the record's error."""
    await caller.connect()
    try:
        await caller.wait_closed(timeout_s=20)
    finally:
        await caller.hangup()
    return await lost_model(bridge, caller.call_sid)


@pytest.fixture
def short_apology(tmp_path: Path) -> str:
    """A 200 ms FALLBACK_AUDIO, for the tests about the record rather than about the apology."""
    path = tmp_path / "apology.wav"
    write_wav(path, tone(200, 440), 8000)
    return str(path)


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
        error = await call_without_the_model(bridge, caller)
        # Retried for the whole budget from the start of the call, and the record says so.
        assert error["code"] == "connect" and "HTTP 503" in error["message"]
        assert_tried_for_the_whole_budget(error, emulator)
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
        error = await call_without_the_model(bridge, caller)
        assert emulator.refused == 1
        assert caller.playout.played_ms_total > 3000  # the apology, not silence
        assert (error["code"], error["attempts"]) == ("connect", 1) and "HTTP 401" in error["message"]


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
        # The record says the session dropped and no new one could be had in the budget from the drop.
        error = await lost_model(bridge, caller.call_sid)
        assert error["code"] == "reconnect"
        assert "1011" in error["message"] and "HTTP 503" in error["message"]
        assert_tried_for_the_whole_budget(error, emulator)


async def test_a_service_refusing_for_3_s_after_a_drop_gets_the_call_back() -> None:
    refusing_s = 3.0
    assert refusing_s < scheduled_attempts_ms()[-1] / 1000  # an attempt is still due after it
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet.") as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        await caller.wait_heard(min_ms=300, timeout_s=10)
        emulator.config.refuse_status, emulator.config.refuse_for_s = 503, refusing_s
        await emulator.sessions[0].close(1011)
        second = await emulator.wait_for_session(2, timeout=10)
        await eventually(lambda: len(second.client_events) >= 1)
        assert not caller.ended
        await caller.hangup()
        call = await bridge.logged_call(caller.call_sid)
        assert call is not None and call["end_reason"] == "caller_hangup" and call["error_count"] == 0
        [restored] = [e["data"] for e in call["events"] if e["kind"] == "session_restored"]
        # Refused until the window closed, then the next attempt on the schedule was taken.
        assert restored["attempts"] == emulator.refused + 1 == len(restored["attempt_ms"])
        assert restored["attempt_ms"][-1] < BUDGET_MS and "1011" in restored["lost"]


async def test_a_session_lost_for_good_is_recorded_with_why(short_apology: str) -> None:
    """Each way a call can lose the model for good leaves an error event saying why, counted."""
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, FALLBACK_AUDIO=short_apology) as bridge,
    ):
        # A code after which the session is of no use: no new session is tried.
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            session = await emulator.wait_for_session()
            session.send_server_event(server_error("invalid_api_key", "Incorrect API key provided."))
            await caller.wait_closed(timeout_s=10)
        error = await lost_model(bridge, caller.call_sid)
        assert (error["code"], error["attempts"], error["spent_ms"]) == ("invalid_api_key", 0, 0)
        assert error["message"] == "Incorrect API key provided."

        # The session expired and the service now refuses new ones for good.
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            session = await emulator.wait_for_session(2)
            emulator.config.refuse_status = 401
            session.send_server_event(server_error("session_expired", "Your session hit the maximum."))
            await caller.wait_closed(timeout_s=10)
        error = await lost_model(bridge, caller.call_sid)
        assert (error["code"], error["attempts"]) == ("reconnect", 1)
        assert "new session" in error["message"] and "HTTP 401" in error["message"]
        emulator.config.refuse_status = None

        # The session keeps dropping: after MAX_SESSION_REPLACEMENTS new ones the call gives up.
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            first = len(emulator.sessions) + 1
            for n in range(first, first + MAX_SESSION_REPLACEMENTS + 1):
                session = await emulator.wait_for_session(n)
                await eventually(lambda s=session: len(s.client_events) >= 1)
                await session.close(1011)
            await caller.wait_closed(timeout_s=10)
        error = await lost_model(bridge, caller.call_sid)
        assert error["code"] == "too_many_sessions" and error["attempts"] == 0
        assert f"{MAX_SESSION_REPLACEMENTS} times" in error["message"] and "1011" in error["message"]
        call = await bridge.logged_call(caller.call_sid)
        assert call is not None
        assert [e["kind"] for e in call["events"]].count("session_restored") == MAX_SESSION_REPLACEMENTS


def server_error(code: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": "event_x",
        "error": {"type": "invalid_request_error", "code": code, "message": message, "param": None},
    }


async def test_a_session_refused_while_the_webhook_was_answered_is_not_tried_for_a_second_budget(
    short_apology: str,
) -> None:
    async with (
        running_emulator(EmulatorConfig(refuse_status=503)) as (emulator, url),
        running_bridge(url, FALLBACK_AUDIO=short_apology) as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url)
        form = {"CallSid": caller.call_sid, "From": "+14155550123", "To": "+18005551212"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(bridge.base_url + "/twilio/voice", data=form) as response,
        ):
            assert response.status == 200  # the session is being prepared: the caller's wait begins
        error = await call_without_the_model(bridge, caller)
        # The stream claimed the prepared session's failure: the caller waited for one budget, not two.
        assert error["code"] == "connect"
        assert_tried_for_the_whole_budget(error, emulator)
