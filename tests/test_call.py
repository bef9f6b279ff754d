"""The Call's rules, driven with plain events and explicit times: no sockets, no clocks."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from bridge.audio import StreamingResampler
from bridge.call import Call
from bridge.call_config import CallConfig
from bridge.carrier.events import CallEnded, CallerAudio, CallStarted, ClearPlayback, Hangup, Mark, PlayAudio
from bridge.carrier.events import PlaybackMark as Echo
from bridge.goodbye import GOODBYES
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec, SessionOptions

FRAME_BYTES = 160  # 20 ms of µ-law at 8 kHz

# The caller hears model audio this much later than our byte count says: truncates are in model time.
LAG = round(StreamingResampler(24000, 8000).delay_ms)


def tone_24k(ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(ms * 24) / 24000
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def make_call(
    *,
    greeting: str = "",
    interrupt_response: bool = True,
    now: float = 0.0,
    play_chunk_ms: int = 20,
    **rules: Any,
) -> Call:
    """`rules`: further CallConfig fields (end_call_tool, transfer_numbers, max_call_seconds, ...)."""
    opts = SessionOptions(instructions="x", voice="marin", interrupt_response=interrupt_response)
    started = CallStarted(stream_sid="MZ1", call_sid="CA1")
    config = CallConfig(session=opts, greeting=greeting, **rules)
    return Call(config, RealtimeCodec("ga"), started, now, play_chunk_ms=play_chunk_ms)


class IdealCarrier:
    """A carrier on a perfect line: plays audio in real time from when it was sent, echoes each mark
    when the audio before it has played. Drives the call's mark echoes up to a given time."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.drained_until = float("-inf")  # when everything queued so far has played
        self.due: list[tuple[float, str]] = []

    def take(self, now: float) -> list:
        commands, self.call.to_carrier = self.call.to_carrier, []  # leave the other outboxes alone
        for command in commands:
            if isinstance(command, PlayAudio):
                self.drained_until = max(self.drained_until, now) + len(command.payload) / 8
            elif isinstance(command, Mark):
                self.due.append((max(self.drained_until, now), command.name))
            elif isinstance(command, ClearPlayback):
                self.due.clear()
                self.drained_until = now
        return commands

    def play_until(self, t: float) -> None:
        while self.due and self.due[0][0] <= t:
            at, name = self.due.pop(0)
            self.call.carrier_event(Echo(name), at)


def speak(
    call: Call, carrier: IdealCarrier, ms: int, *, at: float, response: str = "r1", item: str = "i1"
) -> None:
    """The model sends `ms` of audio for `item` at time `at`; the carrier queues it."""
    call.model_event(rt.ResponseCreated(response), at)
    call.model_event(rt.AudioDelta(response, item, 0, tone_24k(ms)), at)
    carrier.take(at)


def started_call(**kwargs: object) -> tuple[Call, IdealCarrier]:
    call = make_call(**kwargs)  # type: ignore[arg-type]
    carrier = IdealCarrier(call)
    carrier.take(kwargs.get("now", 0.0))  # type: ignore[arg-type]
    carrier.play_until(kwargs.get("now", 0.0))  # type: ignore[arg-type]
    call.drain()
    return call, carrier


def upstream_types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_opening_configures_session_greets_and_probes() -> None:
    call = make_call(greeting="Say hello.")
    carrier, upstream, _ = call.drain()
    assert upstream_types(upstream) == ["session.update", "response.create"]
    assert upstream[1]["response"]["instructions"] == "Say hello."
    assert len(carrier) == 1 and isinstance(carrier[0], Mark)  # a round-trip probe while idle


def test_caller_frame_becomes_24k_pcm() -> None:
    call = make_call()
    call.drain()
    call.carrier_event(CallerAudio(b"\xff" * FRAME_BYTES), 0)
    _, upstream, _ = call.drain()
    assert upstream_types(upstream) == ["input_audio_buffer.append"]
    assert len(base64.b64decode(upstream[0]["audio"])) == 160 * 3 * 2  # 480 samples of PCM16


def test_model_audio_goes_out_in_20ms_frames_with_marks() -> None:
    call = make_call()
    call.drain()
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(100)), 0)
    call.model_event(rt.AudioDone("r1", "i1"), 0)
    carrier, _, _ = call.drain()
    frames = [c for c in carrier if isinstance(c, PlayAudio)]
    assert all(len(f.payload) == FRAME_BYTES for f in frames[:-1])
    total = sum(len(f.payload) for f in frames)
    assert 800 <= total <= 800 + 5 * 8  # 100 ms of µ-law plus at most the filter's few-ms tail
    # The first frame after silence is marked on its own, then every 100 ms, and the end.
    assert isinstance(carrier[1], Mark)
    assert isinstance(carrier[-1], Mark)


