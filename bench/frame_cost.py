"""CPU cost of the bridge's per-message work, in instructions (load-insensitive) and in µs (for orientation).

    .venv/bin/python bench/frame_cost.py            # wall-clock µs, then instruction counts under callgrind
    .venv/bin/python bench/frame_cost.py --no-callgrind
    .venv/bin/python bench/frame_cost.py --recording  # the same call, recorded (its tap fed)
    .venv/bin/python bench/frame_cost.py --passthrough  # AUDIO_PASSTHROUGH=true: µ-law both ways
    .venv/bin/python bench/frame_cost.py --floor  # bench/floor_relay.py's work for the same messages

Three paths, each exactly the code the pump runs for one message (bridge/pump.py), minus the
socket I/O:
  * caller frame: TwilioCodec.decode of a 20 ms `media` message -> Call.carrier_event -> Call.drain ->
    RealtimeCodec.encode of the `input_audio_buffer.append` (µ-law 8 kHz -> PCM16 24 kHz on the way);
  * model delta: RealtimeCodec.decode of a 100 ms `response.output_audio.delta` -> Call.model_event ->
    Call.drain -> TwilioCodec.encode of the `media` message(s) and the `mark`;
  * mark echo: TwilioCodec.decode of a `mark` message -> Call.carrier_event (the ledger settles frames);
each with the pump's two perf_counter calls and its Prometheus observation. With `--recording` the call
has a tap (bridge.recording.CallRecording): what recording adds to each path; the spool thread's work
and the rendering after the call are bench/recording_cost.py's. With `--floor` the same messages go
through bench/floor_relay.py's relay instead (its decode, its append or media and mark, and nothing for
an echo but the decode): the figure each path is held against.

Instruction counts come from callgrind (other processes on the host cannot change them): the driver runs
twice under valgrind, with 0 and with N messages after the same set-up and warm-up, and the difference is
divided by N, so interpreter start-up and imports cancel out.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.audio import PCMU_8K, pcm16_to_ulaw  # noqa: E402
from bridge.call import Call  # noqa: E402
from bridge.call_config import CallConfig  # noqa: E402
from bridge.carrier.events import Mark  # noqa: E402
from bridge.carrier.twilio.codec import TwilioCodec  # noqa: E402
from bridge.metrics import BridgeMetrics  # noqa: E402
from bridge.realtime.codec import RealtimeCodec, SessionOptions  # noqa: E402
from bridge.recording import CallRecording  # noqa: E402
from bridge.server import settle_heap  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import floor_relay  # noqa: E402

PATHS = ("caller", "delta", "echo")
WARMUP = 200
SID = "MZ" + "0" * 32
DELTA_MS = 100
MAX_MESSAGES = 3000


def _speech_like(rate: int, ms: int, seed: int) -> np.ndarray:
    """Noise shaped like speech's spectrum (falling above 500 Hz), so no code path sees silence."""
    rng = np.random.default_rng(seed)
    n = rate * ms // 1000
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= 1 / (1 + (freqs / 500) ** 2) ** 0.5
    spectrum[freqs > 3800] = 0
    pcm = np.fft.irfft(spectrum, n)
    return np.rint(pcm / np.abs(pcm).max() * 12000).astype("<i2")


