"""The aiohttp application: voice webhook, media socket, health endpoints, and shared resources."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bridge.audio import pcm16_to_ulaw
from bridge.call import CallConfig
from bridge.calllog import CallRecorder, CallStore, PriceTable, run_retention, setup_calllog_routes
from bridge.calllog.auth import AdminAuth
from bridge.carrier.events import CallStarted
from bridge.carrier.signature import (
    SIGNATURE_HEADER,
    STREAM_TOKEN_PARAMETER,
    StreamTokens,
    public_base,
    public_url,
    upgrade_is_signed,
    webhook_is_signed,
    websocket_url,
)
from bridge.carrier.twilio import TwilioCodec
from bridge.carrier.twilio_rest import TwilioCalls, TwilioRestError
from bridge.config import Settings
from bridge.control_api import setup_control_routes
from bridge.logs import get_logger, mask_number
from bridge.media_stream import (
    CallLogSink,
    CallRegistry,
    CarrierCodec,
    NoCallLog,
    StreamContext,
    Transfer,
    handle_media_stream,
)
from bridge.metrics import BridgeMetrics, metrics_context, metrics_handler
from bridge.realtime.codec import SessionOptions
from bridge.session_pool import PreparedSessions
from bridge.softphone import setup_softphone_routes
from bridge.tools.builtin import end_call_definition, transfer_call_definition
from bridge.tools.toolbox import Toolbox
from bridge.twiml import (
    CONNECT_DONE_PATH,
    MEDIA_PATH,
    after_stream,
    connect_stream,
    http_url,
    media_stream_url,
    unavailable,
)
from bridge.upstream import UpstreamSession, open_session_with_retry
from bridge.wavfile import read_wav_mono

log = get_logger("bridge.server")

BRIDGE_KEY: web.AppKey[Bridge] = web.AppKey("bridge")
APOLOGY_WAV = Path(__file__).parent / "assets" / "apology.wav"
FAILED_CALLS_REMEMBERED = 1000


def session_options(settings: Settings, tools: tuple[dict[str, Any], ...] = ()) -> SessionOptions:
    return SessionOptions(
        tools=tools,
        instructions=settings.realtime_instructions,
        voice=settings.realtime_voice,
        audio_format="pcmu" if settings.audio_passthrough else "pcm24k",
        turn_detection=settings.turn_detection,
        vad_threshold=settings.vad_threshold,
        vad_prefix_padding_ms=settings.vad_prefix_padding_ms,
        vad_silence_duration_ms=settings.vad_silence_duration_ms,
        vad_eagerness=settings.vad_eagerness,
        interrupt_response=settings.vad_interrupt_response,
        create_response=settings.response_mode == "auto",
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
    admin_token: str = ""
    call_log: CallLogSink = field(default_factory=NoCallLog)
    store: CallStore | None = None
    metrics: BridgeMetrics = field(default_factory=BridgeMetrics)
    failed_calls: OrderedDict[str, str] = field(default_factory=OrderedDict)  # call sid -> why
    stream_tokens: StreamTokens = field(default_factory=StreamTokens)  # bind a stream to its webhook
    toolbox: Toolbox = field(default_factory=Toolbox)
    upstream_url: str = ""  # where sessions are opened: REALTIME_URL, or the in-process emulator
    prepared: PreparedSessions = field(default_factory=PreparedSessions)
    active_calls: CallRegistry = field(default_factory=CallRegistry)
    ready: bool = False
    draining: bool = False

    def __post_init__(self) -> None:
        self.upstream_url = self.upstream_url or self.settings.realtime_url
        # One key for every carrier's stream tokens; replicas agree when it comes from the settings.
        secret = self.settings.stream_token_secret
        if secret is not None and secret.get_secret_value():
            self.stream_tokens = StreamTokens.from_auth_token(secret.get_secret_value())
        elif self.twilio_token:
            self.stream_tokens = StreamTokens.from_auth_token(self.twilio_token)
        else:
            self.stream_tokens = StreamTokens()
        self.apology = pcm16_to_ulaw(read_wav_mono(self.settings.fallback_audio or APOLOGY_WAV, 8000))
        builtins = []
        if self.settings.end_call_tool:
            builtins.append(end_call_definition())
        if self.settings.transfer_numbers:
            builtins.append(transfer_call_definition(self.settings.transfer_numbers))
        self.call_config = CallConfig(
            session=session_options(self.settings, (*builtins, *self.toolbox.definitions())),
            greeting=self.settings.greeting,
            audio_passthrough=self.settings.audio_passthrough,
            review_turns=self.settings.response_mode == "manual",
            transcribed=bool(self.settings.input_transcription_model),
        )

    async def twilio_transfer(self, started: CallStarted, number: str) -> str | None:
        """Have Twilio replace the call's TwiML with a <Dial> (REST). Returns why it failed, or None."""
        if not self.twilio_token:
            return "no Twilio credentials are configured"
        try:
            async with self.twilio_calls(started.account_sid) as rest:
                await rest.transfer(started.call_sid, number)
        except TwilioRestError as exc:
            return str(exc)
        return None

    async def open_upstream(self) -> UpstreamSession:
        return await open_session_with_retry(self.settings, self.upstream_url)

    def stream_failed(self, call_sid: str, reason: str) -> None:
        """Remember that we failed this call, for the `<Connect action>` request that follows."""
        self.failed_calls[call_sid] = reason
        while len(self.failed_calls) > FAILED_CALLS_REMEMBERED:
            self.failed_calls.popitem(last=False)

    async def open_prepared(self) -> UpstreamSession:
        session = await self.open_upstream()
        prefetch = self.settings.prefetch_greeting
        # Without the prefetch the greeting is asked for once a stream claims the session.
        for event in self.call_config.opening_events(session.codec, greeted=not prefetch):
            await session.socket.send(session.codec.encode(event).decode())
        session.configured, session.greeted = True, prefetch
        return session

    @property
    def twilio_token(self) -> str:
        token = self.settings.twilio_auth_token
        return token.get_secret_value() if token is not None else ""

    def signed(self, request: web.Request, form: Mapping[str, str] | None = None) -> bool:
        """Did Twilio send this (X-Twilio-Signature)? Always true when no Auth Token is configured."""
        if not self.twilio_token:
            return True
        base = public_base(self.settings.public_url, request.scheme, request.host, request.headers)
        url = public_url(base, request.raw_path)
        signature = request.headers.get(SIGNATURE_HEADER)
        if form is None:
            ok = upgrade_is_signed(self.twilio_token, websocket_url(url), signature)
        else:
            ok = webhook_is_signed(self.twilio_token, url, form, signature)
        if not ok:
            log.warning("twilio signature rejected", path=request.path, remote=request.remote)
        return ok

    def stream_authorized(self, started: CallStarted) -> bool:
        """The stream carries the one-time token its webhook issued (a captured URL cannot replay)."""
        if not self.twilio_token:
            return True
        token = started.custom_parameters.get(STREAM_TOKEN_PARAMETER)
        return self.stream_tokens.redeem(started.call_sid, token)

    def stream_context(self, authorize: Callable[[CallStarted], bool] | None) -> StreamContext:
        """What a media stream's call needs; `authorize` checks its start (None: trusted already)."""
        return StreamContext(
            call_config=self.call_config,
            open_upstream=self.open_upstream,
            claim_prepared=self.prepared.claim,
            call_log=self.call_log,
            model=self.settings.realtime_model,
            voice=self.settings.realtime_voice,
            active_calls=self.active_calls,
            max_call_seconds=self.settings.max_call_seconds,
            metrics=self.metrics,
            apology=self.apology,
            stream_failed=self.stream_failed,
            authorize=authorize,
            tools=self.toolbox,
            end_call_tool=self.settings.end_call_tool,
            transfer_numbers=self.settings.transfer_numbers,
            dispositions=self.settings.disposition_list if self.settings.post_call_summary else (),
            before_response_url=self.settings.before_response_url,
        )

    def twilio_calls(self, account_sid: str) -> TwilioCalls:
        return TwilioCalls(account_sid, self.twilio_token, api_base=self.settings.twilio_api_base or None)

    def turned_away(self, call_id: str, carrier: str) -> bool:
        """A new call must be refused (draining or full); logged here, answered by the carrier's route."""
        if not (self.draining or self.at_capacity):
            return False
        log.warning(
            "call turned away",
            call_sid=call_id,
            carrier=carrier,
            draining=self.draining,
            active_calls=len(self.active_calls),
        )
        return True

    @property
    def at_capacity(self) -> bool:
        # Calls whose webhook was answered count too: their media streams are on the way.
        return len(self.active_calls) + len(self.prepared) >= self.settings.max_calls

    async def drain(self, goodbye_wait_s: float = 25.0) -> None:
        """Take no new calls; let calls in progress go on for DRAIN_SECONDS, then say goodbye."""
        self.draining = True
        log.warning(
            "draining: new calls are turned away",
            active_calls=len(self.active_calls),
            drain_seconds=self.settings.drain_seconds,
        )
        await self.active_calls.wait_empty(self.settings.drain_seconds)
        for pump in list(self.active_calls.values()):
            pump.say_goodbye("shutdown")
        await self.active_calls.wait_empty(goodbye_wait_s)


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
    if not bridge.signed(request, {k: str(v) for k, v in form.items()}):
        return web.Response(status=403)
    call_sid = str(form.get("CallSid", ""))
    caller, callee = str(form.get("From", "")), str(form.get("To", ""))
    if bridge.turned_away(call_sid, "twilio"):
        message = "Sorry, all our lines are busy right now. Please call again in a few minutes."
        twiml = unavailable(message, bridge.settings.fallback_number)
        return web.Response(text=twiml, content_type="text/xml")
    direction = "outbound" if str(form.get("Direction", "")).startswith("outbound") else "inbound"
    if call_sid:
        bridge.prepared.prepare(call_sid, bridge.open_prepared)
    base_url = public_base_url(bridge.settings, request)
    stream_url = media_stream_url(base_url)
    log.info("voice webhook", call_sid=call_sid, caller=mask_number(caller), callee=mask_number(callee))
    parameters = {"from": caller, "to": callee, "call_sid": call_sid, "direction": direction}
    if bridge.twilio_token and call_sid:
        parameters[STREAM_TOKEN_PARAMETER] = bridge.stream_tokens.issue(call_sid)
    twiml = connect_stream(stream_url, parameters, action_url=http_url(base_url, CONNECT_DONE_PATH))
    return web.Response(text=twiml, content_type="text/xml")