def test_audio_ready_at_once_goes_out_in_pieces_a_mark_apart() -> None:
    """A carrier that takes more than a frame per message (Twilio: a second) gets what is ready in
    pieces between marks: a 100 ms delta is two messages and a mark, not five messages."""
    call = make_call(play_chunk_ms=1000)
    call.drain()
    call.model_event(rt.ResponseCreated("r1"), 0)
    shapes = []
    for ms in (100, 100, 500, 20, 20, 20):
        call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(ms)), 0)
        shapes.append([len(c.payload) if isinstance(c, PlayAudio) else "mark" for c in call.drain()[0]])
    call.model_event(rt.AudioDone("r1", "i1"), 0)
    shapes.append([len(c.payload) if isinstance(c, PlayAudio) else "mark" for c in call.drain()[0]])
    # After silence the first frame goes alone with its mark: its echo times the carrier's start.
    assert shapes[0][:2] == [FRAME_BYTES, "mark"]
    assert [size for size in shapes[1] if size != "mark"] == [FRAME_BYTES, 640]
    sent, marks, sizes = 0, [], []
    for size in (size for shape in shapes for size in shape):
        if size == "mark":
            marks.append(sent)
        else:
            sent += size
            sizes.append(size)
    # Marks fall where one frame per message put them: after the first frame, then every 100 ms of
    # audio, and at the item's end.
    assert marks[:-1] == [FRAME_BYTES + 800 * k for k in range(len(marks) - 1)]
    assert marks[-1] == sent == call.ledger.sent_ms("i1") * 8
    assert max(sizes) == 800 and len(sizes) < sent // FRAME_BYTES / 2
    assert all(size % FRAME_BYTES == 0 for size in sizes[:-1])  # whole frames but for the item's end


def test_a_carrier_of_single_frames_gets_one_frame_per_message() -> None:
    call = make_call(play_chunk_ms=20)  # Vonage: one binary message is one frame
    call.drain()
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(500)), 0)
    frames = [c for c in call.drain()[0] if isinstance(c, PlayAudio)]
    assert [len(f.payload) for f in frames] == [FRAME_BYTES] * 25


@pytest.mark.parametrize("play_chunk_ms", [20, 1000])
def test_barge_in_clears_first_then_truncates_at_what_was_heard(play_chunk_ms: int) -> None:
    call, carrier = started_call(play_chunk_ms=play_chunk_ms)
    speak(call, carrier, 2000, at=0)
    carrier.play_until(350)
    call.model_event(rt.SpeechStarted("u1", 0), 350)
    commands, upstream, _ = call.drain()
    assert commands == [ClearPlayback()]
    assert upstream_types(upstream) == ["conversation.item.truncate"]  # the server cancels by itself
    assert upstream[0]["item_id"] == "i1"
    assert upstream[0]["audio_end_ms"] == 350 - LAG
    barge = call.clear_written(351)  # the pump writes it with the batch that carried the clear
    assert barge is not None and barge.kind == "barge_in"
    assert barge.data["heard_ms"] == 350 and barge.data["sent_ms"] == 2000
    assert barge.data["reaction_ms"] == pytest.approx(1)
    # Late audio of the interrupted response never reaches the caller.
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(100)), 360)
    assert call.drain()[0] == []


def test_interrupt_response_false_cancels_ourselves() -> None:
    call, carrier = started_call(interrupt_response=False)
    speak(call, carrier, 1000, at=0)
    carrier.play_until(200)
    call.model_event(rt.SpeechStarted("u1", 0), 200)
    _, upstream, _ = call.drain()
    assert upstream_types(upstream) == ["conversation.item.truncate", "response.cancel"]


@pytest.mark.parametrize("play_chunk_ms", [20, 1000])
def test_barge_in_after_response_done_while_carrier_still_plays(play_chunk_ms: int) -> None:
    call, carrier = started_call(play_chunk_ms=play_chunk_ms)
    speak(call, carrier, 3000, at=0)
    call.model_event(rt.AudioDone("r1", "i1"), 1)
    call.model_event(rt.ResponseDone("r1", "completed", None, None), 2)
    carrier.take(2)
    carrier.play_until(1500)
    call.model_event(rt.SpeechStarted("u1", 0), 1500)
    commands, upstream, _ = call.drain()
    assert commands == [ClearPlayback()]
    assert upstream_types(upstream) == ["conversation.item.truncate"]
    assert upstream[0]["audio_end_ms"] == 1500 - LAG


