"""Calls the bridge places, end to end through real sockets: POST /api/calls → the bridge → the Twilio
REST stand-in → its scripted callee on the media stream our TwiML connects → the Realtime emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bridge.sim.callee import Unanswered
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import dominant_hz, running_emulator, samples, tone
from tests.outbound.harness import CALLER_ID, outbound_bridge, quick_machine, quick_person

pytestmark = pytest.mark.e2e

PERSON, MACHINE = "+15550100", "+15550101"
GREETING_HZ, VOICEMAIL_HZ = 600, 900


def spoken_responses(session: object) -> list[dict]:
    """The responses the bridge asked the model to speak (not the post-call summary's)."""
    return [
        e
        for e in session.client_events  # type: ignore[attr-defined]
        if e["type"] == "response.create" and e["response"].get("conversation") != "none"
    ]


def kinds(call: dict) -> list[str]:
    return [e["kind"] for e in call["events"]]


def events_of(call: dict, kind: str) -> list[dict]:
    return [e["data"] for e in call["events"] if e["kind"] == kind]


async def test_a_person_hears_the_greeting_only_once_twilio_says_a_person_answered() -> None:
    person = quick_person()
    async with (
        running_emulator() as (emulator, url),
        outbound_bridge(url, {PERSON: person}, GREETING="Greet Ann.") as outbound,
    ):
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(800, GREETING_HZ, rate=24000), transcript="Hi Ann.")
        )
        call_id = await outbound.placed(to=PERSON, metadata={"booking": "B-17"})
        call = await outbound.finished(call_id, PERSON)
        twilio_call = outbound.simulated(PERSON)
        session = emulator.sessions[0]

    # Twilio was asked for the call as documented: our answer URL, callbacks, async AMD.
    params = twilio_call.params
    assert params["To"] == PERSON and params["From"] == CALLER_ID
    assert (params["MachineDetection"], params["AsyncAmd"]) == ("DetectMessageEnd", "true")
    assert params.getall("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert all("placed=" in params[name] for name in ("Url", "StatusCallback", "AsyncAmdStatusCallback"))
    assert all(callback.status == 204 for callback in twilio_call.callbacks)

    # Nothing was heard before the verdict; the greeting came after it.
    verdict_at = twilio_call.when("answered_by human")
    caller = twilio_call.caller
    assert verdict_at is not None and caller is not None
    heard_at = caller.playout.first_heard_ms()
    assert heard_at is not None and heard_at > verdict_at
    assert caller.playout.played_ms_between(0, verdict_at) == 0
    greeting = caller.playout.heard_pcm(include_silence=False)[: 8 * 700 * 2]
    assert abs(dominant_hz(greeting) - GREETING_HZ) < 10
    # The model never heard the "hello" said before the verdict: its first half second is silence.
    first = samples(bytes(session.appended_pcm[: 24 * 500 * 2]))
    assert np.sqrt(np.mean(first**2)) < 50
    # ... and then the conversation ran as an inbound call does: the person spoke and heard a reply.
    assert twilio_call.when("heard the reply") is not None

    assert (call["direction"], call["outbound_status"], call["answered_by"]) == (
        "outbound",
        "completed",
        "human",
    )
    assert call["end_reason"] == "caller_hangup" and call["metadata"] == {"booking": "B-17"}
    assert call["call_sid"] == twilio_call.sid and call["stream_sid"]
    [answering] = events_of(call, "answering")
    assert (answering["answered_by"], answering["action"]) == ("human", "converse")
    statuses = [d.get("status") for d in events_of(call, "call_progress") if d.get("status")]
    assert statuses == ["queued", "ringing", "answered", "completed"]
    assert kinds(call).index("answering") < kinds(call).index("greeting_latency")


async def test_a_machine_hears_the_voicemail_only_after_its_beep_then_the_bridge_hangs_up() -> None:
    machine = quick_machine()
    async with (
        running_emulator() as (emulator, url),
        outbound_bridge(url, {MACHINE: machine}) as outbound,
    ):
        message = ScriptedReply(
            audio_pcm24k=tone(1500, VOICEMAIL_HZ, rate=24000), transcript="Your table is ready."
        )
        emulator.script_reply(message)
        call_id = await outbound.placed(to=MACHINE, voicemail_message="Your table is ready.")
        call = await outbound.finished(call_id, MACHINE)
        twilio_call = outbound.simulated(MACHINE)
        session = emulator.sessions[0]

    beep_at = twilio_call.when("beep")
    caller = twilio_call.caller
    assert beep_at is not None and caller is not None and twilio_call.answered_by == "machine_end_beep"
    # Not a sound before the beep, then the whole message, then the bridge hung up.
    assert caller.playout.played_ms_between(0, beep_at) == 0
    heard = caller.playout.heard_pcm(include_silence=False)
    assert abs(dominant_hz(heard) - VOICEMAIL_HZ) < 10 and len(heard) / 16 >= 1400
    assert twilio_call.when("hung up by the bridge") is not None and caller.closed_by_server
    last_heard = caller.playout.last_played_ms()
    assert last_heard is not None and caller.playout.played_ms_between(last_heard, float("inf")) == 0
    # The model was asked for the message word for word, and never heard the greeting or the beep.
    creates = spoken_responses(session)
    assert len(creates) == 1 and creates[0]["response"]["instructions"].endswith("Your table is ready.")
    assert len(session.appended_pcm) == 0

    assert (call["end_reason"], call["answered_by"], call["message_end"]) == ("voicemail", "machine", "beep")
    assert [d["action"] for d in events_of(call, "answering")] == ["leave_message"]
    assert [d["text"] for d in events_of(call, "assistant_transcript")] == ["Your table is ready."]


async def test_hang_up_on_a_machine_at_once() -> None:
    async with (
        running_emulator() as (emulator, url),
        outbound_bridge(url, {MACHINE: quick_machine()}) as outbound,
    ):
        call_id = await outbound.placed(to=MACHINE, machine_detection="hang_up")
        call = await outbound.finished(call_id, MACHINE)
        twilio_call = outbound.simulated(MACHINE)
        session = emulator.sessions[0]

    assert twilio_call.params["MachineDetection"] == "Enable"  # a verdict as soon as Twilio can tell
    assert twilio_call.answered_by == "machine_start" and twilio_call.when("beep") is None
    assert twilio_call.caller is not None and twilio_call.caller.playout.played_ms_total == 0
    assert spoken_responses(session) == []
    assert (call["end_reason"], call["answered_by"]) == ("machine", "machine")


@pytest.mark.parametrize(
    ("outcome", "reason"), [("busy", "busy"), ("no-answer", "no_answer"), ("failed", "failed")]
)
async def test_a_call_nobody_takes_ends_with_the_carriers_reason(outcome: str, reason: str) -> None:
    number = "+15550102"
    async with (
        running_emulator() as (emulator, url),
        outbound_bridge(url, {number: Unanswered(outcome, ring_ms=300)}) as outbound,  # type: ignore[arg-type]
    ):
        call_id = await outbound.placed(to=number)
        call = await outbound.finished(call_id, number)
        assert emulator.sessions == []  # no model session was ever opened

    assert (call["status"], call["end_reason"], call["outbound_status"]) == ("ended", reason, reason)
    assert call["stream_sid"] == "" and call["answered_by"] is None
    statuses = [d.get("status") for d in events_of(call, "call_progress") if d.get("status")]
    assert statuses == ["queued", "ringing", reason]


async def test_no_answer_when_it_rings_past_the_ring_timeout() -> None:
    number = "+15550103"
    async with (
        running_emulator() as (_, url),
        outbound_bridge(url, {number: quick_person(ring_ms=60_000)}, OUTBOUND_RING_TIMEOUT="5") as outbound,
    ):
        call_id = await outbound.placed(to=number)
        call = await outbound.finished(call_id, number)
    assert outbound.simulated(number).params["Timeout"] == "5"
    assert (call["end_reason"], call["outbound_status"]) == ("no_answer", "no_answer")


async def test_a_placed_call_asking_for_its_recording_is_recorded_and_only_that_one(tmp_path: Path) -> None:
    other = "+15550102"
    async with (
        running_emulator() as (_, url),
        outbound_bridge(
            url,
            {PERSON: quick_person(), other: quick_person()},
            RECORDING="requested",
            RECORDING_DIR=str(tmp_path / "recordings"),
        ) as outbound,
    ):
        recorded_id = await outbound.placed(to=PERSON, record=True)
        plain_id = await outbound.placed(to=other)
        assert "record=1" in outbound.simulated(PERSON).params["Url"]
        recorded = await outbound.finished(recorded_id, PERSON)
        plain = await outbound.finished(plain_id, other)
        store = outbound.bridge.bridge.store
        assert store is not None
        for _ in range(100):  # the files are written once the call has ended
            recorded = await store.get_call(recorded_id) or recorded
            if recorded["recording_status"] == "ready":
                break
            await asyncio.sleep(0.1)
    assert recorded["recording_status"] == "ready" and recorded["recording_duration_s"] > 0
    assert recorded["outbound_request"]["record"] is True
    assert plain["recording_status"] is None