async def connect_done(request: web.Request) -> web.Response:
    """Twilio asks what next once our stream ended: the fallback number if we failed the call."""
    bridge = request.app[BRIDGE_KEY]
    form = await request.post()
    if not bridge.signed(request, {k: str(v) for k, v in form.items()}):
        return web.Response(status=403)
    call_sid = str(form.get("CallSid", ""))
    failed = bridge.failed_calls.pop(call_sid, None)
    fallback = bridge.settings.fallback_number if failed else ""
    if fallback:
        log.warning("call sent to the fallback number", call_sid=call_sid, reason=failed)
    return web.Response(text=after_stream(fallback), content_type="text/xml")


async def media_socket(request: web.Request) -> web.StreamResponse:
    """Twilio's media stream: signed upgrade, then a start carrying its one-time stream token."""
    bridge = request.app[BRIDGE_KEY]
    if not bridge.signed(request):
        return web.Response(status=403)
    return await media_stream(
        bridge, request, TwilioCodec(), bridge.stream_authorized, transfer=bridge.twilio_transfer
    )


async def browser_media_socket(request: web.Request) -> web.StreamResponse:
    """The softphone's stream: already signed in (admin cookie, same origin), so no Twilio checks."""
    return await media_stream(request.app[BRIDGE_KEY], request, TwilioCodec(), None)


