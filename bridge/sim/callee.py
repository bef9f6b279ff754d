"""Who picks up the calls placed through the Twilio stand-in (`bridge.sim.twilio_api`), and what they
do on the line: a person, an answering machine, or nobody (busy, no answer, a failed call).

A callee that answers is given a `CalleeLine`: the media stream our TwiML connected (a
`TwilioCallerEmulator`, which hears what the bridge sends in real time and says what it is given),
and a way to say what Twilio's answering-machine detection would conclude from it. The stand-in turns
that into the verdict its detection mode reports, when it would report it.

The demo numbers (`demo_callee`) are in the 555-01xx range, reserved for fiction:

    +15550100  a person: "hello", listens to the greeting, says a sentence, hears the reply, hangs up
    +15550101  an answering machine: a greeting, a beep, then it records until the bridge hangs up
    +15550102  busy
    +15550103  rings and rings: no answer
    +15550104  a number that does not exist: the call fails
    anything else: a person
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from bridge.clock import now_ms
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.wavfile import read_wav_mono

SAMPLE_WAV = Path(__file__).parent / "assets" / "caller.wav"
RATE = 8000


def sample_speech() -> bytes:
    """The shipped speech sample, PCM16 8 kHz: about four seconds of one speaker."""
    return read_wav_mono(SAMPLE_WAV, RATE)


def first_word(speech: bytes) -> bytes:
    """The sample's first word (its first half second): a person's "hello?"."""
    return speech[: RATE // 2 * 2]


def beep(ms: float = 500, hz: float = 1000.0) -> bytes:
    """An answering machine's beep: a pure tone, PCM16 8 kHz."""
    t = np.arange(int(ms * RATE / 1000)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 32767 * 10 ** (-10 / 20)).astype("<i2").tobytes()


class CalleeLine(Protocol):
    """What an answering callee has: the line, and Twilio's detection listening to it."""

    caller: TwilioCallerEmulator

    def sounds_human(self) -> None:
        """A short greeting, then silence: what detection takes for a person."""
        ...

    def sounds_like_a_machine(self) -> None:
        """A greeting that goes on: what detection takes for a machine."""
        ...

    def message_ended(self) -> None:
        """The machine's greeting ended with its beep: a message left now is recorded."""
        ...

    def note(self, what: str) -> None:
        """Put a moment on the call's timeline (tests read it)."""
        ...


class Callee(Protocol):
    ring_ms: float
    outcome: Literal["answer", "busy", "no-answer", "failed"]

    async def on_line(self, line: CalleeLine) -> None:
        """Take the call until hanging up (return), or until the bridge does (ConnectionError)."""
        ...


@dataclass
class Person:
    """Picks up and says their first word, listens to the greeting, says the sample, listens to the
    reply, and hangs up once the line has been quiet a moment."""

    ring_ms: float = 1500.0
    speech: bytes = field(default_factory=sample_speech, repr=False)
    greeting_wait_s: float = 15.0  # how long to wait for a greeting before speaking anyway
    quiet_ms: float = 1500.0  # silence that ends the bridge's turn
    time_limit_s: float = 60.0
    outcome: Literal["answer"] = "answer"

    async def on_line(self, line: CalleeLine) -> None:
        caller = line.caller
        hello = caller.say(first_word(self.speech))
        await caller.wait_said(hello, 5)
        line.note("said hello")
        line.sounds_human()
        with contextlib.suppress(TimeoutError):
            await caller.wait_heard(300, self.greeting_wait_s)
            line.note("heard the greeting")
            await caller.wait_quiet(self.quiet_ms, self.time_limit_s)
        utterance = caller.say(self.speech)
        await caller.wait_said(utterance, self.time_limit_s)
        end = utterance.spoken_end_ms
        assert end is not None
        line.note("spoke")
        with contextlib.suppress(TimeoutError):
            replied = lambda: caller.playout.reply_started_ms(end) is not None  # noqa: E731
            await caller.wait_until(replied, self.time_limit_s, "a reply")
            line.note("heard the reply")
            await caller.wait_quiet(self.quiet_ms, self.time_limit_s)
        line.note("hung up")


@dataclass
class AnsweringMachine:
    """Picks up with a recorded greeting and a beep, then records whatever it hears until the bridge
    hangs up (or its recording time runs out)."""

    ring_ms: float = 3000.0
    greeting: bytes = field(default_factory=sample_speech, repr=False)
    machine_after_ms: float = 2400.0  # speech this long is a machine (Twilio's default threshold)
    beep_ms: float = 500.0
    record_s: float = 60.0
    outcome: Literal["answer"] = "answer"

    async def on_line(self, line: CalleeLine) -> None:
        caller = line.caller
        greeting = caller.say(self.greeting)

        def long_enough() -> bool:
            began = greeting.sent_start_ms
            return greeting.done.is_set() or (began is not None and now_ms() - began >= self.machine_after_ms)

        await caller.wait_until(long_enough, 30, "the greeting")
        line.sounds_like_a_machine()
        await caller.wait_said(greeting, 30)
        tone = caller.say(beep(self.beep_ms))
        await caller.wait_said(tone, 5)
        line.note("beep")
        line.message_ended()
        with contextlib.suppress(TimeoutError):
            await caller.wait_closed(self.record_s)  # the bridge hangs up once its message was heard
        line.note("recording over")


@dataclass
class Unanswered:
    """Nobody takes the call: `outcome` is what Twilio reports once `ring_ms` has passed."""

    outcome: Literal["busy", "no-answer", "failed"]
    ring_ms: float = 1000.0

    async def on_line(self, line: CalleeLine) -> None:
        raise AssertionError("nobody answers this call")


def demo_callee(number: str) -> Callee:
    """Who answers `number` in demo mode (the module docstring lists them)."""
    match number.removeprefix("+1"):
        case "5550101":
            return AnsweringMachine()
        case "5550102":
            return Unanswered("busy", ring_ms=800)
        case "5550103":
            return Unanswered("no-answer", ring_ms=float("inf"))
        case "5550104":
            return Unanswered("failed", ring_ms=300)
        case _:
            return Person()
