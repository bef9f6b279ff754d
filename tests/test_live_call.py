"""A Live call's rules, driven with plain events and explicit times: no sockets, no clocks."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bridge.audio import PCMU_8K, pcm16_to_ulaw
from bridge.call_config import CallConfig, LiveConfig
from bridge.carrier.events import CallerAudio, CallStarted, ClearPlayback, Dtmf, Hangup, Mark, PlayAudio
from bridge.carrier.events import PlaybackMark as Echo
from bridge.live import events as ev
from bridge.live.call import LiveCall
from bridge.live.codec import LiveCodec
from bridge.log_records import RecordKind
from bridge.realtime.codec import SessionOptions
from bridge.tools.builtin import end_call_definition

FRAME = 20
LEAD = 60


def ulaw_tone(ms: int, hz: float = 440.0, dbfs: float = -20.0) -> bytes:
    t = np.arange(ms * 8) / 8000
    return pcm16_to_ulaw((np.sin(2 * np.pi * hz * t) * 32767 * 10 ** (dbfs / 20)).astype("<i2").tobytes())


LOUD = ulaw_tone(FRAME)
SILENT = PCMU_8K.silence(160)


def make_call(greeting: str = "", tools: bool = False, **rules: Any) -> LiveCall:
    live = LiveConfig(
        instructions="Be brief.",
        delegation="responses" if tools else "client",
        backend_model="gpt-5-mini" if tools else "",
        tools=(end_call_definition(),) if tools else (),
        lead_ms=LEAD,
    )
    config = CallConfig(
        session=SessionOptions(instructions="x", voice="marin"),
        greeting=greeting,
        end_call_tool=tools,
        live=live,
        **rules,
    )
    return LiveCall(config, LiveCodec(), CallStarted(stream_sid="MZ1", call_sid="CA1"), 0.0)


def started(call: LiveCall, at: float = 10.0) -> None:
    call.model_event(
        ev.SessionStarted("live_1", "gpt-live-1", 0, {"type": "audio/pcmu"}, "marin", "client", {}), at
    )


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def records(call: LiveCall, kind: RecordKind) -> list[dict[str, Any]]:
    return [r.data for r in call.records if r.kind is kind]


class Line:
    """Drives a call frame by frame on a perfect line: the caller's frames in, the model's frames out
    (one per caller frame: its output is clocked by its input), marks echoed when their audio played."""

    def __init__(self, call: LiveCall, now: float = 10.0) -> None:
        self.call = call
        self.now = now
        self.heard: list[tuple[float, bytes]] = []  # (when the carrier started playing it, audio)
        self.playing_until = 0.0
        self.marks: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.hangups: list[tuple[float, str]] = []
        self.upstream: list[dict[str, Any]] = []

    def step(self, caller: bytes, model: bytes) -> None:
        self.now += FRAME
        call = self.call
        call.carrier_event(CallerAudio(caller), self.now)
        call.model_event(ev.OutputAudio(model), self.now)
        call.pace(self.now)
        while self.marks and self.marks[0][0] <= self.now:
            at, name = self.marks.pop(0)
            call.carrier_event(Echo(name), at)
        self._carrier()

    def _carrier(self) -> None:
        to_carrier, upstream = self.call.to_carrier, self.call.to_upstream
        self.call.to_carrier, self.call.to_upstream = [], []
        self.upstream += upstream
        for command in to_carrier:
            if isinstance(command, PlayAudio):
                start = max(self.now, self.playing_until)
                self.heard.append((start, command.payload))
                self.playing_until = start + len(command.payload) / 8
            elif isinstance(command, Mark):
                self.marks.append((max(self.now, self.playing_until), command.name))
            elif isinstance(command, Hangup):
                self.hangups.append((self.now, command.reason))
            elif isinstance(command, ClearPlayback):
                self.clears.append(self.now)
                self.heard = [(t, a) for t, a in self.heard if t < self.now]
                self.playing_until = self.now
                for _, name in self.marks:
                    self.call.carrier_event(Echo(name), self.now)
                self.marks.clear()
                self.call.clear_written(self.now)


def test_the_session_starts_before_any_audio_and_the_greeting_is_a_commentary() -> None:
    call = make_call(greeting="Greet the caller.")
    for t in (0, 20, 40):
        call.carrier_event(CallerAudio(LOUD), t)
    assert kinds(call.to_upstream) == ["session.start"]  # held back? no: dropped
    assert call.to_upstream[0]["session"]["audio"]["format"] == {"type": "audio/pcmu", "rate": 8000}
    call.to_upstream.clear()
    started(call, 50)
    assert kinds(call.to_upstream) == ["session.commentary.append"]
    assert call.to_upstream[0]["content"] == "Greet the caller."
    call.carrier_event(CallerAudio(LOUD), 60)
    assert kinds(call.to_upstream)[-1] == "session.input_audio.append"
    (session,) = records(call, RecordKind.LIVE_SESSION)
    assert session["dropped_before_start_ms"] == 60 and session["lead_ms"] == LEAD


def test_a_turn_waits_for_the_lead_then_plays_at_real_time_and_silence_between_turns_is_not_sent() -> None:
    call = make_call()
    started(call)
    line = Line(call)
    for _ in range(5):
        line.step(SILENT, SILENT)
    assert line.heard == []  # the model's silence goes nowhere
    line.step(SILENT, LOUD)
    line.step(SILENT, LOUD)
    assert line.heard == []  # gathering the lead
    for _ in range(30):
        line.step(SILENT, LOUD)
    first = line.heard[0][0]
    assert first == 10 + 6 * FRAME + LEAD  # the turn's first frame, then its lead
    assert sum(len(a) for _, a in line.heard) / 8 <= 32 * FRAME
    assert line.playing_until - line.now <= LEAD + FRAME  # never more than the lead ahead
    for _ in range(40):
        line.step(SILENT, SILENT)
    sent = sum(len(a) for _, a in line.heard) / 8
    assert sent <= 32 * FRAME + 500 + FRAME  # the turn's trailing silence, then nothing
    transcript = records(call, RecordKind.ASSISTANT_TRANSCRIPT)
    assert transcript == []  # no words came with it


def test_the_carrier_is_cleared_when_the_model_stops_for_a_caller_who_was_talking() -> None:
    call = make_call()
    started(call)
    line = Line(call)

    def said(k: int) -> None:  # a word a frame, on the session timeline (the model's output so far)
        call.model_event(ev.OutputTranscript(f"w{k} ", k * FRAME, (k + 1) * FRAME), line.now)

    for k in range(40):
        line.step(SILENT, LOUD)
        said(k)
    for k in range(40, 50):  # the caller talks over the model, which goes on for 200 ms ...
        line.step(LOUD, LOUD)
        said(k)
    line.step(LOUD, SILENT)  # ... then stops
    assert line.clears == []  # one silent frame: a pause, maybe
    line.step(LOUD, SILENT)
    assert line.clears == [line.now]  # two: it stopped for the caller
    (stopped,) = [r for r in line.call.records if r.kind is RecordKind.BARGE_IN] or [None]
    assert stopped is None  # the record waits to know whether the model stays quiet
    for _ in range(12):
        line.step(LOUD, SILENT)
    (barge_in,) = records(call, RecordKind.BARGE_IN)
    assert barge_in["model_stopped"] is True and barge_in["item_id"] == "turn_1"
    assert barge_in["stop_ms"] == 50 * FRAME
    assert 0 < barge_in["heard_ms"] < barge_in["sent_ms"]
    assert barge_in["heard_to_ms"] + barge_in["unheard_ms"] == barge_in["stop_ms"]
    assert barge_in["unheard_ms"] <= LEAD + 2 * FRAME  # only what the carrier held
    for _ in range(20):
        line.step(SILENT, SILENT)
    (cut,) = records(call, RecordKind.ASSISTANT_TRANSCRIPT)
    assert cut["interrupted"] and cut["full_text"].endswith("w49")
    heard_words = cut["text"].split()
    assert heard_words == cut["full_text"].split()[: len(heard_words)]
    assert abs(len(heard_words) - barge_in["heard_to_ms"] // FRAME) <= 1  # cut by the fragments' times


def test_a_caller_answering_after_the_model_finished_is_no_barge_in() -> None:
    call = make_call()
    started(call)
    line = Line(call)
    for _ in range(20):
        line.step(SILENT, LOUD)
    for _ in range(5):  # the model finished; the caller starts after its silence began
        line.step(SILENT, SILENT)
    for _ in range(20):
        line.step(LOUD, SILENT)
    assert line.clears == [] and records(call, RecordKind.BARGE_IN) == []


def test_tools_go_on_once_every_open_call_has_its_output_and_its_response_is_done() -> None:
    call = make_call(tools=True)
    started(call)
    call.to_upstream.clear()
    call.model_event(ev.BackendResponseCreated("dlg_1", "resp_1"), 100)
    call.model_event(ev.FunctionCall("dlg_1", "call_a", "lookup", '{"id": 1}', "fc_a"), 100)
    call.model_event(ev.FunctionCall("dlg_1", "call_b", "lookup", '{"id": 2}', "fc_b"), 100)
    usage = {"input_tokens": 10, "output_tokens": 5}
    call.model_event(ev.BackendResponseDone("dlg_1", "resp_1", "completed", usage, None), 101)
    jobs = call.take_jobs()
    assert [job.call_id for job in jobs] == ["call_a", "call_b"]  # type: ignore[union-attr]
    call.tool_result(jobs[0], True, '{"a": 1}', 5.0)  # type: ignore[arg-type]
    assert kinds(call.to_upstream) == ["response.item.create"]  # one still open: not yet
    call.tool_result(jobs[1], True, '{"b": 2}', 5.0)  # type: ignore[arg-type]
    assert kinds(call.to_upstream) == ["response.item.create", "response.item.create", "response.create"]
    (backend,) = records(call, RecordKind.BACKEND_RESPONSE)
    assert backend["usage"] == usage and backend["model"] == "gpt-5-mini"


def test_a_failed_backend_response_drops_its_calls() -> None:
    call = make_call(tools=True)
    started(call)
    call.to_upstream.clear()
    call.model_event(ev.BackendResponseCreated("dlg_1", "resp_1"), 100)
    call.model_event(ev.FunctionCall("dlg_1", "call_a", "lookup", "{}", None), 100)
    call.model_event(ev.BackendResponseDone("dlg_1", "resp_1", "failed", None, "boom"), 101)
    (job,) = call.take_jobs()
    call.tool_result(job, True, "{}", 5.0)  # type: ignore[arg-type]
    assert call.to_upstream == []  # the service discarded it: an output would be refused


def test_end_call_hangs_up_once_the_goodbye_turn_was_heard() -> None:
    call = make_call(tools=True)
    started(call)
    line = Line(call)
    call.model_event(ev.BackendResponseCreated("dlg_1", "r"), line.now)
    call.model_event(ev.FunctionCall("dlg_1", "call_1", "end_call", "{}", None), line.now)
    assert json.loads(call.to_upstream[-1]["item"]["output"]) == {"ok": True}
    assert kinds(call.to_upstream)[-1] == "response.item.create"
    call.model_event(ev.BackendResponseDone("dlg_1", "r", "completed", None, None), line.now)
    assert kinds(call.to_upstream)[-1] == "response.create"
    for _ in range(25):  # the model's goodbye
        line.step(SILENT, LOUD)
    for _ in range(60):
        line.step(SILENT, SILENT)
        if line.hangups:
            break
    ((at, reason),) = line.hangups
    assert reason == "assistant_ended" and call.end_reason == reason
    assert line.playing_until <= at  # everything it said had been played


def test_keypad_notes_and_announcements_are_context_appends() -> None:
    call = make_call()
    started(call)
    call.to_upstream.clear()
    for digit in "42#":
        call.carrier_event(Dtmf(digit), 100)
    call.inject("The caller is a premium customer.")
    call.inject("Offer the upgrade now.", respond=True)
    call.say("We close at six today.")
    sent = [(e["type"], e["content"]) for e in call.to_upstream]
    assert sent[0] == ("session.commentary.append", "The caller typed 42# on the keypad. Answer them now.")
    assert sent[1] == ("session.thinking.append", "The caller is a premium customer.")
    assert sent[2] == ("session.commentary.append", "Offer the upgrade now.")
    assert sent[3][0] == "session.commentary.append" and "We close at six today." in sent[3][1]
    assert call.image_problem() is not None


def test_the_end_closes_the_session_and_keeps_its_billed_seconds_or_an_estimate() -> None:
    call = make_call(dispositions=("resolved",))
    started(call, 1000)
    call.history.append(("user", "Hi"))
    call.model_event(ev.UsageUpdated(10.0, None, None, None), 11_000)
    end = call.after_call("caller_hangup")
    assert kinds(end.events) == ["session.close"]
    assert not end.receive(ev.Info("x", "y"), 12_000)
    assert end.receive(ev.SessionClosed("close_requested", 12.0, {}), 12_500)
    out = end.outcome(12_600)
    by = {r.kind: r.data for r in out}
    assert by[RecordKind.SESSION_CLOSED] == {"reason": "close_requested", "seconds": 12.0, "confirmed": True}
    assert by[RecordKind.SESSION_USAGE] == {"session_seconds": 12.0}
    assert by[RecordKind.SUMMARY_UNAVAILABLE] == {"reason": "live_api"}
    assert RecordKind.LIVE_AUDIO in by
    # Without session.closed the seconds are an estimate, and say so.
    lost = make_call()
    started(lost, 1000)
    end = lost.after_call("upstream_failure")
    closed = [r.data for r in end.outcome(62_900) if r.kind is RecordKind.SESSION_CLOSED]
    assert closed == [{"reason": "unconfirmed", "seconds": 61.0, "confirmed": False}]


def test_an_expired_session_is_replaced_and_content_ends_the_call() -> None:
    call = make_call()
    started(call)
    call.history += [("user", "Hi"), ("assistant", "Hello!")]
    call.model_event(ev.SessionClosed("expired", 3600.0, {}), 5000)
    assert call.needs_new_session and call.end_reason is None
    call.to_upstream.clear()
    call.resume(LiveCodec(), 5100)
    (start,) = call.to_upstream
    assert [item["role"] for item in start["session"]["input"]] == ["user", "assistant"]
    call.carrier_event(CallerAudio(LOUD), 5120)
    assert len(call.to_upstream) == 1  # nothing until the new session started
    ended = make_call()
    started(ended)
    ended.model_event(ev.SessionClosed("content", 5.0, {}), 5000)
    assert ended.end_reason == "upstream_failure"
    assert [e["code"] for e in records(ended, RecordKind.ERROR)] == ["content"]


def test_an_error_before_the_session_started_is_the_upstreams_failure() -> None:
    call = make_call()
    call.model_event(
        ev.ServerError("invalid_request_error", "unknown_parameter", "no", "session.voice", None), 5
    )
    assert call.end_reason == "upstream_failure"
    late = make_call()
    late.tick(11_000)
    assert late.end_reason == "upstream_failure"
    assert [e["code"] for e in records(late, RecordKind.ERROR)] == ["start_timeout"]


def test_transfer_call_waits_for_the_preamble_to_be_heard_then_the_carrier_transfers() -> None:
    call = make_call(tools=True, transfer_numbers=("+15550001111",))
    started(call)
    line = Line(call)
    for _ in range(10):  # the model says it will transfer the caller ...
        line.step(SILENT, LOUD)
    call.model_event(ev.BackendResponseCreated("dlg_1", "r"), line.now)
    call.model_event(
        ev.FunctionCall("dlg_1", "call_t", "transfer_call", '{"number": "+15550001111"}', None), line.now
    )
    assert call.take_jobs() == []  # ... and is still saying it
    jobs = []
    for _ in range(60):
        line.step(SILENT, SILENT)
        call.tick(line.now)
        jobs += call.take_jobs()
        if jobs:
            break
    (transfer,) = jobs
    assert transfer.number == "+15550001111"  # type: ignore[union-attr]
    assert line.playing_until <= line.now  # the preamble was heard whole first
    call.transfer_finished(transfer, None, 300.0)  # type: ignore[arg-type]
    assert call.end_reason == "transferred"
    (result,) = records(call, RecordKind.TOOL_RESULT)
    assert result["ok"] and result["name"] == "transfer_call"


def test_transfer_call_refuses_a_number_off_the_list() -> None:
    call = make_call(tools=True, transfer_numbers=("+15550001111",))
    started(call)
    call.to_upstream.clear()
    call.model_event(ev.FunctionCall(None, "call_t", "transfer_call", '{"number": "+19005550000"}', None), 50)
    assert call.take_jobs() == [] and call.end_reason is None
    output = json.loads(call.to_upstream[0]["item"]["output"])
    assert "+15550001111" in json.dumps(output)
