"""Who answered a call we placed, and what the call does about it: the `Call`'s part for outbound calls.

A call we place with machine detection waits, silent and deaf, until the carrier says who picked up
(its verdict), or until `DetectionPlan.wait_ms` passes:

    waiting ──human / unknown / the wait ran out──► conversing (greeting first, as an inbound call)
       │
       ├──machine (or fax), hang_up──────────────► hanging up
       │
       └──machine, leave_message──► awaiting the message end ──beep / silence──► leaving a message
                                         (the machine's greeting)                  (then hang up)

A verdict may still come after the wait ran out and the call went on as with a person: a machine then
changes course as above (the carrier's detection is the better judge than our patience), a person
changes nothing. Only the first machine verdict counts; a fax is a machine that takes no message. A
machine whose greeting's end is never reported gets its message `MESSAGE_END_WAIT_MS` after it was
found (a message half-recorded beats none, and the call must end).

Sans-IO: `verdict` and `tick` return the `Step` the call takes; the call does the talking.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

MESSAGE_END_WAIT_MS = 30_000.0  # a machine found mid-greeting gets its message by then, beep or not


class MachineDetection(StrEnum):
    """What to do when a machine answers a call we placed (the API's `machine_detection`)."""

    OFF = "off"  # no detection: talk to whoever answers
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"


class AnsweredBy(StrEnum):
    """The carrier's verdict, in our words (each carrier's own values are mapped in its folder)."""

    HUMAN = "human"
    MACHINE = "machine"
    FAX = "fax"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    answered_by: AnsweredBy
    # The machine's greeting is over ("beep", "silence", "other"): a message left now is recorded
    # whole. "" while it may still be playing (or for anything but a machine).
    message_end: str = ""


@dataclass(frozen=True, slots=True)
class DetectionPlan:
    """How a placed call waits for its verdict and what it does with a machine."""

    machine_detection: MachineDetection
    voicemail_message: str = ""  # "": the model leaves a short message of its own, from its instructions
    wait_ms: float = 5000.0  # no verdict by then: speak as to a person

    def voicemail_instructions(self) -> str:
        opening = (
            "The call went to an answering machine and it is recording now. Do not greet anyone or "
            "wait for an answer. "
        )
        if self.voicemail_message:
            return opening + f"Say exactly this message, nothing else: {self.voicemail_message}"
        return opening + (
            "Leave a short voicemail message (two or three sentences) saying who you are and why you "
            "called, as your instructions describe, then stop."
        )


class Step(Enum):
    NONE = "none"  # nothing to do (yet)
    CONVERSE = "converse"  # a person (or nobody can tell): greet and talk
    HANG_UP = "hang_up"
    AWAIT_MESSAGE_END = "await_message_end"  # a machine, still playing its greeting: stop listening
    LEAVE_MESSAGE = "leave_message"  # the machine records now: say the message, then hang up


class AnswerState(Enum):
    WAITING = "waiting"
    CONVERSING = "conversing"
    AWAITING_MESSAGE_END = "awaiting_message_end"
    LEAVING_MESSAGE = "leaving_message"
    HANGING_UP = "hanging_up"


class AnswerDetection:
    def __init__(self, plan: DetectionPlan, now: float) -> None:
        self.plan = plan
        self.state = AnswerState.WAITING
        self.deadline = now + plan.wait_ms
        self.message_deadline = float("inf")  # once a machine was found: when to stop waiting for its beep
        self.assumed_human = False  # the wait ran out before any verdict

    @property
    def hears_callee(self) -> bool:
        """Does the model hear the line? Only in a conversation: never a machine's greeting or the
        beep (they would start replies), never during the wait (the model does not speak yet)."""
        return self.state is AnswerState.CONVERSING

    def tick(self, now: float) -> Step:
        if self.state is AnswerState.WAITING and now >= self.deadline:
            self.state = AnswerState.CONVERSING
            self.assumed_human = True
            return Step.CONVERSE
        if self.state is AnswerState.AWAITING_MESSAGE_END and now >= self.message_deadline:
            self.state = AnswerState.LEAVING_MESSAGE
            return Step.LEAVE_MESSAGE
        return Step.NONE

    def verdict(self, verdict: Verdict, now: float) -> Step:
        """The carrier's verdict (or a later one: a machine's message end)."""
        state = self.state
        if state in (AnswerState.HANGING_UP, AnswerState.LEAVING_MESSAGE):
            return Step.NONE
        machine = verdict.answered_by in (AnsweredBy.MACHINE, AnsweredBy.FAX)
        if not machine:
            if state is AnswerState.WAITING:
                self.state = AnswerState.CONVERSING
                return Step.CONVERSE
            return Step.NONE  # a person, as assumed; or a late "unknown" after a machine: keep course
        wants_message = self.plan.machine_detection is MachineDetection.LEAVE_MESSAGE
        if verdict.answered_by is AnsweredBy.FAX or not wants_message:
            self.state = AnswerState.HANGING_UP
            return Step.HANG_UP
        if verdict.message_end:
            self.state = AnswerState.LEAVING_MESSAGE
            return Step.LEAVE_MESSAGE
        if state is AnswerState.AWAITING_MESSAGE_END:
            return Step.NONE
        self.state = AnswerState.AWAITING_MESSAGE_END
        self.message_deadline = now + MESSAGE_END_WAIT_MS
        return Step.AWAIT_MESSAGE_END
