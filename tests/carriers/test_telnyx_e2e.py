"""Telnyx end to end over loopback sockets: a signed TeXML webhook, the stream it names, and a call
through the Telnyx caller emulator to the Realtime emulator, barge-in and transfer included."""

from __future__ import annotations

import asyncio
import base64
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.audio import L16_16K, PCMU_8K, AudioFormat
from bridge.sim.carrier_emulator import LineConditions
from bridge.sim.realtime_emulator import EmulatorConfig, ScriptedReply
from bridge.sim.telnyx_api import TelnyxApiStandIn
from bridge.sim.telnyx_caller import TelnyxCallerEmulator
from tests.e2e import (
    RunningBridge,
    assert_every_frame_reached_the_model,
    dominant_hz,
    eventually,
    hear_the_greeting,
    running_bridge,
    running_emulator,
    samples,
    talk_and_key,
    tone,
)

pytestmark = pytest.mark.e2e

PRIVATE = Ed25519PrivateKey.generate()
PUBLIC_KEY = base64.b64encode(
    PRIVATE.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()
ENV = {"CARRIERS": "telnyx", "TELNYX_PUBLIC_KEY": PUBLIC_KEY, "STREAM_TOKEN_SECRET": "stream-secret"}
MOBILE = LineConditions(uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=15, playout_delay_ms=60, seed=7)


def signed_headers(body: bytes, at: float | None = None, key: Ed25519PrivateKey = PRIVATE) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    signature = base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()
    return {
        "telnyx-signature-ed25519": signature,
        "telnyx-timestamp": timestamp,
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class TexmlAnswer:
    status: int
    stream_url: str = ""
    attributes: dict[str, str] | None = None
    parameters: dict[str, str] | None = None


async def post_texml(
    bridge: RunningBridge, form: dict[str, str], headers: dict[str, str] | None
) -> TexmlAnswer:
    body = urlencode(form).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            bridge.base_url + "/telnyx/texml",
            data=body,
            headers=signed_headers(body) if headers is None else headers,
        ) as response,
    ):
        text = await response.text()
    if response.status != 200:
        return TexmlAnswer(response.status)
    stream = ET.fromstring(text).find("./Connect/Stream")
    assert stream is not None, text
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return TexmlAnswer(200, stream.attrib["url"], dict(stream.attrib), parameters)


async def answered_caller(
    bridge: RunningBridge, call_sid: str, audio_format: AudioFormat = PCMU_8K, **kwargs: object
) -> TelnyxCallerEmulator:
    """What Telnyx does: fetch the TeXML, then open the stream it names with its parameters."""
    form = {"CallSid": call_sid, "From": "+14155550123", "To": "+18005551212", "Direction": "inbound"}
    answer = await post_texml(bridge, form, None)
    assert answer.status == 200 and answer.parameters is not None
    return TelnyxCallerEmulator(
        answer.stream_url,
        call_sid=call_sid,
        custom_parameters=answer.parameters,
        audio_format=audio_format,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_texml_answer_and_a_whole_call() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet the caller.", **ENV) as bridge,
    ):
        call_sid = "v3:" + "a" * 40
        form = {"CallSid": call_sid, "From": "+14155550123", "To": "+18005551212"}
        answer = await post_texml(bridge, form, None)
        assert answer.status == 200 and answer.attributes is not None and answer.parameters is not None
        assert answer.attributes["bidirectionalMode"] == "rtp"
        assert answer.attributes["bidirectionalCodec"] == "PCMU"
        assert answer.attributes["bidirectionalSamplingRate"] == "8000"
        assert answer.stream_url.endswith("/telnyx/media") and answer.stream_url.startswith("ws://")
        assert answer.parameters["call_sid"] == call_sid and answer.parameters["stream_token"]

        caller = TelnyxCallerEmulator(
            answer.stream_url, call_sid=call_sid, custom_parameters=answer.parameters
        )
        async with caller:
            session = await emulator.wait_for_session()
            await hear_the_greeting(caller)
            await talk_and_key(caller, session, "12#")
        await eventually(lambda: session.closed)
        assert caller.protocol_errors == [] and session.rejected == []
        assert_every_frame_reached_the_model(caller, session, 300)

        call = await bridge.logged_call(call_sid)
        assert call is not None and call["carrier"] == "telnyx"
        assert call["from_number"] == "+14155550123" and call["end_reason"] == "caller_hangup"


async def test_forged_missing_or_stale_signatures_get_403_and_a_token_works_once() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, GREETING="Greet.", **ENV) as bridge:
        form = {"CallSid": "v3:" + "b" * 40, "From": "+14155550123"}
        body = urlencode(form).encode()
        assert (await post_texml(bridge, form, {})).status == 403  # missing
        forged = signed_headers(body, key=Ed25519PrivateKey.generate())
        assert (await post_texml(bridge, form, forged)).status == 403  # another key
        stale = signed_headers(body, at=time.time() - 400)
        assert (await post_texml(bridge, form, stale)).status == 403  # older than 5 minutes
        tampered = signed_headers(urlencode({**form, "From": "+19995550000"}).encode())
        assert (await post_texml(bridge, form, tampered)).status == 403  # signed another body
        assert emulator.sessions == []  # nothing was opened for a forged request

        caller = await answered_caller(bridge, form["CallSid"])
        # No token (a stream this server's webhook did not answer): closed at start.
        stranger = TelnyxCallerEmulator(caller.url, call_sid="v3:" + "c" * 40)
        await stranger.connect()
        await stranger.wait_closed(timeout_s=5)
        assert stranger.close_code == 1008
        await stranger.hangup()

        async with caller:
            await caller.wait_heard(min_ms=100, timeout_s=10)
        await eventually(lambda: not bridge.bridge.active_calls)
        replay = TelnyxCallerEmulator(
            caller.url, call_sid=caller.call_sid, custom_parameters=caller.custom_parameters
        )
        await replay.connect()
        await replay.wait_closed(timeout_s=5)
        assert replay.close_code == 1008  # a captured token is good for one stream only
        await replay.hangup()


