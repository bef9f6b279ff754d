"""The least Live lead that never underruns on a jittery line: `python bench/live_lead.py`.

Run by hand, never in CI (about 20 minutes with the defaults). Everything runs in this one process on
127.0.0.1: the bridge app (one per lead, LIVE_LEAD_MS=L), the emulator's Live dialect (one per batch)
and Twilio caller emulators on a realistic mobile line.

The line (what the issue calls realistic, as the e2e tests do):
  carrier   uplink and downlink 40 ms +- 30 ms, the carrier's playout buffer 60 ms (LineConditions)
  upstream  the Live service's events 60 ms +- J ms late (EmulatorConfig.upstream_delay/jitter)
Each seed is one call: its carrier line and its upstream network are seeded by it, so a seed is the
same line at every lead.

Sweep: for each J and each lead L, every seed's call hears the greeting commentary answered by a
3-second scripted reply (a 500 Hz tone), and the caller's ear (the carrier emulator's `Playout`) is
checked for gaps inside the reply: an underrun is a stretch of silence between two pieces of played
audio, before the reply's last loud piece. The table gives, per J and L, the calls that underran and the
total gap; then, per J, the least L with no underrun in any call. LIVE_LEAD_MS ships as that for J=30
plus one frame.

Then, at the chosen lead, every seed's call is interrupted 1.2 to 2.4 s into a 6-second reply (the caller says
a 1200 Hz tone; the emulated model stops after hearing 240 ms of it) and the distribution of how long
the caller went on hearing the reply after the model stopped is printed: from the emulator's stop
(`LiveTurn.ended_at_ms`) to the last 500 Hz audio at the caller's ear, beside the bridge's own estimate
(`heard_after_stop_ms` in the call log), against the bound lead + one round trip of the line (caller
to the service and back: 40 + 60 + 40 ms, jitter aside), and a stricter one: the lead + the shortest
round trips the bridge measured on the call (the ledger's to the carrier, the input clock's to the
service), which jitter exceeds now and then.

    .venv/bin/python bench/live_lead.py
    .venv/bin/python bench/live_lead.py --jitters 30 --leads 60,80,100 --seeds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.audio import PCMU_8K  # noqa: E402
from bridge.call_log_sink import NoCallLog  # noqa: E402
from bridge.clock import now_ms  # noqa: E402
from bridge.config import load_settings  # noqa: E402
from bridge.log_records import RecordKind  # noqa: E402
from bridge.logs import configure_logging  # noqa: E402
from bridge.server import create_app  # noqa: E402
from bridge.sim.carrier_emulator import LineConditions, TwilioCallerEmulator  # noqa: E402
from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator, ScriptedReply  # noqa: E402

REPLY_HZ, CALLER_HZ = 500.0, 1200.0
FRAME_MS = 20
ROUND_TRIP_MS = 40 + 60 + 40  # the caller's speech to the service and the model's audio back, jitter aside


def line(seed: int) -> LineConditions:
    return LineConditions(
        uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=30, playout_delay_ms=60, seed=seed
    )


def tone(ms: float, hz: float, rate: int, dbfs: float = -12.0) -> bytes:
    t = np.arange(int(ms * rate / 1000)) / rate
    return (np.sin(2 * np.pi * hz * t) * 32767 * 10 ** (dbfs / 20)).astype("<i2").tobytes()


class Records(NoCallLog):
    """The call log's events, kept in memory by call id."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def event(self, call_id: str, kind: RecordKind, data: dict[str, Any], at: datetime | None = None) -> None:
        self.events.setdefault(call_id, []).append((str(kind), dict(data)))

    def first(self, call_id: str, kind: str) -> dict[str, Any] | None:
        return next((data for k, data in self.events.get(call_id, []) if k == kind), None)


