"""Vonage end to end through real loopback sockets: the answer URL's NCCO is followed as Vonage would
(its uri, its content-type, its headers), the Vonage caller emulator plays 16 kHz L16 in real time,
and the Realtime emulator records what the model was told. Wideband is checked with 6 kHz tones,
which a narrowband (8 kHz) line cannot carry at all."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import numpy as np
import pytest

from bridge.sim.carrier_emulator import LineConditions
from bridge.sim.realtime_emulator import ScriptedReply, greeting_pcm24k
from bridge.sim.vonage_caller import VonageCallerEmulator
from bridge.wavfile import read_wav_mono
from tests.e2e import (
    RunningBridge,
    dominant_hz,
    eventually,
    message_texts,
    running_bridge,
    running_emulator,
    samples,
    similarity,
    stored_call,
    tone,
)

pytestmark = pytest.mark.e2e

SECRET = "vonage-signature-secret-for-the-e2e-tests-0123456789"
CALLER = "447700900123"
OUR_NUMBER = "447700900000"
WIDEBAND_HZ = 6000.0  # above the 4 kHz a narrowband line can carry
MOBILE = LineConditions(uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=15, playout_delay_ms=60, seed=7)


def vonage_jwt(body: bytes = b"", *, secret: str = SECRET) -> str:
    claims: dict[str, Any] = {"iat": int(time.time()), "jti": "e2e", "iss": "Vonage", "application_id": "app"}
    if body:
        claims["payload_hash"] = hashlib.sha256(body).hexdigest()
    return "Bearer " + jwt.encode(claims, secret, algorithm="HS256")


async def answer(
    bridge: RunningBridge,
    uuid: str,
    *,
    authorization: str | None = None,
    post: bool = False,
    record: bool = False,
) -> tuple[int, Any]:
    """Ask the answer URL for an NCCO, as Vonage does (GET with a query, or POST with JSON); `record`:
    the answer URL the operator configured asks for a recording (`?record=1`)."""
    params = {"uuid": uuid, "conversation_uuid": "CON-" + uuid, "from": CALLER, "to": OUR_NUMBER}
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as http:
        url = bridge.base_url + "/vonage/answer" + ("?record=1" if record else "")
        if post:
            request = http.post(url, json=params, headers=headers)
        else:
            request = http.get(url, params=params, headers=headers)
        async with request as response:
            body = await response.json() if response.status == 200 else None
            return response.status, body


def caller_from_ncco(ncco: Any, uuid: str, **kwargs: Any) -> VonageCallerEmulator:
    """Vonage follows the NCCO: connect to its uri, in its content-type, sending back its headers."""
    (action,) = ncco
    assert action["action"] == "connect"
    (endpoint,) = action["endpoint"]
    assert endpoint["type"] == "websocket"
    caller = VonageCallerEmulator(
        endpoint["uri"], custom_parameters=endpoint["headers"], call_sid=uuid, **kwargs
    )
    assert endpoint["content-type"] == caller.content_type
    return caller


async def answered_caller(
    bridge: RunningBridge, uuid: str, *, record: bool = False, **kwargs: Any
) -> VonageCallerEmulator:
    status, ncco = await answer(bridge, uuid, record=record)
    assert status == 200
    return caller_from_ncco(ncco, uuid, **kwargs)


def resampled(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Reference resampling through a WAV file: independent of any call's resampler state."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(from_rate)
            w.writeframes(pcm)
        return read_wav_mono(path, to_rate)


def band_energy(pcm16: bytes, hz: float, rate: int = 16000) -> float:
    x = samples(pcm16)
    if len(x) < 64:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    return float(spectrum[np.abs(np.fft.rfftfreq(len(x), 1 / rate) - hz) < 40].sum())


def rms(pcm: bytes) -> float:
    x = samples(pcm)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


async def test_greeting_is_heard_and_caller_speech_reaches_the_model() -> None:
    speech = read_wav_mono("bridge/sim/assets/caller.wav", 8000)
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, CARRIERS="vonage", GREETING="Greet the caller.") as bridge,
    ):
        caller = await answered_caller(bridge, "aaaaaaaa-0000-0000-0000-000000000001")
        async with caller:
            session = await emulator.wait_for_session()
            await caller.wait_heard(min_ms=1000, timeout_s=10)
            heard = caller.playout.heard_pcm(include_silence=False)
            greeting_16k = resampled(greeting_pcm24k(), 24000, 16000)
            assert similarity(heard, greeting_16k[: len(heard)]) > 0.9
            utterance = caller.say(speech)
            await caller.wait_said(utterance, timeout_s=10)
        await eventually(lambda: session.closed)
        assert caller.protocol_errors == []
        assert session.rejected == []
        assert session.input_rate == 24000
        # Every 20 ms frame of 320 samples at 16 kHz became exactly 480 samples at 24 kHz.
        assert len(session.appended_pcm) == caller.sent_frames * 480 * 2
        assert (
            similarity(bytes(session.appended_pcm), read_wav_mono("bridge/sim/assets/caller.wav", 24000))
            > 0.9
        )


async def test_wideband_audio_is_kept_both_ways() -> None:
    model_tone = tone(1200, WIDEBAND_HZ, rate=24000, dbfs=-12)
    caller_tone = tone(800, WIDEBAND_HZ, rate=16000, dbfs=-12)
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, CARRIERS="vonage", GREETING="Play the tone.") as bridge,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=model_tone, transcript="tone"))
        caller = await answered_caller(bridge, "aaaaaaaa-0000-0000-0000-000000000002")
        async with caller:
            session = await emulator.wait_for_session()
            await caller.wait_heard(min_ms=1100, timeout_s=10)
            await caller.wait_quiet(quiet_ms=200, timeout_s=10)
            heard = caller.playout.heard_pcm(include_silence=False)
            utterance = caller.say_line(caller_tone)
            await caller.wait_said(utterance, timeout_s=10)
            await asyncio.sleep(0.1)
        await eventually(lambda: session.closed)
        assert caller.protocol_errors == []
        # The model's 6 kHz reached the caller at its level (16 kHz line: nothing above 8 kHz is lost).
        assert abs(dominant_hz(heard, rate=16000) - WIDEBAND_HZ) < 20
        middle = heard[len(heard) // 4 : 3 * len(heard) // 4]
        assert 0.8 < rms(middle) / rms(model_tone) < 1.1
        # The caller's 6 kHz reached the model at 24 kHz with its energy (a narrowband line gives ~0).
        appended = bytes(session.appended_pcm)
        assert abs(dominant_hz(appended, rate=24000) - WIDEBAND_HZ) < 20
        energy_in = float(np.sum(samples(caller_tone) ** 2)) * 24000 / 16000
        energy_out = float(np.sum(samples(appended) ** 2))
        assert 0.8 < energy_out / energy_in < 1.1


async def test_keypad_digits_reach_the_model() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, CARRIERS="vonage") as bridge:
        caller = await answered_caller(bridge, "aaaaaaaa-0000-0000-0000-000000000003")
        async with caller:
            session = await emulator.wait_for_session()
            for digit in "42#":
                caller.press(digit)
            await eventually(lambda: any("42#" in text for text in message_texts(session)), timeout_s=5)
        assert session.rejected == []
        assert caller.protocol_errors == []


async def test_barge_in_on_a_bad_line_truncates_at_what_the_caller_heard() -> None:
    reply = tone(8000, 500, rate=24000, dbfs=-12)
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, CARRIERS="vonage", GREETING="Read the long announcement.") as bridge,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=reply, transcript="announcement"))
        uuid = "aaaaaaaa-0000-0000-0000-000000000004"
        caller = await answered_caller(bridge, uuid, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            start = caller.started_ms or 0.0
            await caller.wait_heard(min_ms=1500, timeout_s=20, since_ms=start)
            utterance = caller.say(tone(400, 1200))
            await caller.wait_said(utterance, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 1, timeout_s=5)
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            await asyncio.sleep(0.3)  # anything let through after the clear would arrive now
            clear_at = caller.playout.clears[0].received_at_ms
            played_ms = caller.playout.played_ms_between(start, clear_at)
            after_clear = caller.playout.heard_pcm(include_silence=False, from_ms=clear_at)
        assert caller.protocol_errors == []
        assert session.rejected == []
        audio_end_ms = session.truncations[0]["audio_end_ms"]
        # The ledger's figure moves by the error of its round-trip estimate: the clear's own trip and
        # the echo it anchors on each vary by up to the ±15 ms jitter, plus a few ms of scheduling.
        assert abs(audio_end_ms - played_ms) <= 40, (audio_end_ms, played_ms)
        assert 1000 < played_ms < 3000  # the caller really talked over the reply, not after it
        # Nothing of the 500 Hz reply was heard after the clear (the caller's own 1200 Hz echo may be).
        assert band_energy(after_clear, 500) < 1e-3 * max(band_energy(after_clear, 1200), 1.0)


async def test_the_call_log_row_names_vonage() -> None:
    uuid = "aaaaaaaa-0000-0000-0000-000000000005"
    async with running_emulator() as (_, url), running_bridge(url, CARRIERS="vonage") as bridge:
        caller = await answered_caller(bridge, uuid)
        async with caller:
            caller.say(tone(300, 400))
            await caller.wait_until(lambda: caller.sent_frames >= 25, timeout_s=5)
        call_log_url = bridge.bridge.settings.call_log_url
        row: dict[str, Any] = {}

        async def ended() -> bool:
            row.update(await stored_call(call_log_url, uuid) or {})
            return bool(row.get("ended_at"))

        for _ in range(100):
            if await ended():
                break
            await asyncio.sleep(0.05)
    assert row["carrier"] == "vonage"
    assert row["from_number"] == CALLER and row["to_number"] == OUR_NUMBER
    assert row["direction"] == "inbound"


async def test_only_signed_webhooks_and_streams_with_their_token_get_a_call() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, CARRIERS="vonage", VONAGE_SIGNATURE_SECRET=SECRET, GREETING="Greet.") as bridge,
    ):
        uuid = "aaaaaaaa-0000-0000-0000-000000000006"
        assert (await answer(bridge, uuid))[0] == 403  # missing
        assert (await answer(bridge, uuid, authorization=vonage_jwt(secret="x" * 48)))[0] == 403  # forged
        assert (await answer(bridge, uuid, authorization="Bearer abc.def.ghi"))[0] == 403
        # A POSTed answer signs its body: a token for another body does not pass.
        assert (await answer(bridge, uuid, authorization=vonage_jwt(b'{"uuid": "x"}'), post=True))[0] == 403
        await asyncio.sleep(0.1)
        assert emulator.sessions == []  # nothing was opened or paid for on behalf of a forged request

        status, ncco = await answer(bridge, uuid, authorization=vonage_jwt())
        assert status == 200
        headers = ncco[0]["endpoint"][0]["headers"]
        assert headers["stream_token"]

        async with aiohttp.ClientSession() as http:
            event = b'{"uuid": "%s", "status": "answered"}' % uuid.encode()
            refused = await http.post(bridge.base_url + "/vonage/event", data=event)
            assert refused.status == 403
            accepted = await http.post(
                bridge.base_url + "/vonage/event", data=event, headers={"Authorization": vonage_jwt(event)}
            )
            assert accepted.status == 204
            # Signed but not JSON, or nested past the stack: a clear 400 either way.
            for junk in (b"{not json", b'{"a":' * 5000 + b"1" + b"}" * 5000):
                rejected = await http.post(
                    bridge.base_url + "/vonage/event", data=junk, headers={"Authorization": vonage_jwt(junk)}
                )
                assert rejected.status == 400

        # No token in the headers: refused at websocket:connected.
        tokenless = {k: v for k, v in headers.items() if k != "stream_token"}
        stranger = VonageCallerEmulator(
            ncco[0]["endpoint"][0]["uri"], custom_parameters=tokenless, call_sid=uuid
        )
        await stranger.connect()
        await stranger.wait_closed(timeout_s=5)
        await stranger.hangup()
        assert stranger.close_code == 1008

        caller = caller_from_ncco(ncco, uuid)
        async with caller:
            await caller.wait_heard(min_ms=300, timeout_s=10)
        assert caller.protocol_errors == []

        await eventually(lambda: not bridge.bridge.active_calls)  # refused for its token, not as a duplicate
        replay = caller_from_ncco(ncco, uuid)  # the same NCCO headers, captured and sent again
        await replay.connect()
        await replay.wait_closed(timeout_s=5)
        await replay.hangup()
        assert replay.close_code == 1008  # a captured stream token cannot be replayed

        post_uuid = "aaaaaaaa-0000-0000-0000-000000000007"
        body = b'{"uuid": "%s", "conversation_uuid": "CON-%s", "from": "%s", "to": "%s"}' % (
            post_uuid.encode(),
            post_uuid.encode(),
            CALLER.encode(),
            OUR_NUMBER.encode(),
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                bridge.base_url + "/vonage/answer",
                data=body,
                headers={"Authorization": vonage_jwt(body), "Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 200
            posted_ncco = await response.json()
        assert posted_ncco[0]["endpoint"][0]["headers"]["call_id"] == post_uuid


async def test_a_hang_up_mid_reply_keeps_what_was_heard_though_vonage_sends_no_stop() -> None:
    """Vonage ends a call by closing the socket: the call still learns of it and keeps the reply's
    heard part, marked cut."""
    transcript = "Your order shipped on Monday and should reach you by Thursday this week."
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, CARRIERS="vonage", GREETING="Answer.") as bridge,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(8000, 500, rate=24000), transcript=transcript))
        uuid = "aaaaaaaa-0000-0000-0000-00000000cafe"
        caller = await answered_caller(bridge, uuid)
        async with caller:
            await caller.wait_heard(min_ms=1000, timeout_s=10)
        call = await bridge.logged_call(uuid)
        assert call is not None and call["end_reason"] == "caller_hangup"
        [line] = [e["data"] for e in call["events"] if e["kind"] == "assistant_transcript"]
        assert line["interrupted"] is True and line["cut_by"] == "caller_hangup"
        assert 0 < line["heard_ms"] < 8000 and transcript.startswith(line["full_text"])
        assert line["text"] and line["full_text"].startswith(line["text"]) and line["text"] != transcript
