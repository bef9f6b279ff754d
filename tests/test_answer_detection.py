"""A call we placed: who answered and what it does about it, as plain events and explicit times."""

from __future__ import annotations

import pytest

from bridge.answer_detection import (
    MESSAGE_END_WAIT_MS,
    AnswerDetection,
    AnsweredBy,
    AnswerState,
    DetectionPlan,
    MachineDetection,
    Step,
    Verdict,
)
from bridge.call import Call
from bridge.call_jobs import AwaitVerdict
from bridge.carrier.events import CallerAudio, Hangup
from tests.test_call import FRAME_BYTES, IdealCarrier, finish, make_call, speak, upstream_types

HUMAN = Verdict(AnsweredBy.HUMAN)
MACHINE = Verdict(AnsweredBy.MACHINE)
BEEP = Verdict(AnsweredBy.MACHINE, message_end="beep")
FAX = Verdict(AnsweredBy.FAX)
UNKNOWN = Verdict(AnsweredBy.UNKNOWN)
LEAVE = DetectionPlan(MachineDetection.LEAVE_MESSAGE, "Your table is ready.", wait_ms=4000)
HANG_UP = DetectionPlan(MachineDetection.HANG_UP, wait_ms=4000)


# -- the state machine ---------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", [HUMAN, UNKNOWN])
def test_a_person_or_nobody_can_tell_means_a_conversation(verdict: Verdict) -> None:
    detection = AnswerDetection(LEAVE, now=0)
    assert not detection.hears_callee
    assert detection.verdict(verdict, 0) is Step.CONVERSE
    assert detection.hears_callee and not detection.assumed_human


def test_hang_up_on_a_machine_at_once() -> None:
    detection = AnswerDetection(HANG_UP, now=0)
    assert detection.verdict(MACHINE, 0) is Step.HANG_UP
    assert detection.verdict(BEEP, 0) is Step.NONE and detection.state is AnswerState.HANGING_UP


def test_a_message_waits_for_the_machine_greeting_to_end() -> None:
    detection = AnswerDetection(LEAVE, now=0)
    assert detection.verdict(MACHINE, 0) is Step.AWAIT_MESSAGE_END
    assert not detection.hears_callee  # the greeting and the beep never reach the model
    assert detection.verdict(MACHINE, 0) is Step.NONE
    assert detection.tick(10_000) is Step.NONE  # a machine was heard: no talking to it as to a person
    assert detection.verdict(BEEP, 12_000) is Step.LEAVE_MESSAGE
    assert detection.verdict(BEEP, 0) is Step.NONE and detection.verdict(HUMAN, 0) is Step.NONE


def test_a_machine_whose_greeting_end_never_comes_gets_its_message_all_the_same() -> None:
    detection = AnswerDetection(LEAVE, now=0)
    assert detection.verdict(MACHINE, 2000) is Step.AWAIT_MESSAGE_END
    assert detection.tick(2000 + MESSAGE_END_WAIT_MS - 1) is Step.NONE
    assert detection.tick(2000 + MESSAGE_END_WAIT_MS) is Step.LEAVE_MESSAGE
    assert detection.verdict(BEEP, 40_000) is Step.NONE


def test_a_machine_whose_greeting_already_ended_gets_the_message_at_once() -> None:
    assert AnswerDetection(LEAVE, now=0).verdict(BEEP, 0) is Step.LEAVE_MESSAGE


def test_a_fax_takes_no_message() -> None:
    assert AnswerDetection(LEAVE, now=0).verdict(FAX, 0) is Step.HANG_UP


def test_no_verdict_in_time_means_talking_as_to_a_person() -> None:
    detection = AnswerDetection(LEAVE, now=1000)
    assert detection.tick(4999) is Step.NONE and not detection.hears_callee
    assert detection.tick(5000) is Step.CONVERSE
    assert detection.assumed_human and detection.hears_callee
    assert detection.tick(9000) is Step.NONE
    assert detection.verdict(HUMAN, 0) is Step.NONE  # as assumed


@pytest.mark.parametrize(
    ("plan", "verdict", "step"),
    [
        (HANG_UP, MACHINE, Step.HANG_UP),
        (LEAVE, BEEP, Step.LEAVE_MESSAGE),
        (LEAVE, MACHINE, Step.AWAIT_MESSAGE_END),
    ],
)
def test_a_late_machine_verdict_changes_course(plan: DetectionPlan, verdict: Verdict, step: Step) -> None:
    detection = AnswerDetection(plan, now=0)
    assert detection.tick(plan.wait_ms) is Step.CONVERSE
    assert detection.verdict(verdict, plan.wait_ms) is step
    assert not detection.hears_callee


def test_the_voicemail_instructions_carry_the_message_or_ask_for_one() -> None:
    assert LEAVE.voicemail_instructions().endswith(
        "Say exactly this message, nothing else: Your table is ready."
    )
    own = DetectionPlan(MachineDetection.LEAVE_MESSAGE).voicemail_instructions()
    assert "answering machine" in own and "short voicemail message" in own


# -- the Call ------------------------------------------------------------------------------------


def placed_call(plan: DetectionPlan, greeting: str = "Greet Ann.") -> tuple[Call, IdealCarrier]:
    call = make_call(greeting=greeting, detection=plan)
    carrier = IdealCarrier(call)
    return call, carrier


