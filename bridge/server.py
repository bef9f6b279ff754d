"""The aiohttp application: each carrier's routes, health endpoints, the call log, and the lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from aiohttp import web

from bridge.call_forwarding import CallForwarder, CallLocator, cluster_signature_check, forwarded_operator
from bridge.call_log_sink import CallLogSink
from bridge.calllog import (
    CallRecorder,
    CallStore,
    LeaseKeeper,
    PriceTable,
    ReplicaIdentity,
    ReplicaLeases,
    run_retention,
    setup_calllog_routes,
)
from bridge.calllog.auth import OperatorAuth
from bridge.calllog.health import CallLogHealth
from bridge.calllog.owners import CallOwners
from bridge.calllog.placed_calls import PlacedCallStore
from bridge.carrier.registry import CARRIERS
from bridge.carrier.twilio.routes import browser_media_socket
from bridge.cluster_auth import ClusterSigner, Target, cluster_key
from bridge.config import Settings, admin_token_for
from bridge.control_api import setup_control_routes
from bridge.http_guard import HTTP_LIMITS_KEY, HttpLimits, guard_app, start_server
from bridge.logs import get_logger
from bridge.metrics import BridgeMetrics, metrics_context, metrics_handler
from bridge.outbound.calls import OutboundCalls
from bridge.outbound.routes import setup_outbound_routes
from bridge.outbound.status_events import StatusEvents
from bridge.recording import RecordingArchive, Recordings
from bridge.replica import internal_listen_port, replica_identity
from bridge.resources import BRIDGE_KEY, Bridge
from bridge.sip.endpoint import setup_sip
from bridge.softphone import setup_softphone_routes
from bridge.stop_budget import FINAL_S
from bridge.tools.toolbox import Toolbox
from bridge.workers import WorkerBoard, WorkerSlot, WorkerState, bound_socket

log = get_logger("bridge.server")

REPLICA_KEY: web.AppKey[ReplicaIdentity] = web.AppKey("replica")
WORKERS_KEY: web.AppKey[WorkerBoard] = web.AppKey("workers")
FORWARDER_KEY: web.AppKey[CallForwarder] = web.AppKey("forwarder")
INTERNAL_APP_KEY: web.AppKey[web.Application] = web.AppKey("internal_app")

# The final phase of a stop (bridge.stop_budget.FINAL_S), spent in this order: the lines of the calls
# still up close; their handlers finish (a post-call summary still awaited is given up); recordings
# are stored and the call log written with what is left.
END_CALLS_WAIT_S = 2.0
HANDLERS_WAIT_S = 1.0
CALL_LOG_KEEP_S = 1.0  # of the final phase, kept for the call log's last writes and the lease
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def home(request: web.Request) -> web.Response:
    """Someone opened the bridge's address in a browser: the call log is what there is to see."""
    raise web.HTTPFound("/calls")


async def readyz(request: web.Request) -> web.Response:
    """This process's readiness. With workers, a worker answers ready while it can take calls itself
    (its siblings take theirs: one that restarts takes none meanwhile), and the body lists every
    worker's state, so a restart or a crash loop shows whichever worker is asked."""
    bridge = request.app[BRIDGE_KEY]
    ready = bridge.ready and not bridge.draining
    status = "ready" if ready else ("draining" if bridge.draining else "not_ready")
    body: dict[str, object] = {
        "status": status,
        "active_calls": len(bridge.active_calls),
        "replica": request.app[REPLICA_KEY].replica_id,
        "pid": os.getpid(),
    }
    if bridge.call_log_health is not None:
        body["call_log"] = bridge.call_log_health.report()  # degraded or not, never unready for it
    if (board := request.app.get(WORKERS_KEY)) is not None:
        body["workers"] = board.read()
    return web.json_response(body, status=200 if ready else 503)


