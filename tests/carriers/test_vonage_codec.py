"""VonageCodec without a socket: the first message, binary audio, events, and what goes back."""

from __future__ import annotations

import json

import pytest

from bridge.audio import L16_8K, L16_16K
from bridge.carrier.events import (
    CallerAudio,
    CallStarted,
    CarrierProtocolError,
    ClearPlayback,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.vonage.codec import VonageCodec, line_format
from bridge.carrier.vonage.ncco import connect_websocket, turn_away

CONNECTED = {
    "event": "websocket:connected",
    "content-type": "audio/l16;rate=16000",
    "call_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    "from": "447700900123",
    "to": "447700900000",
    "direction": "inbound",
    "stream_token": "123.abc.def",
}


def started_codec(**overrides: object) -> tuple[VonageCodec, CallStarted]:
    codec = VonageCodec()
    event = codec.decode(json.dumps({**CONNECTED, **overrides}))
    assert isinstance(event, CallStarted)
    return codec, event


def test_connected_starts_the_call_from_our_headers() -> None:
    _, started = started_codec()
    assert started.call_sid == started.stream_sid == CONNECTED["call_id"]
    assert started.line == L16_16K
    assert started.custom_parameters == {
        "from": "447700900123",
        "to": "447700900000",
        "direction": "inbound",
        "stream_token": "123.abc.def",
    }


def test_narrowband_content_type_gives_an_8k_line() -> None:
    _, started = started_codec(**{"content-type": "audio/l16;rate=8000"})
    assert started.line == L16_8K
    assert line_format("Audio/L16; rate=16000") == L16_16K


@pytest.mark.parametrize(
    "content_type", ["audio/l16;rate=24000", "audio/pcmu;rate=8000", "audio/l16", "audio/l16;rate=abc", ""]
)
def test_other_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(CarrierProtocolError):
        VonageCodec().decode(json.dumps({**CONNECTED, "content-type": content_type}))


def test_a_connected_without_our_call_id_is_not_our_ncco() -> None:
    message = {k: v for k, v in CONNECTED.items() if k != "call_id"}
    with pytest.raises(CarrierProtocolError, match="call_id"):
        VonageCodec().decode(json.dumps(message))


def test_nested_header_values_are_not_taken_as_parameters() -> None:
    _, started = started_codec(address={"city": "x"}, age=40)
    assert "address" not in started.custom_parameters
    assert started.custom_parameters["age"] == "40"


def test_a_second_connected_is_refused() -> None:
    codec, _ = started_codec()
    with pytest.raises(CarrierProtocolError, match="duplicate"):
        codec.decode(json.dumps(CONNECTED))


def test_binary_frames_are_caller_audio_in_the_line_format() -> None:
    codec, _ = started_codec()
    frame = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms at 16 kHz
    assert codec.decode(frame) == CallerAudio(payload=frame)


@pytest.mark.parametrize(
    ("frame", "problem"),
    [(b"", "empty"), (b"\x01\x02\x03", "partial"), (bytes(32_002), "larger")],
)
def test_bad_binary_frames_are_refused(frame: bytes, problem: str) -> None:
    codec, _ = started_codec()
    with pytest.raises(CarrierProtocolError, match=problem):
        codec.decode(frame)


def test_nothing_but_connected_is_accepted_before_connected() -> None:
    codec = VonageCodec()
    with pytest.raises(CarrierProtocolError, match="before"):
        codec.decode(bytes(640))
    with pytest.raises(CarrierProtocolError, match="before"):
        codec.decode(json.dumps({"event": "websocket:dtmf", "digit": "5"}))
    with pytest.raises(CarrierProtocolError, match="before"):
        codec.encode(Mark("a1"))


def test_dtmf_notify_and_cleared() -> None:
    codec, _ = started_codec()
    assert codec.decode(json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": 260})) == Dtmf("5")
    assert codec.decode(json.dumps({"event": "websocket:dtmf", "dtmf": {"digit": "#"}})) == Dtmf("#")
    assert codec.decode(json.dumps({"event": "websocket:dtmf", "digit": 7})) == Dtmf("7")
    notify = {"event": "websocket:notify", "payload": {"name": "a12"}}
    assert codec.decode(json.dumps(notify)) == PlaybackMark("a12")
    assert codec.decode(json.dumps({"event": "websocket:cleared"})) is None
    assert codec.decode(json.dumps({"event": "websocket:something_new", "x": 1})) is None


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        '{"no": "event"}',
        '{"event": "websocket:dtmf", "digit": "x"}',
        '{"event": "websocket:dtmf"}',
        '{"event": "websocket:notify"}',
        '{"event": "websocket:notify", "payload": {"name": ""}}',
        '{"event": "websocket:notify", "payload": "a1"}',
    ],
)
def test_bad_text_messages_are_protocol_errors(message: str) -> None:
    codec, _ = started_codec()
    with pytest.raises(CarrierProtocolError):
        codec.decode(message)


