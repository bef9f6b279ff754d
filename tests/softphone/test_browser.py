"""The softphone page in real headless Chromium, with a fake microphone playing a recorded caller.

Writes docs/screenshots/softphone.png as it goes.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import json
import os
import pathlib
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from bridge.audio import pcm16_to_ulaw
from bridge.calllog.auth import COOKIE_NAME
from bridge.carrier.events import CallStarted
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.softphone import setup_softphone_routes
from tests.calllog.cdp import Page
from tests.e2e import tone
from tests.softphone.conftest import (
    AUTH,
    REPO,
    open_phone,
    running_softphone_bridge,
    softphone_state,
)

pytestmark = pytest.mark.browser

# The docs' copy is rewritten only on request, so a test run leaves the working tree clean.
SCREENSHOT = (
    REPO / "docs" / "screenshots"
    if os.environ.get("BRIDGE_UPDATE_SCREENSHOTS")
    else pathlib.Path(tempfile.gettempdir()) / "bridge-screenshots"
) / "softphone.png"
ULAW_SILENCE = 0xFF


class CarrierPeer:
    """Plays the bridge's side of the media socket by hand, recording what the page sends and when."""

    def __init__(self) -> None:
        self.ws: web.WebSocketResponse | None = None
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                async with self._changed:
                    self.received.append((time.monotonic(), json.loads(message.data)))
                    self._changed.notify_all()
        self.closed.set()
        return ws

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], *, after: int = 0, within: float = 5.0
    ) -> tuple[int, float, dict[str, Any]]:
        """The first message at index >= `after` that matches: (index, arrival time, message)."""

        def found() -> tuple[int, float, dict[str, Any]] | None:
            for index in range(after, len(self.received)):
                at, message = self.received[index]
                if match(message):
                    return index, at, message
            return None

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result

    async def send(self, message: dict[str, Any]) -> float:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))
        return time.monotonic()

    def media(self, event: str = "media") -> list[dict[str, Any]]:
        return [m for _, m in self.received if m["event"] == event]


@pytest.fixture
async def peer_site() -> AsyncIterator[tuple[str, CarrierPeer]]:
    peer = CarrierPeer()
    app = web.Application()
    setup_softphone_routes(app, media_handler=peer.handler, is_authorized=AUTH.authenticated)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), peer
    finally:
        await server.close()


