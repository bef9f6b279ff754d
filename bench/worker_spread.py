"""How evenly connections spread over the workers of one host. Run by hand, never in CI.

    python bench/worker_spread.py [--workers 2] [--calls 200] [--burst 10]
        `bridge serve` with WORKERS, the Realtime emulator and Twilio-like callers on 127.0.0.1: places
        the calls (bursts of --burst at once; each waits until the call log names its owner, then hangs
        up) and prints how many each worker took.

    python bench/worker_spread.py --compare [--workers 4] [--calls 200]
        The choice bridge/supervisor.py made, measured apart from the bridge: bare aiohttp + uvloop
        workers that hold websocket connections, sharing the port either with SO_REUSEPORT (each binds
        its own socket) or through one listening socket they all inherit; idle workers, bursts of 20,
        and worker 0 kept busy (4 ms of CPU every 5 ms).

Not a load benchmark: calls last a moment and carry no audio to speak of. The question is only which
worker the kernel hands each new connection to.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ADMIN_TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the bridge ----------------------------------------------------------------------------------


async def bridge_spread(workers: int, calls: int, burst: int) -> collections.Counter[str]:
    from bridge.sim.carrier_emulator import TwilioCallerEmulator
    from bridge.sim.realtime_emulator import RealtimeEmulator

    emulator = RealtimeEmulator()
    url = await emulator.start("127.0.0.1", 0)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bridge-spread-"))
    env = {
        **os.environ,
        "REALTIME_URL": url,
        "OPENAI_API_KEY": "sk-bench",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "CALL_LOG_URL": f"sqlite+aiosqlite:///{workdir}/calls.db",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "MAX_CALLS": str(calls),
        "LOG_LEVEL": "warning",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    owners: collections.Counter[str] = collections.Counter()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            await _every_worker_ready(http, base, workers)

            async def one() -> None:
                caller = TwilioCallerEmulator(base.replace("http", "ws") + "/twilio/media")
                await caller.connect()
                try:
                    while True:
                        async with http.get(f"{base}/api/calls/{caller.call_sid}") as response:
                            if response.status == 200:
                                owners[(await response.json())["owner_id"]] += 1
                                return
                        await asyncio.sleep(0.05)
                finally:
                    await caller.hangup()

            for start in range(0, calls, burst):
                await asyncio.gather(*(one() for _ in range(min(burst, calls - start))))
    finally:
        server.terminate()
        await server.wait()
        await emulator.stop()
    return owners


async def _every_worker_ready(http: aiohttp.ClientSession, base: str, workers: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            async with http.get(base + "/readyz") as response:
                body = await response.json()
                if len(body["workers"]) == workers and all(w["state"] == "ready" for w in body["workers"]):
                    return
        except (aiohttp.ClientError, KeyError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("the workers did not all get ready")


# ---- bare workers: SO_REUSEPORT against one inherited socket ---------------------------------------


def bare_worker(mode: str, where: str, index: int, busy: bool) -> None:
    import uvloop
    from aiohttp import web

    async def main() -> None:
        app = web.Application()

        async def hold(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str(str(index))
            async for _ in ws:
                pass
            return ws

        app.router.add_get("/ws", hold)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        if mode == "reuseport":
            await web.TCPSite(runner, "127.0.0.1", int(where), reuse_port=True).start()
        else:
            await web.SockSite(runner, socket.socket(fileno=int(where))).start()
        while busy:  # a worker with calls: 4 ms of CPU every 5 ms
            began = time.perf_counter()
            while time.perf_counter() - began < 0.004:
                pass
            await asyncio.sleep(0.001)
        await asyncio.Event().wait()

    uvloop.run(main())


async def _connect(port: int, connections: int, burst: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    held = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:

        async def one() -> None:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws")
            counts[(await ws.receive()).data] += 1
            held.append(ws)

        for start in range(0, connections, burst):
            await asyncio.gather(*(one() for _ in range(min(burst, connections - start))))
            await asyncio.sleep(0.02)
        for ws in held:
            await ws.close()
    return counts


def bare_spread(
    mode: str, workers: int, connections: int, burst: int, busy: bool
) -> collections.Counter[str]:
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port), backlog=128) if mode == "inherited" else None
    where = str(listener.fileno()) if listener else str(port)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--bare-worker", mode, where, str(i), "1" if busy and i == 0 else "0"],
            pass_fds=(listener.fileno(),) if listener else (),
        )
        for i in range(workers)
    ]
    try:
        time.sleep(2.0)  # every worker listening
        return asyncio.run(_connect(port, connections, burst))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        if listener:
            listener.close()


def share(counts: collections.Counter[str], workers: list[str]) -> str:
    total = sum(counts.values()) or 1
    return "  ".join(f"{w}: {counts[w]} ({100 * counts[w] / total:.0f} %)" for w in workers)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bare-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        mode, where, index, busy = args.bare_worker
        bare_worker(mode, where, int(index), busy == "1")
        return
    print(f"{os.cpu_count()} cores, {args.workers} workers, {args.calls} connections per run")
    if args.compare:
        names = [str(i) for i in range(args.workers)]
        for mode in ("reuseport", "inherited"):
            for burst, busy, what in (
                (1, False, "idle"),
                (20, False, "bursts of 20"),
                (1, True, "worker 0 busy"),
            ):
                for _ in range(args.runs):
                    counts = bare_spread(mode, args.workers, args.calls, burst, busy)
                    print(f"{mode:9}  {what:13}  {share(counts, names)}", flush=True)
        return
    from bridge.logs import configure_logging

    configure_logging("warning", "console")  # the emulator's and callers' own lines
    for _ in range(args.runs):
        counts = asyncio.run(bridge_spread(args.workers, args.calls, args.burst))
        print(f"bridge serve  bursts of {args.burst}  {share(counts, sorted(counts))}", flush=True)


if __name__ == "__main__":
    main()
