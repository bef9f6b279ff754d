"""`bridge serve` with WORKERS > 1: a supervisor process and its workers, which share PORT.

- **Workers** are fresh interpreters (`python -m bridge worker --index i --run-dir D`), not forks:
  nothing of the supervisor's state (an event loop, threads, database connections) leaks into them,
  a restarted worker starts exactly as the first one did, and the supervisor itself stays small.
  Each runs the same server a single process runs (bridge.server.serve) and is one replica to the
  call log (REPLICA_ID/w<index>, its own lease, bridge.calllog.leases).
- **The port**: each worker binds PORT with SO_REUSEPORT and the kernel hashes each new connection
  to one of the listening workers. Measured with bench/worker_spread.py on a 2-core host, 200
  connections: 44-56 % per worker with 2 workers, 19-32 % with 4, idle, in bursts or with one worker
  busy. One socket inherited by every worker spread as evenly over 2 idle workers but 2-42 % over 4,
  and since MAX_CALLS is per worker an uneven spread turns calls away while other workers have room.
  (It steers connections away from a busy worker, 14-18 %; for calls that last minutes an even count
  matters more.) The supervisor first binds the port alone, so a second `bridge serve` on a port in
  use fails at once instead of quietly joining this one's workers.
- **Restarts**: a worker that dies is started again (a new incarnation under the same replica id,
  which closes its predecessor's calls as it starts). At once after a healthy run; after a quick
  death the wait doubles from 1 s up to 30 s, so a crash loop costs little. A worker that dies
  before it was ever ready means the configuration cannot work: everything stops, with its exit code.
- **Signals**: SIGTERM is passed to every worker, each drains as a single process does, and the
  supervisor exits when they all have; a second SIGTERM or a SIGINT is passed on as SIGINT (stop now).
  Each worker exits within the stop budget (bridge.stop_budget); one still running
  STRAGGLER_GRACE_S past it is killed. A worker whose supervisor dies drains.
- **Shared for the run** (bridge.workers): a fresh run directory with the workers' board (/readyz)
  and PROMETHEUS_MULTIPROC_DIR; one ADMIN_TOKEN and one stream-token key when none is configured,
  so every worker accepts what any other issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from bridge.config import Settings, admin_token_for
from bridge.logs import get_logger
from bridge.stop_budget import FINAL_S
from bridge.workers import WorkerBoard, bound_socket

log = get_logger("bridge.supervisor")

# A worker exits within its stop budget (SHUTDOWN_BUDGET_SECONDS, bridge.stop_budget) of the signal;
# one still running this long past it is killed. The orchestrator's grace period must cover both.
STRAGGLER_GRACE_S = 2.0

WorkerCommand = Callable[[int, Path], list[str]]
RUN_DIR_PREFIX = "bridge-run-"


def worker_command(index: int, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "bridge", "worker", "--index", str(index), "--run-dir", str(run_dir)]


class RestartPolicy:
    """How long to wait before starting a dead worker again: not at all after a healthy run (one that
    lasted `healthy_after_s`), else `first_delay_s`, doubling with each quick death up to `max_delay_s`."""

    def __init__(
        self, *, healthy_after_s: float = 30.0, first_delay_s: float = 1.0, max_delay_s: float = 30.0
    ) -> None:
        self.healthy_after_s = healthy_after_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.quick_deaths = 0

    def delay_after(self, ran_s: float) -> float:
        if ran_s >= self.healthy_after_s:
            self.quick_deaths = 0
            return 0.0
        self.quick_deaths += 1
        return min(self.first_delay_s * 2 ** (self.quick_deaths - 1), self.max_delay_s)


@dataclass
class _Slot:
    index: int
    policy: RestartPolicy
    process: asyncio.subprocess.Process | None = None
    was_ready: bool = False
    restarts: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        command: WorkerCommand = worker_command,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.count = settings.worker_count
        self.command = command
        self.env = dict(os.environ if env is None else env)
        self.slots = [_Slot(index, policy()) for index in range(self.count)]
        self.run_dir = Path()  # made fresh by run()
        self.board = WorkerBoard(self.run_dir, self.count)
        self.signals: list[int] = []
        self.exit_code = 0
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Start the workers and keep them running until a signal (or a worker that cannot start)."""
        _remove_abandoned_runs()
        self.run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        (self.run_dir / "supervisor.pid").write_text(str(os.getpid()))
        self.board = WorkerBoard(self.run_dir, self.count)
        try:
            try:
                self._check_ports()
            except OSError as exc:
                log.error("cannot listen", port=self.settings.port, error=str(exc))
                return 1
            env = self._worker_env()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.on_signal, signum)
            log.info("starting workers", workers=self.count, port=self.settings.port, run=str(self.run_dir))
            await asyncio.gather(*(self._keep(slot, env) for slot in self.slots))
            log.info("stopped", exit_code=self.exit_code)
            return self.exit_code
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def on_signal(self, signum: int) -> None:
        self.signals.append(signum)
        first = len(self.signals) == 1
        passed_on = signal.SIGTERM if first and signum == signal.SIGTERM else signal.SIGINT
        log.warning(
            "passing the signal to every worker",
            signal=signal.Signals(signum).name,
            workers_get=passed_on.name,
        )
        self._stop(passed_on)

    def _stop(self, passed_on: int) -> None:
        first = not self._stopping.is_set()
        self._stopping.set()
        for slot in self.slots:
            slot.wake.set()
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(passed_on)
        if first:
            budget = self.settings.shutdown_budget if passed_on == signal.SIGTERM else FINAL_S
            asyncio.get_running_loop().call_later(budget + STRAGGLER_GRACE_S, self._kill_stragglers)

    def _kill_stragglers(self) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                log.error("worker still running past its stop budget: killing it", index=slot.index)
                slot.process.kill()

    def _check_ports(self) -> None:
        """Bind each shared port alone for a moment: in use means another server (a second `bridge
        serve` would otherwise join this one's workers through SO_REUSEPORT); and the workers'
        internal ports, so a taken one is reported here rather than by a worker failing to start."""
        first_internal = self.settings.internal_port
        internal = range(first_internal, first_internal + self.count) if first_internal else range(0)
        for port in (self.settings.port, self.settings.metrics_port, *internal):
            if port:
                bound_socket(self.settings.host, port).close()

    def _worker_env(self) -> dict[str, str]:
        metrics_dir = self.run_dir / "metrics"
        metrics_dir.mkdir()
        self.board.create()
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        env["ADMIN_TOKEN"] = admin_token_for(self.settings)
        settings = self.settings
        if not (settings.stream_token_secret and settings.stream_token_secret.get_secret_value()) and not (
            settings.twilio_auth_token and settings.twilio_auth_token.get_secret_value()
        ):
            # Unset, each worker would key stream tokens itself and refuse a stream whose webhook
            # reached a sibling. (Replicas on other hosts still need STREAM_TOKEN_SECRET.)
            env["STREAM_TOKEN_SECRET"] = secrets.token_urlsafe(32)
        return env

    async def _keep(self, slot: _Slot, env: dict[str, str]) -> None:
        """Run worker `slot.index` until the supervisor stops, starting it again when it dies."""
        while not self._stopping.is_set():
            started = time.monotonic()
            process = slot.process = await asyncio.create_subprocess_exec(
                *self.command(slot.index, self.run_dir), env=env
            )
            log.info("worker started", index=slot.index, pid=process.pid)
            code = await process.wait()
            mark_process_dead(process.pid, str(self.run_dir / "metrics"))
            slot.was_ready = slot.was_ready or self.board.read_one(slot.index)["state"] != "starting"
            if self._stopping.is_set():
                self.board.publish(slot.index, "stopped", process.pid, restarts=slot.restarts)
                if code != 0:
                    log.warning("worker stopped", index=slot.index, exit=_describe(code))
                    self.exit_code = self.exit_code or 1
                return
            if not slot.was_ready:
                log.error("worker failed to start: stopping", index=slot.index, exit=_describe(code))
                self.board.publish(slot.index, "stopped", process.pid, restarts=slot.restarts)
                self.exit_code = code if code > 0 else 1
                self._stop(signal.SIGINT)
                return
            delay = slot.policy.delay_after(time.monotonic() - started)
            slot.restarts += 1
            self.board.publish(slot.index, "restarting", process.pid, restarts=slot.restarts)
            log.error(
                "worker died: starting it again",
                index=slot.index,
                pid=process.pid,
                exit=_describe(code),
                in_s=delay,
                restarts=slot.restarts,
            )
            slot.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await slot.wake.wait()
        self.board.publish(slot.index, "stopped", None, restarts=slot.restarts)


def _remove_abandoned_runs() -> None:
    """Run directories of supervisors that were killed (-9) and could not clean up after themselves."""
    for run_dir in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        try:
            pid = int((run_dir / "supervisor.pid").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(run_dir, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge: unreadable, being created, or another user's live process


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def supervise(settings: Settings) -> int:
    """`bridge serve` for WORKERS > 1; returns the exit code."""
    return asyncio.run(Supervisor(settings).run())