async def media_stream(
    bridge: Bridge,
    request: web.Request,
    codec: CarrierCodec,
    authorize: Callable[[CallStarted], bool] | None,
    transfer: Transfer | None = None,
) -> web.StreamResponse:
    """Any carrier's media-stream websocket, once its upgrade request was checked: 503 when full."""
    if len(bridge.active_calls) >= bridge.settings.max_calls:
        log.warning("media stream refused: at capacity", active_calls=len(bridge.active_calls))
        raise web.HTTPServiceUnavailable(text="at capacity")
    return await handle_media_stream(bridge.stream_context(authorize), request, codec, transfer=transfer)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    ready = bridge.ready and not bridge.draining
    status = "ready" if ready else ("draining" if bridge.draining else "not_ready")
    return web.json_response(
        {"status": status, "active_calls": len(bridge.active_calls)}, status=200 if ready else 503
    )


async def _demo_upstream(app: web.Application) -> AsyncIterator[None]:
    """With no API key and the default OpenAI URL, relay to the Realtime emulator in-process."""
    bridge = app[BRIDGE_KEY]
    emulator = None
    if bridge.settings.demo_mode and urlsplit(bridge.settings.realtime_url).hostname == "api.openai.com":
        from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator

        # Strict validation needs the openai SDK, a test dependency; the demo does without it.
        emulator = RealtimeEmulator(EmulatorConfig(strict=False))
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
    for setting, present in settings.credentials_needed():
        if not present and setting != "ADMIN_TOKEN":
            log.warning(
                f"{setting} is not set: this carrier's webhooks and media streams are NOT authenticated; "
                "anyone who finds this server can place calls through it"
            )
    if settings.model_shutdown_date:
        log.warning(
            "REALTIME_MODEL has an announced shutdown; plan a move to a current model",
            model=settings.realtime_model,
            shutdown=settings.model_shutdown_date,
        )
    bridge.ready = True
    yield
    bridge.ready = False
    await bridge.prepared.close()
    await bridge.toolbox.close()