async def _demo_upstream(app: web.Application) -> AsyncIterator[None]:
    """With no API key, relay to the emulator in-process: Realtime calls if REALTIME_URL is OpenAI's,
    Live calls if LIVE_URL is (one emulator speaks both)."""
    bridge = app[BRIDGE_KEY]
    settings = bridge.settings
    emulator = None
    realtime = urlsplit(settings.realtime_url).hostname == "api.openai.com"
    live = urlsplit(settings.live_url).hostname == "api.openai.com"
    if settings.demo_mode and (realtime or live):
        from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator

        # Strict validation needs the openai SDK, a test dependency; the demo does without it.
        emulator = RealtimeEmulator(EmulatorConfig(strict=False))
        url = await emulator.start("127.0.0.1", 0)
        if realtime:
            bridge.upstream_url = url
        if live:
            bridge.live_url = emulator.live_url
        log.warning(
            "DEMO MODE: no OPENAI_API_KEY set, calls are answered by the built-in emulator "
            "(an echo agent), not by OpenAI",
            emulator_url=url if realtime else emulator.live_url,
            upstream_api=settings.upstream_api,
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
    if settings.is_azure and settings.input_transcription_model is None:
        log.warning(
            "the caller's words are not transcribed: on Azure, set INPUT_TRANSCRIPTION_MODEL to the name "
            "of your transcription deployment (the call log shows only how long the caller spoke)"
        )
    settle_heap()
    bridge.ready = True
    yield
    bridge.ready = False
    bridge.awaited.close()
    await bridge.prepared.close()
    await bridge.toolbox.close()
    if (forwarder := app.get(FORWARDER_KEY)) is not None:
        await forwarder.close()
    if bridge.outbound is not None:
        await bridge.outbound.close()


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
    clock = bridge.begin_stop(at_once=True)
    for pump in list(bridge.active_calls.values()):
        pump.end("shutdown")
    await bridge.active_calls.wait_empty(min(END_CALLS_WAIT_S, clock.left(keep_s=FINAL_S - END_CALLS_WAIT_S)))


async def _call_log_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open the store before calls start; close it after every call's record was written."""
    bridge = app[BRIDGE_KEY]
    store, recorder = bridge.store, bridge.call_log
    if store is None or not isinstance(recorder, CallRecorder):
        yield
        return
    settings = bridge.settings
    await store.migrate()
    # Claims this process's lease and closes the calls of processes that are gone (its own previous
    # run's among them), never a live sibling's: see bridge.calllog.leases.
    keeper = LeaseKeeper(
        ReplicaLeases(store),
        app[REPLICA_KEY],
        lease_s=settings.lease_seconds,
        renew_s=settings.lease_renew_seconds,
    )
    await keeper.start()
    await recorder.start()
    archive = bridge.recordings.archive if bridge.recordings is not None else None
    retention = asyncio.create_task(
        run_retention(store, settings.call_log_retention_days, recordings=archive)
    )
    yield
    retention.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await retention
    if bridge.call_log_health is not None:
        await bridge.call_log_health.close()
    await recorder.stop(timeout=max(bridge.begin_stop(at_once=True).left(), 0.5))
    await keeper.stop()  # after every end was written: what is still open then is an orphan
    await store.close()


async def _recordings_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Recordings start after the call log (their status goes there) and are all stored before it stops."""
    bridge = app[BRIDGE_KEY]
    recordings = bridge.recordings
    if recordings is None:
        yield
        return
    await recordings.start()
    yield
    # A recording not stored by then stays spooled; the next start on this host stores it.
    await recordings.stop(timeout=max(bridge.begin_stop(at_once=True).left(keep_s=CALL_LOG_KEEP_S), 0.5))


def _recordings(settings: Settings, call_log: CallRecorder) -> Recordings:
    archive = RecordingArchive(
        settings.recording_directory, settings.recording_url, settings.recording_endpoint_url
    )
    spool_dir = settings.recording_directory / ".spool"
    return Recordings(archive, spool_dir, call_log, mode=settings.recording)


def create_app(
    settings: Settings,
    *,
    call_log: CallLogSink | None = None,
    toolbox: Toolbox | None = None,
    identity: ReplicaIdentity | None = None,
    worker: WorkerSlot | None = None,
) -> web.Application:
    """`identity`: this process among the replicas (default: from the settings and PORT); `worker`:
    the slot of a worker under `bridge serve` with WORKERS > 1."""
    app = web.Application()
    admin_token = admin_token_for(settings)
    identity = identity or replica_identity(
        settings, port=settings.port, internal_port=settings.internal_port
    )
    app[REPLICA_KEY] = identity
    store = health = recordings = owners = None
    if call_log is None:
        store = CallStore.connect(settings.call_log_url)
        prices = PriceTable.from_setting(settings.call_log_prices)
        recorder = CallRecorder(store, prices=prices, owner=identity)
        call_log, health = recorder, CallLogHealth(store, recorder)
        recordings = _recordings(settings, recorder)
        owners = CallOwners(store, identity)
    metrics = BridgeMetrics(multiprocess_dir=str(worker.metrics_dir) if worker else None)
    bridge = Bridge(
        settings=settings,
        admin_token=admin_token,
        call_log=call_log,
        store=store,
        metrics=metrics,
        recordings=recordings,
        call_log_health=health,
        owners=owners,
        toolbox=toolbox or Toolbox(),
    )
    app[BRIDGE_KEY] = bridge
    if store is not None:
        secret = settings.tools_secret.get_secret_value() if settings.tools_secret else ""
        bridge.outbound = OutboundCalls(
            settings,
            PlacedCallStore(store),
            bridge.call_config,
            bridge.shared_key(b"bridge placed calls v1"),
            StatusEvents(secret),
        )
    guard_app(
        app,
        HttpLimits(
            metrics,
            request_timeout_s=settings.http_request_timeout,
            keepalive_timeout_s=settings.http_keepalive_timeout,
            max_waiting=settings.http_max_waiting_connections,
        ),
    )
    bridge.active_calls.on_change = metrics.active_calls_changed
    if isinstance(call_log, CallRecorder):
        metrics.watch_recorder(call_log)
    if worker is not None:
        board = app[WORKERS_KEY] = WorkerBoard(worker.run_dir, worker.count)
        metrics.watch_workers(board.read)
    # Start-up runs in this order and clean-up in reverse: the call log outlives every call.
    app.cleanup_ctx.append(_call_log_lifecycle)
    app.cleanup_ctx.append(_recordings_lifecycle)
    app.cleanup_ctx.append(metrics_context(bridge.metrics, settings.metrics_port))
    app.cleanup_ctx.append(_demo_upstream)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_calls)
    setup_carrier_routes(app, settings)
    if worker is None or worker.index == 0:  # a dialog and its RTP must stay on one process
        setup_sip(app, bridge)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    auth = OperatorAuth(admin_token, settings.operators)
    app.router.add_get("/", home)
    if store is not None:
        setup_calllog_routes(app, store, auth, recordings.archive if recordings else None, health)
        setup_outbound_routes(app, bridge)
    cluster_secret = settings.cluster_secret.get_secret_value() if settings.cluster_secret else ""
    signer = ClusterSigner(cluster_key(cluster_secret, admin_token))
    forwarder = None
    if owners is not None:
        forwarder = app[FORWARDER_KEY] = CallForwarder(owners, signer, metrics)
    setup_control_routes(
        app,
        CallLocator(bridge.active_calls, forwarder),
        operator_of=auth.operator,
    )
    setup_softphone_routes(app, media_handler=browser_media_socket, is_authorized=auth.authenticated)
    if settings.metrics_port == 0:  # otherwise served on its own, unexposed port
        app.router.add_get("/metrics", metrics_handler(bridge.metrics.exposed, authorized=auth.authenticated))
    app[INTERNAL_APP_KEY] = internal_app(app, signer)
    return app


def internal_app(app: web.Application, signer: ClusterSigner) -> web.Application:
    """What this process's internal listener serves (its address is the `owner_url` of its calls):
    control requests forwarded by sibling processes for this process's calls, signed (bridge
    .call_forwarding), and the health checks. Keep its port inside the cluster."""
    identity = app[REPLICA_KEY]
    me = Target(identity.replica_id, identity.incarnation)
    internal = web.Application(middlewares=[cluster_signature_check(signer, me, HEALTH_PATHS)])
    internal[BRIDGE_KEY] = bridge = app[BRIDGE_KEY]
    internal[REPLICA_KEY] = identity
    if WORKERS_KEY in app:
        internal[WORKERS_KEY] = app[WORKERS_KEY]
    guard_app(internal, app[HTTP_LIMITS_KEY])
    internal.router.add_get("/healthz", healthz)
    internal.router.add_get("/readyz", readyz)
    setup_control_routes(
        internal,
        CallLocator(bridge.active_calls),  # calls here only: a forwarded request goes no further
        operator_of=forwarded_operator,
    )
    return internal


def setup_carrier_routes(app: web.Application, settings: Settings) -> None:
    """Each enabled carrier's webhook and media stream (CARRIERS); the others are not served at all."""
    for name in settings.carrier_list:
        CARRIERS[name].setup_routes(app)


