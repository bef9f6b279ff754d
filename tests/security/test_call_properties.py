"""`Call` driven by random interleavings of carrier and Realtime events, as the pumps would drive it.

Whatever arrives, in whatever order, the call must not raise, and what it leaves in its outboxes must
be commands Twilio accepts and client events the Realtime API accepts.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.call import Call
from bridge.call_config import CallConfig
from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    ClearPlayback,
    Connected,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.log_records import LogRecord, RecordKind
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec, RealtimeProtocolError, SessionOptions
from bridge.sim.carrier_emulator import parse_outbound
from tests.security.strategies import realtime_shaped

FRAME_BYTES = 160  # 20 ms of µ-law at 8 kHz

SID = "MZ" + "0" * 32
CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "conversation.item.truncate",
        "response.cancel",
        "response.create",
        "conversation.item.create",
        "conversation.item.delete",
    }
)

responses = st.sampled_from(["r1", "r2", "r3"])
items = st.sampled_from(["i1", "i2", "i3"])
texts = st.text(max_size=12)
small_ints = st.integers(min_value=-5, max_value=10_000)
json_dicts = st.dictionaries(st.text(max_size=6), st.integers(0, 10**6) | st.text(max_size=6), max_size=3)


def pcm(n_bytes: int) -> bytes:
    # Content does not matter to the call's rules, only length: a whole number of samples or not.
    return b"\x10\x00" * (n_bytes // 2) + b"\x01" * (n_bytes % 2)


# Model audio up to 300 ms at 24 kHz, sometimes with a stray odd byte.
model_audio = st.one_of(st.integers(480, 300 * 48), st.integers(0, 600)).map(pcm)

realtime_events = st.one_of(
    st.builds(rt.AudioDelta, responses, items, st.integers(0, 2), model_audio),
    st.builds(rt.AudioDelta, responses, items, st.just(0), model_audio),
    st.builds(rt.ResponseCreated, responses, st.none() | st.just("none"), st.none() | json_dicts),
    st.builds(rt.SpeechStarted, items, small_ints),
    st.builds(rt.AudioDone, responses, items),
    st.builds(
        rt.ResponseDone,
        responses,
        st.sampled_from(["completed", "cancelled", "failed", "incomplete"]),
        st.none() | texts,
        st.none() | json_dicts,
    ),
    st.builds(rt.SpeechStopped, items, small_ints),
    st.builds(rt.OutputTranscriptDelta, responses, items, texts),
    st.builds(rt.OutputTranscriptDone, responses, items, texts),
    st.builds(rt.InputTranscript, items, texts),
    st.builds(
        rt.ServerError,
        texts,
        st.none() | st.sampled_from(["session_expired", "response_cancel_not_active", "rate_limit", ""]),
        texts,
        st.none() | texts,
    ),
    st.builds(rt.ItemTruncated, items, st.integers(0, 2), small_ints),
    st.builds(rt.InputCommitted, items, st.none() | items),
    st.builds(rt.SessionReady, st.booleans(), json_dicts),
    st.builds(rt.Ignored, texts),
)

# The call's end is drawn separately and rarely, so most scripts run long enough to get interesting.
carrier_events = st.one_of(
    st.builds(CallerAudio, st.integers(0, 400).map(bytes), st.none() | st.integers(0, 10**6)),
    st.builds(PlaybackMark, st.sampled_from(["a1", "a2", "p1", "p2", "zzz", ""])),
    st.builds(Dtmf, st.sampled_from(list("0123456789*#ABCD"))),
    st.builds(CallStarted, st.just(SID), st.just("CA1")),
    st.just(Connected()),
)


class Pump:
    """What pump.CallPump does with a call's outboxes, plus the checks of each output."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.carrier = TwilioCodec()
        self.carrier.stream_sid = SID
        self.marks_in_flight: list[str] = []
        self.hangups = 0

    def flush(self, now: float) -> None:
        to_carrier, to_upstream, records = self.call.drain()
        for command in to_carrier:
            self.check_carrier_command(command)
            if isinstance(command, ClearPlayback) and (record := self.call.clear_written(now)) is not None:
                records.append(record)
        for event in to_upstream:
            check_client_event(event)
        for record in records:
            check_record(record)

    def check_carrier_command(self, command: object) -> None:
        assert isinstance(command, PlayAudio | Mark | ClearPlayback | Hangup), command
        if isinstance(command, Hangup):
            self.hangups += 1
            assert self.hangups == 1, "a call hangs up once"
            assert isinstance(command.reason, str) and command.reason
            return
        if isinstance(command, PlayAudio):
            assert 0 < len(command.payload) <= FRAME_BYTES
        if isinstance(command, Mark):
            assert command.name
            self.marks_in_flight.append(command.name)
        text = self.carrier.encode(command)
        assert text is not None
        parse_outbound(text, SID)  # raises what Twilio would reject with 31924


