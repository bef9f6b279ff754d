"""The supervisor of `bridge serve` with WORKERS > 1 (bridge/supervisor.py), around stand-in workers.

The stand-ins are real processes (a few lines of Python each) that put themselves on the workers'
board and then crash, refuse to start, or record the signals they get; the full server as a worker
is tested in tests/test_e2e_workers.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.config import load_settings
from bridge.supervisor import RestartPolicy, Supervisor
from bridge.workers import WorkerBoard
from tests.e2e import free_port

# argv: index, run dir, journal file. It writes its start to the journal and takes the board's
# "ready" (as a worker does once it listens), then does what BEHAVIOUR says.
STAND_IN = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from bridge.workers import WorkerBoard

    index, run_dir, journal = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def note(line):
        with journal.open("a") as f:
            f.write(f"{index} {line} {time.monotonic()}\\n")

    note("start")
    BEHAVIOUR
    """
)
CRASH_WHEN_READY = 'WorkerBoard(run_dir, 2).publish(index, "ready", os.getpid()); sys.exit(1)'
NEVER_READY = "sys.exit(3)"
RECORD_SIGNALS = textwrap.dedent(
    """
    def on_signal(signum, frame):
        note(signal.Signals(signum).name)
        if signum == signal.SIGINT or not IGNORE_TERM:
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    WorkerBoard(run_dir, 2).publish(index, "ready", os.getpid())
    while True:
        time.sleep(0.05)
    """
)


def supervisor(
    journal: Path, behaviour: dict[int, str], env: dict[str, str] | None = None, **policy: float
) -> Supervisor:
    settings = load_settings(
        {"WORKERS": "2", "PORT": str(free_port()), "ADMIN_TOKEN": "t", "DRAIN_SECONDS": "0", **(env or {})}
    )

    def command(index: int, run_dir: Path) -> list[str]:
        script = STAND_IN.replace("BEHAVIOUR", behaviour[index])
        return [sys.executable, "-c", script, str(index), str(run_dir), str(journal)]

    return Supervisor(settings, command=command, policy=lambda: RestartPolicy(**policy))


def journal_lines(journal: Path) -> list[tuple[int, str, float]]:
    if not journal.exists():
        return []
    return [
        (int(i), what, float(at))
        for i, what, at in (line.split() for line in journal.read_text().splitlines())
    ]


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


