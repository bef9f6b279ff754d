"""Load benchmark of one `bridge serve` process: `python bench/load.py [--calls 100] [--seconds 30]`.

Run by hand, never in CI. Everything listens on 127.0.0.1 and every run stops by itself. Three processes
besides this one, so that only the bridge's own work is charged to it:

  emulator   the Realtime emulator (bridge.sim.realtime_emulator), an echo agent
  bridge     `python -m bridge serve`, configured by env like production, pointed at the emulator
  load       N TwilioCallerEmulator calls: webhook POST, then a media stream in real time (a 20 ms
             frame every 20 ms). Each caller listens to the greeting, then every ~6 s says 1 s of a tone,
             which the emulator echoes back as the assistant's reply; every other turn the caller talks
             over that reply ~0.4 s into it (a barge-in).

Measured on the bridge process from /proc/PID (utime+stime, VmRSS), sampled every 0.25 s:
  CPU ms per call-second   CPU used while all N calls were up / (N x that time)
  RSS per call             (peak RSS under load - RSS before the first call) / N

Latencies use the fact that time.monotonic() is CLOCK_MONOTONIC, one clock for every process on a Linux
host, so times stamped by the caller emulator and by the Realtime emulator compare directly:
  greeting        stream start -> first greeting audio heard (caller side only)
  barge           first frame of the caller's talk-over written to the socket -> `clear` arriving at
                  the caller: the full path, carrier -> bridge -> emulator VAD -> bridge -> carrier
  barge (bridge)  speech_started written by the emulator -> `clear` arriving at the caller: the part of
                  the reaction the bridge is responsible for (one hop in, one hop out, the call rules)
  in              caller frame carrying a speech onset written -> speech_started written by the
                  emulator; the emulator's VAD fires on the first loud append, so this is the uplink
                  through the bridge (decode, resample, encode, two loopback hops) plus the emulator's
                  own handling. An upper bound of what the bridge adds.
  out             first audio delta of a reply written by the emulator -> first media frame of it
                  arriving at the caller. Same caveats, downlink direction.
Neither latency includes the resamplers' filter delay (audio time, not processing time): it is printed
with the resampler quality figures. Emulator sessions are matched to calls by their speech onsets (each
call's turn timings are randomised), so no identifier has to cross the bridge.

On a 2-core machine the three processes share the cores: watch the "host busy" column, latencies above
a saturated host measure the queue for the CPU, not the bridge.

`--passthrough` runs the bridge with AUDIO_PASSTHROUGH=true (µ-law to the model as audio/pcmu, which the
emulator then speaks back in µ-law: no resampling on either side). The table's first line names the
machine (CPU model, cores, Python, event loop).

`--recording` runs every level twice, the same calls with RECORDING=off and RECORDING=all (recordings in
the run's temporary directory), and prints what recording costs: CPU per call-second while the calls
are up (the tap and the spool thread), and over the whole run including the storing after the calls
(WAV, FLAC and peaks rendered, moved into place), beside the latencies of both runs (the recording must
add none to the audio path). The issue's budget is 1 ms of CPU per call-second.

`--sweep 25,50,100,200` prints one row per call count (CPU per call-second must stay flat, i.e. total
CPU grows linearly). `--profile 10` also samples the bridge with py-spy for 10 s under load and prints
its hottest functions (py-spy must be installed; it slows the bridge a little).

`--bridge-cpu 0 --others-cpu 1` pins the bridge (and its workers) to core 0 and everything else (the
emulator, the load generator, this process, py-spy) to core 1, so that the bridge's latencies are its
own and not the queue for a core it shares with the load. `--floor` runs `bench/floor_relay.py` in the
bridge's place, with the same pinning, load and seed, just before the bridge at every call count, and
prints the bridge's CPU per call-second as a multiple of the floor's ("x floor"); `--pairs 3` runs the
floor and the bridge in turn three times at each count and prints the median of the three ratios, for
a figure the host's drift between two runs moves less. `--workers 2` runs the
bridge with WORKERS=2; its CPU is then the supervisor's and every worker's together. `--nice -10` (root)
starts every process of the benchmark at that niceness, so that other work on a shared host waits for
them instead of preempting them: the "foreign%" column shows how much other work there was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.clock import now_ms

HOST = "127.0.0.1"
SAMPLE_S = 0.25
GREETING = "Thanks for calling the bridge benchmark. How can I help you today?"
TONE_DBFS = -10.0
UTTERANCE_MS = 1000.0
BARGE_MS = 600.0
BARGE_AFTER_MS = 2000.0  # after the start of the utterance: ~0.4 s into its echoed reply
FIRST_TURN_S = 5.8  # the emulator's greeting lasts 5.2 s
MATCH_WINDOW_MS = 1500.0
TWILIO_TOKEN = "bench-twilio-auth-token"


# ---------------------------------------------------------------------------------------------------
# Role: Realtime emulator process


async def emulator_role(port: int) -> list[dict[str, list[float]]]:
    from bridge.logs import configure_logging
    from bridge.sim.realtime_emulator import EmulatorConfig, RealtimeEmulator

    configure_logging("warning", "console")

    # strict=False: validating every append against the SDK types would make the emulator, which shares
    # the cores with the bridge, the bottleneck.
    emulator = RealtimeEmulator(EmulatorConfig(strict=False))
    await emulator.start(HOST, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
        # Tests read these; here they only grow (and cost the emulator GC time).
        for session in emulator.sessions:
            session.client_events.clear()
            session.appended_pcm.clear()
    sessions = []
    for session in emulator.sessions:
        speech, audio_starts, awaiting_audio = [], [], False
        for at, kind in session.sent_log:
            if kind == "input_audio_buffer.speech_started":
                speech.append(at)
            elif kind == "response.created":
                awaiting_audio = True
            elif awaiting_audio and kind.endswith("audio.delta"):
                audio_starts.append(at)
                awaiting_audio = False
        sessions.append({"speech_started": speech, "audio_starts": audio_starts})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(emulator.stop(), 5.0)
    return sessions


# ---------------------------------------------------------------------------------------------------
# Role: load generator process


def tone(ms: float, freq: float) -> bytes:
    t = np.arange(int(ms * 8)) / 8000
    return (np.sin(2 * np.pi * freq * t) * 32767 * 10 ** (TONE_DBFS / 20)).astype("<i2").tobytes()


async def load_role(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    start = now_ms() + 500.0
    spacing = args.ramp * 1000.0 / max(args.calls, 1)
    lags: list[float] = []
    watcher = asyncio.create_task(watch_lag(lags))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        calls = [
            one_call(http, args, i, start + i * spacing, random.Random(args.seed * 100_003 + i))
            for i in range(args.calls)
        ]
        results = await asyncio.gather(*calls)
    watcher.cancel()
    return {"calls": results, "lag_ms": lags}


async def watch_lag(lags: list[float], interval_ms: float = 20.0) -> None:
    """How late this process wakes up: if it lags, every time it stamps is late by as much."""
    while True:
        due = now_ms() + interval_ms
        await asyncio.sleep(interval_ms / 1000)
        lags.append(now_ms() - due)


async def one_call(
    http: Any, args: argparse.Namespace, index: int, start_at: float, rng: random.Random
) -> dict[str, Any]:
    from bridge.sim.carrier_emulator import TwilioCallerEmulator, random_sid, sleep_until
    from bridge.sim.twilio_voice import answer_call, stream_headers

    await sleep_until(start_at)
    result: dict[str, Any] = {"ok": False, "error": None}
    call_sid = random_sid("CA")
    form = {"CallSid": call_sid, "From": f"+1555{index:07d}", "To": "+15550000000", "Direction": "inbound"}
    voice_url = f"{args.url}/twilio/voice"
    try:
        media_url, parameters = await answer_call(http, voice_url, form, TWILIO_TOKEN)
        caller = TwilioCallerEmulator(
            media_url,
            call_sid=call_sid,
            custom_parameters=parameters,
            headers=stream_headers(media_url, TWILIO_TOKEN),
            tick_ms=50.0,  # marks are still echoed on time; this only paces the heard-audio counters
            connect_timeout=15.0,
        )
        await caller.connect()
    except Exception as exc:
        result["error"] = f"connect: {type(exc).__name__}: {exc}"
        return result
    assert caller.started_ms is not None
    result["started_ms"] = caller.started_ms
    barges = set()
    freq = rng.uniform(300.0, 900.0)
    turn_s, turn = FIRST_TURN_S + rng.uniform(0.0, 1.5), 0
    while (turn_s * 1000 + UTTERANCE_MS) < args.seconds * 1000 - 500:
        caller.say(tone(UTTERANCE_MS, freq), at_ms=turn_s * 1000)
        barge_at = turn_s * 1000 + BARGE_AFTER_MS
        if turn % 2 == 0 and barge_at + BARGE_MS < args.seconds * 1000 - 500:
            barges.add(id(caller.say(tone(BARGE_MS, freq * 1.5), at_ms=barge_at)))
        turn_s += args.cycle + rng.uniform(-0.5, 0.5)
        turn += 1
    with contextlib.suppress(TimeoutError):
        await caller.wait_closed(args.seconds)  # returns early only if the bridge ends the call
    result["hangup_ms"] = now_ms()
    try:
        await caller.hangup()
    except Exception as exc:
        result["error"] = f"hangup: {type(exc).__name__}: {exc}"
    playout = caller.playout
    first_heard = playout.first_heard_ms()
    clears = [c.received_at_ms for c in playout.clears]
    onsets = [(u.sent_start_ms, id(u) in barges) for u in caller.utterances if u.sent_start_ms is not None]
    reactions = []
    for sent, barge in onsets:
        if barge and (clear := _first_in(clears, sent, MATCH_WINDOW_MS)) is not None:
            reactions.append(clear - sent)
    result.update(
        greeting_ms=None if first_heard is None else first_heard - caller.started_ms,
        onsets=onsets,
        clears=clears,
        arrivals=[round(a.received_at_ms, 2) for a in playout.arrivals],
        barge_reactions=reactions,
        barge_attempts=sum(barge for _, barge in onsets),
        closed_by_server=caller.closed_by_server,
        protocol_errors=len(caller.protocol_errors),
    )
    if result["error"] is None:
        if caller.closed_by_server:
            result["error"] = f"bridge closed the call (code {caller.close_code})"
        elif caller.protocol_errors:
            result["error"] = f"protocol error: {caller.protocol_errors[0].reason}"
        elif first_heard is None:
            result["error"] = "no audio heard"
    result["ok"] = result["error"] is None
    return result


def _first_in(times: list[float], after: float, window: float) -> float | None:
    return next((t for t in times if after <= t <= after + window), None)


# ---------------------------------------------------------------------------------------------------
# Orchestrator: processes, /proc sampling, analysis


@dataclass
class Sample:
    at_ms: float
    bridge_ticks: int
    bridge_rss: int
    other_ticks: int  # emulator + load generator
    host_busy: int
    host_total: int


@dataclass
class Row:
    calls: int
    mode: str = "transcode"
    recording: bool = False
    cpu_total_ms_per_call_s: float = math.nan  # from the first call to the last recording stored
    recordings_missing: int = 0
    call_seconds: float = 0.0
    failed: int = 0
    cpu_ms_per_call_s: float = math.nan
    cpu_pct: float = math.nan
    rss_mb_per_call: float = math.nan
    idle_rss_mb: float = math.nan
    others_pct: float = math.nan
    host_busy_pct: float = math.nan
    foreign_pct: float = math.nan  # CPU used by processes not in the benchmark (% of one core)
    greeting: list[float] = field(default_factory=list)
    barge: list[float] = field(default_factory=list)
    barge_bridge: list[float] = field(default_factory=list)
    inbound: list[float] = field(default_factory=list)
    outbound: list[float] = field(default_factory=list)
    barge_attempts: int = 0
    unmatched_sessions: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    generator_lag: list[float] = field(default_factory=list)
    bridge_lag_p99: float | None = None
    profile: list[tuple[str, float]] = field(default_factory=list)
    profile_bridge: list[tuple[str, float]] = field(default_factory=list)
    floor_ratio: float | None = None  # CPU per call-second against the floor relay's at this count


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def tree_pids(pid: int) -> list[int]:
    """The process and all its descendants (a supervisor's workers), read from /proc."""
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as fh:
                    pids.extend(int(child) for child in fh.read().split())
        i += 1
    return pids


def tree_ticks(pid: int) -> int:
    """CPU ticks of a process and its descendants; one that ended since the last sample drops out, so
    a worker restarted mid-run would show as a dip (load.py reports failed calls when that happens)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += proc_ticks(p)
    return total


def tree_rss(pid: int) -> int:
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += proc_rss(p)
    return total


def cpu_set(text: str | None) -> set[int] | None:
    """A CPU list as taskset takes it ("0", "1,3", "0-3"), or None for no pinning."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pinned(cpus: set[int] | None, nice: int = 0) -> dict[str, Any]:
    """Popen arguments that start the child on `cpus` (its own children inherit them), as taskset would,
    and at niceness `nice` (as `nice -n`; below 0 needs root)."""
    if cpus is None and not nice:
        return {}

    def setup() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)

    return {"preexec_fn": setup}


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def host_ticks() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} within {timeout_s:.0f} s")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bridge exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"bridge not ready at {url} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bridge_env(
    args: argparse.Namespace,
    port: int,
    emulator_port: int,
    metrics_port: int,
    workdir: Path,
    recording: bool = False,
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REALTIME_URL=f"ws://{HOST}:{emulator_port}/v1/realtime",
        OPENAI_API_KEY="sk-bench",
        HOST=HOST,
        PORT=str(port),
        PUBLIC_URL=f"http://{HOST}:{port}",
        LOG_LEVEL="warning",
        GREETING=GREETING,
        CALL_LOG_URL=args.call_log or f"sqlite+aiosqlite:///{workdir}/calls.db",
        ADMIN_TOKEN="bench-admin-token",
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        MAX_CALLS=str(args.calls_max + 10),
        METRICS_PORT=str(metrics_port),
        WORKERS=str(args.workers),
        BRIDGE_ENV="production",  # signatures checked, as in production
        AUDIO_PASSTHROUGH="true" if args.passthrough else "false",
        RECORDING="all" if recording else "off",
        RECORDING_DIR=str(workdir / "recordings"),
    )
    return env


