"""The aiohttp application: voice webhook, media socket, health endpoints, and shared resources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from bridge.call import CallConfig
from bridge.config import Settings
from bridge.logs import get_logger, mask_number
from bridge.media_stream import CallLogSink, CallPump, NoCallLog, StreamContext, handle_media_stream
from bridge.realtime.codec import SessionOptions
from bridge.session_pool import PreparedSessions
from bridge.twiml import MEDIA_PATH, connect_stream, media_stream_url
from bridge.upstream import UpstreamSession, open_session

log = get_logger("bridge.server")

BRIDGE_KEY: web.AppKey[Bridge] = web.AppKey("bridge")


def session_options(settings: Settings) -> SessionOptions:
    return SessionOptions(
        instructions=settings.realtime_instructions,
        voice=settings.realtime_voice,
        turn_detection=settings.turn_detection,
        vad_threshold=settings.vad_threshold,
        vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
        vad_silence_duration_ms=settings.vad_silence_duration_ms,
        vad_eagerness=settings.vad_eagerness,
        interrupt_response=settings.vad_interrupt_response,
        transcription_model=settings.input_transcription_model,
        noise_reduction=settings.noise_reduction,
        prompt_id=settings.realtime_prompt_id,
        prompt_version=settings.realtime_prompt_version,
        prompt_variables=settings.realtime_prompt_variables,
    )


@dataclass
class Bridge:
    """Resources every call shares, created at start-up."""

    settings: Settings
    call_log: CallLogSink = field(default_factory=NoCallLog)
    upstream_url: str = ""  # where sessions are opened: REALTIME_URL, or the in-process emulator
    prepared: PreparedSessions = field(default_factory=PreparedSessions)
    active_calls: dict[str, CallPump] = field(default_factory=dict)
    ready: bool = False

    def __post_init__(self) -> None:
        self.upstream_url = self.upstream_url or self.settings.realtime_url
        self.call_config = CallConfig(session=session_options(self.settings), greeting=self.settings.greeting)

    async def open_upstream(self) -> UpstreamSession:
        return await open_session(self.settings, self.upstream_url)

    async def open_prepared(self) -> UpstreamSession:
        session = await self.open_upstream()
        for event in self.call_config.opening_events(session.codec):
            await session.socket.send(session.codec.encode(event).decode())
        session.opened = True
        return session

    def stream_context(self) -> StreamContext:
        return StreamContext(
            call_config=self.call_config,
            open_upstream=self.open_upstream,
            claim_prepared=self.prepared.claim,
            call_log=self.call_log,
            model=self.settings.realtime_model,
            voice=self.settings.realtime_voice,
            active_calls=self.active_calls,
        )


def public_base_url(settings: Settings, request: web.Request) -> str:
    """The https base URL the carrier reached us at: PUBLIC_URL, else what the proxy says, else Host."""
    if settings.public_url:
        return settings.public_url
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{proto}://{host}"


async def voice_webhook(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    form = await request.post()
    call_sid = str(form.get("CallSid", ""))
    caller, callee = str(form.get("From", "")), str(form.get("To", ""))
    direction = "outbound" if str(form.get("Direction", "")).startswith("outbound") else "inbound"
    if call_sid:
        bridge.prepared.prepare(call_sid, bridge.open_prepared)
    stream_url = media_stream_url(public_base_url(bridge.settings, request))
    log.info("voice webhook", call_sid=call_sid, caller=mask_number(caller), callee=mask_number(callee))
    twiml = connect_stream(
        stream_url, {"from": caller, "to": callee, "call_sid": call_sid, "direction": direction}
    )
    return web.Response(text=twiml, content_type="text/xml")


async def media_socket(request: web.Request) -> web.StreamResponse:
    return await handle_media_stream(request.app[BRIDGE_KEY].stream_context(), request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    body = {"status": "ready" if bridge.ready else "not_ready", "active_calls": len(bridge.active_calls)}
    return web.json_response(body, status=200 if bridge.ready else 503)


async def _demo_upstream(app: web.Application) -> AsyncIterator[None]:
    """With no API key and the default OpenAI URL, relay to the Realtime emulator in-process."""
    bridge = app[BRIDGE_KEY]
    emulator = None
    if bridge.settings.demo_mode and urlsplit(bridge.settings.realtime_url).hostname == "api.openai.com":
        from bridge.sim.realtime_emulator import RealtimeEmulator

        emulator = RealtimeEmulator()
        bridge.upstream_url = await emulator.start("127.0.0.1", 0)
        log.warning(
            "DEMO MODE: no OPENAI_API_KEY set, calls are answered by the built-in Realtime emulator "
            "(an echo agent), not by OpenAI",
            emulator_url=bridge.upstream_url,
        )
    yield
    if emulator is not None:
        await emulator.stop()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE_KEY]
    settings = bridge.settings
    if settings.model_shutdown_date:
        log.warning(
            "REALTIME_MODEL has an announced shutdown; plan a move to a current model",
            model=settings.realtime_model,
            shutdown=settings.model_shutdown_date,
        )
    bridge.ready = True
    yield
    bridge.ready = False
    for pump in list(bridge.active_calls.values()):
        pump.end("shutdown")
    if bridge.active_calls:
        await asyncio.sleep(0.2)
    await bridge.prepared.close()


def create_app(settings: Settings, *, call_log: CallLogSink | None = None) -> web.Application:
    app = web.Application()
    bridge = Bridge(settings=settings, call_log=call_log or NoCallLog())
    app[BRIDGE_KEY] = bridge
    app.cleanup_ctx.append(_demo_upstream)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/twilio/voice", voice_webhook)
    app.router.add_get(MEDIA_PATH, media_socket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
