"""bridge/metrics.py: names in the exposition, what each helper records, the endpoints, the lag watcher."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from bridge.call_registry import CallRegistry
from bridge.metrics import (
    ACTIVE_CALLS,
    MAX_LABEL_VALUES,
    BridgeMetrics,
    metrics_context,
    metrics_handler,
    serve_metrics,
)

NAMES = [
    ACTIVE_CALLS,
    "bridge_calls_total",
    "bridge_barge_ins_total",
    "bridge_barge_in_reaction_seconds",
    "bridge_turn_latency_seconds",
    "bridge_greeting_latency_seconds",
    "bridge_live_heard_after_stop_seconds",
    "bridge_live_underruns_total",
    "bridge_live_session_seconds_total",
    "bridge_upstream_connect_seconds",
    "bridge_upstream_errors_total",
    "bridge_control_forwards_total",
    "bridge_frame_processing_seconds",
    "bridge_event_loop_lag_seconds",
    "bridge_event_loop_lag_distribution_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
]


def value(metrics: BridgeMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def exposition(metrics: BridgeMetrics) -> str:
    return generate_latest(metrics.registry).decode()


@dataclass
class FakeRecorder:
    backlog: int = 0
    write_failures: int = 0
    dropped: int = 0


def test_exposition_has_every_metric() -> None:
    metrics = BridgeMetrics()
    metrics.call_ended("caller_hangup")
    metrics.upstream_error("session_expired")
    metrics.control_forwarded("answered")
    metrics.carrier_frame(0.0001)
    text = exposition(metrics)
    for name in NAMES:
        assert f"# TYPE {name} " in text, name


def test_registries_are_independent() -> None:
    first, second = BridgeMetrics(), BridgeMetrics()
    first.call_ended("caller_hangup")
    hangups = {"reason": "caller_hangup", "upstream_api": "realtime"}
    assert value(first, "bridge_calls_total", hangups) == 1
    assert value(second, "bridge_calls_total", hangups) is None


def test_active_calls_follow_the_call_registry() -> None:
    metrics = BridgeMetrics()
    calls = CallRegistry()
    calls.on_change = metrics.active_calls_changed
    first, second = object(), object()
    calls.add("CA1", first)  # type: ignore[arg-type]
    calls.add("CA2", second)  # type: ignore[arg-type]
    assert not calls.add("CA2", first)  # type: ignore[arg-type] - a second stream for a live call
    assert value(metrics, ACTIVE_CALLS) == 2
    calls.remove("CA1", first)  # type: ignore[arg-type]
    calls.remove("CA2", first)  # type: ignore[arg-type] - not the pump that holds the call
    assert value(metrics, ACTIVE_CALLS) == 1
    calls.remove("CA2", second)  # type: ignore[arg-type]
    assert value(metrics, ACTIVE_CALLS) == 0


def test_call_records_feed_the_histograms_in_seconds() -> None:
    metrics = BridgeMetrics()
    metrics.record("barge_in", {"reaction_ms": 0.4, "item_id": "item_1"})
    metrics.record("turn_latency", {"ms": 850.0})
    metrics.record("greeting_latency", {"ms": 300.0})
    metrics.record("error", {"source": "upstream", "code": "rate_limit_exceeded", "message": "slow down"})
    metrics.record("error", {"source": "carrier", "code": "duplicate_start", "message": "ignored"})
    metrics.record("assistant_transcript", {"text": "hello"})
    metrics.upstream_connected(120.0)
    realtime = {"upstream_api": "realtime"}
    assert value(metrics, "bridge_barge_ins_total", realtime) == 1
    assert value(metrics, "bridge_barge_in_reaction_seconds_sum", realtime) == 0.0004
    assert value(metrics, "bridge_barge_in_reaction_seconds_bucket", {"le": "0.0005", **realtime}) == 1
    assert value(metrics, "bridge_turn_latency_seconds_sum", realtime) == 0.85
    assert value(metrics, "bridge_greeting_latency_seconds_sum", realtime) == 0.3
    assert value(metrics, "bridge_upstream_connect_seconds_sum") == 0.12
    assert value(metrics, "bridge_upstream_errors_total", {"code": "rate_limit_exceeded"}) == 1
    assert value(metrics, "bridge_upstream_errors_total", {"code": "duplicate_start"}) is None


def test_live_calls_are_counted_apart() -> None:
    metrics = BridgeMetrics()
    metrics.call_ended("caller_hangup", "live")
    metrics.record("barge_in", {"reaction_ms": 0.3, "heard_after_stop_ms": 180}, "live")
    metrics.record("turn_latency", {"ms": 900.0}, "live")
    metrics.record("live_audio", {"underruns": 2}, "live")
    metrics.record("session_closed", {"reason": "close_requested", "seconds": 61.0}, "live")
    live = {"upstream_api": "live"}
    assert value(metrics, "bridge_calls_total", {"reason": "caller_hangup", **live}) == 1
    assert value(metrics, "bridge_barge_ins_total", live) == 1
    assert value(metrics, "bridge_barge_ins_total", {"upstream_api": "realtime"}) is None
    assert value(metrics, "bridge_turn_latency_seconds_sum", live) == 0.9
    assert value(metrics, "bridge_live_heard_after_stop_seconds_sum") == 0.18
    assert value(metrics, "bridge_live_underruns_total") == 2
    assert value(metrics, "bridge_live_session_seconds_total") == 61


def test_frame_times_are_split_by_source() -> None:
    metrics = BridgeMetrics()
    metrics.carrier_frame(30e-6)
    metrics.carrier_frame(30e-6)
    metrics.upstream_message(400e-6)
    assert value(metrics, "bridge_frame_processing_seconds_count", {"source": "carrier"}) == 2
    assert value(metrics, "bridge_frame_processing_seconds_bucket", {"source": "carrier", "le": "5e-05"}) == 2
    assert value(metrics, "bridge_frame_processing_seconds_count", {"source": "upstream"}) == 1


def test_label_values_from_the_wire_are_bounded() -> None:
    metrics = BridgeMetrics()
    for n in range(MAX_LABEL_VALUES + 10):
        metrics.upstream_error(f"code_{n}")
    metrics.upstream_error("Not A Code! <script>")
    codes = [
        line for line in exposition(metrics).splitlines() if line.startswith("bridge_upstream_errors_total{")
    ]
    assert len(codes) == MAX_LABEL_VALUES + 1
    assert value(metrics, "bridge_upstream_errors_total", {"code": "other"}) == 11


def test_recorder_is_read_at_scrape_time() -> None:
    metrics = BridgeMetrics()
    recorder = FakeRecorder()
    metrics.watch_recorder(recorder)
    recorder.backlog, recorder.write_failures, recorder.dropped = 120, 3, 1
    assert value(metrics, "bridge_calllog_backlog") == 120
    assert value(metrics, "bridge_calllog_write_failures_total") == 3
    assert value(metrics, "bridge_calllog_dropped_total") == 1


async def test_loop_lag_watcher_measures_a_blocked_loop() -> None:
    metrics = BridgeMetrics()
    watcher = asyncio.create_task(metrics.watch_loop(interval_s=0.01))
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.08)  # noqa: ASYNC251 - blocking the loop is the point: a slow synchronous call
        await asyncio.sleep(0.03)
    finally:
        watcher.cancel()
    assert value(metrics, "bridge_event_loop_lag_distribution_seconds_count") >= 2
    assert value(metrics, "bridge_event_loop_lag_distribution_seconds_sum") >= 0.06
    assert value(metrics, "bridge_event_loop_lag_distribution_seconds_bucket", {"le": "0.05"}) < value(
        metrics, "bridge_event_loop_lag_distribution_seconds_count"
    )


async def test_handler_serves_text_exposition_and_checks_auth() -> None:
    metrics = BridgeMetrics()
    metrics.call_ended("shutdown")
    app = web.Application()
    token = "secret-token"
    app.router.add_get(
        "/metrics",
        metrics_handler(
            metrics.registry, authorized=lambda r: r.headers.get("Authorization") == f"Bearer {token}"
        ),
    )
    async with TestClient(TestServer(app)) as client:
        denied = await client.get("/metrics")
        assert denied.status == 401
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert 'bridge_calls_total{reason="shutdown",upstream_api="realtime"} 1.0' in await response.text()


async def test_separate_metrics_port_on_loopback() -> None:
    metrics = BridgeMetrics()
    runner = await serve_metrics(0, metrics.registry, host="127.0.0.1")
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            assert ACTIVE_CALLS in await r.text()
    finally:
        await runner.cleanup()


async def test_cleanup_context_starts_and_stops_everything() -> None:
    metrics = BridgeMetrics()
    app = web.Application()
    app.cleanup_ctx.append(metrics_context(metrics, 0))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the startup half: the watcher is running, no extra port (0)
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "metrics-loop-lag"]
    assert len(tasks) == 1
    await runner.cleanup()
    assert tasks[0].done()