def spawn(command: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process with its output (stdout too, unless redirected) in `log`."""
    with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
        kwargs.setdefault("stdout", fh)
        return subprocess.Popen(command, stderr=fh, **kwargs)


def run_level(args: argparse.Namespace, calls: int, recording: bool = False, floor: bool = False) -> Row:
    """One call count through the bridge (`recording`: with RECORDING=all), or with `floor` through
    bench/floor_relay.py in its place."""
    row = Row(calls, recording=recording)
    here = Path(__file__).resolve()
    bridge_cpus, others = cpu_set(args.bridge_cpu), pinned(cpu_set(args.others_cpu), args.nice)
    if floor:
        command = [sys.executable, str(here.with_name("floor_relay.py"))]
    elif args.bridge_command:
        command = shlex.split(args.bridge_command)
    else:
        command = [sys.executable, "-m", "bridge", "serve"]
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        workdir = Path(tmp)
        emulator_port, port, metrics_port = free_port(), free_port(), free_port()
        emulator_out = workdir / "emulator.json"
        procs: list[subprocess.Popen[bytes]] = []
        spy: subprocess.Popen[bytes] | None = None
        try:
            role = [python, str(here), "--role"]
            emulator = spawn(
                [*role, "emulator", "--port", str(emulator_port), "--out", str(emulator_out)],
                workdir / "emulator.log",
                **others,
            )
            procs.append(emulator)
            wait_listening(emulator_port, emulator, 30.0)
            bridge = spawn(
                command,
                workdir / "bridge.log",
                env=bridge_env(args, port, emulator_port, metrics_port, workdir, recording),
                cwd=workdir,
                **pinned(bridge_cpus, args.nice),
            )
            procs.append(bridge)
            wait_ready(f"http://{HOST}:{port}/readyz", bridge, 30.0)
            time.sleep(1.0)
            idle_rss = tree_rss(bridge.pid)
            scrape_loop_lag(metrics_port, workdir / "metrics-idle.txt")
            load = spawn(
                [
                    *(*role, "load", "--url", f"http://{HOST}:{port}"),
                    *("--calls", str(calls), "--seconds", str(args.seconds), "--cycle", str(args.cycle)),
                    *("--ramp", str(ramp_s(args, calls)), "--seed", str(args.seed)),
                    *("--out", str(workdir / "load.json")),
                ],
                workdir / "load.log",
                **others,
            )
            procs.append(load)
            samples = []
            deadline = time.monotonic() + args.seconds + ramp_s(args, calls) + 90.0
            profile_at = time.monotonic() + ramp_s(args, calls) + 3.0 if args.profile else math.inf
            while load.poll() is None:
                if time.monotonic() > deadline:
                    load.kill()
                    raise RuntimeError("load generator overran its time limit")
                if time.monotonic() >= profile_at:
                    spy = start_profiler(bridge.pid, args.profile, workdir / "profile.txt", others)
                    profile_at = math.inf
                busy, total = host_ticks()
                samples.append(
                    Sample(
                        now_ms(),
                        tree_ticks(bridge.pid),
                        tree_rss(bridge.pid),
                        proc_ticks(emulator.pid) + proc_ticks(load.pid),
                        busy,
                        total,
                    )
                )
                time.sleep(SAMPLE_S)
            if load.returncode != 0:
                raise RuntimeError(f"load generator failed: {(workdir / 'load.log').read_text()[-2000:]}")
            stored = wait_stored(workdir / "recordings", calls if recording else 0)
            time.sleep(0.5)  # the call log's last writes, in both runs alike
            after = Sample(now_ms(), proc_ticks(bridge.pid), 0, 0, *host_ticks())
            if spy is not None:
                spy.wait(args.profile + 30)
                row.profile, row.profile_bridge = read_profile(workdir / "profile.txt")
            stop(emulator)
            load_out = json.loads((workdir / "load.json").read_text())
            results = load_out["calls"]
            row.generator_lag = load_out["lag_ms"]
            row.bridge_lag_p99 = scrape_loop_lag(metrics_port, workdir / "metrics.txt")
            sessions = json.loads(emulator_out.read_text())
            analyse(row, results, sessions, samples, idle_rss)
            if samples and row.call_seconds:
                total_cpu_ms = (after.bridge_ticks - samples[0].bridge_ticks) * 1000 / CLK_TCK
                row.cpu_total_ms_per_call_s = total_cpu_ms / row.call_seconds
            row.recordings_missing = (calls - row.failed - stored) if recording else 0
            if args.keep_logs:
                for name in (
                    "bridge.log",
                    "emulator.log",
                    "load.log",
                    "load.json",
                    "emulator.json",
                    "profile.txt",
                    "metrics-idle.txt",
                    "metrics.txt",
                ):
                    if (workdir / name).exists():
                        kept = Path(args.keep_logs) / f"{calls}-{'floor-' if floor else ''}{name}"
                        kept.write_bytes((workdir / name).read_bytes())
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            for proc in reversed(procs):
                stop(proc)
    return row


def wait_stored(directory: Path, expected: int, timeout_s: float = 120.0) -> int:
    """Until `expected` recordings are stored in `directory` (each one's peaks file goes in last), or
    the time is up; how many there are."""
    deadline = time.monotonic() + timeout_s
    while True:
        stored = sum(1 for _ in directory.rglob("*.peaks")) if directory.is_dir() else 0
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


def ramp_s(args: argparse.Namespace, calls: int) -> float:
    return args.ramp if args.ramp is not None else max(1.0, calls / 40)


def scrape_loop_lag(metrics_port: int, keep: Path) -> float | None:
    """p99 of the bridge's own event-loop lag (bridge/metrics.py), if it serves /metrics on METRICS_PORT.
    The whole scrape is written to `keep` (--keep-logs copies it: GC pauses, frame timings)."""
    name = "bridge_event_loop_lag_distribution_seconds_bucket"
    try:
        with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    keep.write_text(text)
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    # The upper bound of the bucket holding the 99th percentile: coarse, but never flattering.
    return next(le for le, count in buckets if count >= 0.99 * total) * 1000


def start_profiler(pid: int, seconds: int, out: Path, pinning: dict[str, Any]) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy) if spy.exists() else "py-spy", "record", "-p", str(pid), "-d", str(seconds)]
    command += ["-r", "200", "--nonblocking", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **pinning)


def read_profile(path: Path, top: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks, as % of all samples: the top functions by self time, and the
    top bridge/ functions by inclusive time (everything they called)."""
    if not path.exists():
        return [], []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_function(frame) for frame in stack.split(";")]
        own[frames[-1]] += int(count)
        for name in set(frames):
            if "(bridge/" in name:
                inclusive[name] += int(count)
        total += int(count)
    if not total:
        return [], []

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(top)]

    return shares(own), shares(inclusive)


