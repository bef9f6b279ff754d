"""PlivoCodec (sans-IO), its extraHeaders spelling, and the Plivo XML documents."""

from __future__ import annotations

import base64
import json
from typing import Any
from xml.etree import ElementTree

import pytest

from bridge.audio import L16_8K, L16_16K, L16_24K, PCMA_8K, PCMU_8K
from bridge.carrier.events import (
    CallEnded,
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
from bridge.carrier.plivo.codec import PlivoCodec, content_type, decode_extra_headers, encode_extra_headers
from bridge.carrier.plivo.plivo_xml import dial_xml, hangup_xml, stream_xml
from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER

STREAM = "87654321-4321-4321-4321-cba987654321"
CALL = "12345678-1234-1234-1234-123456789abc"


def start(encoding: str = "audio/x-mulaw", rate: Any = 8000, extra: Any = None) -> str:
    message: dict[str, Any] = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL,
            "streamId": STREAM,
            "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": encoding, "sampleRate": rate},
        },
    }
    if extra is not None:
        message["extra_headers"] = extra
    return json.dumps(message)


def media(payload: bytes, chunk: int = 1, track: str = "inbound") -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": chunk + 1,
            "streamId": STREAM,
            "media": {
                "track": track,
                "timestamp": "1705312200000",
                "chunk": chunk,
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started(**kwargs: Any) -> tuple[PlivoCodec, CallStarted]:
    codec = PlivoCodec()
    event = codec.decode(start(**kwargs))
    assert isinstance(event, CallStarted)
    return codec, event


# ---- decoding -----------------------------------------------------------------------------------


def test_start_as_plivo_documents_it() -> None:
    headers = encode_extra_headers(
        {
            "from": "+14155550123",
            "to": "18005551212",
            "direction": "inbound",
            STREAM_TOKEN_PARAMETER: "1.a-b.c_d",
        }
    )
    codec, event = started(extra=headers.replace(",", ";"))  # the docs show ';' in start
    assert event.stream_sid == STREAM and event.call_sid == CALL
    assert event.account_sid == "MAXXXXXXXXXXXXXXXXXX"
    assert event.line == PCMU_8K
    assert event.custom_parameters == {
        "from": "+14155550123",
        "to": "18005551212",
        "direction": "inbound",
        STREAM_TOKEN_PARAMETER: "1.a-b.c_d",
    }
    assert codec.stream_id == STREAM


@pytest.mark.parametrize(
    ("encoding", "rate", "line"),
    [("audio/x-mulaw", 8000, PCMU_8K), ("audio/x-l16", 8000, L16_8K), ("audio/x-l16", "16000", L16_16K)],
)
def test_each_media_format_plivo_offers_maps_to_a_line_format(encoding: str, rate: Any, line: Any) -> None:
    codec, event = started(encoding=encoding, rate=rate)
    assert event.line == line
    frame = line.silence(line.frame_bytes(20))
    assert codec.decode(media(frame)) == CallerAudio(payload=frame, timestamp_ms=1705312200000)
    sent = json.loads(codec.encode(PlayAudio(frame)) or "")
    assert sent == {
        "event": "playAudio",
        "streamId": STREAM,
        "media": {
            "contentType": encoding,
            "sampleRate": int(rate),
            "payload": base64.b64encode(frame).decode(),
        },
    }


@pytest.mark.parametrize(
    ("encoding", "rate"), [("audio/x-alaw", 8000), ("audio/x-l16", 24000), ("audio/x-mulaw", 16000)]
)
def test_a_format_plivo_does_not_offer_is_refused(encoding: str, rate: int) -> None:
    with pytest.raises(CarrierProtocolError, match="unsupported media format"):
        PlivoCodec().decode(start(encoding=encoding, rate=rate))


def test_content_type_for_the_stream_element() -> None:
    assert content_type(PCMU_8K) == "audio/x-mulaw;rate=8000"
    assert content_type(L16_16K) == "audio/x-l16;rate=16000"
    for line in (PCMA_8K, L16_24K):
        with pytest.raises(ValueError):
            content_type(line)


def test_media_dtmf_played_cleared_and_stop() -> None:
    codec, _ = started()
    assert codec.decode(media(b"\xff" * 160, chunk=1)) == CallerAudio(b"\xff" * 160, 1705312200000)
    assert codec.decode(media(b"\x00" * 160, chunk=2, track="outbound")) == CallerAudio(b"")
    dtmf = {
        "event": "dtmf",
        "sequenceNumber": 5,
        "streamId": STREAM,
        "dtmf": {"track": "inbound", "digit": "7", "timestamp": "1"},
    }
    assert codec.decode(json.dumps(dtmf)) == Dtmf("7")
    played = {"event": "playedStream", "sequenceNumber": 6, "streamId": STREAM, "name": "a12"}
    assert codec.decode(json.dumps(played)) == PlaybackMark("a12")
    assert (
        codec.decode(json.dumps({"sequenceNumber": 0, "event": "clearedAudio", "streamId": STREAM})) is None
    )
    assert codec.decode(json.dumps({"event": "somethingNew", "streamId": STREAM})) is None
    assert codec.decode(json.dumps({"event": "stop", "streamId": STREAM, "reason": "hangup"})) == CallEnded(
        "caller_hangup"
    )


def test_gaps_in_the_media_chunk_counter_are_counted() -> None:
    codec, _ = started()
    for chunk in (1, 2, 4, 5, 9):
        codec.decode(media(b"\xff" * 160, chunk=chunk))
    assert codec.sequence_gaps == 2


def test_commands_become_plivo_messages() -> None:
    codec, _ = started()
    assert json.loads(codec.encode(Mark("a3")) or "") == {
        "event": "checkpoint",
        "streamId": STREAM,
        "name": "a3",
    }
    assert json.loads(codec.encode(ClearPlayback()) or "") == {"event": "clearAudio", "streamId": STREAM}
    assert codec.encode(Hangup("bye")) is None


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"streamId": "x"}', "no 'event'"),
        (json.dumps({"event": "start"}), "'start' missing"),
        (json.dumps({"event": "start", "start": {"streamId": STREAM}}), "'callId' missing"),
        (json.dumps({"event": "start", "start": {"streamId": "", "callId": CALL}}), "empty"),
        (
            json.dumps({"event": "start", "start": {"streamId": STREAM, "callId": CALL, "mediaFormat": 3}}),
            "mediaFormat",
        ),
        (start(extra="streamtoken=xyz"), "not hex"),
        (start(extra="streamtoken=ff"), "UTF-8"),
        (start(extra='{"streamtoken": '), "not valid JSON"),
        (start(extra=5), "neither text nor an object"),
    ],
)
def test_bad_start_is_refused_with_a_clear_message(message: str, error: str) -> None:
    with pytest.raises(CarrierProtocolError, match=error):
        PlivoCodec().decode(message)


