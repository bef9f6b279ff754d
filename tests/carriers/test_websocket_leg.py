"""The websocket leg when the carrier is gone: audio still on its way when the caller hung up (a
carrier that ends a call by closing the socket, as Vonage does) is dropped, not a failure of the call."""

from __future__ import annotations

import asyncio
import base64
import os

from aiohttp import web
from structlog.testing import capture_logs

from bridge.carrier.events import Mark, PlayAudio
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.logs import get_logger
from bridge.websocket_leg import WebSocketLeg
from tests.carriers.test_twilio_codec import start_message
from tests.e2e import eventually, serving


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
