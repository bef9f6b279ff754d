"""The aiohttp application: each carrier's routes, health endpoints, the call log, and the lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from bridge.call_log_sink import CallLogSink
from bridge.calllog import CallRecorder, CallStore, PriceTable, run_retention, setup_calllog_routes
from bridge.calllog.auth import AdminAuth
from bridge.calllog.health import CallLogHealth
from bridge.carrier.registry import CARRIERS
from bridge.carrier.twilio.routes import browser_media_socket
from bridge.config import Settings
from bridge.control_api import setup_control_routes
from bridge.http_guard import HttpLimits, guard_app, start_server
from bridge.logs import get_logger
from bridge.metrics import metrics_context, metrics_handler
from bridge.recording import RecordingArchive, Recordings
from bridge.resources import BRIDGE_KEY, Bridge
from bridge.sip.endpoint import setup_sip
from bridge.softphone import setup_softphone_routes
from bridge.tools.toolbox import Toolbox

log = get_logger("bridge.server")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    ready = bridge.ready and not bridge.draining
    status = "ready" if ready else ("draining" if bridge.draining else "not_ready")
    body: dict[str, object] = {"status": status, "active_calls": len(bridge.active_calls)}
    if bridge.call_log_health is not None:
        body["call_log"] = bridge.call_log_health.report()  # degraded or not, never unready for it
    return web.json_response(body, status=200 if ready else 503)


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
    # ADMIN_TOKEN is generated when unset, and the SIP endpoint warns for itself when it starts.
    for setting, present in settings.credentials_needed():
        if present or setting == "ADMIN_TOKEN" or setting.startswith("SIP_"):
            continue
        if setting == "STREAM_TOKEN_SECRET":
            log.warning(
                "STREAM_TOKEN_SECRET is not set: stream tokens are keyed per process, so with more than "
                "one replica a stream that reaches another replica than its webhook is refused"
            )
            continue
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
    settle_heap()
    bridge.ready = True
    yield
    bridge.ready = False
    await bridge.prepared.close()
    await bridge.toolbox.close()


def settle_heap() -> None:
    """Move everything loaded at start-up out of the collector's sight.

    The libraries a bridge imports leave about 120 thousand objects that live as long as the process,
    and a full collection walks every one of them: 65-85 ms on a 2-core host, during which no call
    hears or says anything. Frozen, they are never scanned again; a full collection then walks only
    what calls allocated since. Collecting first keeps start-up garbage out of the frozen set.
    """
    gc.collect()
    gc.freeze()


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
    archive = bridge.recordings.archive if bridge.recordings is not None else None
    retention = asyncio.create_task(
        run_retention(store, bridge.settings.call_log_retention_days, recordings=archive)
    )
    yield
    retention.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await retention
    if bridge.call_log_health is not None:
        await bridge.call_log_health.close()
    await recorder.stop()
    await store.close()


async def _recordings_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Recordings start after the call log (their status goes there) and are all stored before it stops."""
    recordings = app[BRIDGE_KEY].recordings
    if recordings is None:
        yield
        return
    await recordings.start()
    yield
    await recordings.stop()


def _recordings(settings: Settings, call_log: CallRecorder) -> Recordings:
    archive = RecordingArchive(
        settings.recording_directory, settings.recording_url, settings.recording_endpoint_url
    )
    spool_dir = settings.recording_directory / ".spool"
    return Recordings(archive, spool_dir, call_log, mode=settings.recording)


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
    store = health = recordings = None
    if call_log is None:
        store = CallStore.connect(settings.call_log_url)
        recorder = CallRecorder(store, prices=PriceTable.from_setting(settings.call_log_prices))
        call_log, health = recorder, CallLogHealth(store, recorder)
        recordings = _recordings(settings, recorder)
    bridge = Bridge(
        settings=settings,
        admin_token=admin_token,
        call_log=call_log,
        store=store,
        recordings=recordings,
        call_log_health=health,
        toolbox=toolbox or Toolbox(),
    )
    app[BRIDGE_KEY] = bridge
    guard_app(
        app,
        HttpLimits(
            bridge.metrics,
            request_timeout_s=settings.http_request_timeout,
            keepalive_timeout_s=settings.http_keepalive_timeout,
            max_waiting=settings.http_max_waiting_connections,
        ),
    )
    bridge.metrics.track_active_calls(lambda: len(bridge.active_calls))
    if isinstance(call_log, CallRecorder):
        bridge.metrics.watch_recorder(call_log)
    # Start-up runs in this order and clean-up in reverse: the call log outlives every call.
    app.cleanup_ctx.append(_call_log_lifecycle)
    app.cleanup_ctx.append(_recordings_lifecycle)
    app.cleanup_ctx.append(metrics_context(bridge.metrics, settings.metrics_port))
    app.cleanup_ctx.append(_demo_upstream)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_calls)
    setup_carrier_routes(app, settings)
    setup_sip(app, bridge)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if store is not None:
        setup_calllog_routes(app, store, admin_token, recordings.archive if recordings else None, health)
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
    for name in settings.carrier_list:
        CARRIERS[name].setup_routes(app)


async def serve(settings: Settings, toolbox: Toolbox | None = None) -> None:
    """Run until stopped. SIGTERM drains (see `Bridge.drain`); a second signal, or SIGINT, stops at
    once. Either way every call still in progress is ended and the call log is flushed."""
    import signal

    app = create_app(settings, toolbox=toolbox)
    runner = await start_server(
        app, settings.host, settings.port, handle_signals=False, access_log=None, shutdown_timeout=5
    )
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
