"""SignalWire end to end: cXML `<Connect><Stream>` signed with the project's Signing Key (Twilio's
HMAC-SHA1 scheme, computed here by the twilio SDK's validator keyed with the Signing Key), the stream
it names, and a call through the SignalWire (Twilio-dialect) caller emulator."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER
from bridge.sim.carrier_emulator import LineConditions
from bridge.sim.realtime_emulator import EmulatorConfig, ScriptedReply
from bridge.sim.signalwire_caller import SignalWireCallerEmulator
from tests.e2e import (
    RunningBridge,
    assert_every_frame_reached_the_model,
    eventually,
    hear_the_greeting,
    running_bridge,
    running_emulator,
    talk_and_key,
    tone,
)

pytestmark = pytest.mark.e2e

SIGNING_KEY = "PSK_signalwire_signing_key_for_tests"
SIGNER = RequestValidator(SIGNING_KEY)
ENV = {
    "CARRIERS": "signalwire",
    "SIGNALWIRE_SIGNING_KEY": SIGNING_KEY,
    "STREAM_TOKEN_SECRET": "stream-secret",
}
MOBILE = LineConditions(uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=15, playout_delay_ms=60, seed=7)


@dataclass
class CxmlAnswer:
    status: int
    stream_url: str = ""
    action: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


async def post_form(
    bridge: RunningBridge,
    path: str,
    form: dict[str, str],
    signature: str | None,
    header: str = "X-SignalWire-Signature",
) -> tuple[int, str]:
    headers = {header: signature} if signature is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(bridge.base_url + path, data=form, headers=headers) as r,
    ):
        return r.status, await r.text()


def sign(bridge: RunningBridge, path: str, form: dict[str, str]) -> str:
    return SIGNER.compute_signature(bridge.base_url + path, form)


async def answer(bridge: RunningBridge, call_sid: str, header: str = "X-SignalWire-Signature") -> CxmlAnswer:
    form = {"CallSid": call_sid, "From": "+14155550123", "To": "+18005551212", "Direction": "inbound"}
    status, text = await post_form(
        bridge, "/signalwire/voice", form, sign(bridge, "/signalwire/voice", form), header
    )
    if status != 200:
        return CxmlAnswer(status)
    connect = ET.fromstring(text).find("./Connect")
    assert connect is not None, text
    stream = connect.find("Stream")
    assert stream is not None, text
    parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return CxmlAnswer(200, stream.attrib["url"], connect.attrib.get("action", ""), parameters)


def caller_for(cxml: CxmlAnswer, call_sid: str, **kwargs: object) -> SignalWireCallerEmulator:
    """What SignalWire does: open the stream the cXML names, signed, with its parameters."""
    signature = SIGNER.compute_signature(cxml.stream_url, {})
    return SignalWireCallerEmulator(
        cxml.stream_url,
        call_sid=call_sid,
        custom_parameters=cxml.parameters,
        headers={"X-SignalWire-Signature": signature},
        **kwargs,  # type: ignore[arg-type]
    )


async def test_cxml_answer_and_a_whole_call() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet the caller.", **ENV) as bridge,
    ):
        call_sid = "CA" + "5" * 32
        cxml = await answer(bridge, call_sid)
        assert cxml.status == 200 and cxml.stream_url.endswith("/signalwire/media")
        assert cxml.action.endswith("/signalwire/connect-done")
        assert cxml.parameters["stream_token"] and cxml.parameters["call_sid"] == call_sid
        caller = caller_for(cxml, call_sid)
        async with caller:
            session = await emulator.wait_for_session()
            await hear_the_greeting(caller)
            await talk_and_key(caller, session, "34#")
        await eventually(lambda: session.closed)
        assert caller.protocol_errors == [] and session.rejected == []
        assert_every_frame_reached_the_model(caller, session, 300)
        call = await bridge.logged_call(call_sid)
        assert call is not None and call["carrier"] == "signalwire" and call["end_reason"] == "caller_hangup"


async def test_only_signed_requests_and_streams_with_their_token_get_a_call() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, GREETING="Greet.", **ENV) as bridge:
        form = {"CallSid": "CA" + "6" * 32, "From": "+14155550123"}
        assert (await post_form(bridge, "/signalwire/voice", form, None))[0] == 403  # missing
        assert (await post_form(bridge, "/signalwire/voice", form, "AAAAAAAAAAAAAAAAAAAAAAAAAAA="))[0] == 403
        wrong_key = RequestValidator("another-key").compute_signature(
            bridge.base_url + "/signalwire/voice", form
        )
        assert (await post_form(bridge, "/signalwire/voice", form, wrong_key))[0] == 403
        # The callback after the stream is signed too.
        assert (await post_form(bridge, "/signalwire/connect-done", form, None))[0] == 403
        assert emulator.sessions == []

        # X-Twilio-Signature, which SignalWire also sends, is accepted as the same signature.
        cxml = await answer(bridge, form["CallSid"], header="X-Twilio-Signature")
        assert cxml.status == 200
        forged = SignalWireCallerEmulator(  # a forged upgrade signature never opens
            cxml.stream_url,
            call_sid=form["CallSid"],
            custom_parameters=cxml.parameters,
            headers={"X-SignalWire-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await forged.connect()
        assert refused.value.status == 403
        # An unsigned upgrade (SignalWire may not sign it) without the webhook's token gets no call.
        tokenless = {k: v for k, v in cxml.parameters.items() if k != STREAM_TOKEN_PARAMETER}
        stranger = SignalWireCallerEmulator(
            cxml.stream_url, call_sid=form["CallSid"], custom_parameters=tokenless
        )
        await stranger.connect()
        await stranger.wait_closed(timeout_s=5)
        assert stranger.close_code == 1008
        await stranger.hangup()

        async with caller_for(cxml, form["CallSid"]) as caller:
            await caller.wait_heard(min_ms=100, timeout_s=10)
        await eventually(lambda: not bridge.bridge.active_calls)
        replay = caller_for(cxml, form["CallSid"])
        await replay.connect()
        await replay.wait_closed(timeout_s=5)
        assert replay.close_code == 1008  # the token was good for one stream only
        await replay.hangup()


async def test_barge_in_on_a_bad_line_truncates_at_what_the_caller_heard() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Read the long announcement.", **ENV) as bridge,
    ):
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(8000, 500, rate=24000, dbfs=-12), transcript="announcement")
        )
        call_sid = "CA" + "7" * 32
        caller = caller_for(await answer(bridge, call_sid), call_sid, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            start = caller.started_ms or 0.0
            await caller.wait_heard(min_ms=1500, timeout_s=20, since_ms=start)
            caller.say(tone(400, 1200))
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 1, timeout_s=5)
            played = caller.playout.played_ms_between(start, caller.playout.clears[0].received_at_ms)
        assert caller.protocol_errors == [] and session.rejected == []
        # Same bound as Twilio's on this line (tests/test_e2e_barge_in.py): about a jitter (±15 ms)
        # in the estimate of when the clear arrived, plus a frame of rounding.
        error_ms = session.truncations[0]["audio_end_ms"] - played
        assert abs(error_ms) <= 40, (session.truncations[0]["audio_end_ms"], played)


async def test_a_call_the_bridge_failed_goes_to_the_fallback_number() -> None:
    refuse = EmulatorConfig(refuse_status=503)  # the model cannot be reached
    async with (
        running_emulator(refuse) as (_, url),
        running_bridge(url, FALLBACK_NUMBER="+15550009999", **ENV) as bridge,
    ):
        call_sid = "CA" + "8" * 32
        async with caller_for(await answer(bridge, call_sid), call_sid) as caller:
            await caller.wait_closed(timeout_s=20)
        assert caller.closed_by_server
        form = {"CallSid": call_sid}
        path = "/signalwire/connect-done"
        status, text = await post_form(bridge, path, form, sign(bridge, path, form))
        assert status == 200 and "<Dial>+15550009999</Dial>" in text
