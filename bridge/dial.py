"""`bridge dial`: call a running bridge as a simulated Twilio caller who says the contents of a WAV file.

The call is placed the way Twilio places it: the voice webhook first (which is when the bridge opens
the model's session and asks for the greeting), then the media stream at the URL the TwiML names,
with the TwiML's `<Parameter>`s (the one-time stream token among them). The caller listens to the
greeting (or, hearing nothing for a few seconds, speaks anyway, as a caller would), speaks, stays on
the line until the reply has been heard and the line has gone quiet (or the time limit passes), then
hangs up and writes what it heard, silences included, to an 8 kHz WAV. If the bridge hangs up first,
the caller stops there and says so. `--record` asks for the call to be recorded (RECORDING=requested)
the way an operator does: `record=1` on the voice webhook's URL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from bridge.carrier.webhook import RECORD_PARAMETER
from bridge.clock import now_ms
from bridge.sim.carrier_emulator import LineConditions, TwilioCallerEmulator, random_sid
from bridge.sim.twilio_voice import NotConnected, answer_call, stream_headers
from bridge.wavfile import read_wav_mono, write_wav

RATE = 8000
SAMPLE_WAV = Path(__file__).parent / "sim" / "assets" / "caller.wav"
DEFAULT_URL = "http://127.0.0.1:8080/twilio/voice"


@dataclass
class DialReport:
    url: str
    wav_out: Path
    call_sid: str
    stream_sid: str
    outcome: str
    spoken_ms: float
    # Stream start → first audio heard, if any was heard before the caller spoke: the greeting.
    greeting_ms: float | None
    answer_wait_s: float  # how long the caller waited for a greeting before speaking anyway
    spoke_at_ms: float | None  # stream start → the caller began speaking
    # End of the caller's speech → first audio heard that the bridge sent after it.
    reply_latency_ms: float | None
    heard_ms: float
    clears: int
    marks_echoed: int
    closed_by_server: bool
    close_code: int | None
    close_reason: str = ""
    protocol_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        if self.closed_by_server:
            reason = f", {self.close_reason!r}" if self.close_reason else ""
            ended = f"bridge (close code {self.close_code}{reason})"
        else:
            ended = "caller (hangup)"
        greeting = ms(self.greeting_ms) if self.greeting_ms is not None else "-"
        if self.greeting_ms is None:
            greeting = f"no greeting (silence for {self.answer_wait_s:g} s, then the caller spoke)"
        rows = [
            ("call", f"{self.call_sid} stream {self.stream_sid} at {self.url}"),
            ("outcome", self.outcome),
            ("greeting heard after", greeting),
            ("caller spoke after", ms(self.spoke_at_ms)),
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


def asking_to_record(url: str) -> str:
    """`url` with `record=1` in its query: the call it answers is recorded under RECORDING=requested."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != RECORD_PARAMETER]
    return urlunsplit(parts._replace(query=urlencode([*query, (RECORD_PARAMETER, "1")])))


