"""Prometheus metrics of one bridge process, and the endpoints that expose them.

Every `BridgeMetrics` owns its own `CollectorRegistry` instead of using the global default one: each
app created by `create_app` (tests build many per process) then gets fresh counters, and no test has to
reset shared state. A process runs one app, so in production this is the same as the default registry.

Units follow Prometheus conventions (seconds, `_total` counters). The call records carry milliseconds,
so the helpers below take ms and convert; bucket bounds are chosen at the scale each quantity lives at.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from bridge.log_records import RecordKind

# The HPA (deploy/k8s/hpa.yaml) scales on this name; tests/deploy checks the two agree.
ACTIVE_CALLS = "bridge_active_calls"

# Label values come from the wire (upstream error codes) or from code paths that may grow (end
# reasons): both are folded into "other" past a fixed budget so a misbehaving peer cannot blow up
# the number of time series.
MAX_LABEL_VALUES = 40
_LABEL_RE = re.compile(r"[a-z0-9_.]{1,64}")

LOOP_LAG_INTERVAL_S = 0.25

_MS = 1e-3
_US = 1e-6


class _Backlogged(Protocol):
    """What the call-log recorder exposes (bridge.calllog.recorder.CallRecorder)."""

    @property
    def backlog(self) -> int: ...

    write_failures: int
    dropped: int


class _BoundedLabel:
    """Maps arbitrary strings onto at most MAX_LABEL_VALUES label values plus "other"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        value = (value or "unknown").lower()
        if value in self._seen:
            return value
        if len(self._seen) >= MAX_LABEL_VALUES or not _LABEL_RE.fullmatch(value):
            return "other"
        self._seen.add(value)
        return value


class _RecorderCollector(Collector):
    """Reads the call-log recorder at scrape time: no bookkeeping on the audio path."""

    def __init__(self, recorder: _Backlogged) -> None:
        self._recorder = recorder

    def collect(self) -> Any:
        backlog = GaugeMetricFamily(
            "bridge_calllog_backlog", "Call-log operations accepted but not yet written to the database."
        )
        backlog.add_metric([], self._recorder.backlog)
        failures = CounterMetricFamily(
            "bridge_calllog_write_failures",
            "Failed call-log write attempts (a batch retried three times counts three).",
        )
        failures.add_metric([], self._recorder.write_failures)
        dropped = CounterMetricFamily(
            "bridge_calllog_dropped", "Call-log operations given up on (queue overflow or rejected data)."
        )
        dropped.add_metric([], self._recorder.dropped)
        return [backlog, failures, dropped]