def is_mark(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["event"] == "mark" and m["mark"]["name"] == name


def talking(message: dict[str, Any]) -> bool:
    """A media frame with anything but digital silence in it."""
    if message["event"] != "media":
        return False
    return set(base64.b64decode(message["media"]["payload"])) != {ULAW_SILENCE}


def ulaw_tone(ms: float, hz: float = 440.0) -> bytes:
    return pcm16_to_ulaw(tone(ms, hz, dbfs=-16))


async def play(peer: CarrierPeer, stream_sid: str, audio: bytes, *, message_ms: int = 100) -> None:
    step = message_ms * 8
    for i in range(0, len(audio), step):
        payload = base64.b64encode(audio[i : i + step]).decode()
        await peer.send({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


async def mark(peer: CarrierPeer, stream_sid: str, name: str) -> float:
    return await peer.send({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


# ---- the DSP, evaluated in the page -------------------------------------------------------------


async def test_ulaw_codec_matches_the_server_and_audioop(
    peer_site: tuple[str, CarrierPeer], page: Page
) -> None:
    base, _ = peer_site
    await open_phone(page, base)
    encoded = await page.evaluate(
        "import('/phone/static/dsp.js').then(({ ulawEncode }) =>"
        " Array.from({ length: 65536 }, (_, i) => ulawEncode(i - 32768)))"
    )
    decoded = await page.evaluate(
        "import('/phone/static/dsp.js').then(({ ulawDecode }) =>"
        " Array.from({ length: 256 }, (_, c) => ulawDecode(c)))"
    )
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    js = np.array(encoded, dtype=np.uint8)
    # Byte for byte what the bridge itself encodes (the G.711 16-bit reference algorithm).
    assert np.array_equal(js, np.frombuffer(pcm16_to_ulaw(every_sample), dtype=np.uint8))
    # audioop works on 14 bits and rounds 381 negative inputs one step differently; nowhere else.
    reference = np.frombuffer(audioop.lin2ulaw(every_sample, 2), dtype=np.uint8)
    differ = np.nonzero(js != reference)[0] - 32768
    assert len(differ) == 381 and differ.max() < 0
    audioop_levels = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2")
    assert decoded == audioop_levels.tolist()
    steps = np.abs(audioop_levels[js[differ + 32768]].astype(int) - audioop_levels[reference[differ + 32768]])
    assert steps.max() <= 1024  # one quantisation step of the loudest segment


RESAMPLE_JS = """
import('/phone/static/dsp.js').then(({ SincResampler }) => {
  const [inRate, outRate, hz, seconds, chunk] = %s;
  const resampler = new SincResampler(inRate, outRate);
  const total = Math.round(inRate * seconds);
  const out = [];
  for (let i = 0; i < total; i += chunk) {
    const x = new Float32Array(Math.min(chunk, total - i));
    for (let j = 0; j < x.length; j++) x[j] = 0.5 * Math.sin((2 * Math.PI * hz * (i + j)) / inRate);
    out.push(...resampler.process(x));
  }
  return out;
})
"""


async def resample_in_page(
    page: Page, in_rate: int, out_rate: int, hz: float, chunk: int = 128
) -> np.ndarray:
    out = await page.evaluate(RESAMPLE_JS % json.dumps([in_rate, out_rate, hz, 1.0, chunk]))
    return np.array(out[out_rate // 20 :])  # past the filter's start-up


def db_re_input(y: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(y**2)) / (0.5 / np.sqrt(2)) + 1e-12)


def peak_hz(y: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("mic_rate", [48000, 44100, 96000])
async def test_the_microphone_is_low_passed_before_it_is_decimated_to_8k(
    peer_site: tuple[str, CarrierPeer], page: Page, mic_rate: int
) -> None:
    base, _ = peer_site
    await open_phone(page, base)
    for hz in (300, 1000, 3000, 3400):  # the telephone band passes untouched
        y = await resample_in_page(page, mic_rate, 8000, hz)
        assert abs(db_re_input(y)) < 0.5, hz
        assert abs(peak_hz(y, 8000) - hz) < 5
    # Everything that would fold back onto the telephone band is gone (naive dropping keeps it at 0 dB).
    for hz in (4600, 5000, 7000, 9000, 12000, 20000):
        y = await resample_in_page(page, mic_rate, 8000, hz)
        assert db_re_input(y) < -60, hz


@pytest.mark.parametrize("context_rate", [48000, 44100])
async def test_playback_upsampling_leaves_no_images(
    peer_site: tuple[str, CarrierPeer], page: Page, context_rate: int
) -> None:
    base, _ = peer_site
    await open_phone(page, base)
    for hz in (300, 1000, 3000):
        y = await resample_in_page(page, 8000, context_rate, hz, chunk=27)
        assert abs(db_re_input(y)) < 0.5
        spectrum = np.abs(np.fft.rfft(y * np.blackman(len(y)))) ** 2
        freqs = np.fft.rfftfreq(len(y), 1 / context_rate)
        images = spectrum[freqs > 4300].sum() / spectrum.sum()
        assert 10 * np.log10(images + 1e-30) < -60, hz


# ---- the protocol, against a hand-driven peer ---------------------------------------------------


async def test_the_page_speaks_twilio_media_streams(peer_site: tuple[str, CarrierPeer], page: Page) -> None:
    base, peer = peer_site
    await open_phone(page, base)
    await page.evaluate("document.querySelector('#call').click()")
    await page.wait_for("window.softphone.state === 'in-call'")

    # connected, then start, then 20 ms media frames.
    await peer.wait_for(lambda m: m["event"] == "media" and m["media"]["chunk"] == "50")
    first = [m for _, m in peer.received[:3]]
    assert first[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = first[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    info = start["start"]
    stream_sid = start["streamSid"]
    assert re.fullmatch(r"MZ[0-9a-f]{32}", stream_sid) and info["streamSid"] == stream_sid
    assert re.fullmatch(r"CA[0-9a-f]{32}", info["callSid"])
    assert re.fullmatch(r"AC[0-9a-f]{32}", info["accountSid"])
    assert info["tracks"] == ["inbound"]
    assert info["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert info["customParameters"] == {"from": "browser", "to": "softphone", "direction": "browser"}
    started = TwilioCodec().decode(json.dumps(start))  # the bridge's own parser takes it
    assert isinstance(started, CallStarted) and started.custom_parameters["direction"] == "browser"

    frames = peer.media()[:50]
    for n, frame in enumerate(frames, start=1):
        assert frame["sequenceNumber"] == str(n + 1)
        assert frame["streamSid"] == stream_sid
        media = frame["media"]
        assert media["track"] == "inbound"
        assert (media["chunk"], media["timestamp"]) == (str(n), str((n - 1) * 20))
        assert len(base64.b64decode(media["payload"], validate=True)) == 160
    times = [at for at, m in peer.received if m["event"] == "media"]
    assert 0.7 <= times[49] - times[0] <= 1.3  # paced by the audio clock, not sent in a burst

    # A mark with nothing queued comes straight back.
    sent_at = await mark(peer, stream_sid, "idle")
    _, echoed_at, echo = await peer.wait_for(is_mark("idle"))
    assert echoed_at - sent_at < 0.15
    assert echo["streamSid"] == stream_sid and echo["sequenceNumber"].isdigit()

    # A mark after one second of audio comes back once that second has been played, not before.
    await play(peer, stream_sid, ulaw_tone(1000))
    sent_at = await mark(peer, stream_sid, "after-1s")
    _, echoed_at, _ = await peer.wait_for(is_mark("after-1s"), within=3)
    assert 0.95 <= echoed_at - sent_at <= 1.35
    state = await softphone_state(page)
    assert state["framesReceived"] == 10 and 7500 <= state["bytesPlayed"] <= 8000

    # clear: the queued audio is dropped at once and every pending mark comes back, in order.
    for i in range(1, 7):
        await play(peer, stream_sid, ulaw_tone(500))
        await mark(peer, stream_sid, f"half-{i}")
    index, _, _ = await peer.wait_for(is_mark("half-1"), within=3)
    await asyncio.sleep(0.2)
    cleared_at = await peer.send({"event": "clear", "streamSid": stream_sid})
    last, returned_at, _ = await peer.wait_for(is_mark("half-6"), after=index, within=3)
    assert returned_at - cleared_at < 0.15
    echoes = [m["mark"]["name"] for _, m in peer.received[index : last + 1] if m["event"] == "mark"]
    assert echoes == [f"half-{i}" for i in range(1, 7)]
    await asyncio.sleep(0.2)  # bytesPlayed is reported every 50 ms
    played_after_clear = (await softphone_state(page))["bytesPlayed"]
    await asyncio.sleep(0.5)
    state = await softphone_state(page)
    assert state["clears"] == 1
    assert state["bytesPlayed"] == played_after_clear  # nothing more of the dropped audio played
    assert 8000 + 4000 <= state["bytesPlayed"] <= 8000 + 4000 + 2400  # ~0.5 to 0.8 s of the second batch

    # Mute keeps the frames coming, as digital silence.
    await peer.wait_for(talking, after=len(peer.received), within=10)  # the recorded caller, between silences
    await page.evaluate("document.querySelector('#mute').click()")
    await asyncio.sleep(0.2)
    mark_at = len(peer.received)
    await asyncio.sleep(0.5)
    muted = [m for _, m in peer.received[mark_at:] if m["event"] == "media"]
    assert 20 <= len(muted) <= 30
    assert not any(talking(m) for m in muted)
    assert await page.evaluate("document.querySelector('#mute').getAttribute('aria-pressed')") == "true"

    # Hang up: a stop, numbered like everything else, then the socket closes.
    await page.evaluate("document.querySelector('#hangup').click()")
    _, _, stop = await peer.wait_for(lambda m: m["event"] == "stop")
    assert stop["stop"] == {"accountSid": info["accountSid"], "callSid": info["callSid"]}
    assert stop["streamSid"] == stream_sid
    await asyncio.wait_for(peer.closed.wait(), 5)
    numbers = [int(m["sequenceNumber"]) for _, m in peer.received[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert (await softphone_state(page))["state"] == "ended"


async def test_a_refused_socket_fails_the_call_visibly(
    peer_site: tuple[str, CarrierPeer], page: Page
) -> None:
    base, peer = peer_site
    await open_phone(page, base)
    await page.send("Network.deleteCookies", name=COOKIE_NAME, url=base)  # signed out in another tab
    await page.evaluate("document.querySelector('#call').click()")
    await page.wait_for("window.softphone.state === 'failed'")
    assert "Could not reach the bridge" in await page.evaluate("document.querySelector('#log').innerText")
    assert await page.evaluate("document.querySelector('#call').disabled") is False  # can try again
    assert peer.ws is None


# ---- a real call through the bridge -------------------------------------------------------------


async def test_a_browser_call_through_the_bridge_with_barge_in(page: Page) -> None:
    async with running_softphone_bridge(GREETING="Greet the caller.") as bridge:
        await open_phone(page, bridge.base_url)
        await page.evaluate("document.querySelector('#call').click()")
        await page.wait_for("window.softphone.state === 'in-call'")
        session = await bridge.emulator.wait_for_session()

        # The greeting plays; the recorded caller starts talking 2.5 s in, over it: a barge-in.
        await page.wait_for("window.softphone.firstAudioMs !== null && window.softphone.marksEchoed > 5")
        await page.wait_for("window.softphone.clears >= 1", within=15)
        assert any(event == "input_audio_buffer.speech_started" for _, event in session.sent_log)

        # After the caller stops, the assistant answers (the emulator says it back) and the page plays it.
        played_at_clear = (await softphone_state(page))["bytesPlayed"]
        await page.wait_for(f"window.softphone.bytesPlayed > {played_at_clear + 8000}", within=15)
        await page.screenshot(SCREENSHOT)
        heard = np.frombuffer(bytes(session.appended_pcm), dtype="<i2").astype(np.float64)
        windows = heard[: len(heard) // 800 * 800].reshape(-1, 800)  # 100 ms at 8 kHz
        loudest = 20 * np.log10(np.sqrt((windows**2).mean(axis=1)).max() / 32768)
        assert loudest > -35  # the model got the caller's speech

        state = await softphone_state(page)
        assert state["framesReceived"] > 0 and state["marksEchoed"] > 10
        assert 0 < state["firstAudioMs"] < 2000
        assert state["framesSent"] > 300

        await page.evaluate("document.querySelector('#hangup').click()")
        await page.wait_for("window.softphone.state === 'ended'")
        await page.wait_for("document.querySelector('#fig-barge-ins').textContent !== '0'")
        # The finished call's page in the call log is a click away.
        assert await page.evaluate("document.querySelector('#call-link').hidden") is False
        link = await page.evaluate("document.querySelector('#call-link a').getAttribute('href')")
        for _ in range(50):
            if bridge.call_log.ended:
                break
            await asyncio.sleep(0.1)

    (call,) = bridge.call_log.started
    assert call["direction"] == "browser" and call["from_number"] == "browser"
    assert link == f"/calls/{call['call_id']}"
    assert bridge.call_log.ended == [(call["call_id"], "caller_hangup")]
    barge_ins = [data for _, kind, data in bridge.call_log.events if kind == "barge_in"]
    assert len(barge_ins) >= 1 and barge_ins[0]["heard_ms"] > 500
    assert session.rejected == []