class Bench:
    """One call in progress, fed messages exactly as the pump would, minus the sockets."""

    def __init__(self, recording: bool = False, passthrough: bool = False) -> None:
        self.twilio = TwilioCodec()
        self.realtime = RealtimeCodec("ga")
        self.metrics = BridgeMetrics(process_metrics=False)
        self.twilio.decode(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "streamSid": SID,
                "callSid": "CA" + "0" * 32,
                "accountSid": "AC" + "0" * 32,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        started = self.twilio.decode(json.dumps(start))
        opts = SessionOptions(
            instructions="x", voice="marin", audio_format="pcmu" if passthrough else "pcm24k"
        )
        tap = CallRecording("CA" + "0" * 32, PCMU_8K, 0.0, datetime.now(UTC)) if recording else None
        self.call = Call(  # type: ignore[arg-type]
            CallConfig(session=opts, audio_passthrough=passthrough),
            self.realtime,
            started,
            0.0,
            play_chunk_ms=self.twilio.play_chunk_ms,
            tap=tap,
        )
        self.call.drain()
        self.now = 0.0
        self.sequence = 1

        caller = pcm16_to_ulaw(_speech_like(8000, 1000, 1).tobytes())
        self.caller_frames = [caller[i : i + 160] for i in range(0, len(caller), 160)]
        model = _speech_like(24000, 1000, 2).tobytes()
        if passthrough:  # the model speaks µ-law 8 kHz too
            model = pcm16_to_ulaw(_speech_like(8000, 1000, 2).tobytes())
        step = DELTA_MS * (8 if passthrough else 48)
        self.deltas = [
            json.dumps(
                {
                    "type": "response.output_audio.delta",
                    "event_id": f"event_{i}",
                    "response_id": "resp_1",
                    "item_id": "item_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(model[i : i + step]).decode(),
                },
                separators=(",", ":"),
            )
            for i in range(0, len(model), step)
        ]
        self.model_event(
            json.dumps({"type": "response.created", "event_id": "e", "response": {"id": "resp_1"}})
        )
        self.marks: list[str] = []

    def media_message(self, n: int) -> str:
        self.sequence += 1
        payload = base64.b64encode(self.caller_frames[n % len(self.caller_frames)]).decode()
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(self.sequence),
                "media": {
                    "track": "inbound",
                    "chunk": str(n + 1),
                    "timestamp": str(20 * n),
                    "payload": payload,
                },
                "streamSid": SID,
            },
            separators=(",", ":"),
        )

    def mark_message(self, name: str) -> str:
        self.sequence += 1
        return json.dumps(
            {"event": "mark", "sequenceNumber": str(self.sequence), "streamSid": SID, "mark": {"name": name}},
            separators=(",", ":"),
        )

    # What the pump does per message (bridge/pump.py: _carrier_loop, _relay_upstream, _flush; and
    # bridge/websocket_leg.py: WebSocketLeg.events/send), minus the awaits on sockets.
    def carrier_message(self, text: str) -> None:
        event = self.twilio.decode(text)
        started = time.perf_counter()
        self.call.carrier_event(event, self.now)  # type: ignore[arg-type]
        self.flush()
        self.metrics.carrier_frame(time.perf_counter() - started)

    def model_event(self, text: str) -> None:
        event = self.realtime.decode(text)
        started = time.perf_counter()
        self.call.model_event(event, self.now)
        self.flush()
        self.metrics.upstream_message(time.perf_counter() - started)

    def flush(self) -> None:
        to_carrier, to_upstream, _ = self.call.drain()
        encode_carrier = self.twilio.encode
        for command in to_carrier:
            encode_carrier(command)
            if type(command) is Mark:
                self.marks.append(command.name)
        encode = self.realtime.encode
        for event in to_upstream:
            encode(event)

    # The three paths: the messages each will handle, and the loop handling them.
    def messages(self, path: str, count: int) -> list[str]:
        if path == "caller":
            return [self.media_message(i) for i in range(count)]
        if path == "delta":
            return [self.deltas[i % len(self.deltas)] for i in range(count)]
        for _ in range(count // 2):  # each delta leaves one mark (a mark per 100 ms of audio)
            self.delta([self.deltas[0]] * 2)
        return [self.mark_message(name) for name in self.marks[:count]]

    def caller(self, messages: list[str]) -> None:
        for text in messages:
            self.carrier_message(text)
            self.now += 20.0

    def delta(self, messages: list[str]) -> None:
        for text in messages:
            self.model_event(text)
            self.now += 1.0  # the model sends faster than real time: the carrier's buffer never empties

    def echo(self, messages: list[str]) -> None:
        for text in messages:
            self.carrier_message(text)
            self.now += DELTA_MS


class FloorBench:
    """bench/floor_relay.py's relay fed the same messages, as its server would: what each path is held
    against."""

    def __init__(self, passthrough: bool) -> None:
        self.relay = floor_relay._Relay(passthrough)
        self.relay.from_carrier(json.dumps({"event": "start", "streamSid": SID, "start": {"streamSid": SID}}))

    def caller(self, messages: list[Any]) -> None:
        for text in messages:
            self.relay.from_carrier(text)

    def delta(self, messages: list[Any]) -> None:
        for data in messages:
            self.relay.from_model(data)

    echo = caller


@dataclass(frozen=True)
class Setup:
    """Which call the messages go through: recorded or not, µ-law passed through or transcoded, the
    bridge's or the floor relay's."""

    recording: bool = False
    passthrough: bool = False
    floor: bool = False

    def flags(self) -> list[str]:
        return [f"--{name}" for name in ("recording", "passthrough", "floor") if getattr(self, name)]


def prepared(path: str, n: int, setup: Setup) -> tuple[Callable[[], None], Callable[[], None]]:
    """Warm-up and measured run of `path` on a fresh call. The set-up is the same whatever `n` (the
    messages are built for MAX_MESSAGES), so two callgrind runs differ only by the n measured ones."""
    if n > MAX_MESSAGES:
        raise SystemExit(f"at most {MAX_MESSAGES} messages per path")
    bench = Bench(setup.recording, setup.passthrough)
    messages: list[Any] = bench.messages(path, WARMUP + MAX_MESSAGES)
    loop = getattr(FloorBench(setup.passthrough) if setup.floor else bench, path)
    if setup.floor and path == "delta":  # the relay's upstream socket hands it bytes
        messages = [text.encode() for text in messages]
    return (lambda: loop(messages[:WARMUP])), (lambda: loop(messages[WARMUP : WARMUP + n]))


def run_once(path: str, n: int, setup: Setup) -> None:
    warm_up, run = prepared(path, n, setup)
    warm_up()
    # As the server runs: what was loaded and built before the calls, frozen out of the collector's
    # sight (bridge.server.settle_heap), so a collection costs what the messages allocated, not the
    # size of the import graph.
    settle_heap()
    run()


def wall_clock_us(path: str, n: int, repeats: int, setup: Setup) -> tuple[float, float]:
    """Best and median µs per message over `repeats` fresh calls (best is the least disturbed)."""
    samples = []
    for _ in range(repeats):
        warm_up, run = prepared(path, n, setup)
        warm_up()
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) / n * 1e6)
    samples.sort()
    return samples[0], samples[len(samples) // 2]


def _callgrind(path: str, count: int, out: Path, python: str, setup: Setup) -> subprocess.Popen[bytes]:
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, __file__]
    return subprocess.Popen(
        [*command, "--run", path, "--n", str(count), *setup.flags()],
        # OpenBLAS's worker threads (numpy) spin for as long as the host makes them wait: with them
        # the same run varied by 3-5 thousand instructions per message, without them by about 100.
        env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _total(out: Path) -> int:
    match = re.search(r"^(?:totals|summary):\s*(\d+)", out.read_text(errors="replace"), re.M)
    if match is None:
        raise SystemExit(f"no totals in {out}")
    return int(match.group(1))


def _by_function(out: Path) -> dict[str, int]:
    """Exclusive instructions per function (`file:function`, directories dropped) from callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)], capture_output=True, text=True, check=True
    ).stdout
    costs: dict[str, int] = {}
    for match in re.finditer(r"^\s*([\d,]+) \([^)]*\)\s+(\S+)", text, re.M):
        name = re.sub(r"^.*/", "", match.group(2)).removesuffix("'2")
        costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def instructions(path: str, n: int, python: str, breakdown: int, setup: Setup) -> tuple[float, list[str]]:
    """Instructions per message: callgrind totals of an N-message run minus a 0-message run, over N.

    The two runs go side by side (instruction counts do not care). With `breakdown`, also print the
    functions with the largest per-message difference (exclusive cost)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"callgrind.{path}.{count}" for count in (0, n)]
        runs = [_callgrind(path, count, out, python, setup) for count, out in zip((0, n), outs, strict=True)]
        for run in runs:
            if run.wait() != 0:
                raise SystemExit(f"valgrind failed on the {path} path")
        per_message = (_total(outs[1]) - _total(outs[0])) / n
        lines = []
        if breakdown:
            base, measured = _by_function(outs[0]), _by_function(outs[1])
            diff = {name: (cost - base.get(name, 0)) / n for name, cost in measured.items()}
            for name, cost in sorted(diff.items(), key=lambda item: -item[1])[:breakdown]:
                lines.append(f"    {cost:>10,.0f}  {name}")
    return per_message, lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", choices=PATHS, help="internal: run one path N times and exit")
    parser.add_argument("--n", type=int, default=2000, help=f"per path, at most {MAX_MESSAGES}")
    parser.add_argument("--repeats", type=int, default=7, help="wall-clock runs per path (default 7)")
    parser.add_argument("--no-callgrind", action="store_true", help="wall clock only")
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="comma-separated subset of " + ",".join(PATHS)
    )
    parser.add_argument("--breakdown", type=int, default=0, metavar="K", help="top K functions per path")
    parser.add_argument("--recording", action="store_true", help="the call is recorded (its tap is fed)")
    parser.add_argument("--passthrough", action="store_true", help="AUDIO_PASSTHROUGH=true: no transcoding")
    parser.add_argument("--floor", action="store_true", help="bench/floor_relay.py's relay, not the bridge")
    args = parser.parse_args()
    if args.floor and args.recording:
        raise SystemExit("the floor relay records nothing")
    setup = Setup(args.recording, args.passthrough, args.floor)
    if args.run:
        run_once(args.run, args.n, setup)
        return

    labels = {"caller": "caller frame (20 ms)", "delta": f"model delta ({DELTA_MS} ms)", "echo": "mark echo"}
    print(f"{'path':<24}{'µs best':>10}{'µs median':>11}", end="")
    use_callgrind = not args.no_callgrind and shutil.which("valgrind") is not None
    print(f"{'instructions':>14}" if use_callgrind else "")
    for path in args.paths.split(","):
        best, median = wall_clock_us(path, args.n, args.repeats, setup)
        print(f"{labels[path]:<24}{best:>10.1f}{median:>11.1f}", end="", flush=True)
        if use_callgrind:
            count, lines = instructions(path, args.n, sys.executable, args.breakdown, setup)
            print(f"{count:>14,.0f}", *lines, sep="\n" if lines else "")
        else:
            print()
    if not use_callgrind and not args.no_callgrind:
        print("(valgrind not found: no instruction counts)")


if __name__ == "__main__":
    main()