def test_commands_become_vonage_messages() -> None:
    codec, _ = started_codec()
    frame = bytes(range(200)) * 3 + bytes(40)
    assert codec.encode(PlayAudio(frame)) == frame
    assert json.loads(str(codec.encode(Mark("a3")))) == {"action": "notify", "payload": {"name": "a3"}}
    assert json.loads(str(codec.encode(ClearPlayback()))) == {"action": "clear"}
    assert codec.encode(Hangup("done")) is None


def test_the_last_piece_of_an_item_is_padded_to_a_whole_frame_with_silence() -> None:
    codec, _ = started_codec()
    piece = b"\x11\x22" * 50
    sent = codec.encode(PlayAudio(piece))
    assert isinstance(sent, bytes) and len(sent) == 640
    assert sent[:100] == piece and sent[100:] == bytes(540)
    codec8, _ = started_codec(**{"content-type": "audio/l16;rate=8000"})
    assert len(codec8.encode(PlayAudio(piece)) or b"") == 320


def test_audio_that_cannot_be_one_frame_is_refused() -> None:
    codec, _ = started_codec()
    with pytest.raises(ValueError, match="exceeds"):
        codec.encode(PlayAudio(bytes(642)))
    with pytest.raises(ValueError, match="partial"):
        codec.encode(PlayAudio(bytes(3)))


def test_an_apology_in_play_chunk_pieces_becomes_whole_frames() -> None:
    codec, started = started_codec()
    apology = bytes(range(256)) * 25  # 6400 bytes, 200 ms; cut like WebSocketLeg.apologise does
    piece = codec.play_chunk_ms * started.line.bytes_per_ms
    frames = [codec.encode(PlayAudio(apology[i : i + piece])) for i in range(0, len(apology), piece)]
    assert all(isinstance(f, bytes) and len(f) == 640 for f in frames)
    assert b"".join(f for f in frames if isinstance(f, bytes)) == apology


# ---- the NCCO --------------------------------------------------------------------------------------


def test_the_ncco_connects_a_wideband_websocket_with_our_headers() -> None:
    ncco = connect_websocket("wss://bridge.example/vonage/media", {"call_id": "u1", "from": "447700900123"})
    (action,) = ncco
    (endpoint,) = action["endpoint"]
    assert action["action"] == "connect"
    assert endpoint == {
        "type": "websocket",
        "uri": "wss://bridge.example/vonage/media",
        "content-type": "audio/l16;rate=16000",
        "headers": {"call_id": "u1", "from": "447700900123"},
    }
    assert len(json.dumps(endpoint["headers"])) <= 512  # Vonage's limit on the headers object


def test_busy_talks_and_connects_the_fallback_number() -> None:
    assert turn_away("Busy.") == [{"action": "talk", "text": "Busy."}]
    talk, connect = turn_away("Busy.", "+14155550100", "447700900000")
    assert talk["action"] == "talk"
    assert connect == {
        "action": "connect",
        "endpoint": [{"type": "phone", "number": "14155550100"}],
        "from": "447700900000",
    }