def test_no_clear_and_no_truncate_when_everything_was_heard() -> None:
    call, carrier = started_call()
    speak(call, carrier, 500, at=0)
    call.model_event(rt.AudioDone("r1", "i1"), 1)
    call.model_event(rt.ResponseDone("r1", "completed", None, None), 2)
    carrier.take(2)
    carrier.play_until(600)
    call.model_event(rt.SpeechStarted("u1", 0), 700)
    assert call.drain()[:2] == ([], [])


def test_queued_second_item_is_truncated_to_zero() -> None:
    call, carrier = started_call()
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(300)), 0)
    call.model_event(rt.AudioDone("r1", "i1"), 0)
    call.model_event(rt.AudioDelta("r1", "i2", 0, tone_24k(300)), 0)
    carrier.take(0)
    carrier.play_until(100)
    call.model_event(rt.SpeechStarted("u1", 0), 100)
    _, upstream, _ = call.drain()
    cuts = {e["item_id"]: e["audio_end_ms"] for e in upstream if e["type"] == "conversation.item.truncate"}
    assert cuts == {"i1": 100 - LAG, "i2": 0}


def test_second_barge_in_right_after_the_first_sends_nothing_more() -> None:
    call, carrier = started_call()
    speak(call, carrier, 1000, at=0)
    carrier.play_until(200)
    call.model_event(rt.SpeechStarted("u1", 0), 200)
    carrier.take(200)
    call.drain()
    call.model_event(rt.SpeechStarted("u2", 0), 260)
    assert call.drain()[:2] == ([], [])


@pytest.mark.parametrize("play_chunk_ms", [20, 1000])
def test_caller_talks_during_greeting(play_chunk_ms: int) -> None:
    call, carrier = started_call(play_chunk_ms=play_chunk_ms, greeting="Hello.")
    speak(call, carrier, 2000, at=50)
    carrier.play_until(400)
    call.model_event(rt.SpeechStarted("u1", 0), 400)
    commands, upstream, _ = call.drain()
    assert commands == [ClearPlayback()]
    assert upstream[0]["audio_end_ms"] == 350 - LAG


def test_without_echoes_nothing_beyond_the_first_mark_counts_as_heard() -> None:
    call, carrier = started_call()
    speak(call, carrier, 2000, at=0)
    call.model_event(rt.SpeechStarted("u1", 0), 500)  # the carrier never confirmed anything
    _, upstream, _ = call.drain()
    assert upstream[0]["audio_end_ms"] <= 20


def test_interrupted_transcript_is_cut_where_the_caller_barged_in() -> None:
    call, carrier = started_call()
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.OutputTranscriptDelta("r1", "i1", "one two three four"), 0)
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(1000)), 0)
    carrier.take(0)
    carrier.play_until(500)
    call.model_event(rt.SpeechStarted("u1", 0), 500)
    records = [r for r in call.drain()[2] if r.kind == "assistant_transcript"]
    assert records[0].data["interrupted"] is True
    assert records[0].data["text"] == "one two t"
    assert records[0].data["full_text"] == "one two three four"


def assistant_lines(call: Call) -> list[dict[str, Any]]:
    return [r.data for r in call.drain()[2] if r.kind == "assistant_transcript"]


def complete_reply(call: Call, carrier: IdealCarrier, text: str, ms: int, done_at: float = 0) -> None:
    """The model says `text` with `ms` of audio from time 0, all of it by `done_at` (faster than
    real time)."""
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.OutputTranscriptDelta("r1", "i1", text), 0)
    call.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(ms)), 0)
    carrier.take(0)
    call.model_event(rt.AudioDone("r1", "i1"), done_at)
    call.model_event(rt.OutputTranscriptDone("r1", "i1", text), done_at)
    call.model_event(rt.ResponseDone("r1", "completed", None, None), done_at)
    carrier.take(done_at)


def test_a_complete_reply_is_logged_once_the_caller_heard_it_all() -> None:
    call, carrier = started_call()
    complete_reply(call, carrier, "one two three four", 1000, done_at=40)
    assert assistant_lines(call) == []  # complete, but the caller has heard little of it yet
    assert call.history == []
    carrier.play_until(900)
    assert assistant_lines(call) == []
    carrier.play_until(1100)  # its last mark, after the resampler's tail
    [record] = [r for r in call.drain()[2] if r.kind == "assistant_transcript"]
    assert record.data == {"item_id": "i1", "text": "one two three four", "interrupted": False}
    assert record.at == 40  # placed where it was complete, not where it was heard to the end
    assert call.history == [("assistant", "one two three four")]


