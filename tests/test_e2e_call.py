"""The whole call path through real loopback sockets: carrier emulator -> bridge -> Realtime emulator."""

from __future__ import annotations

import asyncio

import pytest

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.wavfile import read_wav_mono
from tests.e2e import (
    assert_every_frame_reached_the_model,
    dominant_hz,
    eventually,
    hear_the_greeting,
    running_bridge,
    running_emulator,
    similarity,
    tone,
)

pytestmark = pytest.mark.e2e

DIALECTS = ["ga", "beta"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_greeting_is_heard(dialect: str) -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, REALTIME_DIALECT=dialect, GREETING="Greet the caller.") as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url)
        async with caller:
            session = await emulator.wait_for_session()
            assert session.dialect == dialect
            await hear_the_greeting(caller)
        assert caller.protocol_errors == []
        assert session.headers.get("Authorization") == "Bearer sk-test"
        assert ("OpenAI-Beta" in session.headers) == (dialect == "beta")


async def test_caller_audio_reaches_upstream_as_24k_pcm() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url) as bridge:
        caller = TwilioCallerEmulator(bridge.media_url)
        async with caller:
            session = await emulator.wait_for_session()
            caller.say(tone(600, 300))
            await caller.wait_until(lambda: caller.sent_frames >= 60, timeout_s=5)
        await eventually(lambda: session.closed)
        assert session.input_rate == 24000
        assert_every_frame_reached_the_model(caller, session, 300)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_reply_is_heard_and_resembles_what_was_said(dialect: str) -> None:
    speech = read_wav_mono("bridge/sim/assets/caller.wav", 8000)
    async with running_emulator() as (emulator, url), running_bridge(url, REALTIME_DIALECT=dialect) as bridge:
        caller = TwilioCallerEmulator(bridge.media_url)
        async with caller:
            utterance = caller.say(speech)
            await caller.wait_said(utterance, timeout_s=10)
            await caller.wait_heard(min_ms=2500, timeout_s=15)
            await caller.wait_quiet(quiet_ms=600, timeout_s=15)
            heard = caller.playout.heard_pcm(include_silence=False)
        assert similarity(heard, speech) > 0.8
        assert caller.protocol_errors == []
        session = emulator.sessions[0]
        assert session.rejected == []


async def test_two_concurrent_calls_stay_independent() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url) as bridge:
        low = TwilioCallerEmulator(bridge.media_url)
        high = TwilioCallerEmulator(bridge.media_url)
        async with low, high:
            low.say(tone(800, 350))
            high.say(tone(800, 900))
            for caller in (low, high):
                await caller.wait_heard(min_ms=600, timeout_s=10)
            await asyncio.gather(*(c.wait_quiet(quiet_ms=400, timeout_s=10) for c in (low, high)))
            assert abs(dominant_hz(low.playout.heard_pcm(include_silence=False)) - 350) < 10
            assert abs(dominant_hz(high.playout.heard_pcm(include_silence=False)) - 900) < 10
        assert len(emulator.sessions) == 2


async def test_greeting_session_is_opened_while_the_webhook_is_answered() -> None:
    import aiohttp

    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet the caller.") as bridge,
    ):
        # The test doubles share this process's event loop and pay one-time costs on their first
        # call (about 150 ms here); one call first keeps them out of the bridge's measurement.
        async with TwilioCallerEmulator(bridge.media_url) as warm_up:
            await warm_up.wait_heard(min_ms=100, timeout_s=10)
        caller = TwilioCallerEmulator(bridge.media_url)
        form = {"CallSid": caller.call_sid, "From": "+14155550123", "To": "+18005551212"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(bridge.base_url + "/twilio/voice", data=form) as response,
        ):
            assert response.status == 200
            twiml = await response.text()
        stream_url = twiml.split('url="')[1].split('"')[0]
        assert "<Connect " in twiml and "<Stream " in twiml and "?" not in stream_url
        session = await emulator.wait_for_session(2)
        # The session is configured and the greeting requested before the media stream even exists.
        await eventually(
            lambda: [e["type"] for e in session.client_events] == ["session.update", "response.create"]
        )
        # Twilio takes a few hundred ms from the TwiML to the stream's start; by then audio is waiting.
        await eventually(lambda: any(kind == "response.output_audio.delta" for _, kind in session.sent_log))
        async with caller:
            await caller.wait_heard(min_ms=200, timeout_s=10)
            first_audio = caller.playout.first_heard_ms()
            assert first_audio is not None and caller.started_ms is not None
        assert len(emulator.sessions) == 2  # the stream claimed the prepared session, opened no other
        # The greeting was already waiting when the stream started: heard within a couple of frames.
        assert first_audio - caller.started_ms < 60


async def test_passthrough_relays_mulaw_unchanged_and_still_echoes() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, AUDIO_PASSTHROUGH="true") as bridge:
        caller = TwilioCallerEmulator(bridge.media_url)
        async with caller:
            session = await emulator.wait_for_session()
            caller.say(tone(800, 350))
            await caller.wait_heard(min_ms=600, timeout_s=10)
            await caller.wait_quiet(quiet_ms=400, timeout_s=10)
            heard = caller.playout.heard_pcm(include_silence=False)
        update = next(e for e in session.client_events if e["type"] == "session.update")
        assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert session.input_rate == 8000
        assert abs(dominant_hz(heard) - 350) < 10
        assert session.rejected == []


async def test_without_prefetch_the_greeting_is_asked_for_when_the_stream_claims_the_session() -> None:
    import aiohttp

    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet the caller.", PREFETCH_GREETING="false") as bridge,
    ):
        caller = TwilioCallerEmulator(bridge.media_url)
        async with (
            aiohttp.ClientSession() as http,
            http.post(bridge.base_url + "/twilio/voice", data={"CallSid": caller.call_sid}) as response,
        ):
            assert response.status == 200
        session = await emulator.wait_for_session()
        await eventually(lambda: [e["type"] for e in session.client_events] == ["session.update"])
        async with caller:
            await caller.wait_heard(min_ms=200, timeout_s=10)
        assert [e["type"] for e in session.client_events][:2] == ["session.update", "response.create"]
        assert len(emulator.sessions) == 1