async def _end_calls(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for open requests: every call still live ends now, its
    record written as "shutdown", so the websocket handlers finish instead of being waited on."""
    bridge = app[BRIDGE_KEY]
    bridge.ready = False
    for pump in list(bridge.active_calls.values()):
        pump.end("shutdown")
    await bridge.active_calls.wait_empty(5.0)


async def _call_log_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open the store before calls start; close it after every call's record was written."""
    bridge = app[BRIDGE_KEY]
    store, recorder = bridge.store, bridge.call_log
    if store is None or not isinstance(recorder, CallRecorder):
        yield
        return
    await store.migrate()
    interrupted = await store.mark_interrupted()
    if interrupted:
        log.warning("calls left in progress by a previous process marked interrupted", count=interrupted)
    await recorder.start()
    retention = asyncio.create_task(run_retention(store, bridge.settings.call_log_retention_days))
    yield
    retention.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await retention
    await recorder.stop()
    await store.close()


def _admin_token(settings: Settings) -> str:
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    token = secrets.token_urlsafe(24)
    # Shown once, on the terminal, never through the logger: the operator needs it to sign in.
    print(
        f"ADMIN_TOKEN is not set; this run's admin token (call log at /calls, softphone at /phone): {token}",
        file=sys.stderr,
        flush=True,
    )
    return token


def create_app(
    settings: Settings, *, call_log: CallLogSink | None = None, toolbox: Toolbox | None = None
) -> web.Application:
    app = web.Application()
    admin_token = _admin_token(settings)
    store = None
    if call_log is None:
        store = CallStore.connect(settings.call_log_url)
        call_log = CallRecorder(store, prices=PriceTable.from_setting(settings.call_log_prices))
    bridge = Bridge(
        settings=settings,
        admin_token=admin_token,
        call_log=call_log,
        store=store,
        toolbox=toolbox or Toolbox(),
    )
    app[BRIDGE_KEY] = bridge
    bridge.metrics.track_active_calls(lambda: len(bridge.active_calls))
    if isinstance(call_log, CallRecorder):
        bridge.metrics.watch_recorder(call_log)
    # Start-up runs in this order and clean-up in reverse: the call log outlives every call.
    app.cleanup_ctx.append(_call_log_lifecycle)
    app.cleanup_ctx.append(metrics_context(bridge.metrics, settings.metrics_port))
    app.cleanup_ctx.append(_demo_upstream)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_calls)
    setup_carrier_routes(app, settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if store is not None:
        setup_calllog_routes(app, store, admin_token)
    admin = AdminAuth(admin_token)
    setup_control_routes(
        app, bridge.active_calls, is_authorized=admin.authenticated, dialect=settings.realtime_dialect
    )
    setup_softphone_routes(app, media_handler=browser_media_socket, is_authorized=admin.authenticated)
    if settings.metrics_port == 0:  # otherwise served on its own, unexposed port
        app.router.add_get(
            "/metrics", metrics_handler(bridge.metrics.registry, authorized=admin.authenticated)
        )
    return app


def setup_carrier_routes(app: web.Application, settings: Settings) -> None:
    """Each enabled carrier's webhook and media stream (CARRIERS); the others are not served at all."""
    carriers = settings.carrier_list
    if "twilio" in carriers:
        app.router.add_post("/twilio/voice", voice_webhook)
        app.router.add_post(CONNECT_DONE_PATH, connect_done)
        app.router.add_get(MEDIA_PATH, media_socket)


async def serve(settings: Settings, toolbox: Toolbox | None = None) -> None:
    """Run until stopped. SIGTERM drains (see `Bridge.drain`); a second signal, or SIGINT, stops at
    once. Either way every call still in progress is ended and the call log is flushed."""
    import signal

    app = create_app(settings, toolbox=toolbox)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    log.info("listening", host=settings.host, port=settings.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if signum == signal.SIGTERM and len(signals) == 1:
            log.warning("SIGTERM: draining", drain_seconds=settings.drain_seconds)
            drain = loop.create_task(app[BRIDGE_KEY].drain())
            drain.add_done_callback(lambda _: stop.set())
        else:
            log.warning("stopping now", signal=signal.Signals(signum).name)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("stopped")