def test_a_complete_reply_the_caller_barged_into_is_logged_as_far_as_heard() -> None:
    call, carrier = started_call()
    complete_reply(call, carrier, "one two three four", 1000)
    carrier.play_until(500)
    call.model_event(rt.SpeechStarted("u1", 0), 500)
    [line] = assistant_lines(call)
    assert (line["text"], line["interrupted"], line["cut_by"]) == ("one two t", True, "barge_in")
    assert call.history == [("assistant", "one two t")]


@pytest.mark.parametrize("complete", [False, True], ids=["still-speaking", "transcript-complete"])
def test_a_reply_cut_by_the_callers_hang_up_is_logged_as_far_as_heard(complete: bool) -> None:
    call, carrier = started_call()
    if complete:
        complete_reply(call, carrier, "one two three four", 1000)
    else:
        speak(call, carrier, 1000, at=0)
        call.model_event(rt.OutputTranscriptDelta("r1", "i1", "one two three four"), 0)
    carrier.play_until(500)
    call.carrier_event(CallEnded(), 500)
    assert assistant_lines(call) == []  # settled when the line is closed, not before
    call.line_closed(510, "caller_hangup")
    [line] = assistant_lines(call)
    assert (line["text"], line["full_text"], line["interrupted"]) == ("one two t", "one two three four", True)
    assert (line["cut_by"], line["heard_ms"]) == ("caller_hangup", 500)
    assert call.history == [("assistant", "one two t")]


def test_a_reply_heard_whole_before_the_line_closed_is_not_cut() -> None:
    call, carrier = started_call()
    complete_reply(call, carrier, "one two", 200)
    carrier.play_until(200)
    call.carrier_event(CallEnded(), 300)
    call.line_closed(300, "caller_hangup")
    [line] = assistant_lines(call)
    assert line == {"item_id": "i1", "text": "one two", "interrupted": False}


def test_a_reply_cut_by_a_lost_session_is_logged_and_handed_to_the_new_one() -> None:
    call, carrier = started_call()
    complete_reply(call, carrier, "one two three four", 1000)
    carrier.play_until(500)
    call.resume(RealtimeCodec("ga"), 500, "the connection dropped (close code 1011)")
    _, upstream, records = call.drain()
    [line] = [r.data for r in records if r.kind == "assistant_transcript"]
    assert (line["text"], line["cut_by"]) == ("one two t", "session_replaced")
    restored = [e["item"]["content"][0]["text"] for e in upstream if e["type"] == "conversation.item.create"]
    assert restored == ["one two t"]


def test_fatal_upstream_error_ends_the_call_for_the_pump_to_close() -> None:
    call = make_call()
    call.drain()
    call.model_event(rt.ServerError("invalid_request_error", "invalid_api_key", "bad key", None), 5)
    carrier, _, records = call.drain()
    assert carrier == []  # the pump plays the apology before it closes the line
    assert call.end_reason == "upstream_failure"
    assert records[0].kind == "error"


def test_benign_cancel_error_is_not_logged() -> None:
    call = make_call()
    call.drain()
    call.model_event(rt.ServerError("invalid_request_error", "response_cancel_not_active", "no", None), 5)
    assert call.drain() == ([], [], [])
    assert call.end_reason is None


def test_caller_hangup_ends_without_hangup_command() -> None:
    call = make_call()
    call.drain()
    call.carrier_event(CallEnded(), 10)
    assert call.end_reason == "caller_hangup"
    assert call.drain()[0] == []


def test_greeting_and_turn_latency_recorded() -> None:
    call2 = make_call(greeting="Hi", now=1000)
    call2.model_event(rt.ResponseCreated("r1"), 1300)
    call2.model_event(rt.AudioDelta("r1", "i1", 0, tone_24k(100)), 1300)
    assert [r.data for r in call2.drain()[2] if r.kind == "greeting_latency"] == [{"ms": 300.0}]
    call2.model_event(rt.SpeechStopped("u1", 4000), 5000)
    call2.model_event(rt.ResponseCreated("r2"), 5100)
    call2.model_event(rt.AudioDelta("r2", "i2", 0, tone_24k(100)), 5400)
    assert [r.data for r in call2.drain()[2] if r.kind == "turn_latency"] == [{"ms": 400.0}]


