"""Plivo end to end over real loopback sockets: a signed answer whose XML is followed to the stream, the
call heard both ways, DTMF, barge-in on a bad line, the call log, refusals, a transfer and a busy answer.
Webhook signatures here are computed by Plivo's own SDK, not by the bridge's code."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree import ElementTree

import aiohttp
import pytest
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

from bridge.sim.carrier_emulator import LineConditions
from bridge.sim.plivo_api import PlivoApiStandIn
from bridge.sim.plivo_caller import PlivoCallerEmulator
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import (
    RunningBridge,
    dominant_hz,
    eventually,
    message_texts,
    running_bridge,
    running_emulator,
    tone,
)

pytestmark = pytest.mark.e2e

AUTH_ID = "MAPLIVOTESTAUTHID000"
AUTH_TOKEN = "plivo-auth-token-for-tests"
CALLER, CALLEE = "14155550123", "18005551212"
MOBILE = LineConditions(uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=15, playout_delay_ms=60, seed=11)
REPLY_HZ, CALLER_HZ = 500.0, 1200.0


def plivo_headers(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, str]:
    """The V3 headers Plivo would send for this POST, computed with Plivo's SDK."""
    nonce = secrets.token_hex(10)
    signature = get_signature_v3(token.encode(), construct_post_url(url, dict(form)), nonce.encode())
    return {"X-Plivo-Signature-V3": signature.decode(), "X-Plivo-Signature-V3-Nonce": nonce}


def answer_form(call_uuid: str) -> dict[str, str]:
    return {
        "CallUUID": call_uuid,
        "From": CALLER,
        "To": CALLEE,
        "Direction": "inbound",
        "CallStatus": "in-progress",
        "Event": "StartApp",
    }


@dataclass
class Answer:
    status: int
    xml: str

    @property
    def root(self) -> ElementTree.Element:
        return ElementTree.fromstring(
            self.xml.split("\n", 1)[1] if self.xml.startswith("<?xml") else self.xml
        )

    def stream(self) -> ElementTree.Element:
        [stream] = self.root.findall("Stream")
        return stream


async def post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers or {}) as response:
        return Answer(response.status, await response.text())


async def answer_call(bridge: RunningBridge, call_uuid: str, signed: bool = True) -> Answer:
    url = bridge.base_url + "/plivo/answer"
    form = answer_form(call_uuid)
    return await post(url, form, plivo_headers(url, form) if signed else None)


def caller_from(answer: Answer, call_uuid: str, **kwargs: object) -> PlivoCallerEmulator:
    """A caller that does what Plivo does with the answer: open the stream URL it names, with its
    extraHeaders and the contentType it asked for."""
    stream = answer.stream()
    assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["contentType"] == "audio/x-mulaw;rate=8000"
    assert stream.text is not None and urlsplit(stream.text).scheme == "ws"
    return PlivoCallerEmulator(
        stream.text, call_sid=call_uuid, extra_headers=stream.attrib.get("extraHeaders", ""), **kwargs
    )


@asynccontextmanager
async def plivo_bridge(realtime_url: str, **env: str) -> AsyncIterator[RunningBridge]:
    async with running_bridge(realtime_url, CARRIERS="plivo", PLIVO_AUTH_TOKEN=AUTH_TOKEN, **env) as bridge:
        yield bridge


async def test_a_call_through_the_answer_xml_is_heard_both_ways_and_logged() -> None:
    async with (
        running_emulator() as (emulator, url),
        plivo_bridge(url, GREETING="Greet the caller.") as bridge,
    ):
        call_uuid = "6f3a6c6e-0000-4000-8000-000000000001"
        answer = await answer_call(bridge, call_uuid)
        assert answer.status == 200
        [redirect] = answer.root.findall("Redirect")
        assert redirect.text == bridge.base_url + "/plivo/after-stream"
        session = await emulator.wait_for_session()  # pre-opened while the answer was given
        caller = caller_from(answer, call_uuid)
        async with caller:
            await caller.wait_heard(min_ms=800, timeout_s=10)  # the greeting
            greeting_heard = caller.playout.played_ms_total
            caller.say(tone(600, 300))
            await caller.wait_until(lambda: len(session.appended_pcm) > 0, timeout_s=5)
            for digit in "12#":
                caller.press(digit)
            await eventually(lambda: any("12#" in text for text in message_texts(session)), timeout_s=5)
            await caller.wait_quiet(quiet_ms=400, timeout_s=15)
        assert greeting_heard >= 800
        assert caller.protocol_errors == [] and session.rejected == []
        # The caller's tone reached the model (resampled to 24 kHz) and the echo agent's reply came back.
        assert abs(dominant_hz(bytes(session.appended_pcm), rate=24000) - 300) < 5
        assert caller.playout.played_ms_total > greeting_heard + 400
        call = await bridge.logged_call(call_uuid)
    assert call is not None
    assert call["carrier"] == "plivo" and call["stream_sid"] == caller.stream_sid
    assert call["from_number"] == CALLER and call["to_number"] == CALLEE and call["direction"] == "inbound"
    assert call["end_reason"] == "caller_hangup"