def _function(frame: str) -> str:
    # "function (path/to/pkg/file.py:123)" -> "function (pkg/file.py)": one entry per function, not per line
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(where.split('/')[-2:])})"


def analyse(
    row: Row,
    results: list[dict[str, Any]],
    sessions: list[dict[str, list[float]]],
    samples: list[Sample],
    idle_rss: int,
) -> None:
    ok = [r for r in results if r["ok"]]
    row.failed = len(results) - len(ok)
    row.errors = Counter(str(r["error"])[:80] for r in results if not r["ok"])
    started = [r["started_ms"] for r in results if "started_ms" in r]
    ended = [r["hangup_ms"] for r in results if "hangup_ms" in r]
    row.call_seconds = sum(r["hangup_ms"] - r["started_ms"] for r in results if "hangup_ms" in r) / 1000
    row.idle_rss_mb = idle_rss / 2**20
    if started and ended and samples:
        # The steady state: every call up, none hung up yet.
        window = [s for s in samples if max(started) + 1000 <= s.at_ms <= min(ended) - 250]
        if len(window) < 4:  # too short (calls barely overlap): charge the whole run instead
            first = max((s for s in samples if s.at_ms <= min(started)), key=lambda s: s.at_ms, default=None)
            window = [first or samples[0], samples[-1]]
            up_calls_ms = row.call_seconds * 1000
        else:
            up_calls_ms = len(started) * (window[-1].at_ms - window[0].at_ms)
        a, b = window[0], window[-1]
        span_ms = b.at_ms - a.at_ms
        cpu_ms = (b.bridge_ticks - a.bridge_ticks) * 1000 / CLK_TCK
        row.cpu_ms_per_call_s = cpu_ms / (up_calls_ms / 1000)
        row.cpu_pct = 100 * cpu_ms / span_ms
        row.others_pct = 100 * (b.other_ticks - a.other_ticks) * 1000 / CLK_TCK / span_ms
        row.host_busy_pct = 100 * (b.host_busy - a.host_busy) / max(1, b.host_total - a.host_total)
        row.foreign_pct = max(0.0, row.host_busy_pct * (os.cpu_count() or 1) - row.cpu_pct - row.others_pct)
        row.rss_mb_per_call = (max(s.bridge_rss for s in window) - idle_rss) / 2**20 / len(started)
    for r in ok:
        if r["greeting_ms"] is not None:
            row.greeting.append(r["greeting_ms"])
        row.barge.extend(r["barge_reactions"])
        row.barge_attempts += r["barge_attempts"]
    matched = match_sessions(results, sessions)
    row.unmatched_sessions = sum(1 for s in sessions if s["speech_started"]) - len(matched)
    for call, session in matched:
        speech = session["speech_started"]
        arrivals, clears = call["arrivals"], call["clears"]
        for sent, barge in call["onsets"]:
            detected = _first_in(speech, sent, MATCH_WINDOW_MS)
            if detected is None:
                continue
            row.inbound.append(detected - sent)
            if barge and (clear := _first_in(clears, detected, MATCH_WINDOW_MS)) is not None:
                row.barge_bridge.append(clear - detected)
        first_turn = min((sent for sent, _ in call["onsets"]), default=math.inf)
        for written in session["audio_starts"]:
            if written < first_turn:
                continue  # the greeting is generated on the webhook, before the stream exists
            if (arrival := _first_in(arrivals, written, MATCH_WINDOW_MS)) is not None:
                row.outbound.append(arrival - written)