def test_goodbye_waits_for_the_active_response_then_ends_once_heard() -> None:
    call, carrier = started_call()
    speak(call, carrier, 500, at=0)  # a response is in progress: the goodbye must wait for it
    call.say_goodbye("timeout", 0)
    assert call.drain()[1] == []
    call.model_event(rt.AudioDone("r1", "i1"), 10)
    call.model_event(rt.ResponseDone("r1", "completed", None, None), 10)
    carrier.take(10)
    _, upstream, _ = call.drain()
    assert upstream_types(upstream) == ["response.create"]
    assert upstream[0]["response"]["instructions"] == GOODBYES["timeout"]
    speak(call, carrier, 1000, at=20, response="r2", item="i2")
    call.model_event(rt.AudioDone("r2", "i2"), 30)
    call.model_event(rt.ResponseDone("r2", "completed", None, None), 30)
    carrier.take(30)
    carrier.play_until(900)
    assert call.end_reason is None  # the caller is still hearing the goodbye
    carrier.play_until(2000)
    assert call.end_reason == "timeout"
    assert call.drain()[0] == [Hangup("timeout")]


def test_an_expired_session_is_replaced_with_the_conversation_so_far() -> None:
    call, carrier = started_call()
    call.model_event(rt.InputTranscript("u1", "I need a refund."), 10)
    call.model_event(rt.ResponseCreated("r1"), 20)
    call.model_event(rt.OutputTranscriptDelta("r1", "i1", "Sure."), 20)
    call.model_event(rt.OutputTranscriptDone("r1", "i1", "Sure."), 30)
    speak(call, carrier, 1000, at=30, response="r2", item="i2")  # still playing when the session ends
    call.model_event(rt.ServerError("invalid_request_error", "session_expired", "60 minutes", None), 40)
    assert call.needs_new_session and call.end_reason is None
    call.drain()
    fresh = RealtimeCodec("ga")
    call.resume(fresh, 50)
    commands, upstream, records = call.drain()
    assert commands == [ClearPlayback()]  # the old session's audio cannot be truncated any more
    assert upstream_types(upstream) == [
        "session.update",
        "conversation.item.create",
        "conversation.item.create",
    ]
    assert [(e["item"]["role"], e["item"]["content"][0]["text"]) for e in upstream[1:]] == [
        ("user", "I need a refund."),
        ("assistant", "Sure."),
    ]
    assert records[-1].kind == "session_restored"
    assert call.codec is fresh and not call.needs_new_session


def test_a_tool_call_is_run_off_the_call_and_its_result_answered_after_the_response_ends() -> None:
    from bridge.call_jobs import ToolRequest

    call, _ = started_call()
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.FunctionCall("r1", "i1", "call_1", "lookup_order", '{"id": "A-1"}'), 5)
    [request] = call.take_jobs()
    assert request == ToolRequest("call_1", "lookup_order", '{"id": "A-1"}')
    call.tool_result(request, True, '{"status": "shipped"}', 12.0)  # fast: the response is still active
    _, upstream, records = call.drain()
    assert upstream_types(upstream) == ["conversation.item.create"]
    assert upstream[0]["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"status": "shipped"}',
    }
    assert [r.kind for r in records] == ["tool_call", "tool_result"]
    call.model_event(rt.ResponseDone("r1", "completed", None, None), 20)
    assert upstream_types(call.drain()[1]) == ["response.create"]  # only once no response is active


def test_keypad_digits_reach_the_model_as_one_entry() -> None:
    from bridge.carrier.events import Dtmf
    from bridge.keypad import DTMF_QUIET_MS

    call, _ = started_call()
    for i, digit in enumerate("1234"):
        call.carrier_event(Dtmf(digit), 100.0 * i)
    call.tick(300 + DTMF_QUIET_MS - 1)
    _, waiting, typed = call.drain()
    assert waiting == []  # the caller may still be typing
    call.tick(300 + DTMF_QUIET_MS)
    _, upstream, records = call.drain()
    records = typed + records
    assert upstream_types(upstream) == ["conversation.item.create", "response.create"]
    assert "1234" in upstream[0]["item"]["content"][0]["text"]
    assert [r.data["digit"] for r in records if r.kind == "dtmf"] == ["1", "2", "3", "4"]
    call.carrier_event(Dtmf("9"), 5000)
    call.carrier_event(Dtmf("#"), 5100)  # '#' ends an entry at once
    assert "9#" in call.drain()[1][0]["item"]["content"][0]["text"]


