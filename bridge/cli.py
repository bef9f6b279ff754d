"""`bridge serve`, `bridge dial`, `bridge call`, `bridge emulator`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from bridge.config import ConfigError, Settings, load_settings
from bridge.logs import configure_logging, get_logger

if TYPE_CHECKING:
    from bridge.workers import WorkerSlot


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it: the stdlib loop works, slower.
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="bridge serve", description="Run the media bridge (configured by env)."
    ).parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    if settings.worker_count > 1:
        from bridge.supervisor import supervise

        return supervise(settings)
    return _run_server(settings, None)


def worker(argv: list[str]) -> int:
    """One of `bridge serve`'s workers (WORKERS > 1): started by the supervisor, not by hand."""
    parser = argparse.ArgumentParser(prog="bridge worker", description="A worker of `bridge serve`.")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    from bridge.workers import WorkerSlot

    structlog.contextvars.bind_contextvars(worker=args.index)
    return _run_server(settings, WorkerSlot(args.index, settings.worker_count, args.run_dir))


def _settings() -> Settings | None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print("bridge: invalid configuration:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _run_server(settings: Settings, slot: WorkerSlot | None) -> int:
    from bridge.server import serve as serve_forever
    from bridge.tools.toolbox import Toolbox
    from bridge.tools.webhook import ToolsFileError

    secret = settings.tools_secret.get_secret_value() if settings.tools_secret else ""
    try:
        # The process edge: tool headers may name secrets kept in the environment.
        toolbox = Toolbox.from_file(settings.tools_file, os.environ, secret)
    except ToolsFileError as exc:
        print(f"bridge: invalid TOOLS_FILE: {exc}", file=sys.stderr)
        return 2

    _use_uvloop()
    log = get_logger("bridge")
    log.info(
        "starting",
        host=settings.host,
        port=settings.port,
        model=settings.realtime_model,
        dialect=settings.realtime_dialect,
        upstream_api=settings.upstream_api,
    )
    asyncio.run(serve_forever(settings, toolbox, slot))
    return 0


def emulator(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bridge emulator", description="Run the Realtime API emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    configure_logging("info", "console")
    from bridge.sim.realtime_emulator import RealtimeEmulator

    async def run() -> None:
        emu = RealtimeEmulator()
        url = await emu.start(args.host, args.port)
        print(f"Realtime emulator listening at {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await emu.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `worker` is not in the usage line: the supervisor of `bridge serve` starts workers.
    commands = {"serve": serve, "emulator": emulator, "worker": worker}
    if not argv or argv[0] not in (*commands, "dial", "call"):
        print("usage: bridge {serve,dial,call,emulator} [options]", file=sys.stderr)
        return 2
    if argv[0] == "dial":
        from bridge.dial import main_dial

        return main_dial(argv[1:])
    if argv[0] == "call":
        from bridge.outbound.command import main_call

        return main_call(argv[1:])
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
