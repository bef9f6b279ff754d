"""TelnyxCodec without a socket: every message kind, bad input and reordering."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.audio import L16_16K, PCMA_8K, PCMU_8K
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
from bridge.carrier.telnyx.codec import TelnyxCodec
from bridge.websocket_leg import WebSocketLeg

CCID = "v3:abc-call-control-id"


def start(encoding: str = "PCMU", rate: Any = 8000, **start_fields: Any) -> str:
    body = {
        "call_control_id": CCID,
        "from": "+14155550123",
        "to": "+18005551212",
        "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
        **start_fields,
    }
    return json.dumps({"event": "start", "sequence_number": "1", "stream_id": "S1", "start": body})


def media(chunk: int, payload: bytes, track: str = "inbound") -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(chunk + 1),
            "stream_id": "S1",
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started(**kwargs: Any) -> tuple[TelnyxCodec, CallStarted]:
    codec = TelnyxCodec()
    event = codec.decode(start(**kwargs))
    assert isinstance(event, CallStarted)
    return codec, event


def test_connected_and_start() -> None:
    codec = TelnyxCodec()
    assert codec.decode('{"event": "connected", "version": "1.0.0"}') == Connected("telnyx", "1.0.0")
    event = codec.decode(
        start(custom_parameters={"stream_token": "t", "call_sid": CCID, "direction": "inbound"})
    )
    assert isinstance(event, CallStarted)
    assert event.stream_sid == "S1" and event.call_sid == CCID and event.line == PCMU_8K
    assert event.custom_parameters["from"] == "+14155550123"
    assert event.custom_parameters["stream_token"] == "t"
    assert event.custom_parameters["call_control_id"] == CCID


def test_start_takes_the_webhook_call_sid_when_given_and_parameters_as_a_list() -> None:
    _, event = started(custom_parameters=[{"name": "call_sid", "value": "CA1"}, {"name": "x", "value": "y"}])
    assert event.call_sid == "CA1" and event.custom_parameters["x"] == "y"
    assert event.custom_parameters["call_control_id"] == CCID


@pytest.mark.parametrize(
    ("encoding", "rate", "line"),
    [("PCMU", 8000, PCMU_8K), ("PCMA", "8000", PCMA_8K), ("L16", 16000, L16_16K)],
)
def test_start_accepts_the_formats_the_bridge_can_play(encoding: str, rate: Any, line: object) -> None:
    _, event = started(encoding=encoding, rate=rate)
    assert event.line == line


@pytest.mark.parametrize(
    ("encoding", "rate"), [("G722", 16000), ("OPUS", 48000), ("PCMU", 16000), ("L16", 8000)]
)
def test_start_refuses_formats_it_cannot_play(encoding: str, rate: int) -> None:
    with pytest.raises(CarrierProtocolError, match=f"unsupported media format {encoding} at {rate} Hz"):
        TelnyxCodec().decode(start(encoding=encoding, rate=rate))


def test_media_dtmf_mark_stop() -> None:
    codec, _ = started()
    assert codec.decode(media(1, b"\x01" * 160)) == CallerAudio(b"\x01" * 160, timestamp_ms=20)
    assert codec.decode(media(2, b"\x02" * 160, track="outbound")) is None
    assert codec.decode('{"event": "dtmf", "stream_id": "S1", "dtmf": {"digit": "7"}}') == Dtmf("7")
    assert codec.decode('{"event": "mark", "stream_id": "S1", "mark": {"name": "m1"}}') == PlaybackMark("m1")
    assert codec.decode('{"event": "stop", "stream_id": "S1", "stop": {}}') == CallEnded("caller_hangup")
    assert codec.decode('{"event": "something_new"}') is None


def test_l16_is_big_endian_on_the_wire_and_little_endian_inside() -> None:
    codec, _ = started(encoding="L16", rate=16000)
    event = codec.decode(media(1, b"\x12\x34" * 320))
    assert isinstance(event, CallerAudio) and event.payload == b"\x34\x12" * 320
    sent = json.loads(codec.encode(PlayAudio(b"\x34\x12" * 320)) or "")
    assert base64.b64decode(sent["media"]["payload"]) == b"\x12\x34" * 320


def test_error_frames_are_counted_not_raised() -> None:
    codec, _ = started()
    frame = {
        "event": "error",
        "stream_id": "S1",
        "payload": {"code": 100005, "title": "rate_limit_reached", "detail": "Too many requests"},
    }
    assert codec.decode(json.dumps(frame)) is None
    assert codec.decode(json.dumps(frame)) is None
    assert codec.carrier_errors == 2 and codec.last_error == "100005 rate_limit_reached"


def test_frames_out_of_order_are_put_back_in_order() -> None:
    codec, _ = started()
    frames = {n: bytes([n]) * 160 for n in range(1, 8)}
    received = bytearray()
    for n in (1, 3, 2, 4, 6, 5, 7):  # two pairs swapped
        event = codec.decode(media(n, frames[n]))
        if event is not None:
            assert isinstance(event, CallerAudio)
            received += event.payload
    assert bytes(received) == b"".join(frames[n] for n in range(1, 8))
    assert codec.sequence_gaps == 0 and codec.late_frames == 0 and codec.reordered_frames == 2


def test_a_lost_frame_is_skipped_once_the_window_is_full_and_late_ones_dropped() -> None:
    codec, _ = started()
    out = [codec.decode(media(n, bytes([n]) * 160)) for n in (1, 3, 4)]
    assert out[0] is not None and out[1] is None and out[2] is None  # 3 and 4 wait for 2
    released = codec.decode(media(5, b"\x05" * 160))  # the window (3) is full: 2 is given up
    assert isinstance(released, CallerAudio)
    assert released.payload == b"\x03" * 160 + b"\x04" * 160 + b"\x05" * 160
    assert codec.sequence_gaps == 1
    assert codec.decode(media(2, b"\x02" * 160)) is None  # too late: its place was skipped
    assert codec.decode(media(5, b"\x05" * 160)) is None  # a duplicate
    assert codec.late_frames == 2
    # The call's closing log line carries these counts.
    stats = WebSocketLeg(None, codec, None).stats()  # type: ignore[arg-type]
    assert (stats["sequence_gaps"], stats["late_frames"]) == (1, 2)
    assert stats["reordered_frames"] == codec.reordered_frames > 0 and stats["carrier_errors"] == 0


def test_encode_media_mark_clear_hangup() -> None:
    codec, _ = started()
    assert json.loads(codec.encode(PlayAudio(b"\xff" * 160)) or "") == {
        "event": "media",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
    }
    assert json.loads(codec.encode(Mark("m7")) or "") == {"event": "mark", "mark": {"name": "m7"}}
    assert json.loads(codec.encode(ClearPlayback()) or "") == {"event": "clear"}
    assert codec.encode(Hangup("bye")) is None


SECRET_PAYLOAD = "c2VjcmV0LWNhbGxlci1hdWRpbw=="


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x00\x01", "binary frame"),
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"no": "event"}', "no 'event'"),
        ('{"event": "start", "stream_id": "S1"}', "'start' missing"),
        ('{"event": "start", "start": {"call_control_id": "x"}}', "'stream_id' missing"),
        ('{"event": "start", "stream_id": "S", "start": {}}', "'call_control_id' missing"),
        (
            '{"event": "start", "stream_id": "S", "start": {"call_control_id": "x", "custom_parameters": 5}}',
            "custom_parameters",
        ),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "digit"),
        ('{"event": "mark", "mark": {}}', "'name' missing"),
        (f'{{"event": "media", "media": {{"payload": "{SECRET_PAYLOAD}"}}}}', "before start"),
    ],
)
def test_bad_input_is_a_clear_error_without_the_payload(message: str | bytes, reason: str) -> None:
    with pytest.raises(CarrierProtocolError, match=reason) as error:
        TelnyxCodec().decode(message)
    assert SECRET_PAYLOAD not in str(error.value)


@pytest.mark.parametrize(
    ("media_body", "reason"),
    [
        ({"payload": "!!!not base64"}, "not valid base64"),
        ({"payload": 5}, "'payload' missing"),
        ({"payload": "A" * 30_000}, "larger than any phone frame"),
    ],
)
def test_bad_media_after_start(media_body: dict[str, Any], reason: str) -> None:
    codec, _ = started()
    with pytest.raises(CarrierProtocolError, match=reason) as error:
        codec.decode(json.dumps({"event": "media", "media": media_body}))
    assert "AAAA" not in str(error.value)


def test_second_start_and_send_before_start_are_refused() -> None:
    codec, _ = started()
    with pytest.raises(CarrierProtocolError, match="duplicate start"):
        codec.decode(start())
    with pytest.raises(CarrierProtocolError, match="before the stream started"):
        TelnyxCodec().encode(Mark("m"))


def test_odd_l16_payload_is_refused() -> None:
    codec, _ = started(encoding="L16", rate=16000)
    with pytest.raises(CarrierProtocolError, match="odd number of bytes"):
        codec.decode(media(1, b"\x00" * 3))