async def test_forged_or_missing_signatures_get_403_and_open_nothing() -> None:
    async with running_emulator() as (emulator, url), plivo_bridge(url) as bridge:
        answer_url = bridge.base_url + "/plivo/answer"
        form = answer_form("6f3a6c6e-0000-4000-8000-000000000002")
        assert (await post(answer_url, form)).status == 403  # missing
        assert (await post(answer_url, form, plivo_headers(answer_url, form, token="wrong"))).status == 403
        elsewhere = plivo_headers("https://evil.example/plivo/answer", form)
        assert (await post(answer_url, form, elsewhere)).status == 403
        tampered = plivo_headers(answer_url, form)
        assert (await post(answer_url, {**form, "From": "19005550000"}, tampered)).status == 403
        after = bridge.base_url + "/plivo/after-stream"
        assert (await post(after, form)).status == 403
        transfer = bridge.base_url + "/plivo/transfer?to=%2B15550001111"
        assert (await post(transfer, form)).status == 403
        assert emulator.sessions == [] and len(bridge.bridge.prepared) == 0


async def test_a_stream_token_is_good_once_and_only_for_its_call() -> None:
    async with running_emulator() as (emulator, url), plivo_bridge(url) as bridge:
        call_uuid = "6f3a6c6e-0000-4000-8000-000000000003"
        answer = await answer_call(bridge, call_uuid)
        # The token, replayed on another call's stream, is refused.
        other = caller_from(answer, "6f3a6c6e-0000-4000-8000-00000000000f")
        await other.connect()
        await other.wait_closed(timeout_s=5)
        await other.hangup()
        assert other.close_code == 1008
        first = caller_from(answer, call_uuid)
        async with first:
            await emulator.wait_for_session()
            await first.wait_heard(min_ms=0, timeout_s=1)
            # Replayed once the first stream has it: refused.
            replay = caller_from(answer, call_uuid)
            await replay.connect()
            await replay.wait_closed(timeout_s=5)
            await replay.hangup()
            assert replay.close_code == 1008 and replay.playout.played_ms_total == 0
            assert not first.ended
        # No token at all: refused too.
        bare = PlivoCallerEmulator(
            answer.stream().text or "", call_sid="6f3a6c6e-0000-4000-8000-00000000000e"
        )
        await bare.connect()
        await bare.wait_closed(timeout_s=5)
        await bare.hangup()
        assert bare.close_code == 1008


def band_energy_ratio(pcm16: bytes) -> tuple[float, float]:
    import numpy as np

    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    if len(x) < 64:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    return float(spectrum[np.abs(freqs - REPLY_HZ) < 40].sum()), float(
        spectrum[np.abs(freqs - CALLER_HZ) < 40].sum()
    )