@dataclass
class CallResult:
    underruns: int = 0
    gap_ms: float = 0.0
    heard_after_stop_ms: float | None = None  # measured at the ear
    estimate_ms: float | None = None  # the bridge's heard_after_stop_ms
    strict_bound_ms: float | None = None  # lead + the shortest carrier and upstream round trips measured
    problems: list[str] = field(default_factory=list)


def pcm16(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(PCMU_8K.to_pcm16(ulaw), dtype="<i2")


def loud_windows(pcm: np.ndarray, hz: float, rate: int = 8000, window: int = 80) -> np.ndarray:
    """Per 10 ms window: does `hz` dominate it, loudly?"""
    n = len(pcm) // window
    if n == 0:
        return np.zeros(0, dtype=bool)
    frames = pcm[: n * window].reshape(n, window).astype(np.float64)
    t = np.arange(window) / rate
    ref_cos, ref_sin = np.cos(2 * np.pi * hz * t), np.sin(2 * np.pi * hz * t)
    power = (frames @ ref_cos) ** 2 + (frames @ ref_sin) ** 2
    total = (frames**2).sum(axis=1) * window / 2
    return (power > 0.5 * total) & (total > (window / 2) * window * 100.0**2)


def gaps_in_reply(caller: TwilioCallerEmulator) -> tuple[int, float]:
    """Stretches of silence the caller heard between pieces of the reply, up to its last loud piece
    (or the bridge's clear, when it was interrupted)."""
    clears = caller.playout.clears
    until = clears[0].received_at_ms if clears else float("inf")
    slices = [s for s in caller.playout.slices if s.start_ms < until]
    loud = [i for i, s in enumerate(slices) if np.abs(pcm16(bytes(s.audio))).max(initial=0) > 100]
    if not loud:
        return 0, 0.0
    count, total = 0, 0.0
    for before, after in zip(slices[loud[0] : loud[-1]], slices[loud[0] + 1 : loud[-1] + 1], strict=True):
        gap = after.start_ms - before.end_ms
        if gap > 0.5:
            count += 1
            total += gap
    return count, total


async def one_call(
    base: str,
    emulator: RealtimeEmulator,
    index: int,
    seed: int,
    records: Records,
    interrupt_at_ms: float | None,
    lead_ms: int,
) -> CallResult:
    result = CallResult()
    caller = TwilioCallerEmulator(base.replace("http://", "ws://") + "/twilio/media", line=line(seed))
    async with caller:
        session = await emulator.wait_for_live_session(index + 1, timeout=10)
        if interrupt_at_ms is None:
            await caller.wait_heard(min_ms=3000, timeout_s=15)
            await caller.wait_quiet(quiet_ms=300, timeout_s=10)
        else:
            await caller.wait_heard(min_ms=interrupt_at_ms, timeout_s=15)
            said = caller.say(tone(800, CALLER_HZ, 8000))
            await caller.wait_said(said, timeout_s=5)
            await caller.wait_until(lambda: session.turns and session.turns[0].ended_at_ms is not None, 5)
            await asyncio.sleep(1.0)
    result.underruns, result.gap_ms = gaps_in_reply(caller)
    for _ in range(300):  # the call's last records come once its session has closed
        if records.first(caller.call_sid, "live_audio") is not None:
            break
        await asyncio.sleep(0.05)
    if interrupt_at_ms is not None:
        turn = session.turns[0]
        if not turn.interrupted or turn.ended_at_ms is None:
            result.problems.append("the model was not interrupted")
            return result
        # The reply as heard around the stop: the loud run that goes on from there (what follows a
        # pause is the model's next turn).
        pcm = np.frombuffer(caller.playout.heard_pcm(include_silence=True), dtype="<i2")
        loud = loud_windows(pcm, REPLY_HZ)
        i = int((turn.ended_at_ms - caller.playout.origin_ms) // 10)
        if 0 < i < len(loud):
            if loud[i]:
                while i + 1 < len(loud) and loud[i + 1]:
                    i += 1
                result.heard_after_stop_ms = caller.playout.origin_ms + (i + 1) * 10.0 - turn.ended_at_ms
            else:
                while i > 0 and not loud[i]:
                    i -= 1
                result.heard_after_stop_ms = min(
                    0.0, caller.playout.origin_ms + (i + 1) * 10.0 - turn.ended_at_ms
                )
        barge_in = records.first(caller.call_sid, "barge_in")
        audio = records.first(caller.call_sid, "live_audio")
        if barge_in is None or audio is None:
            result.problems.append("no barge_in or live_audio record")
            return result
        result.estimate_ms = barge_in.get("heard_after_stop_ms")
        upstream = audio.get("upstream_rtt_ms") or 0.0
        result.strict_bound_ms = lead_ms + (barge_in.get("rtt_ms") or 0.0) + upstream
    return result


async def batch(
    lead: int, jitter: float, seeds: list[int], stagger_s: float, interrupt: bool
) -> list[CallResult]:
    emulator = RealtimeEmulator(
        EmulatorConfig(
            strict=False, upstream_delay_ms=60, upstream_jitter_ms=jitter, upstream_seed=jitter_seed(jitter)
        )
    )
    await emulator.start("127.0.0.1", 0)
    records = Records()
    settings = load_settings(
        {
            "OPENAI_API_KEY": "sk-bench",
            "UPSTREAM_API": "live",
            "LIVE_URL": emulator.live_url,
            "LIVE_BACKEND_MODEL": "bench-backend",
            "LIVE_LEAD_MS": str(lead),
            "GREETING": "Read the announcement.",
            "ADMIN_TOKEN": "bench",
            "LOG_LEVEL": "error",
        }
    )
    app = create_app(settings, call_log=records)
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    rng = np.random.default_rng(lead * 7 + int(jitter))
    try:
        calls = []
        # Every turn of every session says the same tone (sessions pop the one queue in any order): the
        # greeting's, and in the interruption run the answer to the caller too.
        reply_ms = 6000 if interrupt else 3000
        for _ in range(len(seeds) * (3 if interrupt else 1)):
            emulator.script_reply(
                ScriptedReply(audio_pcm24k=tone(reply_ms, REPLY_HZ, 24000), transcript="reply")
            )
        for index, seed in enumerate(seeds):
            interrupt_at = float(rng.uniform(1200, 2400)) if interrupt else None
            calls.append(
                asyncio.create_task(one_call(base, emulator, index, seed, records, interrupt_at, lead))
            )
            await asyncio.sleep(stagger_s)  # connects in order: session i is seed i's
        return list(await asyncio.gather(*calls))
    finally:
        await runner.cleanup()
        await emulator.stop()


def jitter_seed(jitter: float) -> int:
    return 1000 + int(jitter)


def spread(values: list[float]) -> str:
    q = np.percentile(values, [0, 50, 95, 100])
    return f"min {q[0]:.0f}  p50 {q[1]:.0f}  p95 {q[2]:.0f}  max {q[3]:.0f} ms"


class LoopLag:
    """How late a 20 ms sleep wakes in this process: a stall here is a stall of every call's audio
    (bridge, emulator and callers share the loop), so an underrun beside a long stall is the host's."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            start = now_ms()
            await asyncio.sleep(0.02)
            self.lags.append(max(0.0, now_ms() - start - 20))

    def worst_since(self, index: int) -> float:
        return max(self.lags[index:], default=0.0)

    def summary(self) -> str:
        if not self.lags:
            return "-"
        ordered = sorted(self.lags)
        p99 = ordered[int(0.99 * (len(ordered) - 1))]
        p50, worst = statistics.median(ordered), ordered[-1]
        return f"event-loop lag p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms"


async def main(args: argparse.Namespace) -> None:
    configure_logging("error", "console")
    jitters = [float(j) for j in args.jitters.split(",")]
    leads = [int(v) for v in args.leads.split(",")] if args.leads else list(range(0, 201, 10))
    seeds = list(range(args.seeds))
    lag = LoopLag()
    watcher = asyncio.create_task(lag.run())
    started = time.monotonic()
    least: dict[float, int | None] = {}
    print(f"line: carrier 40 ms +-30 each way, playout 60 ms; upstream 60 ms +-J; {len(seeds)} seeds a point")
    columns = ("J ms", 5), ("lead ms", 8), ("calls underrun", 15), ("underruns", 10), ("gap ms", 8)
    print(" ".join(f"{name:>{width}}" for name, width in (*columns, ("worst stall ms", 15))))
    for jitter in jitters:
        clean_run = 0
        least[jitter] = None
        for lead in leads:
            mark = len(lag.lags)
            results = await batch(lead, jitter, seeds, args.stagger, interrupt=False)
            bad = [r for r in results if r.underruns]
            print(
                f"{jitter:5.0f} {lead:8d} {len(bad):>8d}/{len(results):<6d} "
                f"{sum(r.underruns for r in results):10d} {sum(r.gap_ms for r in results):8.0f} "
                f"{lag.worst_since(mark):15.0f}",
                flush=True,
            )
            if bad:
                least[jitter], clean_run = None, 0
            else:
                if least[jitter] is None:
                    least[jitter] = lead
                clean_run += 1
                if args.stop_after and clean_run >= args.stop_after:
                    break
    print()
    for jitter, lead in least.items():
        shown = "-" if lead is None else lead
        print(f"J = {jitter:.0f} ms: least lead with no underrun in any call: {shown} ms")
    chosen = args.chosen if args.chosen is not None else (least.get(30.0) or 0) + FRAME_MS
    print(f"chosen LIVE_LEAD_MS: {chosen}")
    print()
    results = await batch(chosen, 30.0, seeds, args.stagger, interrupt=True)
    heard = [r.heard_after_stop_ms for r in results if r.heard_after_stop_ms is not None]
    estimates = [r.estimate_ms for r in results if r.estimate_ms is not None]
    over = [h for h in heard if h > chosen + ROUND_TRIP_MS]
    over_strict = [
        r
        for r in results
        if r.heard_after_stop_ms is not None
        and r.strict_bound_ms is not None
        and r.heard_after_stop_ms > r.strict_bound_ms
    ]
    problems = [p for r in results for p in r.problems]
    print(f"interruptions at lead {chosen} ms, J = 30 ms ({len(results)} calls)")
    if heard:
        print(f"  heard after the model stopped (ear): {spread(heard)}")
    if estimates:
        print(f"  the bridge's estimate (call log):     {spread(estimates)}")
    print(f"  bound: lead + the line's round trip = {chosen + ROUND_TRIP_MS} ms; calls over it: {len(over)}")
    stricter = [r.strict_bound_ms for r in results if r.strict_bound_ms is not None]
    if stricter:
        print(
            f"  stricter: lead + the shortest round trips measured: {min(stricter):.0f} to "
            f"{max(stricter):.0f} ms; calls over it: {len(over_strict)}"
        )
    print(f"  underruns meanwhile: {sum(r.underruns for r in results)}; problems: {problems or 'none'}")
    print(f"{lag.summary()}; {time.monotonic() - started:.0f} s in all")
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jitters", default="10,30,60", help="upstream jitters J to sweep, ms")
    parser.add_argument("--leads", default="", help="leads to try, ms (default 0, 10, ..., 200)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--stagger", type=float, default=0.8, help="seconds between call starts")
    parser.add_argument(
        "--stop-after", type=int, default=4, help="clean leads in a row that end a J's sweep (0: never)"
    )
    parser.add_argument(
        "--chosen", type=int, default=None, help="lead for the interruption run (default: J=30's + 20)"
    )
    asyncio.run(main(parser.parse_args()))
