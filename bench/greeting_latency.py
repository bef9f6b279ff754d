"""How long a caller waits for the greeting, with one bridge process and with several. Run by hand.

    python bench/greeting_latency.py [--calls 15] [--gap-ms 300] [--upstream-delay-ms 25]

Each call is placed the way Twilio places it: the voice webhook, then (`--gap-ms` later: Twilio takes a
few hundred ms to read the TwiML and open the stream) the media stream. The figure is the time from the
stream's start to the first greeting audio the caller hears (the carrier emulator's playout clock).

- **one process** (`PREFETCH_GREETING=auto`, alone): the webhook's session is opened, configured and
  asked for the greeting at once; the stream claims it with the greeting (usually) waiting.
- **several, same process**: two `bridge serve` replicas sharing one call log; webhook and stream
  reach the same one (1 in N behind a balancer). The prepared session is configured; the greeting is
  asked for when the stream claims it.
- **several, other process**: the stream reaches the other replica, which admits it (the call's row),
  opens a session of its own, configures it and asks for the greeting; the webhook's session is closed.

The Realtime emulator answers a response's first audio `first_delta_delay_ms` (120) after it is asked
for, and every server event crosses a simulated network of `--upstream-delay-ms` (one way). Opening a
session on loopback costs a few ms; against OpenAI the TLS and websocket handshake adds a few hundred,
which only the third case pays in full at the stream's start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bridge.sim.carrier_emulator import TwilioCallerEmulator, random_sid
from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator
from bridge.sim.twilio_voice import answer_call

ADMIN_TOKEN = "bench-admin-token"
GREETING = "Greet the caller in one short sentence."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def bridge(realtime_url: str, call_log_url: str, replica_id: str) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "REALTIME_URL": realtime_url,
        "OPENAI_API_KEY": "sk-bench",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "CALL_LOG_URL": call_log_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "REPLICA_ID": replica_id,
        "GREETING": GREETING,
        "POST_CALL_SUMMARY": "false",
        "LOG_LEVEL": "warning",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield base
    finally:
        process.terminate()
        await process.wait()


async def one_call(webhook_base: str, stream_base: str, gap_s: float) -> float:
    call_sid = random_sid("CA")
    form = {"CallSid": call_sid, "From": "+15550100001", "To": "+15550100002", "Direction": "inbound"}
    async with aiohttp.ClientSession() as http:
        stream_url, parameters = await answer_call(http, webhook_base + "/twilio/voice", form)
    await asyncio.sleep(gap_s)
    stream_url = stream_url.replace(webhook_base.replace("http", "ws"), stream_base.replace("http", "ws"))
    caller = TwilioCallerEmulator(stream_url, custom_parameters=parameters, call_sid=call_sid)
    await caller.connect()
    try:
        await caller.wait_heard(min_ms=100, timeout_s=10)
        first = caller.playout.first_heard_ms()
        assert first is not None and caller.started_ms is not None
        return first - caller.started_ms
    finally:
        await caller.hangup()


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{name:<28} median {statistics.median(ordered):6.0f} ms   p90 {p90:6.0f} ms   (n={len(ordered)})"


async def main(calls: int, gap_ms: float, upstream_delay_ms: float) -> None:
    emulator = RealtimeEmulator(EmulatorConfig(upstream_delay_ms=upstream_delay_ms))
    realtime_url = await emulator.start("127.0.0.1", 0)
    workdir = Path(tempfile.mkdtemp(prefix="bridge-greeting-"))
    gap_s = gap_ms / 1000
    try:
        async with bridge(realtime_url, f"sqlite+aiosqlite:///{workdir}/one.db", "alone") as alone:
            await one_call(alone, alone, gap_s)  # warm-up: first-call costs on both sides
            one = [await one_call(alone, alone, gap_s) for _ in range(calls)]
        shared = f"sqlite+aiosqlite:///{workdir}/shared.db"
        async with bridge(realtime_url, shared, "a") as a, bridge(realtime_url, shared, "b") as b:
            await one_call(a, b, gap_s)
            same = [await one_call(b, b, gap_s) for _ in range(calls)]
            other = [await one_call(a, b, gap_s) for _ in range(calls)]
    finally:
        await emulator.stop()
    first_ms = EmulatorConfig().first_delta_delay_ms
    print(f"greeting latency, stream start to first audio heard; {gap_ms:g} ms webhook-to-stream gap,")
    print(f"emulator's first audio {first_ms:g} ms after it is asked for, {upstream_delay_ms:g} ms one way")
    print(summary("one process (prefetched)", one))
    print(summary("several, same process", same))
    print(summary("several, other process", other))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--gap-ms", type=float, default=300.0)
    parser.add_argument("--upstream-delay-ms", type=float, default=25.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.gap_ms, args.upstream_delay_ms))