async def dial(
    url: str,
    wav_in: Path,
    wav_out: Path,
    *,
    answer_wait: float = 3.0,
    greeting_wait: float = 10.0,
    quiet: float = 1.5,
    time_limit: float = 60.0,
    auth_token: str = "",
    caller_number: str = "+15550100001",
    called_number: str = "+15550100002",
    headers: dict[str, str] | None = None,
    call_sid: str | None = None,
    **emulator_options: Any,
) -> DialReport:
    """Place one simulated call through the voice webhook at `url`. `emulator_options` go to
    TwilioCallerEmulator (line conditions, ...). NotConnected if the bridge does not take the call."""
    speech = read_wav_mono(wav_in, RATE)
    call_deadline = now_ms() + time_limit * 1000.0

    def left(until_ms: float = call_deadline) -> float:
        return max(0.0, (min(until_ms, call_deadline) - now_ms()) / 1000.0)

    call_sid = call_sid or random_sid("CA")
    account_sid = random_sid("AC")
    form = {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": caller_number,
        "To": called_number,
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    async with aiohttp.ClientSession() as http:
        stream_url, parameters = await answer_call(http, url, form, auth_token, headers)
    caller = TwilioCallerEmulator(
        stream_url,
        custom_parameters=parameters,
        headers=stream_headers(stream_url, auth_token, headers),
        call_sid=call_sid,
        account_sid=account_sid,
        **emulator_options,
    )
    await caller.connect()
    assert caller.started_ms is not None
    outcome = "reply heard"
    stage = "during the greeting"
    spoken_start: float | None = None
    spoken_end: float | None = None
    try:
        try:
            # A greeting starts within answer_wait (a caller hearing nothing says "hello?" then), and is
            # listened to until the line goes quiet.
            await caller.wait_heard(1.0, left(caller.started_ms + answer_wait * 1000.0))
            await caller.wait_quiet(quiet * 1000.0, left(caller.started_ms + greeting_wait * 1000.0))
        except TimeoutError:
            pass  # No greeting, or a long one: the caller speaks anyway, as impatient callers do.
        stage = "while the caller was speaking"
        utterance = caller.say(speech)
        spoken_start = now_ms()
        await caller.wait_said(utterance, left())
        spoken_end = end = utterance.spoken_end_ms
        assert end is not None
        stage = "before the reply was heard"
        await caller.wait_until(
            lambda: caller.playout.reply_started_ms(end) is not None, left(), "reply audio"
        )
        stage = "while the reply was playing"
        await caller.wait_quiet(quiet * 1000.0, left())
    except TimeoutError as exc:
        outcome = f"call time limit ({time_limit:g} s) reached: {exc or 'caller still speaking'}"
    except ConnectionError:
        outcome = f"the bridge hung up {stage}"
    finally:
        await caller.hangup()

    playout = caller.playout
    write_wav(wav_out, playout.heard_pcm(include_silence=True), RATE)
    first = playout.first_heard_ms()
    greeting = first if first is not None and (spoken_start is None or first < spoken_start) else None
    reply = playout.reply_started_ms(spoken_end) if spoken_end is not None else None
    return DialReport(
        url=url,
        wav_out=wav_out,
        call_sid=caller.call_sid,
        stream_sid=caller.stream_sid,
        outcome=outcome,
        spoken_ms=len(speech) / 2 / RATE * 1000.0,
        greeting_ms=None if greeting is None else greeting - caller.started_ms,
        answer_wait_s=answer_wait,
        spoke_at_ms=None if spoken_start is None else spoken_start - caller.started_ms,
        reply_latency_ms=None if reply is None or spoken_end is None else reply - spoken_end,
        heard_ms=playout.played_ms_total,
        clears=len(playout.clears),
        marks_echoed=sum(1 for mark in playout.marks if mark.echoed_at_ms is not None),
        closed_by_server=caller.closed_by_server,
        close_code=caller.close_code,
        close_reason=caller.close_reason,
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
        description="Call a running bridge as a simulated Twilio caller saying the contents of a WAV file: "
        "the voice webhook first, then the media stream its TwiML names. Exits 1 if no reply was heard, "
        "the bridge did not take the call, or it sent messages Twilio would reject.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="the bridge's voice webhook (%(default)s)")
    parser.add_argument(
        "--wav",
        type=Path,
        default=SAMPLE_WAV,
        help="what the caller says (any rate, mono/stereo; default: a shipped speech sample)",
    )
    parser.add_argument("--out", type=Path, default=Path("heard.wav"), help="what the caller heard (8 kHz)")
    parser.add_argument(
        "--answer-wait",
        type=float,
        default=3.0,
        help="seconds of silence after the call connects before the caller speaks anyway (%(default)s)",
    )
    parser.add_argument(
        "--greeting-wait",
        type=float,
        default=10.0,
        help="max seconds to listen to a greeting (%(default)s)",
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
    parser.add_argument("--from", dest="caller_number", default="+15550100001", help="the caller's number")
    parser.add_argument("--to", dest="called_number", default="+15550100002", help="the number called")
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="extra header on both requests"
    )
    parser.add_argument(
        "--auth-token",
        default="",
        help="sign the webhook and the upgrade (X-Twilio-Signature) with this token",
    )
    parser.add_argument("--call-sid", help="CA... sid to use (random by default)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="ask for the call to be recorded (record=1 on the webhook URL; for RECORDING=requested)",
    )
    return parser


def main_dial(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.wav.is_file():
        parser.error(f"--wav {args.wav}: no such file")
    if not args.url.startswith(("http://", "https://")):
        parser.error(
            f"--url {args.url}: give the voice webhook (like {DEFAULT_URL}); the call is placed through it"
        )
    line = LineConditions(
        uplink_delay_ms=args.uplink_delay_ms,
        downlink_delay_ms=args.downlink_delay_ms,
        jitter_ms=args.jitter_ms,
        playout_delay_ms=args.playout_delay_ms,
        seed=args.seed,
    )
    call = dial(
        asking_to_record(args.url) if args.record else args.url,
        args.wav,
        args.out,
        answer_wait=args.answer_wait,
        greeting_wait=args.greeting_wait,
        quiet=args.quiet,
        time_limit=args.timeout,
        auth_token=args.auth_token,
        caller_number=args.caller_number,
        called_number=args.called_number,
        headers=_pairs(args.header, "--header"),
        call_sid=args.call_sid,
        line=line,
    )
    try:
        report = asyncio.run(call)
    except ValueError as exc:  # an unreadable WAV, as reported by read_wav_mono
        print(f"bridge dial: {exc}", file=sys.stderr)
        return 2
    except NotConnected as exc:
        print(f"bridge dial: {exc}", file=sys.stderr)
        return 1
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        print(f"bridge dial: cannot call {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    for line_text in report.lines():
        print(line_text)
    return 0 if report.reply_latency_ms is not None and not report.protocol_errors else 1