def match_sessions(
    results: list[dict[str, Any]], sessions: list[dict[str, list[float]]]
) -> list[tuple[dict[str, Any], dict[str, list[float]]]]:
    """Pair each call with the emulator session whose speech_started events follow its onsets closely."""
    candidates = []
    for ci, call in enumerate(results):
        onsets = [sent for sent, _ in call.get("onsets", [])]
        if not onsets:
            continue
        for si, session in enumerate(sessions):
            delays = [d - sent for sent in onsets if (d := _first_in(session["speech_started"], sent, 500.0))]
            if len(delays) >= max(1, 0.8 * len(onsets)):
                candidates.append((-len(delays), float(np.mean(delays)), ci, si))
    pairs, calls_used, sessions_used = [], set(), set()
    for _, _, ci, si in sorted(candidates):
        if ci not in calls_used and si not in sessions_used:
            calls_used.add(ci)
            sessions_used.add(si)
            pairs.append((results[ci], sessions[si]))
    return pairs


# ---------------------------------------------------------------------------------------------------
# Report


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def p50_99(values: list[float]) -> str:
    return f"{pct(values, 50):.0f}/{pct(values, 99):.0f}" if values else "-"


def p50_99_fine(values: list[float]) -> str:
    return f"{pct(values, 50):.1f}/{pct(values, 99):.1f}" if values else "-"


