"""The floor: the least a relay on aiohttp + uvloop can spend on bench/load.py's traffic.

    .venv/bin/python bench/load.py --calls 100 --seconds 20 --passthrough \
        --bridge-command ".venv/bin/python bench/floor_relay.py"

It does only what no bridge can do without, with the bridge's own libraries and codecs: it answers the
voice webhook, relays each caller frame to the Realtime emulator as one `input_audio_buffer.append`
(transcoded with `bridge.audio.Transcoder` unless AUDIO_PASSTHROUGH=true), plays each model delta back as
one `media` message and one `mark` (the bridge's pieces of up to 100 ms), and answers `speech_started`
with a `clear`. No call state, playback ledger, truncate, metrics, call log, signature checks or flood
limits. The CPU it uses per call-second is what the websocket messaging alone costs on this host, the
figure to hold the bridge's against. It reads the same environment as `bridge serve` (HOST, PORT,
REALTIME_URL, OPENAI_API_KEY, GREETING, AUDIO_PASSTHROUGH) and serves /readyz, so load.py can run it.

`--ws picows` serves the media streams and opens the Realtime sessions with picows (a websocket library
in Cython that calls back per frame and sends without a coroutine; `pip install picows`, not a
dependency of the bridge) on a second port the TwiML names, the webhook staying on aiohttp: the same
relay on a leaner websocket layer.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import msgspec
import uvloop
from aiohttp import ClientSession as HttpClient
from aiohttp import WSMsgType, web

from bridge.audio import L16_24K, PCMU_8K, Transcoder
from bridge.realtime.codec import RealtimeCodec, SessionOptions


class _Media(msgspec.Struct):
    payload: bytes = b""  # msgspec decodes the base64


class _Start(msgspec.Struct):
    streamSid: str = ""


class _CarrierMessage(msgspec.Struct):
    event: str
    media: _Media | None = None
    start: _Start | None = None


class _ModelEvent(msgspec.Struct):
    type: str
    delta: bytes | None = None  # base64 audio on audio deltas; text deltas fail to decode as bytes


_carrier_decoder = msgspec.json.Decoder(_CarrierMessage)
_model_decoder = msgspec.json.Decoder(_ModelEvent)
_encoder = msgspec.json.Encoder()
_AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")


def _model_event(data: bytes) -> _ModelEvent | None:
    try:
        return _model_decoder.decode(data)
    except msgspec.ValidationError:  # a text delta: its `delta` is not base64
        return None


class _Relay:
    """One call's relay, with no I/O: both transports below feed it messages and send what it returns."""

    def __init__(self, passthrough: bool | None = None) -> None:
        """`passthrough`: µ-law both ways; None reads AUDIO_PASSTHROUGH, as the servers below do."""
        if passthrough is None:
            passthrough = os.environ.get("AUDIO_PASSTHROUGH", "false") == "true"
        self.inbound = None if passthrough else Transcoder(PCMU_8K, L16_24K)
        self.outbound = None if passthrough else Transcoder(L16_24K, PCMU_8K)
        self.options = SessionOptions(
            instructions="x", voice="marin", audio_format="pcmu" if passthrough else "pcm24k"
        )
        self.codec = RealtimeCodec("ga")
        self.sid = ""
        self.marks = 0

    def opening(self) -> list[bytes]:
        """What the new session is sent first: its configuration, then the greeting."""
        greeting = self.codec.create_response(os.environ.get("GREETING"))
        return [_encoder.encode(self.codec.session_update(self.options)), _encoder.encode(greeting)]

    def from_carrier(self, data: str | bytes | memoryview) -> tuple[str, bytes | None]:
        """The carrier's event name, and for a caller frame the append to send upstream."""
        message = _carrier_decoder.decode(data)
        if message.start is not None:
            self.sid = message.start.streamSid
        if message.event != "media" or message.media is None:
            return message.event, None
        payload = message.media.payload
        audio = payload if self.inbound is None else self.inbound.process(payload)
        return "media", self.codec.append_audio(audio).wire

    def from_model(self, data: bytes) -> list[bytes]:
        """The messages to send the carrier for one model event."""
        event = _model_event(data)
        if event is None:
            return []
        if event.type in _AUDIO_DELTAS and event.delta:
            audio = event.delta if self.outbound is None else self.outbound.process(event.delta)
            self.marks += 1
            media = {"event": "media", "streamSid": self.sid, "media": {"payload": audio}}
            mark = {"event": "mark", "streamSid": self.sid, "mark": {"name": f"a{self.marks}"}}
            return [_encoder.encode(media), _encoder.encode(mark)]
        if event.type == "input_audio_buffer.speech_started":
            return [_encoder.encode({"event": "clear", "streamSid": self.sid})]
        return []