def test_a_refused_response_request_is_asked_again_when_the_line_is_free() -> None:
    call, _ = started_call()
    call.say("Please hold.")
    [create] = call.drain()[1]
    # The service started a response of its own (server VAD) at the same moment and refused ours.
    call.model_event(rt.ResponseCreated("r_vad"), 10)
    call.model_event(
        rt.ServerError(
            "invalid_request_error", "conversation_already_has_active_response", "busy", create["event_id"]
        ),
        11,
    )
    assert call.drain()[1:] == ([], [])  # not an error worth logging: it is queued
    call.model_event(rt.ResponseDone("r_vad", "completed", None, None), 500)
    [again] = call.drain()[1]
    assert again["type"] == "response.create" and "Please hold." in again["response"]["instructions"]


def finish(call: Call, carrier: IdealCarrier, response: str, item: str, at: float) -> None:
    call.model_event(rt.AudioDone(response, item), at)
    call.model_event(rt.ResponseDone(response, "completed", None, None), at)
    carrier.take(at)


def test_a_webhook_tool_is_a_job_for_the_pump() -> None:
    from bridge.call_jobs import ToolRequest

    call, _ = started_call(end_call_tool=True, transfer_numbers=("+15550001111",))
    call.model_event(rt.ResponseCreated("r1"), 0)
    call.model_event(rt.FunctionCall("r1", "i1", "c1", "lookup_order", "{}"), 1)
    call.model_event(rt.FunctionCall("r1", "i2", "c2", "end_call_elsewhere", "{}"), 1)
    assert call.take_jobs() == [
        ToolRequest("c1", "lookup_order", "{}"),
        ToolRequest("c2", "end_call_elsewhere", "{}"),
    ]


def test_without_the_builtin_tools_enabled_their_names_go_to_the_toolbox() -> None:
    from bridge.call_jobs import ToolRequest

    call, _ = started_call()  # END_CALL_TOOL off, no TRANSFER_NUMBER
    call.model_event(rt.FunctionCall("r1", "i1", "c1", "end_call", "{}"), 1)
    call.model_event(rt.FunctionCall("r1", "i2", "c2", "transfer_call", "{}"), 1)
    assert [job.name for job in call.take_jobs() if isinstance(job, ToolRequest)] == [
        "end_call",
        "transfer_call",
    ]
    assert call.goodbye.reason is None


def test_end_call_says_goodbye_after_the_response_in_progress_and_ends_once_heard() -> None:
    call, carrier = started_call(end_call_tool=True)
    speak(call, carrier, 300, at=0)
    call.model_event(rt.FunctionCall("r1", "i9", "c1", "end_call", '{"reason": "bye"}'), 5)
    _, upstream, records = call.drain()
    assert [e["item"]["output"] for e in upstream] == ['{"ok": true}']  # no goodbye yet: r1 is active
    assert [r.kind for r in records] == ["tool_call", "tool_result"]
    assert call.take_jobs() == []
    finish(call, carrier, "r1", "i1", 10)
    [create] = call.drain()[1]
    assert create["response"]["instructions"] == GOODBYES["assistant_ended"]
    speak(call, carrier, 500, at=20, response="r2", item="i2")
    finish(call, carrier, "r2", "i2", 30)
    carrier.play_until(600)
    assert call.end_reason is None  # the caller is still hearing it
    carrier.play_until(2000)
    assert call.end_reason == "assistant_ended" and call.drain()[0] == [Hangup("assistant_ended")]


def test_the_time_limit_asks_for_a_goodbye_and_a_goodbye_never_heard_ends_at_its_deadline() -> None:
    from bridge.goodbye import GOODBYE_LIMIT_MS

    call, _ = started_call(max_call_seconds=60)
    call.tick(59_999)
    assert call.drain()[1] == [] and call.goodbye.reason is None
    call.tick(60_000)
    [create] = call.drain()[1]
    assert create["response"]["instructions"] == GOODBYES["timeout"]
    call.tick(60_500)
    assert call.drain()[1] == []  # asked once
    call.tick(60_000 + GOODBYE_LIMIT_MS - 1)
    assert call.end_reason is None  # the model never answered...
    call.tick(60_000 + GOODBYE_LIMIT_MS)
    assert call.end_reason == "timeout" and call.drain()[0] == [
        Hangup("timeout")
    ]  # ...the line closes anyway


