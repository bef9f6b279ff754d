"""The websocket leg when the carrier is gone: audio still on its way when the caller hung up (a
carrier that ends a call by closing the socket, as Vonage does) is dropped, not a failure of the call."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from structlog.testing import capture_logs

from bridge import media_stream
from bridge.carrier.events import Mark, PlayAudio
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.logs import get_logger
from bridge.websocket_leg import WebSocketLeg
from tests.carriers.test_twilio_codec import start_message
from tests.e2e import eventually, running_bridge, running_emulator, serving


async def test_audio_for_a_caller_who_just_hung_up_is_dropped_quietly() -> None:
    sent: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        codec = TwilioCodec()
        codec.decode(start_message())
        leg = WebSocketLeg(ws, codec, get_logger("test"))
        transport = request.transport
        assert transport is not None
        # The caller's side is gone; the pump has not read the socket since, so it does not know yet.
        await eventually(transport.is_closing)
        try:
            await leg.send(PlayAudio(bytes(160)))
            await leg.send(Mark("a1"))
        except BaseException as exc:
            sent.set_result(exc)
        else:
            sent.set_result(None)
        return ws

    app = web.Application()
    app.router.add_get("/media", media)
    with capture_logs():
        async with serving(app) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    f"GET /media HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            writer.transport.abort()  # the carrier drops the connection: no close frame, no stop
            assert await asyncio.wait_for(sent, 5) is None


async def test_a_quiet_stream_is_pinged_and_closed_only_when_it_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(media_stream, "HEARTBEAT_S", 0.2)
    async with (
        running_emulator() as (_, url),
        running_bridge(url) as bridge,
        aiohttp.ClientSession() as http,
    ):
        # A carrier that sends its start, then nothing, but answers pings: its call goes on.
        async with http.ws_connect(bridge.media_url, autoping=False) as answering:
            await answering.send_str(start_message(callSid="CA" + "1" * 32))
            await answering.ping(b"are you there")
            pings, pong = 0, None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.2):
                    async for msg in answering:
                        if msg.type is WSMsgType.PING:
                            pings += 1
                            await answering.pong(msg.data)
                        elif msg.type is WSMsgType.PONG:
                            pong = msg.data
            assert pong == b"are you there"  # the bridge answers the carrier's pings too
            assert pings >= 3 and not answering.closed
            assert "CA" + "1" * 32 in bridge.bridge.active_calls

        # One that goes quiet and does not answer: pinged once, closed half a heartbeat later.
        async with http.ws_connect(bridge.media_url, autoping=False) as silent:
            await silent.send_str(start_message(callSid="CA" + "2" * 32))
            await asyncio.sleep(0.8)  # not reading: no pong goes back
            received = []
            async with asyncio.timeout(2):
                while (msg := await silent.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                    received.append(msg.type)
            assert received.count(WSMsgType.PING) == 1
            assert (msg.data, msg.extra) == (1001, "no pong")
        await eventually(lambda: "CA" + "2" * 32 not in bridge.bridge.active_calls)
