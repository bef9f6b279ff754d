"""Property tests of the sans-IO codecs on hostile input: a bad message is a protocol error, never a crash.

The pumps catch exactly `CarrierProtocolError` / `RealtimeProtocolError`; anything else escaping a
codec ends the call (and logs a traceback per message), so "never anything else" is the property.
Events must also hold the types they declare: `Call` trusts them.
"""

from __future__ import annotations

import base64
import json
import typing

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.carrier import events as carrier_events
from bridge.carrier.events import (
    CallerAudio,
    CarrierProtocolError,
    ClearPlayback,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec, RealtimeProtocolError
from bridge.sim.carrier_emulator import parse_outbound
from bridge.websocket_leg import CarrierCodec
from tests.security.conformance import violations
from tests.security.dialects import DIALECTS
from tests.security.strategies import (
    DEEP_JSON,
    garbage,
    realtime_shaped,
    twilio_deep_media,
    twilio_shaped,
    wire,
)

CARRIER_EVENT_TYPES = typing.get_args(carrier_events.CarrierEvent)
REALTIME_EVENT_TYPES = typing.get_args(rt.RealtimeEvent)
SID = "MZ" + "0" * 32

bounded = settings(max_examples=400, deadline=None)

START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {"streamSid": SID, "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw"}},
        "streamSid": SID,
    }
)


def started_codec() -> TwilioCodec:
    codec = TwilioCodec()
    codec.decode(START)
    return codec


def decode_carrier(codec: CarrierCodec, message: str | bytes) -> None:
    try:
        event = codec.decode(message)
    except CarrierProtocolError:
        return
    assert event is None or isinstance(event, CARRIER_EVENT_TYPES)
    if event is not None:
        assert violations(event) == []


def decode_realtime(message: str | bytes) -> rt.RealtimeEvent | None:
    try:
        event = RealtimeCodec().decode(message)
    except RealtimeProtocolError:
        return None
    assert isinstance(event, REALTIME_EVENT_TYPES)
    return event


# -- Twilio, inbound ------------------------------------------------------------------------------------


@bounded
@given(message=garbage)
def test_twilio_garbage_is_a_protocol_error_or_ignored(message: str | bytes) -> None:
    decode_carrier(TwilioCodec(), message)