def test_a_transfer_goes_only_to_an_allowed_number() -> None:
    call, _ = started_call(transfer_numbers=("+15550001111", "+15550002222"))
    call.model_event(rt.FunctionCall("r1", "i1", "c1", "transfer_call", '{"number": "+15559999999"}'), 1)
    assert call.take_jobs() == []
    _, upstream, records = call.drain()
    assert json.loads(upstream[0]["item"]["output"]) == {
        "error": "transfers go only to +15550001111, +15550002222"
    }
    assert records[-1].data["ok"] is False


def test_a_transfer_waits_until_the_caller_heard_the_preamble() -> None:
    from bridge.call_jobs import TransferRequest

    call, carrier = started_call(transfer_numbers=("+15550001111", "+15550002222"))
    speak(call, carrier, 800, at=0)  # "I'm transferring you now..."
    call.model_event(rt.FunctionCall("r1", "i9", "c1", "transfer_call", '{"number": "+15550002222"}'), 5)
    assert call.take_jobs() == []  # the response is still active
    finish(call, carrier, "r1", "i1", 10)
    carrier.play_until(500)
    assert call.take_jobs() == []  # the caller is still hearing it
    carrier.play_until(1000)
    [transfer] = call.take_jobs()
    assert isinstance(transfer, TransferRequest) and transfer.number == "+15550002222"
    call.drain()
    call.transfer_finished(transfer, None, 850.0)
    _, upstream, records = call.drain()
    assert call.end_reason == "transferred"
    assert upstream_types(upstream) == ["conversation.item.create"]  # no answer asked of a call that is over
    assert records[-1].data == {
        "call_id": "c1",
        "name": "transfer_call",
        "ok": True,
        "duration_ms": 850.0,
        "result": '{"ok": true}',
    }


def test_a_transfer_goes_at_its_deadline_if_the_preamble_never_ends_and_a_failure_is_the_models_to_tell() -> (
    None
):
    from bridge.phone_call import TRANSFER_WAIT_MS

    call, carrier = started_call(transfer_numbers=("+15550001111",))
    speak(call, carrier, 800, at=0)
    call.model_event(rt.FunctionCall("r1", "i9", "c1", "transfer_call", "{}"), 5)
    call.tick(5 + TRANSFER_WAIT_MS - 1)
    assert call.take_jobs() == []
    call.tick(5 + TRANSFER_WAIT_MS)
    [transfer] = call.take_jobs()
    assert transfer.number == "+15550001111"  # the default
    finish(call, carrier, "r1", "i1", 20_000)
    call.drain()
    call.transfer_finished(transfer, "the carrier refused", 30.0)
    _, upstream, _ = call.drain()
    assert call.end_reason is None
    assert "apologise" in upstream[0]["item"]["output"]
    assert upstream_types(upstream) == ["conversation.item.create", "response.create"]


def test_the_summary_is_asked_only_of_a_call_worth_summarising() -> None:
    call, _ = started_call(dispositions=("resolved",))
    assert call.after_call("caller_hangup") is None  # nothing was said
    call.model_event(rt.InputTranscript("u1", "Hello?"), 10)
    for reason in ("upstream_failure", "shutdown", "error"):
        assert call.after_call(reason) is None
    summary = call.after_call("caller_hangup")
    assert summary is not None and upstream_types(summary.events) == ["response.create"]
    plain, _ = started_call()
    plain.model_event(rt.InputTranscript("u1", "Hello?"), 10)
    assert plain.after_call("caller_hangup") is None  # no dispositions: no summary


def test_a_caller_hanging_up_mid_answer_has_that_answer_cancelled_before_the_summary() -> None:
    call, carrier = started_call(dispositions=("resolved",))
    call.model_event(rt.InputTranscript("u1", "What are your hours?"), 10)
    speak(call, carrier, 2000, at=20, response="r_answer")
    call.carrier_event(CallEnded(), 300)
    summary = call.after_call("caller_hangup")
    assert summary is not None
    cancel, create = summary.events
    assert (cancel["type"], cancel["response_id"]) == ("response.cancel", "r_answer")
    assert create["response"]["conversation"] == "none"


def test_an_answer_the_caller_interrupted_is_not_cancelled_again() -> None:
    call, carrier = started_call(dispositions=("resolved",))
    call.model_event(rt.InputTranscript("u1", "What are your hours?"), 10)
    speak(call, carrier, 2000, at=20, response="r_answer")
    carrier.play_until(300)
    call.model_event(rt.SpeechStarted("u2", 0), 300)  # server VAD cancels it itself
    summary = call.after_call("caller_hangup")
    assert summary is not None and upstream_types(summary.events) == ["response.create"]