def check_client_event(event: dict[str, Any]) -> None:
    assert isinstance(event, dict) and event.get("type") in CLIENT_EVENT_TYPES, event
    msgspec.json.encode(event)
    if event["type"] == "input_audio_buffer.append":
        audio = base64.b64decode(event["audio"], validate=True)
        assert audio and len(audio) % 2 == 0  # PCM16 at 24 kHz: whole samples
    elif event["type"] == "conversation.item.truncate":
        assert isinstance(event["item_id"], str) and event["item_id"]
        assert isinstance(event["audio_end_ms"], int) and event["audio_end_ms"] >= 0
        assert isinstance(event["content_index"], int) and event["content_index"] >= 0


def check_record(record: LogRecord) -> None:
    assert isinstance(record, LogRecord) and isinstance(record.kind, RecordKind)
    assert isinstance(record.data, dict)
    json.dumps(record.data)  # the call log stores it as JSON


def make_call(greeting: str, interrupt_response: bool) -> Call:
    options = SessionOptions(instructions="x", voice="marin", interrupt_response=interrupt_response)
    return Call(CallConfig(options, greeting=greeting), RealtimeCodec("ga"), CallStarted(SID, "CA1"), 0.0)


def actions(realtime: st.SearchStrategy[rt.RealtimeEvent]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """(ms since the previous action, what happens): the whole script is drawn at once, which is fast."""
    step = st.one_of(
        st.tuples(st.just("realtime"), realtime),
        st.tuples(st.just("realtime"), realtime),
        st.tuples(st.just("realtime"), realtime),
        st.tuples(st.just("carrier"), carrier_events),
        # Twilio echoes in order; a stray out-of-order or repeated echo must be harmless too.
        st.tuples(st.just("echo"), st.sampled_from([0, 0, 0, -1]), st.booleans()),
        st.tuples(st.just("echo"), st.just(0), st.just(True)),
        st.tuples(st.just("tick")),
    )
    timed = st.tuples(st.floats(min_value=0, max_value=300), step)
    ending = st.sampled_from([None, None, CallEnded(), CallEnded("stopped")])
    return st.tuples(st.lists(timed, min_size=10, max_size=60), ending).map(
        lambda s: [*s[0], (0.0, ("carrier", s[1]))] if s[1] is not None else s[0]
    )


def drive(greeting: str, interrupt_response: bool, script: list[tuple[Any, ...]]) -> None:
    call = make_call(greeting, interrupt_response)
    pump = Pump(call)
    now = 0.0
    pump.flush(now)
    for dt, (action, *args) in script:
        now += dt
        if action == "realtime":
            call.model_event(args[0], now)
        elif action == "carrier":
            call.carrier_event(args[0], now)
        elif action == "echo" and pump.marks_in_flight:
            index, consume = args
            name = pump.marks_in_flight[index]
            if consume:
                pump.marks_in_flight.pop(index)
            call.carrier_event(PlaybackMark(name), now)
        elif action == "tick":
            call.tick(now)
        pump.flush(now)


bounded = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@bounded
@given(
    greeting=st.sampled_from(["", "Greet."]),
    interrupt_response=st.booleans(),
    script=actions(realtime_events),
)
def test_call_survives_any_interleaving_of_typed_events(
    greeting: str, interrupt_response: bool, script: list[tuple[Any, ...]]
) -> None:
    drive(greeting, interrupt_response, script)


def decoded(message: dict[str, Any]) -> rt.RealtimeEvent:
    try:
        return RealtimeCodec().decode(json.dumps(message))
    except RealtimeProtocolError:
        return rt.Ignored("unusable")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interrupt_response=st.booleans(), script=actions(realtime_shaped.map(decoded)))
def test_call_survives_whatever_the_codec_lets_through(
    interrupt_response: bool, script: list[tuple[Any, ...]]
) -> None:
    """Realtime server messages straight from the wire, through the codec, into the call."""
    drive("", interrupt_response, script)