async def test_barge_in_on_a_bad_line_truncates_at_what_the_caller_heard() -> None:
    async with (
        running_emulator() as (emulator, url),
        plivo_bridge(url, GREETING="Read the announcement.") as bridge,
    ):
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(8000, REPLY_HZ, rate=24000, dbfs=-12), transcript="long")
        )
        call_uuid = "6f3a6c6e-0000-4000-8000-000000000004"
        caller = caller_from(await answer_call(bridge, call_uuid), call_uuid, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            start = caller.started_ms or 0.0
            await caller.wait_heard(min_ms=1500, timeout_s=20, since_ms=start)
            utterance = caller.say(tone(400, CALLER_HZ))
            await caller.wait_said(utterance, timeout_s=5)
            await caller.wait_until(
                lambda: bool(caller.playout.clears) and bool(session.truncations), timeout_s=5
            )
            await asyncio.sleep(0.3)  # anything the bridge wrongly lets through would arrive now
            clear = caller.playout.clears[0]
            played = caller.playout.played_ms_between(start, clear.received_at_ms)
            after_clear = caller.playout.heard_pcm(include_silence=False, from_ms=clear.received_at_ms)
        truncate = session.truncations[0]
        # The bridge's figure comes from playedStream echoes that each crossed a 40 ± 15 ms line: it is
        # held to the same 40 ms as Twilio's (tests/test_e2e_barge_in.py), about one jitter-free round
        # trip, since the ledger only ever uses the line's fastest measured trip.
        assert abs(truncate["audio_end_ms"] - played) <= 40, (truncate["audio_end_ms"], played)
        assert 1500 <= played < 8000
        reply, caller_voice = band_energy_ratio(after_clear)
        assert reply < 1e-3 * max(caller_voice, 1.0)  # nothing of the reply played after the clear
        assert caller.cleared_answered == 1  # clearAudio was answered with clearedAudio
        assert caller.protocol_errors == [] and session.rejected == []


async def test_transfer_through_the_call_api_dials_the_number() -> None:
    api = PlivoApiStandIn(AUTH_ID, AUTH_TOKEN)
    api_base = await api.start()
    try:
        async with (
            running_emulator() as (emulator, url),
            plivo_bridge(
                url, TRANSFER_NUMBER="+15550001111", PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_BASE=api_base
            ) as bridge,
        ):
            emulator.script_reply(
                ScriptedReply(audio_pcm24k=tone(800, 700, rate=24000), transcript="Transferring.")
            )
            emulator.script_reply(ScriptedReply(tool_call=("transfer_call", {"reason": "wants a human"})))
            call_uuid = "6f3a6c6e-0000-4000-8000-000000000005"
            caller = caller_from(await answer_call(bridge, call_uuid), call_uuid)
            await caller.connect()
            try:
                caller.say(tone(500, 400))  # "I want a human" -> the preamble
                await caller.wait_heard(min_ms=600, timeout_s=10)
                caller.say(tone(500, 400))  # the next turn: the model calls transfer_call
                await eventually(lambda: bool(api.documents), timeout_s=15)
                await caller.wait_closed(timeout_s=10)
            finally:
                await caller.hangup()
            [request] = api.requests
            assert request.path == f"/v1/Account/{AUTH_ID}/Call/{call_uuid}/" and request.auth_user == AUTH_ID
            assert request.body["legs"] == "aleg" and request.body["aleg_method"] == "POST"
            # What Plivo fetched from aleg_url (signed, like any callback): a Dial to the number.
            [document] = api.documents
            assert document.status == 200
            root = ElementTree.fromstring(document.xml.split("\n", 1)[1])
            assert [e.tag for e in root] == ["Dial"] and root[0][0].text == "15550001111"
            call = await bridge.logged_call(call_uuid)
            assert call is not None and call["end_reason"] == "transferred"
    finally:
        await api.stop()


async def test_a_transfer_with_the_wrong_credentials_is_told_to_the_model() -> None:
    api = PlivoApiStandIn(AUTH_ID, "the-real-token")
    api_base = await api.start()
    try:
        async with (
            running_emulator() as (emulator, url),
            plivo_bridge(
                url, TRANSFER_NUMBER="+15550001111", PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_BASE=api_base
            ) as bridge,
        ):
            emulator.script_reply(ScriptedReply(tool_call=("transfer_call", {"reason": "wants a human"})))
            call_uuid = "6f3a6c6e-0000-4000-8000-000000000006"
            caller = caller_from(await answer_call(bridge, call_uuid), call_uuid)
            async with caller:
                session = await emulator.wait_for_session()
                caller.say(tone(500, 400))
                await eventually(lambda: bool(api.requests), timeout_s=15)

                def outputs() -> list[str]:
                    return [
                        e["item"]["output"]
                        for e in session.client_events
                        if e["type"] == "conversation.item.create"
                        and e["item"]["type"] == "function_call_output"
                    ]

                await eventually(lambda: bool(outputs()), timeout_s=5)
                # The model hears that it failed (the bridge keeps the HTTP detail for its log).
                assert "failed" in outputs()[0] and "the-real-token" not in outputs()[0]
                assert not caller.ended  # the call goes on
            assert api.documents == []
    finally:
        await api.stop()


async def test_when_full_callers_hear_a_busy_message_or_go_to_the_fallback() -> None:
    async with running_emulator() as (_, url), plivo_bridge(url, MAX_CALLS="1") as bridge:
        assert (await answer_call(bridge, "6f3a6c6e-0000-4000-8000-000000000007")).status == 200
        busy = await answer_call(bridge, "6f3a6c6e-0000-4000-8000-000000000008")
        assert busy.status == 200 and busy.root.findall("Stream") == []
        assert [e.tag for e in busy.root] == ["Speak", "Hangup"] and "busy" in (busy.root[0].text or "")
    async with (
        running_emulator() as (_, url),
        plivo_bridge(url, MAX_CALLS="1", FALLBACK_NUMBER="+15550002222") as bridge,
    ):
        await answer_call(bridge, "6f3a6c6e-0000-4000-8000-000000000009")
        busy = await answer_call(bridge, "6f3a6c6e-0000-4000-8000-00000000000a")
        assert [e.tag for e in busy.root] == ["Speak", "Dial"] and busy.root[1][0].text == "15550002222"


async def test_after_a_failed_call_the_redirect_goes_to_the_fallback_number() -> None:
    async with (
        running_emulator() as (_, url),
        plivo_bridge(url, FALLBACK_NUMBER="+15550002222") as bridge,
    ):
        after = bridge.base_url + "/plivo/after-stream"
        form = {"CallUUID": "6f3a6c6e-0000-4000-8000-00000000000b", "CallStatus": "in-progress"}
        hangup = await post(after, form, plivo_headers(after, form))
        assert [e.tag for e in hangup.root] == ["Hangup"]  # a call we did not fail just ends
        bridge.bridge.stream_failed(form["CallUUID"], "upstream_failure")
        fallback = await post(after, form, plivo_headers(after, form))
        assert [e.tag for e in fallback.root] == ["Dial"] and fallback.root[0][0].text == "15550002222"