COLUMNS = [
    ("calls", 5),
    ("audio", 11),
    ("call-s", 7),
    ("failed", 6),
    ("CPU ms/call-s", 13),
    ("x floor", 7),
    ("bridge CPU%", 11),
    ("RSS MB/call", 11),
    ("idle RSS MB", 11),
    ("greeting ms", 11),
    ("barge ms", 9),
    ("barge(bridge)", 13),
    ("in ms", 9),
    ("out ms", 9),
    ("others CPU%", 11),
    ("host busy%", 10),
    ("foreign%", 8),
    ("bridge lag", 10),
    ("load lag", 8),
]


def machine() -> str:
    """What the figures were measured on: they mean little without it."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (no uvloop)"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"{model}, {os.cpu_count()} cores, Python {python}, {loop}"


def print_table(rows: list[Row], load_before: float, args: argparse.Namespace) -> None:
    print()
    print(f"machine: {machine()}")
    pinning = f"bridge on CPU {args.bridge_cpu}" if args.bridge_cpu else "bridge not pinned"
    pinning += f", emulator + load on CPU {args.others_cpu}" if args.others_cpu else ", others not pinned"
    if args.nice:
        pinning += f", all at nice {args.nice}"
    print(f"{pinning}; bridge WORKERS={args.workers}")
    print(f"host load average before the run: {load_before:.2f} (other work on the host skews latencies)")
    print("latencies are p50/p99 ms; CPU% is of one core; lag = p99 event-loop lag (ms) of the bridge and of")
    print("the load generator (when the generator lags, so do the times it stamps); foreign% = CPU (of one")
    print("core) used meanwhile by processes outside the benchmark: above a few %, latencies include them")
    print("  ".join(f"{name:>{width}}" for name, width in COLUMNS))
    for row in rows:
        cells = [
            str(row.calls),
            row.mode,
            f"{row.call_seconds:.0f}",
            str(row.failed),
            f"{row.cpu_ms_per_call_s:.2f}",
            "-" if row.floor_ratio is None else f"{row.floor_ratio:.2f}",
            f"{row.cpu_pct:.1f}",
            f"{row.rss_mb_per_call:.2f}",
            f"{row.idle_rss_mb:.0f}",
            p50_99(row.greeting),
            p50_99(row.barge),
            p50_99_fine(row.barge_bridge),
            p50_99_fine(row.inbound),
            p50_99_fine(row.outbound),
            f"{row.others_pct:.0f}",
            f"{row.host_busy_pct:.0f}",
            f"{row.foreign_pct:.0f}",
            "-" if row.bridge_lag_p99 is None else f"{row.bridge_lag_p99:.0f}",
            f"{pct(row.generator_lag, 99):.0f}" if row.generator_lag else "-",
        ]
        print("  ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, COLUMNS, strict=True)))
    for row in rows:
        notes = [
            f"{len(row.barge)}/{row.barge_attempts} barge-ins cleared",
            f"{len(row.inbound)} onsets, {len(row.outbound)} replies timed",
        ]
        if row.unmatched_sessions:
            notes.append(f"{row.unmatched_sessions} emulator sessions not matched to a call")
        if row.errors:
            notes.append("failures: " + ", ".join(f"{k} x{v}" for k, v in row.errors.most_common()))
        print(f"  {row.calls} calls: " + "; ".join(notes))
    print_recording_cost(rows)
    print_floor_pairs(rows)
    for row in rows:
        if row.profile:
            print(f"\nbridge hot functions at {row.calls} calls (py-spy, % of samples, self time):")
            for name, share in row.profile:
                print(f"  {share:5.1f}%  {name}")
            print("bridge/ functions by inclusive time (with everything they call):")
            for name, share in row.profile_bridge:
                print(f"  {share:5.1f}%  {name}")


def print_floor_pairs(rows: list[Row]) -> None:
    """With --pairs: each count's floor ratios, one per floor-then-bridge pair, and their median. The
    host's speed drifts by more than the bridge's changes, so one pair says little; the median of pairs
    run back to back does."""
    by_count: dict[int, list[float]] = {}
    for row in rows:
        if row.floor_ratio is not None and not row.recording:
            by_count.setdefault(row.calls, []).append(row.floor_ratio)
    for calls, ratios in by_count.items():
        if len(ratios) > 1:
            listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            median = float(np.median(ratios))
            print(f"  x floor at {calls} calls: median {median:.2f} of {len(ratios)} pairs ({listed})")


def print_recording_cost(rows: list[Row]) -> None:
    """What RECORDING=all added to the same calls as RECORDING=off (--recording)."""
    pairs = [
        (off, on)
        for off, on in itertools.pairwise(rows)
        if not off.recording and on.recording and off.calls == on.calls
    ]
    if not pairs:
        return
    print(
        "\nrecording (RECORDING=all against off, same calls; budget 1 ms CPU per call-second, no latency):"
    )
    for off, on in pairs:
        up = on.cpu_ms_per_call_s - off.cpu_ms_per_call_s
        total = on.cpu_total_ms_per_call_s - off.cpu_total_ms_per_call_s
        print(f"  {on.calls} calls:")
        print(
            f"    CPU ms per call-second, calls up          off {off.cpu_ms_per_call_s:.2f}  "
            f"all {on.cpu_ms_per_call_s:.2f}  recording {up:+.2f}"
        )
        print(
            f"    CPU ms per call-second, incl. storing     off {off.cpu_total_ms_per_call_s:.2f}  "
            f"all {on.cpu_total_ms_per_call_s:.2f}  recording {total:+.2f}"
        )
        for name, a, b in (
            ("in ms", off.inbound, on.inbound),
            ("out ms", off.outbound, on.outbound),
            ("barge(bridge) ms", off.barge_bridge, on.barge_bridge),
        ):
            print(f"    {name + ' p50/p99':<40}  off {p50_99_fine(a):>11}  all {p50_99_fine(b):>11}")
        if on.recordings_missing:
            print(f"    {on.recordings_missing} calls' recordings were not stored (see the bridge's log)")


def print_resampler_quality() -> None:
    print("\nresampler (bridge.audio.StreamingResampler):")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import bench_resampler as q
    except ImportError:
        q = None
    if q is not None:
        print(f"  passband ripple 100-3400 Hz, 8k->24k  {q.passband_ripple_db(8000, 24000):.3f} dB")
        print(f"  passband ripple 100-3400 Hz, 24k->8k  {q.passband_ripple_db(24000, 8000):.3f} dB")
        print(f"  worst alias >= 4.6 kHz, 24k->8k       {q.worst_alias_db():.1f} dBFS")
        print(f"  worst image of 0.1-3.4 kHz, 8k->24k   {q.worst_image_db():.1f} dBFS")
        print(f"  delay by chirp, 8k->24k               {q.chirp_delay_ms(8000, 24000):.2f} ms")
        print(f"  delay by chirp, 24k->8k               {q.chirp_delay_ms(24000, 8000):.2f} ms")
        return
    from bridge.audio import StreamingResampler

    def level_db(src: int, dst: int, freq: float, at: float) -> float:
        t = np.arange(src) / src
        pcm = (16000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
        out = np.frombuffer(StreamingResampler(src, dst).process(pcm), dtype="<i2").astype(float)
        window = out[dst // 4 : dst // 4 + dst // 2]
        k = np.exp(-2j * np.pi * at * np.arange(window.size) / dst)
        return 20 * math.log10(max(2 * abs(np.dot(window, k)) / window.size / 16000, 1e-12))

    ripple = max(abs(level_db(8000, 24000, f, f)) for f in range(200, 3401, 200))
    alias = max(level_db(24000, 8000, f, 8000 - f) for f in range(4600, 7600, 200))
    print(f"  passband ripple 200-3400 Hz, 8k->24k  {ripple:.3f} dB")
    print(f"  worst alias 4.6-7.4 kHz, 24k->8k      {alias:.1f} dB")
    print(
        f"  filter delay 8k->24k / 24k->8k        {StreamingResampler(8000, 24000).delay_ms:.2f} / "
        f"{StreamingResampler(24000, 8000).delay_ms:.2f} ms"
    )


# ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--sweep", help="comma-separated call counts, one table row each")
    parser.add_argument("--cycle", type=float, default=6.0, help="seconds between caller turns")
    parser.add_argument("--ramp", type=float, help="seconds over which calls start (default calls/40)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--call-log", help="CALL_LOG_URL for the bridge (default: a temporary SQLite file)")
    parser.add_argument(
        "--bridge-command", help="run the bridge with this command instead of `python -m bridge serve`"
    )
    parser.add_argument(
        "--passthrough", action="store_true", help="AUDIO_PASSTHROUGH=true: µ-law to the model unchanged"
    )
    parser.add_argument(
        "--recording",
        action="store_true",
        help="each level with RECORDING=off, then all: what recording costs",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS", help="py-spy the bridge")
    parser.add_argument("--bridge-cpu", metavar="CPUS", help="pin the bridge to these CPUs (e.g. 0)")
    parser.add_argument(
        "--others-cpu", metavar="CPUS", help="pin the emulator, load generator and this process (e.g. 1)"
    )
    parser.add_argument(
        "--floor", action="store_true", help="run bench/floor_relay.py before the bridge at each count"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="with --floor: run floor and bridge this many times in turn at each count (median ratio)",
    )
    parser.add_argument("--workers", type=int, default=1, help="WORKERS for the bridge")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the benchmark's processes (-10: others' work waits)",
    )
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the processes' logs here")
    parser.add_argument("--no-quality", action="store_true", help="skip the resampler quality check")
    parser.add_argument("--role", choices=["emulator", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_role(coro: Any, out: str) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    Path(out).write_text(json.dumps(asyncio.run(coro)))


def level_runs(args: argparse.Namespace) -> list[tuple[bool, bool]]:
    """The runs at each call count, in order, as (floor, recording): the floor relay first, then the
    bridge (and the bridge recorded), all of it `--pairs` times over."""
    runs = [(True, False)] if args.floor else []
    runs += [(False, recording) for recording in ((False, True) if args.recording else (False,))]
    return runs * args.pairs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "emulator":
        run_role(emulator_role(args.port), args.out)
        return 0
    if args.role == "load":
        run_role(load_role(args), args.out)
        return 0
    levels = [int(n) for n in args.sweep.split(",")] if args.sweep else [args.calls]
    args.calls_max = max(levels)
    if (cpus := cpu_set(args.others_cpu)) is not None:
        os.sched_setaffinity(0, cpus)  # this process samples /proc: it must not share the bridge's core
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    load_before = os.getloadavg()[0]
    mode = "passthrough" if args.passthrough else "transcode"
    rows = []
    for calls in levels:
        floor_row = None
        for floor, recording in level_runs(args):
            what = "floor relay" if floor else "bridge, recorded" if recording else "bridge"
            print(f"running {calls} calls of {args.seconds:.0f} s, {what} ...", file=sys.stderr, flush=True)
            try:
                row = run_level(args, calls, recording, floor)
            except RuntimeError as exc:  # one level going wrong (an overrun) still reports the others
                row = Row(calls, failed=calls, recording=recording)
                row.errors[f"run aborted: {exc}"[:120]] = 1
            row.mode = "floor relay" if floor else mode + ("+rec" if recording else "")
            if floor:
                floor_row = row
            elif floor_row is not None and floor_row.cpu_ms_per_call_s > 0:
                row.floor_ratio = row.cpu_ms_per_call_s / floor_row.cpu_ms_per_call_s
            rows.append(row)
    print_table(rows, load_before, args)
    if not args.no_quality:
        print_resampler_quality()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