@bounded
@given(message=wire(twilio_shaped), started=st.booleans())
@example(message=json.dumps({"event": "connected", "sequenceNumber": "²"}), started=False)
@example(message=json.dumps({"event": "connected", "sequenceNumber": "1" * 5000}), started=False)
@example(
    message=json.dumps({"event": "media", "sequenceNumber": "2", "media": {"payload": "AA=="}}), started=True
)
def test_twilio_shaped_messages(message: str | bytes, started: bool) -> None:
    decode_carrier(started_codec() if started else TwilioCodec(), message)


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(wire(twilio_shaped) | garbage, max_size=30))
def test_twilio_sequences_before_and_after_start(messages: list[str | bytes]) -> None:
    codec = TwilioCodec()
    for message in [*messages[: len(messages) // 2], START, *messages[len(messages) // 2 :]]:
        decode_carrier(codec, message)


def outcome(codec: TwilioCodec, message: str | bytes) -> tuple[object, int]:
    try:
        event: object = codec.decode(message)
    except CarrierProtocolError:
        event = CarrierProtocolError
    return event, codec.sequence_gaps


@bounded
@given(message=twilio_shaped.map(json.dumps))
@example(message=json.dumps({"event": "media", "sequenceNumber": 1.5, "media": {"payload": "AA=="}}))
@example(message=json.dumps({"event": "media", "media": {"payload": "AA==", "track": 5, "timestamp": True}}))
def test_twilio_fast_media_path_agrees_with_the_general_path(message: str) -> None:
    """A started stream reads `media` text on a typed fast path when "media" is in its first 48
    characters; the same message after 48 spaces takes the general path. Events, errors and sequence
    gaps must be the same either way."""
    fast, general = started_codec(), started_codec()
    fast.decode(json.dumps({"event": "mark", "sequenceNumber": "5", "mark": {"name": "x"}}))
    general.decode(json.dumps({"event": "mark", "sequenceNumber": "5", "mark": {"name": "x"}}))
    assert outcome(fast, message) == outcome(general, " " * 48 + message)


@pytest.mark.parametrize("message", DEEP_JSON, ids=lambda m: m[:12])
def test_twilio_deeply_nested_json_is_a_protocol_error(message: str) -> None:
    with pytest.raises(CarrierProtocolError):
        TwilioCodec().decode(message)


@pytest.mark.parametrize("message", twilio_deep_media(SID), ids=range(5))
def test_twilio_deeply_nested_media_after_start_is_a_protocol_error(message: str) -> None:
    """After `start` a `media` message takes the fast path, which must fail the same way (issue #16)."""
    with pytest.raises(CarrierProtocolError):
        started_codec().decode(message)


@pytest.mark.parametrize("number", ["²", "1" * 5000])
@pytest.mark.parametrize("field", ["sequenceNumber", "sampleRate", "channels", "timestamp"])
def test_twilio_integer_strings_python_cannot_parse(field: str, number: str) -> None:
    """`str.isdigit()` is true for these, yet `int()` raises ValueError."""
    codec = TwilioCodec()
    start = {"streamSid": SID, "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw"}}
    message: dict[str, typing.Any] = {"event": "start", "start": start}
    if field == "sequenceNumber":
        message["sequenceNumber"] = number
    elif field == "timestamp":
        codec.decode(START)
        message = {"event": "media", "media": {"payload": "AA==", "timestamp": number}}
    else:
        start["mediaFormat"][field] = number
    decode_carrier(codec, json.dumps(message))


# -- every carrier, before and after start ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(DIALECTS)), data=st.data())
def test_every_carriers_codec_reads_hostile_streams_before_and_after_start(
    name: str, data: st.DataObject
) -> None:
    """Whatever comes, and whenever relative to its start, a codec gives a well-typed event, None,
    or a CarrierProtocolError: never another exception."""
    dialect = DIALECTS[name]
    messages = data.draw(st.lists(dialect.hostile(), max_size=12), label="messages")
    split = data.draw(st.integers(0, len(messages)), label="start after")
    codec = dialect.codec()
    for message in [*messages[:split], dialect.start("C1"), *messages[split:]]:
        decode_carrier(codec, message)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_every_carriers_codec_refuses_deep_nesting_after_start(name: str) -> None:
    dialect = DIALECTS[name]
    codec = dialect.codec()
    codec.decode(dialect.start("C1"))
    for message in dialect.deep("C1"):
        with pytest.raises(CarrierProtocolError):
            codec.decode(message)


# -- Twilio, outbound round trip ------------------------------------------------------------------------

commands = st.one_of(
    st.binary(min_size=1, max_size=400).map(PlayAudio),
    st.text(min_size=1, max_size=60).map(Mark),
    st.just(ClearPlayback()),
)


@bounded
@given(command=commands)
def test_twilio_encode_round_trips(command: PlayAudio | Mark | ClearPlayback) -> None:
    text = started_codec().encode(command)
    assert text is not None
    # Twilio's side, as the carrier emulator validates it (an implementation independent of ours).
    kind, value = parse_outbound(text, SID)
    reader = TwilioCodec()
    reader.stream_sid = SID  # read our own message back as if it came in on a started stream
    if isinstance(command, PlayAudio):
        assert (kind, value) == ("media", command.payload)
        assert reader.decode(text) == CallerAudio(command.payload)
    elif isinstance(command, Mark):
        assert (kind, value) == ("mark", command.name)
        assert reader.decode(text) == PlaybackMark(command.name)
    else:
        assert (kind, value) == ("clear", None)
        assert json.loads(text) == {"event": "clear", "streamSid": SID}


def test_twilio_hangup_is_not_a_message() -> None:
    assert started_codec().encode(Hangup("done")) is None


@given(command=commands)
@settings(max_examples=50, deadline=None)
def test_twilio_encode_before_start_is_a_protocol_error(command: PlayAudio | Mark | ClearPlayback) -> None:
    with pytest.raises(CarrierProtocolError):
        TwilioCodec().encode(command)


# -- Realtime, inbound ----------------------------------------------------------------------------------


@bounded
@given(message=garbage)
def test_realtime_garbage_is_a_protocol_error(message: str | bytes) -> None:
    decode_realtime(message)


@bounded
@given(message=wire(realtime_shaped))
@example(message=json.dumps({"type": "conversation.item.added", "item": "x"}))
@example(message=json.dumps({"type": "response.created", "response": [1]}))
@example(message=json.dumps({"type": "response.done", "response": {"output": 5}}))
@example(message=json.dumps({"type": "response.done", "response": "x"}))
@example(message=json.dumps({"type": "error", "error": "boom"}))
@example(message=json.dumps({"type": "conversation.item.input_audio_transcription.failed", "error": 1}))
@example(message=json.dumps({"type": "response.output_item.added", "item": 3}))
def test_realtime_shaped_messages_decode_or_fail_cleanly(message: str | bytes) -> None:
    decode_realtime(message)


@bounded
@given(message=wire(realtime_shaped))
@example(message=json.dumps({"type": "error", "error": {"code": ["x"]}}))
@example(message=json.dumps({"type": "response.done", "response": {"usage": "lots"}}))
@example(message=json.dumps({"type": "input_audio_buffer.committed", "previous_item_id": 7}))
def test_realtime_events_hold_their_declared_types(message: str | bytes) -> None:
    """Wrong-typed fields must not leak into events: `Call` hashes error codes and copies usage dicts."""
    event = decode_realtime(message)
    if event is not None:
        assert violations(event) == []


def realtime_outcome(message: str | bytes) -> object:
    try:
        return RealtimeCodec().decode(message)
    except RealtimeProtocolError:
        return RealtimeProtocolError


@bounded
@given(message=wire(realtime_shaped))
@example(message=b'{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AAA="}')
@example(message=b'{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"%%%"}')
@example(message=b'{"type":"response.audio.delta","response_id":1,"item_id":"i","delta":"AAA="}')
def test_realtime_fast_delta_path_agrees_with_the_general_path(message: str | bytes) -> None:
    """An audio delta is read on a typed fast path when "audio.delta" is in its first 64 characters,
    as text or as the socket's bytes; the same message after 64 spaces takes the general path. Events
    and errors must be the same either way."""
    padding = " " * 64
    padded = padding + message if isinstance(message, str) else padding.encode() + message
    assert realtime_outcome(message) == realtime_outcome(padded)


@pytest.mark.parametrize("message", DEEP_JSON, ids=lambda m: m[:12])
def test_realtime_deeply_nested_json_is_a_protocol_error(message: str) -> None:
    with pytest.raises(RealtimeProtocolError):
        RealtimeCodec().decode(message)


def test_realtime_audio_round_trip_sanity() -> None:
    audio = bytes(range(256)) * 4
    message = {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": ""}
    message["delta"] = base64.b64encode(audio).decode()
    event = RealtimeCodec().decode(json.dumps(message))
    assert isinstance(event, rt.AudioDelta) and event.audio == audio
