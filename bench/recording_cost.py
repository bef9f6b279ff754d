"""CPU a call's recording costs, per second of call: on the event loop, on the spool thread, and after.

    .venv/bin/python bench/recording_cost.py                 # a 60 s G.711 call, best of 5 runs
    .venv/bin/python bench/recording_cost.py --wideband     # the same call on a 16 kHz L16 leg

One realistic call, fed exactly as the call's tap will feed `CallRecording`: 3000 caller frames of 20 ms
at their arrival times (with jitter), the assistant speaking about half the time (the first frame of
each turn alone, then 100 ms pieces sent faster than real time, as `Call` sends them), two barge-ins
cutting a turn short, and `take_spool()` once a second as `Recordings` does. Then the two other parts
of the work, each timed on its own: appending those once-a-second batches to a spool file (the spool
thread), and laying the spool out as WAV + FLAC + peaks (the finishing thread). Storage (a rename, or an
upload) is not counted.

Times are CPU time of this process (time.process_time), best of the runs: other work on the host can
only make a run slower, never faster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.audio import L16_16K, PCMU_8K, AudioFormat  # noqa: E402
from bridge.recording.call_recording import CallRecording  # noqa: E402
from bridge.recording.finish import render  # noqa: E402
from bridge.recording.recordings import _SpoolFiles  # noqa: E402

CALL_S = 60
FRAME_MS = 20
PIECE_MS = 100
TURN_S = 6  # every 6 s the assistant speaks for about 3 s


def speech_like(line: AudioFormat, seconds: float, seed: int) -> bytes:
    """Noise shaped like speech (falling above 500 Hz) in the line's format: FLAC works as hard as on
    a real call, not on silence."""
    rate = line.rate
    n = int(rate * seconds)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= 1 / (1 + (freqs / 500) ** 2) ** 0.5
    pcm = np.fft.irfft(spectrum, n)
    return line.from_pcm16(np.rint(pcm / np.abs(pcm).max() * 12000).astype("<i2").tobytes())


def script(line: AudioFormat) -> list[tuple[float, str, bytes, float]]:
    """The call's tap calls in the order they happen: (time ms, what, audio, play time or unheard)."""
    frame = line.frame_bytes(FRAME_MS)
    caller = speech_like(line, CALL_S, 1)
    assistant = speech_like(line, CALL_S, 2)
    rng = np.random.default_rng(3)
    events: list[tuple[float, str, bytes, float]] = []
    for k in range(CALL_S * 1000 // FRAME_MS):
        arrival = (k + 1) * FRAME_MS + 30 + float(rng.exponential(8))
        events.append((arrival, "caller", caller[k * frame : (k + 1) * frame], 0.0))
    piece = line.frame_bytes(PIECE_MS)
    for turn, start_s in enumerate(range(1, CALL_S - TURN_S, TURN_S)):
        start = start_s * 1000.0
        speech = assistant[int(start * line.bytes_per_ms) :][: 3 * 1000 * line.bytes_per_ms]
        sent = [speech[:frame]] + [speech[i : i + piece] for i in range(frame, len(speech), piece)]
        play = start + 40
        for i, chunk in enumerate(sent):
            at = start + 2 * i  # the model streams far faster than real time
            events.append((at, "assistant", chunk, play))
            play += len(chunk) / line.bytes_per_ms
        if turn in (2, 6):  # the caller barges in 1.2 s into the turn
            events.append((start + 1240, "cleared", b"", float(len(speech) - 1200 * line.bytes_per_ms)))
    events.sort(key=lambda e: e[0])
    return events


def on_the_loop(
    line: AudioFormat, events: list[tuple[float, str, bytes, float]]
) -> tuple[float, list[bytes]]:
    """CPU seconds of every tap call and the once-a-second take_spool(); the batches taken."""
    recording = CallRecording("CA-bench", line, 0.0, datetime.now(UTC))
    caller, assistant, cleared = recording.caller, recording.assistant, recording.cleared
    batches: list[bytes] = []
    next_take = 1000.0
    started = time.process_time()
    for at, what, audio, value in events:
        if at >= next_take:
            batches.append(recording.take_spool())
            next_take += 1000.0
        if what == "caller":
            caller(audio, at)
        elif what == "assistant":
            assistant(audio, value)
        else:
            cleared(int(value))
    recording.finish(CALL_S * 1000.0)
    batches.append(recording.take_spool())
    return time.process_time() - started, batches


def spool_thread(batches: list[bytes], path: Path) -> float:
    files = _SpoolFiles()
    started = time.process_time()
    for batch in batches:
        [error] = files.write([(path, batch)])
        assert error is None, error
    elapsed = time.process_time() - started
    files._open.pop(path)  # keep the file for the renderer; the descriptor closes with the process
    return elapsed


def finishing(path: Path, out: Path) -> float:
    started = time.process_time()
    rendered = render(path, out, "call")
    elapsed = time.process_time() - started
    assert rendered.samples >= CALL_S * rendered.rate
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wideband", action="store_true", help="a 16 kHz L16 leg (Vonage) instead of G.711")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    line = L16_16K if args.wideband else PCMU_8K
    events = script(line)
    counts = {kind: sum(1 for e in events if e[1] == kind) for kind in ("caller", "assistant", "cleared")}
    best = {"loop": float("inf"), "spool": float("inf"), "finish": float("inf")}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="recording-bench-") as tmp:
            loop_s, batches = on_the_loop(line, events)
            spool = Path(tmp) / f"run{run}.spool"
            best["loop"] = min(best["loop"], loop_s)
            best["spool"] = min(best["spool"], spool_thread(batches, spool))
            best["finish"] = min(best["finish"], finishing(spool, Path(tmp)))
            spool_bytes = spool.stat().st_size
    print(
        f"{CALL_S} s call, {line.encoding} {line.rate} Hz: {counts['caller']} caller frames, "
        f"{counts['assistant']} assistant pieces, {counts['cleared']} clears, {len(batches)} spool batches "
        f"({spool_bytes} bytes)"
    )
    total = 0.0
    for part, label in (
        ("loop", "on the event loop (tap calls + take_spool)"),
        ("spool", "spool thread (one append a second)"),
        ("finish", "finishing thread (WAV + FLAC + peaks)"),
    ):
        per_s = best[part] / CALL_S * 1e6
        total += per_s
        print(f"  {label:<45} {per_s:8.1f} µs CPU per call-second")
    print(f"  {'total':<45} {total:8.1f} µs CPU per call-second (budget 1000)")


if __name__ == "__main__":
    main()
