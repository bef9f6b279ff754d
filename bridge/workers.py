"""What the worker processes of one host share: their slot, and the run directory with the board.

`bridge serve` with WORKERS > 1 (bridge.supervisor) makes a fresh run directory for each run:

    <run_dir>/metrics/       PROMETHEUS_MULTIPROC_DIR: every worker's metric files (bridge.metrics)
    <run_dir>/workers/<i>    worker i's state on the board, one small JSON object

A worker writes its own state as it changes (starting, ready, draining, stopping); the supervisor
writes the state of a worker that is not running (restarting, stopped) and counts restarts. Each
write replaces the file whole (rename), so a reader sees the old state or the new one, never half.
Any worker's /readyz reads the board, so the answer shows every worker whichever one is asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

WorkerState = Literal["starting", "ready", "draining", "stopping", "restarting", "stopped"]


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Worker `index` of `count`, in the run directory of one supervisor run."""

    index: int
    count: int
    run_dir: Path

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"


class WorkerBoard:
    def __init__(self, run_dir: Path, count: int) -> None:
        self.directory = run_dir / "workers"
        self.count = count

    def create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def publish(
        self, index: int, state: WorkerState, pid: int | None, *, restarts: int | None = None
    ) -> None:
        entry: dict[str, Any] = {"state": state, "pid": pid}
        if restarts is None:
            restarts = self.read_one(index).get("restarts", 0)  # kept across the worker's own writes
        entry["restarts"] = restarts
        path = self.directory / str(index)
        staging = path.with_name(f".{index}.{os.getpid()}")
        staging.write_text(json.dumps(entry))
        staging.replace(path)

    def read_one(self, index: int) -> dict[str, Any]:
        with contextlib.suppress(FileNotFoundError, ValueError):
            entry = json.loads((self.directory / str(index)).read_text())
            if isinstance(entry, dict):
                return entry
        return {"state": "starting", "pid": None, "restarts": 0}

    def read(self) -> list[dict[str, Any]]:
        """Every worker: index, state, pid, restarts."""
        return [{"index": index, **self.read_one(index)} for index in range(self.count)]


def bound_socket(host: str, port: int, *, shared: bool = False) -> socket.socket:
    """A TCP socket bound to host:port, not listening yet: the port is this process's (or, `shared`,
    its workers' through SO_REUSEPORT) from here on, but connections are refused until the app is
    ready and the site starts listening."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
