import asyncio
import audioop
import base64
import json
import random
import wave
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from bridge.clock import now_ms
from bridge.dial import dial
from bridge.sim.carrier_emulator import (
    DelayLine,
    LineConditions,
    OutboundError,
    TwilioCallerEmulator,
    parse_outbound,
)
from bridge.sim.playout import MarkStatus


class FakeBridge:
    """The server side of the media stream: records what the emulator sends, lets the test send back."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.headers: dict[str, str] = {}
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.ws: web.WebSocketResponse | None = None
        self.url = ""
        self.voice_url = ""
        self.webhooks: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/twilio/media", self._handle)
        app.router.add_post("/twilio/voice", self._voice)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/twilio/media"
        self.voice_url = f"http://127.0.0.1:{port}/twilio/voice"

    async def _voice(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.webhooks.append(form)
        twiml = (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{self.url}" name="b">'
            f'<Parameter name="from" value="{form["From"]}" /><Parameter name="stream_token" value="t1" />'
            "</Stream></Connect></Response>"
        )
        return web.Response(text=twiml, content_type="text/xml")

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        self.headers = dict(request.headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        self.connected.set()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.received.append((now_ms(), json.loads(message.data)))
        self.closed.set()
        return ws

    def events(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if m.get("event") == kind]

    def echoes(self) -> list[tuple[float, str]]:
        return [(t, m["mark"]["name"]) for t, m in self.events("mark")]

    async def send(self, message: dict[str, Any]) -> float:
        assert self.ws is not None
        sent = now_ms()
        await self.ws.send_str(json.dumps(message))
        return sent

    async def media(self, sid: str, ulaw: bytes) -> float:
        payload = base64.b64encode(ulaw).decode()
        return await self.send({"event": "media", "streamSid": sid, "media": {"payload": payload}})

    async def mark(self, sid: str, name: str) -> float:
        return await self.send({"event": "mark", "streamSid": sid, "mark": {"name": name}})

    async def wait_for(self, predicate, timeout_s: float = 3.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)


@pytest.fixture
async def bridge() -> AsyncIterator[FakeBridge]:
    server = FakeBridge()
    await server.start()
    yield server
    await server.stop()


def ulaw_ms(ms: int) -> bytes:
    return bytes([0x10]) * (ms * 8)


async def test_connected_start_and_realtime_frames(bridge: FakeBridge) -> None:
    emu = TwilioCallerEmulator(
        bridge.url,
        custom_parameters={"tenant": "acme"},
        headers={"X-Twilio-Signature": "sig"},
        call_sid="CA" + "1" * 32,
    )
    await emu.connect()
    await asyncio.sleep(1.0)
    await emu.hangup()
    await bridge.wait_for(bridge.closed.is_set)

    assert bridge.headers["X-Twilio-Signature"] == "sig"
    messages = [m for _, m in bridge.received]
    assert messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = messages[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    body = start["start"]
    assert body["callSid"] == "CA" + "1" * 32
    assert body["streamSid"] == start["streamSid"] == emu.stream_sid
    for key, prefix in (("accountSid", "AC"), ("streamSid", "MZ"), ("callSid", "CA")):
        assert len(body[key]) == 34 and body[key].startswith(prefix)
    assert body["tracks"] == ["inbound"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert body["customParameters"] == {"tenant": "acme"}

    media = [m for m in messages if m["event"] == "media"]
    assert 40 <= len(media) <= 55
    assert emu.sent_frames == len(media)
    for i, m in enumerate(media):
        assert m["media"]["chunk"] == str(i + 1)
        assert m["media"]["timestamp"] == str(i * 20)
        assert m["media"]["track"] == "inbound"
        assert base64.b64decode(m["media"]["payload"]) == b"\xff" * 160
    sequence = [int(m["sequenceNumber"]) for m in messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    assert all(isinstance(m["sequenceNumber"], str) for m in messages[1:])
    assert messages[-1]["event"] == "stop"
    assert messages[-1]["stop"] == {"accountSid": emu.account_sid, "callSid": emu.call_sid}
    assert not emu.closed_by_server


async def test_caller_speech_is_sent_in_frames_and_timed(bridge: FakeBridge) -> None:
    pcm = (b"\x00\x10" * 400) + (b"\x00\xf0" * 400)  # 100 ms of PCM16
    async with TwilioCallerEmulator(bridge.url) as emu:
        first = emu.say(pcm)
        second = emu.say(pcm[:200], at_ms=400.0)
        await emu.wait_said(second, timeout_s=2.0)
    assert first.frames == 5 and second.frames == 1
    assert first.spoken_end_ms - first.spoken_start_ms == pytest.approx(100.0)
    assert second.spoken_start_ms - emu.started_ms == pytest.approx(400.0)
    assert second.spoken_end_ms - second.spoken_start_ms == pytest.approx(12.5)
    assert first.sent_start_ms is not None and first.sent_end_ms >= first.sent_start_ms
    assert first.sent_end_ms >= first.spoken_end_ms - 1.0

    frames = [
        (int(m["media"]["timestamp"]), base64.b64decode(m["media"]["payload"]))
        for _, m in bridge.events("media")
    ]
    spoken = [(ts, f) for ts, f in frames if f != b"\xff" * 160]
    assert b"".join(f for _, f in spoken[:5]) == audioop.lin2ulaw(pcm, 2)
    assert spoken[5] == (400, audioop.lin2ulaw(pcm[:200], 2) + b"\xff" * 60)
    assert len(spoken) == 6


async def test_media_is_played_and_marks_echoed_in_order(bridge: FakeBridge) -> None:
    async with TwilioCallerEmulator(bridge.url) as emu:
        await bridge.wait_for(lambda: bridge.events("start"))
        sid = emu.stream_sid
        sent = now_ms()
        for name in ("a", "b", "c"):
            await bridge.media(sid, ulaw_ms(100))
            await bridge.mark(sid, name)
        await bridge.wait_for(lambda: len(bridge.echoes()) == 3)
        await emu.wait_heard(300, timeout_s=1.0)

    echoes = bridge.echoes()
    assert [name for _, name in echoes] == ["a", "b", "c"]
    for (at, _), due in zip(echoes, (100, 200, 300), strict=True):
        assert due - 5 <= at - sent <= due + 80
    marks = emu.playout.marks
    assert [m.status for m in marks] == [MarkStatus.PLAYED] * 3
    assert [m.echoed_at_ms - marks[0].received_at_ms for m in marks] == pytest.approx([100, 200, 300], abs=5)
    assert all(m.echo_sent_at_ms is not None and m.echo_sent_at_ms >= m.echoed_at_ms for m in marks)
    assert emu.playout.played_ms_total == 300.0
    assert emu.protocol_errors == []


async def test_clear_mid_playback(bridge: FakeBridge) -> None:
    async with TwilioCallerEmulator(bridge.url) as emu:
        await bridge.wait_for(lambda: bridge.events("start"))
        sid = emu.stream_sid
        await bridge.media(sid, ulaw_ms(1000))
        await bridge.mark(sid, "long")
        await emu.wait_heard(200, timeout_s=2.0)
        cleared = await bridge.send({"event": "clear", "streamSid": sid})
        await bridge.wait_for(lambda: bridge.echoes())
        echo_at = bridge.echoes()[0][0]
        await bridge.media(sid, ulaw_ms(50))
        await emu.wait_quiet(50, timeout_s=2.0)

    assert echo_at - cleared < 100
    (clear,) = emu.playout.clears
    assert clear.marks_echoed == ["long"]
    played_before = emu.playout.played_ms_between(0, clear.received_at_ms)
    assert clear.dropped_bytes == 8000 - played_before * 8
    assert 200 <= played_before < 400
    assert emu.playout.marks[0].status is MarkStatus.CLEARED
    assert emu.playout.audio_received_after_clear(0) == 400
    assert emu.playout.played_ms_since(clear.received_at_ms) == 50.0
    assert emu.playout.played_ms_total == played_before + 50.0


async def test_line_delays_apply_and_keep_order(bridge: FakeBridge) -> None:
    line = LineConditions(uplink_delay_ms=80, downlink_delay_ms=80, jitter_ms=30, seed=7)
    async with TwilioCallerEmulator(bridge.url, line=line) as emu:
        await bridge.wait_for(lambda: bridge.events("start"))
        sid = emu.stream_sid
        sent = await bridge.mark(sid, "m0")
        for i in range(1, 20):
            await bridge.mark(sid, f"m{i}")
        await bridge.wait_for(lambda: len(bridge.echoes()) == 20)
        await asyncio.sleep(0.3)

    echoes = bridge.echoes()
    assert [name for _, name in echoes] == [f"m{i}" for i in range(20)]
    assert echoes[0][0] - sent >= 2 * (80 - 30)
    first = emu.playout.marks[0]
    assert first.received_at_ms - sent >= 80 - 30 - 1
    assert first.echo_sent_at_ms - first.echoed_at_ms >= 80 - 30 - 1
    sequence = [int(m["sequenceNumber"]) for _, m in bridge.received[1:]]
    assert sequence == sorted(sequence)
    chunks = [int(m["media"]["chunk"]) for _, m in bridge.events("media")]
    assert chunks == list(range(1, len(chunks) + 1))


async def test_protocol_errors_are_recorded(bridge: FakeBridge) -> None:
    async with TwilioCallerEmulator(bridge.url) as emu:
        await bridge.wait_for(lambda: bridge.events("start"))
        sid = emu.stream_sid
        await bridge.send({"event": "playAudio", "streamSid": sid})
        await bridge.send({"event": "media", "streamSid": "MZwrong", "media": {"payload": "/w=="}})
        await bridge.send({"event": "media", "streamSid": sid, "media": {"payload": "not base64!"}})
        await bridge.send({"event": "mark", "streamSid": sid, "mark": {}})
        await bridge.ws.send_bytes(b"\xff\xff")
        await bridge.media(sid, ulaw_ms(20))
        await bridge.wait_for(lambda: len(emu.protocol_errors) == 5 and emu.playout.arrivals)

    reasons = [e.reason for e in emu.protocol_errors]
    assert "playAudio" in reasons[0]
    assert "streamSid" in reasons[1]
    assert "base64" in reasons[2]
    assert "mark.name" in reasons[3]
    assert reasons[4] == "binary frame"
    assert len(emu.playout.arrivals) == 1


async def test_dtmf_and_server_hangup(bridge: FakeBridge) -> None:
    emu = TwilioCallerEmulator(bridge.url)
    await emu.connect()
    await bridge.wait_for(lambda: bridge.events("start"))
    emu.press("5")
    with pytest.raises(ValueError):
        emu.press("x")
    await bridge.wait_for(lambda: bridge.events("dtmf"))
    assert bridge.events("dtmf")[0][1]["dtmf"] == {"track": "inbound_track", "digit": "5"}
    await bridge.ws.close(code=1000)
    await emu.wait_closed(timeout_s=2.0)
    assert emu.closed_by_server and emu.close_code == 1000
    frames = emu.sent_frames
    await asyncio.sleep(0.1)
    assert emu.sent_frames == frames
    await emu.hangup()
    assert not bridge.events("stop")


def test_delay_line_is_seeded_and_never_reorders() -> None:
    def dues(seed: int) -> list[float]:
        line = DelayLine(50.0, 40.0, random.Random(seed))
        return [line.due(float(t)) for t in range(0, 200, 2)]

    first = dues(3)
    assert first == dues(3) != dues(4)
    assert first == sorted(first)
    assert all(due >= t for due, t in zip(first, range(0, 200, 2), strict=True))
    assert min(d - t for d, t in zip(first, range(0, 200, 2), strict=True)) < 50.0


def test_parse_outbound() -> None:
    sid = "MZ" + "0" * 32
    assert parse_outbound(json.dumps({"event": "clear", "streamSid": sid}), sid) == ("clear", None)
    media = {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(b"\x01\x02").decode()}}
    assert parse_outbound(json.dumps(media), sid) == ("media", b"\x01\x02")
    mark = {"event": "mark", "streamSid": sid, "mark": {"name": "n"}}
    assert parse_outbound(json.dumps(mark), sid) == ("mark", "n")
    for bad in ("[]", "{", json.dumps({"event": "clear"}), json.dumps({"event": "media", "streamSid": sid})):
        with pytest.raises(OutboundError):
            parse_outbound(bad, sid)


def write_tone_wav(path, rate: int, channels: int, ms: int) -> None:
    t = np.arange(rate * ms // 1000) / rate
    mono = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(mono, channels).tobytes())


def caller_went_quiet(bridge: FakeBridge, after_frames: int) -> bool:
    frames = [base64.b64decode(m["media"]["payload"]) for _, m in bridge.events("media")]
    spoke = [i for i, f in enumerate(frames) if f != b"\xff" * 160]
    return bool(spoke) and len(frames) - 1 - spoke[-1] >= after_frames


async def test_dial_reports_greeting_reply_and_writes_what_was_heard(bridge: FakeBridge, tmp_path) -> None:
    wav_in, wav_out = tmp_path / "hello.wav", tmp_path / "heard.wav"
    write_tone_wav(wav_in, 16000, 2, 300)

    async def script() -> None:
        await bridge.wait_for(lambda: bridge.events("start"))
        sid = bridge.events("start")[0][1]["streamSid"]
        await bridge.media(sid, ulaw_ms(200))
        await bridge.mark(sid, "greeting")
        await bridge.wait_for(lambda: caller_went_quiet(bridge, after_frames=10), timeout_s=5.0)
        await bridge.media(sid, ulaw_ms(300))

    responder = asyncio.create_task(script())
    report = await dial(bridge.voice_url, wav_in, wav_out, greeting_wait=2.0, quiet=0.3, time_limit=10.0)
    await responder

    # Placed as Twilio places it: the webhook, then the stream it named, with its parameters.
    [webhook] = bridge.webhooks
    assert webhook["CallSid"] == report.call_sid and webhook["Direction"] == "inbound"
    start = bridge.events("start")[0][1]["start"]
    assert start["callSid"] == report.call_sid
    assert start["customParameters"] == {"from": webhook["From"], "stream_token": "t1"}

    assert report.outcome == "reply heard"
    assert report.greeting_ms is not None and report.greeting_ms < 100
    assert report.spoken_ms == pytest.approx(300.0)
    assert report.reply_latency_ms is not None and 190 <= report.reply_latency_ms < 500
    assert report.heard_ms == 500.0
    assert (report.clears, report.marks_echoed, report.protocol_errors) == (0, 1, [])
    assert not report.closed_by_server
    with wave.open(str(wav_out), "rb") as heard:
        assert (heard.getframerate(), heard.getnchannels(), heard.getsampwidth()) == (8000, 1, 2)
        seconds = heard.getnframes() / 8000
    assert 0.2 + 0.3 + 0.3 + 0.3 < seconds < 3.0
    assert any("reply heard after" in line for line in report.lines())