class _Timings:
    """One label's bucket counts and sum, as plain numbers: observing costs a bisect and two adds."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, seconds)] += 1  # le: a bound takes values equal to it
        self.total += seconds


class _TimingHistogram(Collector):
    """A labelled histogram for per-message times, read out at scrape time.

    prometheus_client's Histogram takes a lock and walks its buckets in Python on every observation,
    about 2 µs, paid by every frame of every call; this keeps the same exposition (buckets, count, sum)
    for a fraction of that. Observed and scraped on the event loop's thread, so no lock is needed."""

    def __init__(self, name: str, documentation: str, label: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = tuple(sorted(buckets))
        self._les = [*map(floatToGoString, self._bounds), "+Inf"]
        self._children: dict[str, _Timings] = {}

    def labels(self, value: str) -> _Timings:
        return self._children.setdefault(value, _Timings(self._bounds))

    def collect(self) -> Any:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, timings in self._children.items():
            cumulative, buckets = 0, []
            for le, count in zip(self._les, timings.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([value], buckets, timings.total)
        return [family]


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        if process_metrics and reg is not REGISTRY:
            # CPU seconds and RSS per pod are what capacity planning (docs/scaling.md) is based on.
            # (The default registry has these collectors already.)
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)

        self.active_calls = Gauge(ACTIVE_CALLS, "Calls with a media stream in progress.", registry=reg)
        self.calls = Counter("bridge_calls", "Calls ended, by end reason.", ["reason"], registry=reg)
        self.barge_ins = Counter(
            "bridge_barge_ins", "Caller barge-ins that cut assistant audio.", registry=reg
        )
        self.barge_in_reaction = Histogram(
            "bridge_barge_in_reaction_seconds",
            "Upstream speech_started arrival to the clear being written to the carrier.",
            buckets=_scaled(_US, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
            registry=reg,
        )
        self.turn_latency = Histogram(
            "bridge_turn_latency_seconds",
            "Upstream speech_stopped arrival to the first reply frame sent to the carrier.",
            buckets=_scaled(_MS, 100, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 5000, 10_000),
            registry=reg,
        )
        self.greeting_latency = Histogram(
            "bridge_greeting_latency_seconds",
            "Media stream start to the first greeting frame sent to the carrier.",
            buckets=_scaled(_MS, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10_000),
            registry=reg,
        )
        self.upstream_connect = Histogram(
            "bridge_upstream_connect_seconds",
            "Time to open a Realtime websocket session.",
            buckets=_scaled(_MS, 25, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10_000),
            registry=reg,
        )
        self.upstream_errors = Counter(
            "bridge_upstream_errors", "Errors from the Realtime service, by code.", ["code"], registry=reg
        )
        self.frame_processing = _TimingHistogram(
            "bridge_frame_processing_seconds",
            "Handling one message (decode, call rules, encode, send), by the side it came from.",
            "source",
            _scaled(_US, 10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600),
        )
        reg.register(self.frame_processing)
        self.loop_lag = Gauge(
            "bridge_event_loop_lag_seconds",
            "Latest overshoot of a timed sleep on the event loop.",
            registry=reg,
        )
        self.loop_lag_histogram = Histogram(
            "bridge_event_loop_lag_distribution_seconds",
            "Overshoot of timed sleeps on the event loop: every call's audio waits this long.",
            buckets=_scaled(_MS, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=reg,
        )
        self.gc_pause = Histogram(
            "bridge_gc_pause_seconds",
            "Garbage-collector pauses, by generation: the event loop, and every call, stops meanwhile.",
            ["generation"],
            buckets=_scaled(_MS, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=reg,
        )
        self.http_connections_waiting = Gauge(
            "bridge_http_connections_waiting",
            "HTTP connections open and waiting for a complete request: new, or idle between requests.",
            registry=reg,
        )
        self.http_connections_closed = Counter(
            "bridge_http_connections_closed",
            "HTTP connections closed before a complete request: request_timeout (not sent within "
            "HTTP_REQUEST_TIMEOUT) or too_many_waiting (the longest-waiting one, when "
            "HTTP_MAX_WAITING_CONNECTIONS were waiting).",
            ["reason"],
            registry=reg,
        )
        for reason in ("request_timeout", "too_many_waiting"):
            self.http_connections_closed.labels(reason)
        self.http_bad_requests = Counter(
            "bridge_http_bad_requests",
            "Requests refused as malformed HTTP (400) before any handler: a line or header too long, "
            "not HTTP at all, a broken body.",
            registry=reg,
        )
        self._reason = _BoundedLabel()
        self._code = _BoundedLabel()
        # Children are created once, before the first scrape, so both sources always show.
        self._frame_carrier = self.frame_processing.labels("carrier")
        self._frame_upstream = self.frame_processing.labels("upstream")

    # -- wiring helpers -----------------------------------------------------------------------------

    def track_active_calls(self, count: Callable[[], int]) -> None:
        """Read the active-call count at scrape time (e.g. `lambda: len(bridge.active_calls)`)."""
        self.active_calls.set_function(count)

    def watch_recorder(self, recorder: _Backlogged) -> None:
        """Expose the call-log recorder's backlog, write failures and drops. Call once per recorder."""
        self.registry.register(_RecorderCollector(recorder))

    # -- events ---------------------------------------------------------------------------------

    def call_ended(self, reason: str) -> None:
        self.calls.labels(self._reason(reason)).inc()

    def upstream_connected(self, connect_ms: float) -> None:
        self.upstream_connect.observe(connect_ms * _MS)

    def upstream_error(self, code: str) -> None:
        self.upstream_errors.labels(self._code(code)).inc()

    def carrier_frame(self, seconds: float) -> None:
        self._frame_carrier.observe(seconds)

    def upstream_message(self, seconds: float) -> None:
        self._frame_upstream.observe(seconds)

    def record(self, kind: RecordKind, data: Mapping[str, Any]) -> None:
        """Feed one call-log record (a `LogRecord`'s kind and data); irrelevant kinds are ignored."""
        if kind == RecordKind.BARGE_IN:
            self.barge_ins.inc()
            if (ms := data.get("reaction_ms")) is not None:
                self.barge_in_reaction.observe(float(ms) * _MS)
        elif kind == RecordKind.TURN_LATENCY:
            self.turn_latency.observe(float(data["ms"]) * _MS)
        elif kind == RecordKind.GREETING_LATENCY:
            self.greeting_latency.observe(float(data["ms"]) * _MS)
        elif kind == RecordKind.ERROR and data.get("source") == "upstream":
            self.upstream_error(str(data.get("code", "")))

    # -- event-loop lag -------------------------------------------------------------------------

    async def watch_loop(self, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
        """Run until cancelled: how late a timed sleep wakes is how late every call's next frame is."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            lag = max(0.0, loop.time() - expected)
            self.loop_lag.set(lag)
            self.loop_lag_histogram.observe(lag)

    # -- garbage-collector pauses ----------------------------------------------------------------

    def watch_gc(self) -> Callable[[], None]:
        """Time every collection from now on; returns the function that stops watching."""
        pauses = [self.gc_pause.labels(str(generation)) for generation in range(3)]
        started = 0.0

        def on_gc(phase: str, info: dict[str, int]) -> None:
            nonlocal started
            if phase == "start":
                started = time.perf_counter()
            else:
                pauses[info["generation"]].observe(time.perf_counter() - started)

        gc.callbacks.append(on_gc)
        return lambda: gc.callbacks.remove(on_gc)


def _scaled(unit: float, *bounds: float) -> tuple[float, ...]:
    # Rounded so the exposition shows le="0.0005", not le="4.9999999999999996e-04".
    return tuple(round(b * unit, 9) for b in bounds)


# ---------------------------------------------------------------------------------------------------
# Exposition


def metrics_handler(
    registry: CollectorRegistry, *, authorized: Callable[[web.Request], bool] | None = None
) -> Callable[[web.Request], Any]:
    """An aiohttp handler for GET /metrics. `authorized`: e.g. `AdminAuth(token).authenticated`."""

    async def handle(request: web.Request) -> web.Response:
        if authorized is not None and not authorized(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(registry))
        response.headers["Content-Type"] = content_type
        return response

    return handle


async def serve_metrics(port: int, registry: CollectorRegistry, host: str = "0.0.0.0") -> web.AppRunner:
    """Serve GET /metrics (no auth: the port is meant for the cluster network only) on its own port.

    Returns the started runner; `await runner.cleanup()` stops it. Its actual port (for port 0) is
    `runner.addresses[0][1]`.
    """
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def metrics_context(
    metrics: BridgeMetrics, metrics_port: int, host: str = "0.0.0.0"
) -> Callable[[web.Application], AsyncIterator[None]]:
    """For `app.cleanup_ctx`: the loop-lag and GC-pause watchers, and /metrics on its own port if > 0."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        watcher = asyncio.create_task(metrics.watch_loop(), name="metrics-loop-lag")
        unwatch_gc = metrics.watch_gc()
        runner = await serve_metrics(metrics_port, metrics.registry, host) if metrics_port > 0 else None
        try:
            yield
        finally:
            unwatch_gc()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if runner is not None:
                await runner.cleanup()

    return context
