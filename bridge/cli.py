"""`bridge serve`, `bridge dial`, `bridge emulator`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

from bridge.config import ConfigError, load_settings
from bridge.logs import configure_logging, get_logger


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
    try:
        settings = load_settings()
    except ConfigError as exc:
        print("bridge: invalid configuration:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
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
    )
    asyncio.run(serve_forever(settings, toolbox))
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
    commands = {"serve": serve, "emulator": emulator}
    if not argv or argv[0] not in (*commands, "dial"):
        print("usage: bridge {serve,dial,emulator} [options]", file=sys.stderr)
        return 2
    if argv[0] == "dial":
        from bridge.dial import main_dial

        return main_dial(argv[1:])
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