def test_bad_messages_after_start() -> None:
    codec, _ = started()
    secret = "c2VjcmV0IGNhbGxlciBhdWRpbw=="
    bad = [
        (b"\x00\x01", "binary frame"),
        (start(), "duplicate start"),
        (json.dumps({"event": "media", "media": {"payload": secret + "!"}}), "not valid base64"),
        (json.dumps({"event": "media", "media": "x"}), "'media' missing"),
        (json.dumps({"event": "media", "media": {"payload": "A" * 50_000}}), "larger than any phone frame"),
        (json.dumps({"event": "dtmf", "dtmf": {"digit": "x"}}), "digit is not"),
        (json.dumps({"event": "playedStream", "streamId": STREAM}), "'name' missing"),
    ]
    for message, error in bad:
        with pytest.raises(CarrierProtocolError, match=error) as caught:
            codec.decode(message)
        assert secret not in str(caught.value)  # never the payload


def test_l16_payload_must_be_whole_samples() -> None:
    codec, _ = started(encoding="audio/x-l16", rate=16000)
    with pytest.raises(CarrierProtocolError, match="whole samples"):
        codec.decode(media(b"\x00" * 641))


def test_nothing_before_start() -> None:
    codec = PlivoCodec()
    with pytest.raises(CarrierProtocolError, match="before start"):
        codec.decode(media(b"\xff" * 160))
    with pytest.raises(CarrierProtocolError, match="before the stream started"):
        codec.encode(Mark("a1"))


# ---- extraHeaders -------------------------------------------------------------------------------


def test_extra_headers_stay_in_plivos_alphabet_and_round_trip_in_every_spelling() -> None:
    params = {
        "from": "sip:alice@example.com",
        "to": "+18005551212",
        "direction": "outbound",
        STREAM_TOKEN_PARAMETER: "9.x_y-z.q",
    }
    text = encode_extra_headers(params)
    assert all(c.isalnum() or c in "=," for c in text) and len(text) <= 512
    as_json = json.dumps(dict(pair.split("=") for pair in text.split(",")))
    for spelling in (text, text.replace(",", ";"), as_json):
        assert decode_extra_headers(spelling) == params
    assert decode_extra_headers("userId=12345;other=1") == {}  # names we never set are ignored
    assert decode_extra_headers(None) == {} and decode_extra_headers("") == {}
    with pytest.raises(ValueError, match="512"):
        encode_extra_headers({"from": "x" * 300})


# ---- XML ----------------------------------------------------------------------------------------


def test_stream_document() -> None:
    xml = stream_xml(
        "wss://h/plivo/media", "streamtoken=6162", "https://h/plivo/after-stream", "audio/x-mulaw;rate=8000"
    )
    root = ElementTree.fromstring(xml.split("\n", 1)[1])
    stream, redirect = list(root)
    assert stream.tag == "Stream" and stream.text == "wss://h/plivo/media"
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "audioTrack": "inbound",
        "contentType": "audio/x-mulaw;rate=8000",
        "extraHeaders": "streamtoken=6162",
    }
    assert redirect.tag == "Redirect" and redirect.text == "https://h/plivo/after-stream"


def test_dial_and_hangup_documents_escape_text() -> None:
    root = ElementTree.fromstring(dial_xml("+15550001111", "Busy <now> & later").split("\n", 1)[1])
    assert [e.tag for e in root] == ["Speak", "Dial"]
    assert root[0].text == "Busy <now> & later" and root[1][0].text == "15550001111"
    assert [e.tag for e in ElementTree.fromstring(hangup_xml().split("\n", 1)[1])] == ["Hangup"]