def frame_tones(frames: int) -> tuple[bytes, list[float]]:
    """Caller speech whose every 20 ms frame is its own tone, so frame order is visible upstream."""
    freqs = [400.0 + 200.0 * (k % 8) for k in range(frames)]
    t = np.arange(160) / 8000
    pcm = np.concatenate([np.sin(2 * np.pi * f * t) * 10000 for f in freqs]).astype("<i2").tobytes()
    return pcm, freqs


@pytest.mark.parametrize("audio_format", [PCMU_8K, L16_16K], ids=["pcmu-8k", "l16-16k"])
async def test_frames_delivered_out_of_order_reach_the_model_in_order(audio_format: AudioFormat) -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, **ENV) as bridge:
        caller = await answered_caller(bridge, "v3:" + "d" * 40, audio_format, swap_frames={35, 48, 61})
        async with caller:
            session = await emulator.wait_for_session()
            speech, freqs = frame_tones(40)
            utterance = caller.say(speech, at_ms=600)  # frames 30..69
            await caller.wait_said(utterance, timeout_s=10)
            await caller.wait_until(lambda: caller.sent_frames >= 80, timeout_s=5)
        await eventually(lambda: session.closed)
        assert caller.reordered == 3
        assert len(session.appended_pcm) == caller.sent_frames * 480 * 2  # nothing lost
        appended = samples(bytes(session.appended_pcm))
        first = round(((utterance.spoken_start_ms or 0) - (caller.started_ms or 0)) / 20)
        heard = []
        for k in range(len(freqs)):
            # Frame n is samples [480 n, 480 (n + 1)) at 24 kHz; skip the edges the filter smears.
            window = appended[(first + k) * 480 + 120 : (first + k) * 480 + 420]
            heard.append(dominant_hz(window.astype("<i2").tobytes(), rate=24000))
        assert np.allclose(heard, freqs, atol=50), list(zip(freqs, heard, strict=True))


async def test_barge_in_on_a_bad_line_truncates_at_what_the_caller_heard() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Read the long announcement.", **ENV) as bridge,
    ):
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(8000, 500, rate=24000, dbfs=-12), transcript="announcement")
        )
        caller = await answered_caller(bridge, "v3:" + "e" * 40, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            start = caller.started_ms or 0.0
            await caller.wait_heard(min_ms=1500, timeout_s=20, since_ms=start)
            caller.say(tone(400, 1200))
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 1, timeout_s=5)
            clear_at = caller.playout.clears[0].received_at_ms
            played = caller.playout.played_ms_between(start, clear_at)
        assert caller.protocol_errors == [] and session.rejected == []
        error_ms = session.truncations[0]["audio_end_ms"] - played
        # The same bound as Twilio's on this line (tests/test_e2e_barge_in.py): the ledger's estimate
        # of the clear's arrival carries at most about a jitter (±15 ms) plus a frame's rounding.
        assert abs(error_ms) <= 40, (session.truncations[0]["audio_end_ms"], played)


async def test_transfer_through_call_control() -> None:
    api = TelnyxApiStandIn("KEY-for-tests")
    api_base = await api.start()
    try:
        async with (
            running_emulator() as (emulator, url),
            running_bridge(
                url,
                TRANSFER_NUMBER="+15550001111",
                TELNYX_API_KEY="KEY-for-tests",
                TELNYX_API_BASE=api_base,
                **ENV,
            ) as bridge,
        ):
            emulator.script_reply(
                ScriptedReply(audio_pcm24k=tone(800, 700, rate=24000), transcript="Transferring.")
            )
            emulator.script_reply(ScriptedReply(tool_call=("transfer_call", {"reason": "wants a human"})))
            caller = await answered_caller(bridge, "v3:" + "f" * 40)
            await caller.connect()
            try:
                caller.say(tone(500, 400))
                await caller.wait_heard(min_ms=600, timeout_s=10)
                caller.say(tone(500, 400))
                await eventually(lambda: bool(api.requests), timeout_s=15)
                await caller.wait_closed(timeout_s=10)
            finally:
                await caller.hangup()
            [request] = api.requests
            assert request.call_control_id == caller.call_control_id
            assert request.body == {"to": "+15550001111"} and request.bearer == "KEY-for-tests"
            call = await bridge.logged_call(caller.call_sid)
            assert call is not None and call["end_reason"] == "transferred"
    finally:
        await api.stop()


async def test_without_an_api_key_the_model_hears_transfers_are_unavailable() -> None:
    async with (
        running_emulator(EmulatorConfig()) as (emulator, url),
        running_bridge(url, TRANSFER_NUMBER="+15550001111", **ENV) as bridge,
    ):
        emulator.script_reply(ScriptedReply(tool_call=("transfer_call", {"reason": "wants a human"})))
        caller = await answered_caller(bridge, "v3:" + "9" * 40)
        async with caller:
            session = await emulator.wait_for_session()
            caller.say(tone(500, 400))
            outputs = lambda: [  # noqa: E731
                e["item"]["output"]
                for e in session.client_events
                if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
            ]
            await eventually(lambda: bool(outputs()), timeout_s=10)
            await asyncio.sleep(0)
        assert "fail" in outputs()[0] or "not available" in outputs()[0]
        assert not caller.closed_by_server  # the call went on
