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


async def media(request: web.Request) -> web.WebSocketResponse:
    passthrough = os.environ.get("AUDIO_PASSTHROUGH", "false") == "true"
    ws = web.WebSocketResponse(max_msg_size=64 * 1024, compress=False)
    await ws.prepare(request)
    sid = ""
    async for msg in ws:
        start = _carrier_decoder.decode(msg.data).start
        if start is not None:
            sid = start.streamSid
            break
    codec = RealtimeCodec("ga")
    url = os.environ["REALTIME_URL"] + "?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"}
    async with HttpClient() as http, http.ws_connect(url, headers=headers, decode_text=False) as up:
        options = SessionOptions(
            instructions="x", voice="marin", audio_format="pcmu" if passthrough else "pcm24k"
        )
        await up.send_frame(_encoder.encode(codec.session_update(options)), WSMsgType.TEXT)
        await up.send_frame(
            _encoder.encode(codec.create_response(os.environ.get("GREETING"))), WSMsgType.TEXT
        )
        inbound = None if passthrough else Transcoder(PCMU_8K, L16_24K)
        outbound = None if passthrough else Transcoder(L16_24K, PCMU_8K)
        downlink = asyncio.create_task(_model_to_caller(up, ws, sid, outbound))
        async for msg in ws:
            carrier = _carrier_decoder.decode(msg.data)
            if carrier.event == "media" and carrier.media is not None:
                audio = carrier.media.payload if inbound is None else inbound.process(carrier.media.payload)
                await up.send_frame(codec.append_audio(audio).wire, WSMsgType.TEXT)
            elif carrier.event == "stop":
                break
        downlink.cancel()
    return ws


async def _model_to_caller(up: Any, ws: web.WebSocketResponse, sid: str, outbound: Transcoder | None) -> None:
    marks = 0
    async for msg in up:
        event = _model_event(msg.data)
        if event is None:
            continue
        if event.type in _AUDIO_DELTAS and event.delta:
            audio = event.delta if outbound is None else outbound.process(event.delta)
            marks += 1
            media = {"event": "media", "streamSid": sid, "media": {"payload": audio}}
            await ws.send_frame(_encoder.encode(media), WSMsgType.TEXT)
            mark = {"event": "mark", "streamSid": sid, "mark": {"name": f"a{marks}"}}
            await ws.send_frame(_encoder.encode(mark), WSMsgType.TEXT)
        elif event.type == "input_audio_buffer.speech_started":
            await ws.send_frame(_encoder.encode({"event": "clear", "streamSid": sid}), WSMsgType.TEXT)


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


class _PicowsCall:
    """One call on picows: the carrier's frames and the model's events arrive as callbacks."""

    def __init__(self) -> None:
        self.passthrough = os.environ.get("AUDIO_PASSTHROUGH", "false") == "true"
        self.inbound = None if self.passthrough else Transcoder(PCMU_8K, L16_24K)
        self.outbound = None if self.passthrough else Transcoder(L16_24K, PCMU_8K)
        self.codec = RealtimeCodec("ga")
        self.carrier: Any = None
        self.up: Any = None
        self.sid = ""
        self.marks = 0
        self.opening: asyncio.Task[None] | None = None

    def from_carrier(self, data: memoryview) -> None:
        from picows import WSMsgType as PicoType

        message = _carrier_decoder.decode(data)
        if message.event == "media" and message.media is not None and self.up is not None:
            payload = message.media.payload
            audio = payload if self.inbound is None else self.inbound.process(payload)
            self.up.send(PicoType.TEXT, self.codec.append_audio(audio).wire)
        elif message.start is not None:
            self.sid = message.start.streamSid
            self.opening = asyncio.get_running_loop().create_task(self.open())
        elif message.event == "stop":
            self.hang_up()

    async def open(self) -> None:
        from picows import WSMsgType as PicoType
        from picows import ws_connect

        url = os.environ["REALTIME_URL"] + "?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}"}
        up, _ = await ws_connect(lambda: _listener(self.from_model, self.hang_up), url, extra_headers=headers)
        options = SessionOptions(
            instructions="x", voice="marin", audio_format="pcmu" if self.passthrough else "pcm24k"
        )
        up.send(PicoType.TEXT, _encoder.encode(self.codec.session_update(options)))
        up.send(PicoType.TEXT, _encoder.encode(self.codec.create_response(os.environ.get("GREETING"))))
        self.up = up

    def from_model(self, data: memoryview) -> None:
        from picows import WSMsgType as PicoType

        event = _model_event(bytes(data))
        if event is None or self.carrier is None:
            return
        if event.type in _AUDIO_DELTAS and event.delta:
            audio = event.delta if self.outbound is None else self.outbound.process(event.delta)
            self.marks += 1
            media = {"event": "media", "streamSid": self.sid, "media": {"payload": audio}}
            self.carrier.send(PicoType.TEXT, _encoder.encode(media))
            mark = {"event": "mark", "streamSid": self.sid, "mark": {"name": f"a{self.marks}"}}
            self.carrier.send(PicoType.TEXT, _encoder.encode(mark))
        elif event.type == "input_audio_buffer.speech_started":
            self.carrier.send(PicoType.TEXT, _encoder.encode({"event": "clear", "streamSid": self.sid}))

    def hang_up(self) -> None:
        for transport in (self.carrier, self.up):
            if transport is not None:
                transport.disconnect()


def _listener(on_text: Any, on_close: Any, on_connect: Any = None) -> Any:
    from picows import WSListener, WSMsgType

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            if on_connect is not None:
                on_connect(transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                on_text(frame.get_payload_as_memoryview())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            on_close()

    return Listener()


async def _picows_media_server(host: str) -> int:
    from picows import ws_create_server

    def listener(_: Any) -> Any:
        call = _PicowsCall()
        return _listener(call.from_carrier, call.hang_up, on_connect=lambda t: setattr(call, "carrier", t))

    server = await ws_create_server(listener, host, 0)
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
