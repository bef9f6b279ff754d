"""The Twilio codec: exact message shapes both ways (docs/protocols.md §T3, §T4) and bad input."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierProtocolError,
    ClearPlayback,
    Connected,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.twilio.codec import TwilioCodec

SID = "MZ" + "a" * 32


def start_message(**start_overrides: object) -> str:
    start = {
        "accountSid": "AC" + "b" * 32,
        "streamSid": SID,
        "callSid": "CA" + "c" * 32,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"from": "+14155550123"},
    } | start_overrides
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": SID})


def media_message(payload: bytes, seq: int = 2, ts: int = 0) -> str:
    media = {
        "track": "inbound",
        "chunk": str(seq - 1),
        "timestamp": str(ts),
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": SID})


@pytest.fixture
def codec() -> TwilioCodec:
    c = TwilioCodec()
    c.decode(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    c.decode(start_message())
    return c


def test_connected_and_start() -> None:
    c = TwilioCodec()
    assert c.decode('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected("Call", "1.0.0")
    started = c.decode(start_message())
    assert isinstance(started, CallStarted)
    assert started.stream_sid == SID and started.call_sid.startswith("CA")
    assert started.custom_parameters == {"from": "+14155550123"}


def test_media_payload(codec: TwilioCodec) -> None:
    """The frame's audio; Twilio's `timestamp` is not carried (the bridge's own arrival clock is)."""
    frame = bytes(range(160))
    assert codec.decode(media_message(frame, ts=40)) == CallerAudio(frame)


def test_mark_dtmf_stop(codec: TwilioCodec) -> None:
    assert codec.decode('{"event":"mark","sequenceNumber":"3","mark":{"name":"a1"}}') == PlaybackMark("a1")
    dtmf = '{"event":"dtmf","sequenceNumber":"4","dtmf":{"track":"inbound_track","digit":"#"}}'
    assert codec.decode(dtmf) == Dtmf("#")
    assert codec.decode('{"event":"stop","sequenceNumber":"5","stop":{}}') == CallEnded("caller_hangup")


def test_unknown_event_is_ignored(codec: TwilioCodec) -> None:
    assert codec.decode('{"event":"something_new","sequenceNumber":"3"}') is None


def test_sequence_gaps_counted(codec: TwilioCodec) -> None:
    codec.decode(media_message(b"\xff" * 160, seq=2))
    codec.decode(media_message(b"\xff" * 160, seq=5))
    assert codec.sequence_gaps == 1


def test_mark_echoes_count_in_the_sequence_and_odd_ones_read_as_before(codec: TwilioCodec) -> None:
    codec.decode(media_message(b"\xff" * 160, seq=2))
    assert codec.decode('{"event":"mark","sequenceNumber":"3","mark":{"name":"a1"}}') == PlaybackMark("a1")
    assert codec.decode('{"event":"mark","sequenceNumber":5,"mark":{"name":"a2"}}') == PlaybackMark("a2")
    assert codec.sequence_gaps == 1  # 4 is missing
    # Shapes the typed reading refuses go the general way: same events, same errors.
    odd = '{"event":"mark","sequenceNumber":6.5,"mark":{"name":"a3","x":[1]}}'
    assert codec.decode(odd) == PlaybackMark("a3")
    with pytest.raises(CarrierProtocolError, match="'name' missing or not a str"):
        codec.decode('{"event":"mark","mark":{"name":7}}')
    with pytest.raises(CarrierProtocolError, match="'mark' missing"):
        codec.decode('{"event":"mark","mark":"a5"}')


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("not json", "not JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"no":"event"}', "no 'event'"),
        ('{"event":"media","media":{"payload":"!!!"}}', "not valid base64"),
        ('{"event":"media","media":{}}', "'payload' missing"),
        ('{"event":"media","media":"x"}', "'media' missing"),
        ('{"event":"mark","mark":{}}', "'name' missing"),
        ('{"event":"dtmf","dtmf":{"digit":"x"}}', "digit"),
        ('{"event":"media","media":{"payload":"' + "A" * 40_000 + '"}}', "larger than"),
    ],
)
def test_bad_messages_raise_clear_errors(codec: TwilioCodec, message: str, why: str) -> None:
    with pytest.raises(CarrierProtocolError, match=why):
        codec.decode(message)


def test_media_before_start_is_an_error() -> None:
    with pytest.raises(CarrierProtocolError, match="before start"):
        TwilioCodec().decode(media_message(b"\xff" * 160))


def test_duplicate_start_is_an_error(codec: TwilioCodec) -> None:
    with pytest.raises(CarrierProtocolError, match="duplicate start"):
        codec.decode(start_message())


def test_start_with_another_format_is_refused() -> None:
    with pytest.raises(CarrierProtocolError, match="unsupported media format"):
        TwilioCodec().decode(start_message(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000}))


def test_outbound_shapes(codec: TwilioCodec) -> None:
    media = json.loads(codec.encode(PlayAudio(b"\x01\x02")))
    assert media == {"event": "media", "streamSid": SID, "media": {"payload": "AQI="}}
    assert json.loads(codec.encode(Mark("a7"))) == {"event": "mark", "streamSid": SID, "mark": {"name": "a7"}}
    assert json.loads(codec.encode(ClearPlayback())) == {"event": "clear", "streamSid": SID}
    assert codec.encode(Hangup("done")) is None


def test_cannot_send_before_start() -> None:
    with pytest.raises(CarrierProtocolError):
        TwilioCodec().encode(Mark("x"))


def test_message_rate_allows_a_carrier_and_stops_a_flood() -> None:
    from bridge.message_rate import MAX_MESSAGES_PER_S, MessageRate

    rate = MessageRate()
    # Two seconds of a busy carrier: 50 media + 10 marks a second.
    assert not any(rate.exceeded(t * 1000 / 60) for t in range(120))
    flood = MessageRate()
    results = [flood.exceeded(5000 + i * 0.1) for i in range(MAX_MESSAGES_PER_S + 1)]
    assert results[-1] and not any(results[:-1])