async def serve(settings: Settings, toolbox: Toolbox | None = None, worker: WorkerSlot | None = None) -> None:
    """Run until stopped. SIGTERM drains (see `Bridge.drain`); a second signal, or SIGINT, stops at
    once. Either way every call still in progress is ended and the call log is flushed, and the
    process exits within the stop's budget (bridge.stop_budget).

    The ports are bound before the app starts, so a second server started on them by mistake fails
    there, before it claims this replica's id. A worker (`worker`) shares PORT with its siblings. Each
    process also listens on an internal port of its own, where its siblings forward requests for its
    calls (bridge.replica, bridge.call_forwarding)."""
    import signal

    listener = bound_socket(settings.host, settings.port, shared=worker is not None)
    port = listener.getsockname()[1]
    internal_socket = bound_socket(
        settings.host, internal_listen_port(settings, worker.index if worker else None)
    )
    identity = replica_identity(
        settings,
        port=port,
        worker=worker.index if worker else None,
        internal_port=internal_socket.getsockname()[1],
    )
    app = create_app(settings, toolbox=toolbox, identity=identity, worker=worker)
    bridge = app[BRIDGE_KEY]
    board = app.get(WORKERS_KEY)

    def publish(state: WorkerState) -> None:
        if board is not None and worker is not None:
            board.publish(worker.index, state, os.getpid())

    publish("starting")
    # Siblings may forward to a call of this process as soon as it takes one: listen for them first.
    internal_runner = await start_server(
        app[INTERNAL_APP_KEY],
        sockets=[internal_socket],
        handle_signals=False,
        access_log=None,
        shutdown_timeout=HANDLERS_WAIT_S,
    )
    try:
        runner = await start_server(
            app, sockets=[listener], handle_signals=False, access_log=None, shutdown_timeout=HANDLERS_WAIT_S
        )
    except BaseException:
        await internal_runner.cleanup()
        raise
    log.info(
        "listening",
        host=settings.host,
        port=port,
        replica=identity.replica_id,
        internal_url=identity.internal_url,
    )
    if worker is None or worker.index == 0:  # once per host
        log.info("pages", **page_urls(settings, port))
    publish("ready")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []
    overdue: list[asyncio.TimerHandle] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        clock = bridge.begin_stop()
        if signum == signal.SIGTERM and len(signals) == 1:
            log.warning(
                "SIGTERM: draining",
                drain_seconds=settings.drain_seconds,
                stop_budget_s=settings.shutdown_budget,
            )
            publish("draining")
            drain = loop.create_task(bridge.drain())
            drain.add_done_callback(lambda _: stop.set())
        else:
            log.warning("stopping now", signal=signal.Signals(signum).name)
            clock.hurry()
            stop.set()
        for handle in overdue:
            handle.cancel()
        overdue[:] = [loop.call_later(clock.left(), _out_of_budget, settings.shutdown_budget)]

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    orphaned = None
    if worker is not None:
        orphaned = loop.create_task(_drain_when_orphaned(lambda: on_signal(signal.SIGTERM)))
    try:
        await stop.wait()
    finally:
        if orphaned is not None:
            orphaned.cancel()
        publish("stopping")
        await runner.cleanup()
        await internal_runner.cleanup()  # last: a forwarded request finds the calls until they end
        log.info("stopped")


def _out_of_budget(budget_s: float) -> None:
    """The stop's deadline passed with the process still here: something hung. Exit now, saying so,
    rather than be killed mid-write by the orchestrator a moment later."""
    log.error("the stop took its whole budget: exiting now", stop_budget_s=budget_s)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def page_urls(settings: Settings, port: int) -> dict[str, str]:
    """Where a person finds the bridge's pages: under PUBLIC_URL, else this host as it listens (a
    wildcard address is reached as localhost)."""
    base = settings.public_url
    if not base:
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "localhost"
        base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    return {"call_log": f"{base}/calls", "live_board": f"{base}/calls/live", "softphone": f"{base}/phone"}


async def _drain_when_orphaned(drain: Callable[[], None], interval_s: float = 1.0) -> None:
    """A worker whose supervisor died (killed -9) drains as if told to, instead of serving on with no
    one to restart it or pass it the next signal."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(interval_s)
        if os.getppid() != parent:
            break
    log.error("the supervisor is gone: draining")
    drain()
