"""`bridge dial`: call a running bridge as a simulated Twilio caller who says the contents of a WAV file.

The caller listens to the greeting, speaks, stays on the line until the reply has been heard and the
line has gone quiet (or the time limit passes), then hangs up and writes what it heard, silences
included, to an 8 kHz WAV.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.clock import now_ms
from bridge.sim.carrier_emulator import LineConditions, TwilioCallerEmulator
from bridge.sim.playout import Playout
from bridge.wavfile import read_wav_mono, write_wav

RATE = 8000
SAMPLE_WAV = Path(__file__).parent / "sim" / "assets" / "caller.wav"
DEFAULT_URL = "ws://127.0.0.1:8080/twilio/media"


@dataclass
class DialReport:
    url: str
    wav_out: Path
    call_sid: str
    stream_sid: str
    outcome: str
    spoken_ms: float
    # Stream start → first audio heard.
    greeting_ms: float | None
    # End of the caller's speech → first audio heard that the bridge sent after it.
    reply_latency_ms: float | None
    heard_ms: float
    clears: int
    marks_echoed: int
    closed_by_server: bool
    close_code: int | None
    protocol_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        ended = f"bridge (close code {self.close_code})" if self.closed_by_server else "caller (hangup)"
        rows = [
            ("call", f"{self.call_sid} stream {self.stream_sid} at {self.url}"),
            ("outcome", self.outcome),
            ("greeting heard after", ms(self.greeting_ms)),
            ("caller spoke for", ms(self.spoken_ms)),
            ("reply heard after", ms(self.reply_latency_ms) + " (from the end of the caller's speech)"),
            ("heard in total", ms(self.heard_ms)),
            ("clears received", str(self.clears)),
            ("marks echoed", str(self.marks_echoed)),
            ("protocol errors", str(len(self.protocol_errors))),
            ("call ended by", ended),
            ("caller heard", str(self.wav_out)),
        ]
        lines = [f"{name:<22}{value}" for name, value in rows]
        lines += [f"  error: {error}" for error in self.protocol_errors]
        return lines


def twilio_signature(auth_token: str, url: str) -> str:
    """X-Twilio-Signature of a media stream upgrade: HMAC-SHA1 over the URL, no params (PROTOCOLS.md A7.2)."""
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def reply_started_ms(playout: Playout, after_ms: float) -> float | None:
    """When the first audio the bridge sent after `after_ms` started playing to the caller."""
    starts = [
        a.started_ms for a in playout.arrivals if a.received_at_ms >= after_ms and a.started_ms is not None
    ]
    return min(starts) if starts else None


async def dial(
    url: str,
    wav_in: Path,
    wav_out: Path,
    *,
    greeting_wait: float = 10.0,
    quiet: float = 1.5,
    time_limit: float = 60.0,
    **emulator_options: Any,
) -> DialReport:
    """Place one simulated call. `emulator_options` go to TwilioCallerEmulator (line, headers, ...)."""
    speech = read_wav_mono(wav_in, RATE)
    call_deadline = now_ms() + time_limit * 1000.0

    def left(until_ms: float = call_deadline) -> float:
        return max(0.0, (min(until_ms, call_deadline) - now_ms()) / 1000.0)

    caller = TwilioCallerEmulator(url, **emulator_options)
    await caller.connect()
    outcome = "reply heard"
    spoken_end: float | None = None
    try:
        greeting_deadline = now_ms() + greeting_wait * 1000.0
        try:
            await caller.wait_heard(1.0, left(greeting_deadline))
            await caller.wait_quiet(quiet * 1000.0, left(greeting_deadline))
        except TimeoutError:
            pass  # No greeting, or a long one: the caller speaks anyway, as impatient callers do.
        utterance = caller.say(speech)
        await caller.wait_said(utterance, left())
        spoken_end = end = utterance.spoken_end_ms
        assert end is not None
        await caller.wait_until(
            lambda: reply_started_ms(caller.playout, end) is not None, left(), "reply audio"
        )
        await caller.wait_quiet(quiet * 1000.0, left())
    except TimeoutError as exc:
        outcome = f"call time limit ({time_limit:g} s) reached: {exc or 'caller still speaking'}"
    except ConnectionError as exc:
        outcome = str(exc)
    finally:
        await caller.hangup()

    playout = caller.playout
    write_wav(wav_out, playout.heard_pcm(include_silence=True), RATE)
    assert caller.started_ms is not None
    first = playout.first_heard_ms()
    reply = reply_started_ms(playout, spoken_end) if spoken_end is not None else None
    return DialReport(
        url=url,
        wav_out=wav_out,
        call_sid=caller.call_sid,
        stream_sid=caller.stream_sid,
        outcome=outcome,
        spoken_ms=len(speech) / 2 / RATE * 1000.0,
        greeting_ms=None if first is None else first - caller.started_ms,
        reply_latency_ms=None if reply is None or spoken_end is None else reply - spoken_end,
        heard_ms=playout.played_ms_total,
        clears=len(playout.clears),
        marks_echoed=sum(1 for mark in playout.marks if mark.echoed_at_ms is not None),
        closed_by_server=caller.closed_by_server,
        close_code=caller.close_code,
        protocol_errors=[f"{e.reason}: {e.message}" for e in caller.protocol_errors],
    )


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"bridge dial: {option} expects NAME=VALUE, got {value!r}")
        pairs[name] = rest
    return pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge dial",
        description="Call a running bridge as a simulated Twilio caller saying the contents of a WAV file. "
        "Exits 1 if no reply was heard or the bridge sent messages Twilio would reject.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="media stream websocket URL (%(default)s)")
    parser.add_argument(
        "--wav",
        type=Path,
        default=SAMPLE_WAV,
        help="what the caller says (any rate, mono/stereo; default: a shipped speech sample)",
    )
    parser.add_argument("--out", type=Path, default=Path("heard.wav"), help="what the caller heard (8 kHz)")
    parser.add_argument(
        "--greeting-wait",
        type=float,
        default=10.0,
        help="max seconds to listen to the greeting (%(default)s)",
    )
    parser.add_argument(
        "--quiet", type=float, default=1.5, help="seconds of silence that end a turn (%(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="max seconds for the call (%(default)s)")
    parser.add_argument("--uplink-delay-ms", type=float, default=0.0)
    parser.add_argument("--downlink-delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform ± jitter on both directions")
    parser.add_argument(
        "--playout-delay-ms", type=float, default=0.0, help="carrier jitter buffer before audio is heard"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="start.customParameters entry"
    )
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="websocket upgrade header"
    )
    parser.add_argument("--auth-token", help="sign the upgrade with X-Twilio-Signature using this token")
    parser.add_argument("--call-sid", help="CA... sid to use (random by default)")
    return parser


def main_dial(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.wav.is_file():
        parser.error(f"--wav {args.wav}: no such file")
    headers = _pairs(args.header, "--header")
    if args.auth_token:
        headers["X-Twilio-Signature"] = twilio_signature(args.auth_token, args.url)
    line = LineConditions(
        uplink_delay_ms=args.uplink_delay_ms,
        downlink_delay_ms=args.downlink_delay_ms,
        jitter_ms=args.jitter_ms,
        playout_delay_ms=args.playout_delay_ms,
        seed=args.seed,
    )
    call = dial(
        args.url,
        args.wav,
        args.out,
        greeting_wait=args.greeting_wait,
        quiet=args.quiet,
        time_limit=args.timeout,
        line=line,
        custom_parameters=_pairs(args.param, "--param"),
        headers=headers,
        call_sid=args.call_sid,
    )
    try:
        report = asyncio.run(call)
    except ValueError as exc:  # an unreadable WAV, as reported by read_wav_mono
        print(f"bridge dial: {exc}", file=sys.stderr)
        return 2
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        print(f"bridge dial: cannot call {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    for line_text in report.lines():
        print(line_text)
    return 0 if report.reply_latency_ms is not None and not report.protocol_errors else 1