def test_a_placed_call_says_nothing_and_hears_nothing_until_the_verdict() -> None:
    call, carrier = placed_call(LEAVE)
    _, upstream, _ = call.drain()
    assert upstream_types(upstream) == ["session.update"]  # no greeting yet
    assert call.take_jobs() == [AwaitVerdict()]
    call.carrier_event(CallerAudio(b"\xff" * FRAME_BYTES), 100)  # the callee's "hello?"
    assert call.drain()[1] == [] and call.frames_in == 1

    call.answered(HUMAN, 1500)
    _, upstream, records = call.drain()
    assert upstream_types(upstream) == ["response.create"]
    assert upstream[0]["response"]["instructions"] == "Greet Ann."
    [answering] = records
    assert answering.kind == "answering"
    assert answering.data == {
        "action": "converse",
        "after_ms": 1500,
        "answered_by": "human",
        "message_end": "",
    }
    call.carrier_event(CallerAudio(b"\xff" * FRAME_BYTES), 1600)
    assert upstream_types(call.drain()[1]) == ["input_audio_buffer.append"]
    # The greeting's latency counts from the verdict, not from the stream's start.
    speak(call, carrier, 200, at=1700)
    latency = [r for r in call.drain()[2] if r.kind == "greeting_latency"]
    assert [r.data["ms"] for r in latency] == [200]


def test_a_machine_hears_the_voicemail_after_its_beep_then_the_line_closes() -> None:
    call, carrier = placed_call(LEAVE)
    call.drain()
    call.answered(MACHINE, 2000)  # Twilio with DetectMessageEnd says nothing until the beep; others do
    _, upstream, records = call.drain()
    assert upstream == [] and [r.data["action"] for r in records] == ["await_message_end"]
    assert call.take_jobs() == [AwaitVerdict(), AwaitVerdict(MACHINE)]  # then for the message end
    call.carrier_event(CallerAudio(b"\xff" * FRAME_BYTES), 3000)  # the beep: never sent to the model
    assert call.drain()[1] == []

    call.answered(BEEP, 6000)
    _, upstream, records = call.drain()
    assert upstream_types(upstream) == ["response.create"]
    assert upstream[0]["response"]["instructions"] == LEAVE.voicemail_instructions()
    assert records[0].data["action"] == "leave_message" and records[0].data["message_end"] == "beep"
    speak(call, carrier, 3000, at=6100)
    finish(call, carrier, "r1", "i1", 6200)
    carrier.play_until(8000)
    assert call.end_reason is None  # the machine is still recording the message
    carrier.play_until(9200)
    assert call.end_reason == "voicemail" and call.drain()[0][-1] == Hangup("voicemail")


def test_a_machine_is_hung_up_on_at_once() -> None:
    call, _ = placed_call(HANG_UP)
    call.drain()
    call.answered(MACHINE, 2500)
    commands, upstream, _ = call.drain()
    assert upstream == [] and Hangup("machine") in commands and call.end_reason == "machine"


def test_no_verdict_in_time_greets_as_an_inbound_call_does() -> None:
    call, _ = placed_call(LEAVE)
    call.drain()
    call.tick(3999)
    assert call.drain()[1] == []
    call.tick(4000)
    _, upstream, records = call.drain()
    assert upstream_types(upstream) == ["response.create"]
    assert [(r.kind, r.data.get("assumed")) for r in records] == [("answering", True)]


def test_a_machine_verdict_after_the_wait_leaves_the_message_once_the_answer_in_progress_ends() -> None:
    call, carrier = placed_call(LEAVE)
    call.drain()
    call.tick(4000)  # no verdict: greeting
    call.drain()
    speak(call, carrier, 1000, at=4100)
    call.answered(BEEP, 4500)
    assert call.drain()[1] == []  # one response at a time: the greeting goes on
    call.carrier_event(CallerAudio(b"\xff" * FRAME_BYTES), 4600)
    assert call.drain()[1] == []  # and the machine is no longer heard
    finish(call, carrier, "r1", "i1", 4700)
    [create] = call.drain()[1]
    assert create["response"]["instructions"] == LEAVE.voicemail_instructions()


def test_an_ended_call_ignores_a_late_verdict() -> None:
    call, _ = placed_call(LEAVE)
    call.drain()
    call.hang_up("operator_ended")
    call.drain()
    call.answered(HUMAN, 100)
    assert call.drain() == ([], [], [])


def test_an_empty_greeting_lets_the_person_speak_first() -> None:
    call, _ = placed_call(LEAVE, greeting="")
    call.drain()
    call.answered(HUMAN, 800)
    _, upstream, _ = call.drain()
    assert upstream == []
    call.carrier_event(CallerAudio(b"\xff" * FRAME_BYTES), 900)
    assert upstream_types(call.drain()[1]) == ["input_audio_buffer.append"]


def test_a_call_leaves_its_message_when_the_machines_beep_is_never_reported() -> None:
    call, _ = placed_call(LEAVE)
    call.drain()
    call.answered(MACHINE, 2000)
    call.drain()
    call.tick(2000 + MESSAGE_END_WAIT_MS)
    _, upstream, records = call.drain()
    assert upstream_types(upstream) == ["response.create"]
    assert [(r.data["action"], r.data.get("assumed")) for r in records] == [("leave_message", True)]