def _session_url() -> tuple[str, dict[str, str]]:
    headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"}
    return os.environ["REALTIME_URL"] + "?model=gpt-realtime", headers


async def media(request: web.Request) -> web.WebSocketResponse:
    relay = _Relay()
    ws = web.WebSocketResponse(max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if relay.from_carrier(msg.data)[0] == "start":
            break
    url, headers = _session_url()
    async with HttpClient() as http, http.ws_connect(url, headers=headers, decode_text=False) as up:
        for message in relay.opening():
            await up.send_frame(message, WSMsgType.TEXT)
        downlink = asyncio.create_task(_model_to_caller(relay, up, ws))
        async for msg in ws:
            event, append = relay.from_carrier(msg.data)
            if append is not None:
                await up.send_frame(append, WSMsgType.TEXT)
            elif event == "stop":
                break
        downlink.cancel()
    return ws


async def _model_to_caller(relay: _Relay, up: Any, ws: web.WebSocketResponse) -> None:
    async for msg in up:
        for message in relay.from_model(msg.data):
            await ws.send_frame(message, WSMsgType.TEXT)


async def voice(request: web.Request) -> web.Response:
    media_port = request.app.get("media_port")
    url = (
        f"ws://{request.url.host}:{media_port}/twilio/media"
        if media_port
        else f"ws://{request.host}/twilio/media"
    )
    twiml = (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}"/></Connect></Response>'
    )
    return web.Response(text=twiml, content_type="text/xml")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _picows_media_server(host: str) -> int:
    """Media streams on picows: frames arrive as callbacks and are sent without a coroutine."""
    import picows

    text = picows.WSMsgType.TEXT

    class Listener(picows.WSListener):  # type: ignore[misc]
        def __init__(self, on_text: Any, on_close: Any) -> None:
            self.on_text, self.on_close = on_text, on_close

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == text:
                self.on_text(transport, frame.get_payload_as_memoryview())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.on_close()

    class Call:
        def __init__(self) -> None:
            self.relay = _Relay()
            self.carrier: Any = None
            self.up: Any = None
            self.opening: asyncio.Task[None] | None = None

        def from_carrier(self, transport: Any, data: memoryview) -> None:
            self.carrier = transport
            event, append = self.relay.from_carrier(data)
            if append is not None and self.up is not None:
                self.up.send(text, append)
            elif event == "start":
                self.opening = asyncio.get_running_loop().create_task(self.open())
            elif event == "stop":
                self.hang_up()

        async def open(self) -> None:
            url, headers = _session_url()
            up, _ = await picows.ws_connect(
                lambda: Listener(self.from_model, self.hang_up), url, extra_headers=headers
            )
            for message in self.relay.opening():
                up.send(text, message)
            self.up = up

        def from_model(self, _: Any, data: memoryview) -> None:
            for message in self.relay.from_model(bytes(data)):
                self.carrier.send(text, message)

        def hang_up(self) -> None:
            for transport in (self.carrier, self.up):
                if transport is not None:
                    transport.disconnect()

    def listener(_: Any) -> Any:
        call = Call()
        return Listener(call.from_carrier, call.hang_up)

    server = await picows.ws_create_server(listener, host, 0)
    return int(server.sockets[0].getsockname()[1])


def main() -> None:
    app = web.Application()
    if "--ws" in sys.argv and sys.argv[sys.argv.index("--ws") + 1] == "picows":

        async def start_media(app: web.Application) -> None:
            app["media_port"] = await _picows_media_server(os.environ.get("HOST", "127.0.0.1"))

        app.on_startup.append(start_media)
    app.add_routes(
        [web.post("/twilio/voice", voice), web.get("/twilio/media", media), web.get("/readyz", ready)]
    )
    web.run_app(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
