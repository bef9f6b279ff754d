"""Prometheus metrics of one bridge process, and the endpoints that expose them.

Every `BridgeMetrics` owns its own `CollectorRegistry` instead of using the global default one: each
app created by `create_app` (tests build many per process) then gets fresh counters, and no test has to
reset shared state. A process runs one app, so in production this is the same as the default registry.

With WORKERS > 1 every worker runs in prometheus-client's multiprocess mode: the supervisor gives each
run a fresh PROMETHEUS_MULTIPROC_DIR, every counter, gauge and histogram writes its value into a file
there, and a scrape answered by any worker reads every worker's files (`exposed`). Counters and
histograms of a worker that died stay in the sum, so the host's totals never go backwards; gauges say
how workers combine (`multiprocess_mode`) and live ones leave with their worker (the supervisor calls
`mark_process_dead`). What a process only knows by asking itself (CPU and memory, the collector's
counts, the call-log recorder, frame timings) is copied into its files every second and before each
scrape it answers (`_Mirror`).

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
from typing import Any, Protocol, get_args

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from bridge.log_records import RecordKind
from bridge.workers import WorkerState

# The HPA (deploy/k8s/hpa.yaml) scales on this name; tests/deploy checks the two agree.
ACTIVE_CALLS = "bridge_active_calls"

# Label values come from the wire (upstream error codes) or from code paths that may grow (end
# reasons): both are folded into "other" past a fixed budget so a misbehaving peer cannot blow up
# the number of time series.
MAX_LABEL_VALUES = 40
_LABEL_RE = re.compile(r"[a-z0-9_.]{1,64}")

LOOP_LAG_INTERVAL_S = 0.25
MIRROR_INTERVAL_S = 1.0

# How the host shows what each worker's own collectors read. Gauges not named here are summed over
# the live workers (memory, open files, call-log backlog); counters are summed over every worker.
_MIRRORED_GAUGE_MODES = {
    "process_start_time_seconds": "livemin",  # the oldest live worker
    "process_max_fds": "livemin",
    "python_info": "livemax",  # 1, not one per worker
}

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


class _WorkerStates(Collector):
    """The host's workers by state, and their restarts, read from the board at scrape time."""

    def __init__(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        self._read = read

    def collect(self) -> Any:
        workers = self._read()
        states = GaugeMetricFamily(
            "bridge_workers", "Worker processes on this host, by state.", labels=["state"]
        )
        for state in get_args(WorkerState):
            states.add_metric([state], sum(1 for w in workers if w["state"] == state))
        restarts = CounterMetricFamily(
            "bridge_worker_restarts", "Workers the supervisor started again after they died, this run."
        )
        restarts.add_metric([], sum(int(w.get("restarts", 0)) for w in workers))
        return [states, restarts]


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
    for a fraction of that. Observed on the event loop's thread (GC pauses: from the collector's
    callbacks, which never overlap) and scraped there, so no lock is needed."""

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


class _Mirror:
    """Copies what collectors read from this process into its multiprocess files, so that the scrape of
    any worker includes them: a sample becomes the value prometheus-client itself would have written."""

    def __init__(self) -> None:
        self.collectors: list[Collector] = []
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def publish(self) -> None:
        for collector in self.collectors:
            for family in collector.collect():
                below: dict[tuple[tuple[str, str], ...], float] = {}  # cumulative count of lower buckets
                for sample in family.samples:
                    if sample.name.endswith("_created") or (
                        family.type == "histogram" and sample.name.endswith("_count")
                    ):
                        continue  # not kept in the files: a histogram's count is its buckets' sum
                    labels = tuple(sample.labels.items())
                    value = sample.value
                    if "le" in sample.labels:  # the files hold each bucket's own count
                        series = tuple((k, v) for k, v in labels if k != "le")
                        value, below[series] = value - below.get(series, 0.0), value
                    self._value(family, sample.name, labels).set(value)

    def _value(self, family: Any, name: str, labels: tuple[tuple[str, str], ...]) -> Any:
        key = (name, labels)
        value = self._values.get(key)
        if value is None:
            mode = _MIRRORED_GAUGE_MODES.get(family.name, "livesum") if family.type == "gauge" else ""
            value = self._values[key] = values.ValueClass(
                family.type,
                family.name,
                name,
                tuple(k for k, _ in labels),
                tuple(v for _, v in labels),
                family.documentation,
                multiprocess_mode=mode,
            )
        return value


class _HostCollector(Collector):
    """Every worker's metrics, read from the multiprocess files; this worker's mirror refreshed first."""

    def __init__(self, mirror: _Mirror, directory: str) -> None:
        self._mirror = mirror
        self._files = MultiProcessCollector(None, path=directory)

    def collect(self) -> Any:
        self._mirror.publish()
        return self._files.collect()


class BridgeMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        process_metrics: bool = True,
        multiprocess_dir: str | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.multiprocess = multiprocess_dir is not None
        if self.multiprocess and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus-client picks where values live when it is imported.
            raise RuntimeError("multiprocess metrics need PROMETHEUS_MULTIPROC_DIR set before start-up")
        self._mirror = _Mirror()
        # What the scrape exposes: this registry, or with workers every worker's files.
        self.exposed = reg
        if multiprocess_dir is not None:
            self.exposed = CollectorRegistry(auto_describe=False)
            self.exposed.register(_HostCollector(self._mirror, multiprocess_dir))
        if process_metrics and reg is not REGISTRY:
            # CPU seconds and RSS per pod are what capacity planning (docs/scaling.md) is based on.
            # (The default registry has these collectors already.)
            self._mirror_in_multiprocess(ProcessCollector(registry=reg))
            self._mirror_in_multiprocess(PlatformCollector(registry=reg))
            self._mirror_in_multiprocess(GCCollector(registry=reg))

        self.active_calls = Gauge(
            ACTIVE_CALLS, "Calls with a media stream in progress.", registry=reg, multiprocess_mode="livesum"
        )
        # `upstream_api` (realtime | live): ops comparing the two voice APIs on real traffic.
        self.calls = Counter(
            "bridge_calls",
            "Calls ended, by end reason and voice API.",
            ["reason", "upstream_api"],
            registry=reg,
        )
        self.barge_ins = Counter(
            "bridge_barge_ins", "Caller barge-ins that cut assistant audio.", ["upstream_api"], registry=reg
        )
        self.barge_in_reaction = Histogram(
            "bridge_barge_in_reaction_seconds",
            "From the barge-in's evidence arriving (Realtime: speech_started; Live: the model falling "
            "silent while the caller talks) to the clear being written to the carrier.",
            ["upstream_api"],
            buckets=_scaled(_US, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
            registry=reg,
        )
        self.turn_latency = Histogram(
            "bridge_turn_latency_seconds",
            "From the end of the caller's turn (Realtime: speech_stopped; Live: their last loud frame) to "
            "the first reply frame sent to the carrier.",
            ["upstream_api"],
            buckets=_scaled(_MS, 100, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 5000, 10_000),
            registry=reg,
        )
        self.greeting_latency = Histogram(
            "bridge_greeting_latency_seconds",
            "Media stream start to the first greeting frame sent to the carrier.",
            ["upstream_api"],
            buckets=_scaled(_MS, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10_000),
            registry=reg,
        )
        self.live_heard_after_stop = Histogram(
            "bridge_live_heard_after_stop_seconds",
            "Live calls: how long the caller went on hearing the model after it stopped for them (the "
            "bridge's estimate, from the stop to its clear reaching the carrier).",
            buckets=_scaled(_MS, 50, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000),
            registry=reg,
        )
        self.live_underruns = Counter(
            "bridge_live_underruns",
            "Live calls: frames of a model turn that came after the carrier, by the pacer's count, had "
            "played everything it held (the caller heard a gap).",
            registry=reg,
        )
        self.live_session_seconds = Counter(
            "bridge_live_session_seconds",
            "Live calls: session seconds billed (session.closed, or estimated without it).",
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
        self.control_forwards = Counter(
            "bridge_control_forwards",
            "Operators' requests for a call another process carries, forwarded to it, by outcome "
            "(answered, owner_gone, unreachable, timed_out, refused).",
            ["outcome"],
            registry=reg,
        )
        self.frame_processing = _TimingHistogram(
            "bridge_frame_processing_seconds",
            "Handling one message (decode, call rules, encode, send), by the side it came from.",
            "source",
            _scaled(_US, 10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600),
        )
        self._own(self.frame_processing)
        self.loop_lag = Gauge(
            "bridge_event_loop_lag_seconds",
            "Latest overshoot of a timed sleep on the event loop.",
            registry=reg,
            multiprocess_mode="livemax",  # the worst worker: its calls are the ones that wait
        )
        self.loop_lag_histogram = Histogram(
            "bridge_event_loop_lag_distribution_seconds",
            "Overshoot of timed sleeps on the event loop: every call's audio waits this long.",
            buckets=_scaled(_MS, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=reg,
        )
        # Plain numbers, like the frame timings: the collector's callback runs inside whatever
        # allocation set the collection off, and in multiprocess mode that may be prometheus-client
        # itself holding its one (non-reentrant) lock, which a Histogram here would wait for forever.
        self.gc_pause = _TimingHistogram(
            "bridge_gc_pause_seconds",
            "Garbage-collector pauses, by generation: the event loop, and every call, stops meanwhile.",
            "generation",
            _scaled(_MS, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500),
        )
        self._own(self.gc_pause)
        self.http_connections_waiting = Gauge(
            "bridge_http_connections_waiting",
            "HTTP connections open and waiting for a complete request: new, or idle between requests.",
            registry=reg,
            multiprocess_mode="livesum",  # the host's total
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
        # Children are created once, before the first scrape, so both sources always show. The pump
        # observes each message's processing time (seconds) straight into them: no call in between.
        self.carrier_frame: Callable[[float], None] = self.frame_processing.labels("carrier").observe
        self.upstream_message: Callable[[float], None] = self.frame_processing.labels("upstream").observe

    # -- wiring helpers -----------------------------------------------------------------------------

    def _own(self, collector: Collector) -> None:
        """A collector that reads this process: registered here, and mirrored for the host's scrape."""
        self.registry.register(collector)
        self._mirror_in_multiprocess(collector)

    def _mirror_in_multiprocess(self, collector: Collector) -> None:
        if self.multiprocess:
            self._mirror.collectors.append(collector)

    def active_calls_changed(self, count: int) -> None:
        """The call registry's count after each change (a gauge set: exact in a multiprocess scrape too)."""
        self.active_calls.set(count)

    def watch_recorder(self, recorder: _Backlogged) -> None:
        """Expose the call-log recorder's backlog, write failures and drops. Call once per recorder."""
        self._own(_RecorderCollector(recorder))

    def watch_workers(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        """With workers: expose the board (`bridge.workers.WorkerBoard.read`) with the host's metrics."""
        self.exposed.register(_WorkerStates(read))

    def publish(self) -> None:
        """Multiprocess mode: write what this process's collectors read into its files now."""
        self._mirror.publish()

    async def publish_every(self, interval_s: float = MIRROR_INTERVAL_S) -> None:
        """Run until cancelled (multiprocess mode): keep this worker's mirrored values current."""
        while True:
            self.publish()
            await asyncio.sleep(interval_s)

    # -- events ---------------------------------------------------------------------------------

    def call_ended(self, reason: str, upstream_api: str = "realtime") -> None:
        self.calls.labels(self._reason(reason), upstream_api).inc()

    def upstream_connected(self, connect_ms: float) -> None:
        self.upstream_connect.observe(connect_ms * _MS)

    def upstream_error(self, code: str) -> None:
        self.upstream_errors.labels(self._code(code)).inc()

    def control_forwarded(self, outcome: str) -> None:
        self.control_forwards.labels(outcome).inc()

    def record(self, kind: RecordKind, data: Mapping[str, Any], upstream_api: str = "realtime") -> None:
        """Feed one call-log record (a `LogRecord`'s kind and data) of a call on `upstream_api`;
        irrelevant kinds are ignored."""
        if kind == RecordKind.BARGE_IN:
            self.barge_ins.labels(upstream_api).inc()
            if (ms := data.get("reaction_ms")) is not None:
                self.barge_in_reaction.labels(upstream_api).observe(float(ms) * _MS)
            if (ms := data.get("heard_after_stop_ms")) is not None:
                self.live_heard_after_stop.observe(float(ms) * _MS)
        elif kind == RecordKind.TURN_LATENCY:
            self.turn_latency.labels(upstream_api).observe(float(data["ms"]) * _MS)
        elif kind == RecordKind.GREETING_LATENCY:
            self.greeting_latency.labels(upstream_api).observe(float(data["ms"]) * _MS)
        elif kind == RecordKind.ERROR and data.get("source") == "upstream":
            self.upstream_error(str(data.get("code", "")))
        elif kind == RecordKind.LIVE_AUDIO:
            self.live_underruns.inc(int(data.get("underruns") or 0))
        elif kind == RecordKind.SESSION_CLOSED:
            self.live_session_seconds.inc(float(data.get("seconds") or 0.0))

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
        """Time every collection from now on; returns the function that stops watching. (Collections
        never overlap, whichever thread runs them, so the callbacks need no lock of their own.)"""
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
    """An aiohttp handler for GET /metrics. `authorized`: e.g. `OperatorAuth(token).authenticated`."""

    async def handle(request: web.Request) -> web.Response:
        if authorized is not None and not authorized(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(registry))
        response.headers["Content-Type"] = content_type
        return response

    return handle


async def serve_metrics(
    port: int, registry: CollectorRegistry, host: str = "0.0.0.0", *, shared: bool = False
) -> web.AppRunner:
    """Serve GET /metrics (no auth: the port is meant for the cluster network only) on its own port.

    Returns the started runner; `await runner.cleanup()` stops it. Its actual port (for port 0) is
    `runner.addresses[0][1]`. `shared`: the workers of one host all listen on the port (SO_REUSEPORT);
    whichever answers shows the whole host.
    """
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=shared or None).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def metrics_context(
    metrics: BridgeMetrics, metrics_port: int, host: str = "0.0.0.0"
) -> Callable[[web.Application], AsyncIterator[None]]:
    """For `app.cleanup_ctx`: the loop-lag and GC-pause watchers, the multiprocess mirror, and /metrics
    on its own port if > 0."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(metrics.watch_loop(), name="metrics-loop-lag")]
        if metrics.multiprocess:
            tasks.append(asyncio.create_task(metrics.publish_every(), name="metrics-mirror"))
        unwatch_gc = metrics.watch_gc()
        runner = None
        if metrics_port > 0:
            runner = await serve_metrics(metrics_port, metrics.exposed, host, shared=metrics.multiprocess)
        try:
            yield
        finally:
            unwatch_gc()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if metrics.multiprocess:
                metrics.publish()  # the last word of a worker that stops: its final counts
            if runner is not None:
                await runner.cleanup()

    return context
