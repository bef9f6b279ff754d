"""Metrics of several worker processes read as one host (bridge/metrics.py, multiprocess mode).

Two real processes each run a `BridgeMetrics` in multiprocess mode and record different figures; the
test reads the shared directory as a worker's scrape does and checks how each metric combines, then
kills one process and checks what leaves with it and what stays.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

WORKER = textwrap.dedent(
    """
    import os, sys
    from bridge.metrics import BridgeMetrics

    calls, hangups, backlog, failures, lag = sys.argv[1:6]

    class Recorder:
        backlog = int(backlog)
        write_failures = int(failures)
        dropped = 0

    metrics = BridgeMetrics(multiprocess_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics.watch_recorder(Recorder())
    metrics.active_calls_changed(int(calls))
    for _ in range(int(hangups)):
        metrics.call_ended("caller_hangup")
    for _ in range(10):
        metrics.carrier_frame(30e-6)
    metrics.loop_lag.set(float(lag))
    metrics.gc_pause.labels("0").observe(0.001)
    metrics.publish()
    print("published", flush=True)
    sys.stdin.readline()
    """
)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    figures = [("3", "4", "7", "2", "0.004"), ("2", "1", "5", "1", "0.020")]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in figures
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "published"
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait()


def host(directory: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def test_one_read_of_the_directory_shows_every_worker(
    tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    value = host(tmp_path).get_sample_value
    assert value("bridge_active_calls") == 3 + 2  # livesum
    assert value("bridge_calls_total", {"reason": "caller_hangup", "upstream_api": "realtime"}) == 4 + 1
    assert value("bridge_frame_processing_seconds_count", {"source": "carrier"}) == 20
    assert value("bridge_frame_processing_seconds_bucket", {"source": "carrier", "le": "5e-05"}) == 20
    assert value("bridge_frame_processing_seconds_bucket", {"source": "carrier", "le": "2.5e-05"}) == 0
    assert value("bridge_gc_pause_seconds_count", {"generation": "0"}) == 2
    assert value("bridge_calllog_backlog") == 7 + 5
    assert value("bridge_calllog_write_failures_total") == 2 + 1
    assert value("bridge_event_loop_lag_seconds") == 0.020  # the worst worker
    assert value("python_info", {"implementation": "CPython", **_python_version()}) == 1
    both_rss = value("process_resident_memory_bytes")
    assert both_rss is not None and both_rss > 0
    assert (value("process_cpu_seconds_total") or 0) > 0
    assert value("python_gc_collections_total", {"generation": "0"}) is not None

    # Worker 1 dies (the supervisor then calls mark_process_dead): its live gauges leave with it,
    # its counters and histograms stay, so the host's totals never go backwards.
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait()
    mark_process_dead(workers[1].pid, str(tmp_path))
    value = host(tmp_path).get_sample_value
    assert value("bridge_active_calls") == 3
    assert value("bridge_calllog_backlog") == 7
    assert value("bridge_event_loop_lag_seconds") == 0.004
    assert (value("process_resident_memory_bytes") or 0) < both_rss
    assert value("bridge_calls_total", {"reason": "caller_hangup", "upstream_api": "realtime"}) == 5
    assert value("bridge_frame_processing_seconds_count", {"source": "carrier"}) == 20
    assert value("bridge_calllog_write_failures_total") == 3


def _python_version() -> dict[str, str]:
    major, minor, patch = (str(part) for part in sys.version_info[:3])
    return {"major": major, "minor": minor, "patchlevel": patch, "version": f"{major}.{minor}.{patch}"}


# Collections at nearly every allocation, some of them inside prometheus-client's multiprocess lock
# (creating a labelled child, mirroring): the GC-pause callback must not wait for that lock.
GC_CHURN = textwrap.dedent(
    """
    import gc, os
    from bridge.metrics import BridgeMetrics

    metrics = BridgeMetrics(multiprocess_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    unwatch = metrics.watch_gc()
    gc.freeze()  # keep each full collection short
    gc.set_threshold(1)
    for n in range(200):
        metrics.call_ended(f"reason_{n}")
        metrics.publish()
    gc.set_threshold(700)
    unwatch()
    metrics.publish()
    print("done", flush=True)
    """
)


def test_timing_collections_never_waits_on_the_multiprocess_lock(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", GC_CHURN], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.strip() == "done", done.stderr[-2000:]
    assert (host(tmp_path).get_sample_value("bridge_gc_pause_seconds_count", {"generation": "0"}) or 0) > 100