def test_a_replaced_session_is_asked_again_for_the_goodbye_it_lost() -> None:
    call, carrier = started_call()
    speak(call, carrier, 300, at=0)
    call.say_goodbye("shutdown", 10)
    finish(call, carrier, "r1", "i1", 20)
    [goodbye] = call.drain()[1]
    call.model_event(rt.ResponseCreated("r2"), 30)  # saying it when the session expires
    call.model_event(rt.ServerError("invalid_request_error", "session_expired", "60 minutes", None), 40)
    call.drain()
    call.resume(RealtimeCodec("ga"), 50)
    upstream = call.drain()[1]
    assert upstream_types(upstream) == ["session.update", "response.create"]
    assert upstream[-1]["response"]["instructions"] == goodbye["response"]["instructions"]


def test_an_operators_announcement_waits_for_the_greeting_it_would_collide_with() -> None:
    call = make_call(greeting="Hello.")
    [greeting] = call.drain()[1][1:]
    call.say("Please hold.")
    assert call.drain()[1] == []  # the greeting was asked for and not answered yet
    call.model_event(rt.ResponseCreated("r1"), 10)
    call.model_event(rt.ResponseDone("r1", "completed", None, None), 20)
    [say] = call.drain()[1]
    assert (
        greeting["response"]["instructions"] == "Hello." and "Please hold." in say["response"]["instructions"]
    )


def caller_turns(records: list) -> list[tuple[str, float | None, dict]]:
    return [(r.kind, r.at, r.data) for r in records if r.kind in ("caller_transcript", "caller_spoke")]


def test_without_transcription_a_caller_turn_is_logged_as_how_long_they_spoke() -> None:
    call, _ = started_call()
    # Server VAD's figures hold 300 ms of padding before the speech and 500 ms of silence after it.
    call.model_event(rt.SpeechStarted("u1", 1200), 2000)
    call.model_event(rt.SpeechStopped("u1", 6300), 6800)
    assert caller_turns(call.drain()[2]) == [
        ("caller_spoke", 2000, {"item_id": "u1", "spoken_ms": 4300, "words": "off"}),
    ]


def test_with_transcription_the_words_are_logged_where_the_caller_began() -> None:
    call, _ = started_call(transcribed=True)
    call.model_event(rt.SpeechStarted("u1", 1200), 2000)
    call.model_event(rt.SpeechStopped("u1", 6300), 6800)
    assert caller_turns(call.drain()[2]) == []  # the words are on their way
    call.model_event(rt.InputTranscript("u1", " I need a refund. "), 7400)
    assert caller_turns(call.drain()[2]) == [
        ("caller_transcript", 2000, {"item_id": "u1", "text": "I need a refund.", "spoken_ms": 4300}),
    ]


def test_a_turn_whose_transcription_failed_or_was_empty_still_shows_the_caller_spoke() -> None:
    call, _ = started_call(transcribed=True)
    call.model_event(rt.SpeechStarted("u1", 100), 100)
    call.model_event(rt.SpeechStopped("u1", 2100), 1900)
    call.model_event(rt.InputTranscriptFailed("u1", "audio unreadable"), 2500)
    call.model_event(rt.SpeechStarted("u2", 3000), 3100)
    call.model_event(rt.SpeechStopped("u2", 4000), 3900)
    call.model_event(rt.InputTranscript("u2", "  "), 4200)
    assert caller_turns(call.drain()[2]) == [
        (
            "caller_spoke",
            100,
            {"item_id": "u1", "spoken_ms": 1200, "words": "failed", "message": "audio unreadable"},
        ),
        ("caller_spoke", 3100, {"item_id": "u2", "spoken_ms": 200, "words": "empty"}),
    ]


def test_semantic_vad_figures_hold_only_the_padding_before_the_speech() -> None:
    opts = SessionOptions(instructions="x", voice="marin", turn_detection="semantic_vad")
    started = CallStarted(stream_sid="MZ1", call_sid="CA1")
    call = Call(CallConfig(session=opts), RealtimeCodec("ga"), started, 0)
    call.drain()
    call.model_event(rt.SpeechStarted("u1", 1000), 1000)
    call.model_event(rt.SpeechStopped("u1", 3300), 3400)
    assert caller_turns(call.drain()[2])[0][2]["spoken_ms"] == 2000


def test_speech_at_the_very_start_has_no_padding_before_it_to_subtract() -> None:
    call, _ = started_call()
    call.model_event(rt.SpeechStarted("u1", 0), 300)
    call.model_event(rt.SpeechStopped("u1", 2000), 2300)
    assert caller_turns(call.drain()[2])[0][2]["spoken_ms"] == 1500