def test_restart_delays_grow_after_quick_deaths_and_reset_after_a_healthy_run() -> None:
    policy = RestartPolicy(healthy_after_s=30, first_delay_s=1, max_delay_s=30)
    assert [policy.delay_after(2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.delay_after(45) == 0  # it ran well: start it again at once
    assert policy.delay_after(1) == 1


async def test_a_crash_loop_is_restarted_with_growing_waits_not_spun(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    sup = supervisor(
        journal,
        {0: CRASH_WHEN_READY, 1: RECORD_SIGNALS.replace("IGNORE_TERM", "False")},
        healthy_after_s=60,
        first_delay_s=0.2,
        max_delay_s=0.4,
    )
    with capture_logs() as logs:
        running = asyncio.create_task(sup.run())
        await wait_for(
            lambda: sum(1 for i, what, _ in journal_lines(journal) if i == 0 and what == "start") >= 5
        )
        restarts = WorkerBoard(sup.run_dir, 2).read_one(0)["restarts"]
        sup.on_signal(signal.SIGTERM)
        await asyncio.wait_for(running, 10)  # (its exit code says whether worker 0 was mid-crash)
    starts = [at for i, what, at in journal_lines(journal) if i == 0 and what == "start"]
    waits = [entry["in_s"] for entry in logs if entry["event"] == "worker died: starting it again"]
    assert waits[:4] == [0.2, 0.4, 0.4, 0.4]
    # Each start came no sooner than its wait after the one before (and the death in between).
    for before, after, wait in zip(starts, starts[1:], waits, strict=False):
        assert after - before >= wait
    assert restarts >= 4
    assert [what for i, what, _ in journal_lines(journal) if i == 1] == [
        "start",
        "SIGTERM",
    ]  # never restarted
    assert not sup.run_dir.exists()  # the run's directory goes with it


async def test_a_worker_that_never_gets_ready_stops_everything_with_its_exit_code(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    sup = supervisor(journal, {0: RECORD_SIGNALS.replace("IGNORE_TERM", "False"), 1: NEVER_READY})
    with capture_logs() as logs:
        assert await asyncio.wait_for(sup.run(), 30) == 3
    assert any(e["event"] == "worker failed to start: stopping" and e["index"] == 1 for e in logs)
    # Worker 0 was stopped at once (SIGINT), not drained, however far its own start had got.
    assert sup.slots[0].process is not None and sup.slots[0].process.returncode is not None
    assert [what for i, what, _ in journal_lines(journal) if i == 0] in ([], ["start"], ["start", "SIGINT"])
    assert sum(1 for i, what, _ in journal_lines(journal) if i == 1 and what == "start") == 1


async def test_sigterm_drains_every_worker_and_a_second_signal_stops_them(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    # Workers that go on after SIGTERM (a drain that takes long) and stop on SIGINT.
    stubborn = RECORD_SIGNALS.replace("IGNORE_TERM", "True")
    sup = supervisor(journal, {0: stubborn, 1: stubborn})
    running = asyncio.create_task(sup.run())
    await wait_for(lambda: all(w["state"] == "ready" for w in WorkerBoard(sup.run_dir, 2).read()))
    sup.on_signal(signal.SIGTERM)
    await wait_for(lambda: sum(1 for _, what, _ in journal_lines(journal) if what == "SIGTERM") == 2)
    assert not running.done()  # both still draining
    sup.on_signal(signal.SIGTERM)  # the operator insists
    assert await asyncio.wait_for(running, 10) == 0
    for index in (0, 1):
        assert [what for i, what, _ in journal_lines(journal) if i == index] == ["start", "SIGTERM", "SIGINT"]


def free_port_pair() -> int:
    """A free port whose next one is free too: two workers' internal ports are INTERNAL_PORT and the
    one after it, and the test below must take the second itself (a clean-clone run once found it
    taken by something else)."""
    while True:
        first = free_port()
        try:
            socket.create_server(("0.0.0.0", first + 1)).close()
        except OSError:
            continue
        return first


@pytest.mark.parametrize("taken", ["PORT", "the second worker's internal port"])
async def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path: Path, taken: str) -> None:
    journal = tmp_path / "journal"
    internal = free_port_pair()
    sup = supervisor(journal, {0: NEVER_READY, 1: NEVER_READY}, {"INTERNAL_PORT": str(internal)})
    port = sup.settings.port if taken == "PORT" else internal + 1
    with socket.create_server(("0.0.0.0", port)), capture_logs() as logs:
        assert await sup.run() == 1
    assert any(e["event"] == "cannot listen" for e in logs)
    assert journal_lines(journal) == []


async def test_a_run_directory_left_by_a_killed_supervisor_is_removed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    finished = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await finished.wait()  # its pid belongs to no process now
    abandoned = tmp_path / "bridge-run-abandoned"
    (abandoned / "metrics").mkdir(parents=True)
    (abandoned / "supervisor.pid").write_text(str(finished.pid))  # a supervisor that no longer runs
    alive = tmp_path / "bridge-run-alive"
    alive.mkdir()
    (alive / "supervisor.pid").write_text(str(os.getpid()))  # one that does: left alone
    sup = supervisor(tmp_path / "journal", {0: NEVER_READY, 1: NEVER_READY})
    assert await asyncio.wait_for(sup.run(), 30) == 3
    assert not abandoned.exists() and alive.exists()
    assert sup.run_dir.parent == tmp_path and not sup.run_dir.exists()
