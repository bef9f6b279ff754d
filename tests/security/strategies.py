"""Hypothesis strategies for hostile and malformed protocol messages, shared by the property tests."""

from __future__ import annotations

import base64
import json
import string
from typing import Any

from hypothesis import strategies as st

# Numbers as strings that `str.isdigit` accepts but `int` may not: superscripts, other scripts, too long.
tricky_digits = st.one_of(
    st.sampled_from(["²", "¹²³", "٣", "߁", "0", "-1", "+1", " 1", "1.0", "1e3", ""]),
    st.integers(4301, 5000).map(lambda n: "1" * n),  # beyond int()'s default digit limit
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    tricky_digits,
)

json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

# Cheap wrong-typed stand-ins for a field, where a whole random JSON tree is not needed.
wrong_types = st.sampled_from([None, True, 0, -1, 1.5, "", "x", "²", [], [1], {}, {"a": 1}])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


odd_base64 = st.one_of(
    st.binary(max_size=400).map(b64),
    st.binary(min_size=1, max_size=400).map(lambda b: b64(b)[:-1]),  # truncated padding
    st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \n\t.", max_size=300),
    st.text(max_size=50),
    st.just("=" * 8),
    st.just("é" * 4),
    st.integers(min_value=20_000, max_value=30_000).map(lambda n: "A" * n),  # far beyond one frame
)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right kind of value most of the time, a wrong one otherwise."""
    return st.one_of(values, values, wrong_types, json_values)


def optional_dict(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


sequence_numbers = st.one_of(st.integers(0, 10**6).map(str), tricky_digits, json_values)

twilio_shaped = st.builds(
    lambda event, body, extra: {"event": event, **extra, **body},
    st.one_of(
        st.sampled_from(["connected", "start", "media", "mark", "stop", "dtmf", "clear"]),
        st.text(max_size=10),
        json_values,
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "start": maybe(
                optional_dict(
                    streamSid=st.text(max_size=34),
                    callSid=st.text(max_size=34),
                    accountSid=st.text(max_size=34),
                    customParameters=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
                    mediaFormat=optional_dict(
                        encoding=st.sampled_from(["audio/x-mulaw", "audio/x-alaw", "audio/l16"]),
                        sampleRate=st.one_of(st.just(8000), st.just("8000"), tricky_digits),
                        channels=st.one_of(st.just(1), tricky_digits),
                    ),
                )
            ),
            "media": maybe(
                optional_dict(
                    track=st.sampled_from(["inbound", "outbound", ""]),
                    payload=odd_base64,
                    timestamp=sequence_numbers,
                    chunk=sequence_numbers,
                )
            ),
            "mark": maybe(optional_dict(name=st.text(max_size=20))),
            "dtmf": maybe(optional_dict(digit=st.text(max_size=3), track=st.just("inbound_track"))),
            "stop": maybe(optional_dict(callSid=st.text(max_size=34))),
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "sequenceNumber": sequence_numbers,
            "streamSid": maybe(st.text(max_size=34)),
            "protocol": json_values,
            "version": json_values,
        },
    ),
)

REALTIME_TYPES = [
    "response.output_audio.delta",
    "response.audio.delta",
    "response.output_audio.done",
    "response.audio.done",
    "response.output_audio_transcript.delta",
    "response.audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.audio_transcript.done",
    "response.output_text.done",
    "response.text.done",
    "conversation.item.added",
    "conversation.item.created",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "response.created",
    "response.output_item.added",
    "response.function_call_arguments.done",
    "response.done",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "conversation.item.truncated",
    "session.created",
    "session.updated",
    "transcription_session.updated",
    "error",
    "rate_limits.updated",
]

ids = st.sampled_from(["r1", "r2", "i1", "i2", ""]) | st.text(max_size=8)

realtime_shaped = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.one_of(st.sampled_from(REALTIME_TYPES), st.text(max_size=12)),
    optional_dict(
        delta=st.one_of(odd_base64, st.text(max_size=20)),
        response_id=ids,
        item_id=ids,
        previous_item_id=ids,
        content_index=st.integers(-2, 3),
        audio_start_ms=st.integers(-10, 10**6),
        audio_end_ms=st.integers(-10, 10**6),
        transcript=st.text(max_size=20),
        text=st.text(max_size=20),
        call_id=ids,
        name=st.text(max_size=10),
        arguments=st.text(max_size=20),
        item=optional_dict(
            id=ids, type=st.sampled_from(["message", "function_call"]), role=st.text(max_size=9)
        ),
        response=optional_dict(
            id=ids,
            status=st.sampled_from(["completed", "cancelled", "failed", "incomplete"]),
            status_details=optional_dict(reason=st.text(max_size=10)),
            usage=st.dictionaries(st.text(max_size=10), st.integers(0, 10**6), max_size=4),
            output=st.lists(
                st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), max_size=3
            ),
            metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            conversation_id=st.sampled_from(["auto", "none"]),
        ),
        error=optional_dict(
            type=st.text(max_size=10),
            code=st.sampled_from(["session_expired", "response_cancel_not_active", "x"]),
            message=st.text(max_size=20),
            event_id=ids,
        ),
        session=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    ),
)


def as_wire(message: Any) -> st.SearchStrategy[str | bytes]:
    text = json.dumps(message)
    return st.sampled_from([text, text.encode()])


def wire(structures: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """Messages as the socket delivers them: JSON text (or its UTF-8 bytes)."""
    return structures.flatmap(as_wire)


garbage = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.text(alphabet='{}[]":,0123456789 truefalsn', max_size=200),
    wire(json_values),
)

# Nesting no parser should recurse into: JSON arrays and objects deeper than Python's recursion limit.
DEEP_JSON = [
    "[" * 5000 + "]" * 5000,
    '{"event":' * 3000 + "1" + "}" * 3000,
    '{"event":"media","media":' + "[" * 5000 + "]" * 5000 + "}",
    '{"type":' + "[" * 5000 + "]" * 5000 + "}",
]

# The message nested about 1,000 deep, past Python's recursion limit; this goes past it also
# while hypothesis runs an example (it raises the limit, for every thread, by 2,000).
_NEST = "[" * 5000 + "]" * 5000
_PLACE = "nested value goes here"


def deeply_nested(message: dict[str, Any], *paths: tuple[str, ...]) -> list[str]:
    """`message` as JSON text once per path, with the value at that path (keys from the top, created
    if missing) nested 5,000 deep: a field a decoder reads by type, or one it skips."""
    texts = []
    for path in paths:
        copy = json.loads(json.dumps(message))
        where = copy
        for key in path[:-1]:
            where = where.setdefault(key, {})
        where[path[-1]] = _PLACE
        texts.append(json.dumps(copy).replace(json.dumps(_PLACE), _NEST))
    return texts


def twilio_deep_media(stream_sid: str) -> list[str]:
    media = {"event": "media", "streamSid": stream_sid, "media": {"track": "inbound", "payload": "AAAA"}}
    return deeply_nested(
        media, ("media", "track"), ("media", "timestamp"), ("sequenceNumber",), ("media", "chunk"), ("x",)
    )


# -- the other carriers' dialects: right field names, values right or wrong -------------------------


def event_shaped(
    events: list[str],
    body: dict[str, st.SearchStrategy[Any]],
    top: dict[str, st.SearchStrategy[Any]],
    *,
    key: str = "event",
) -> st.SearchStrategy[dict[str, Any]]:
    """A message of a JSON dialect: its event name (usually one it knows), then any of its fields."""
    return st.builds(
        lambda event, fields: {key: event, **fields},
        st.one_of(st.sampled_from(events), st.sampled_from(events), st.text(max_size=10), json_values),
        st.fixed_dictionaries({}, optional={name: maybe(value) for name, value in {**body, **top}.items()}),
    )


media_fields = optional_dict(
    track=st.sampled_from(["inbound", "inbound_track", "outbound", ""]),
    payload=odd_base64,
    timestamp=sequence_numbers,
    chunk=sequence_numbers,
)

telnyx_shaped = event_shaped(
    ["connected", "start", "media", "mark", "dtmf", "stop", "error"],
    {
        "start": optional_dict(
            call_control_id=st.text(max_size=20),
            call_sid=st.text(max_size=20),
            stream_id=st.text(max_size=20),
            media_format=optional_dict(
                encoding=st.sampled_from(["PCMU", "PCMA", "L16", "G722", "pcmu"]),
                sample_rate=st.one_of(st.sampled_from([8000, 16000, "8000"]), tricky_digits),
                channels=st.one_of(st.just(1), st.just(2), tricky_digits),
            ),
            custom_parameters=st.one_of(
                st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.none(), max_size=3),
                st.lists(optional_dict(name=st.text(max_size=8), value=st.text(max_size=8)), max_size=3),
            ),
            **{"from": st.text(max_size=16), "to": st.text(max_size=16)},
        ),
        "media": media_fields,
        "mark": optional_dict(name=st.text(max_size=20)),
        "dtmf": optional_dict(digit=st.text(max_size=3)),
        "payload": optional_dict(
            code=sequence_numbers, title=st.text(max_size=20), detail=st.text(max_size=20)
        ),
    },
    {"stream_id": st.text(max_size=20), "sequence_number": sequence_numbers, "version": json_values},
)

plivo_shaped = event_shaped(
    ["start", "media", "playedStream", "clearedAudio", "dtmf", "stop"],
    {
        "start": optional_dict(
            streamId=st.text(max_size=36),
            callId=st.text(max_size=36),
            accountId=st.text(max_size=20),
            mediaFormat=optional_dict(
                encoding=st.sampled_from(["audio/x-mulaw", "audio/x-l16", "audio/x-alaw"]),
                sampleRate=st.one_of(st.sampled_from([8000, 16000, "16000"]), tricky_digits),
            ),
        ),
        "media": media_fields,
        "dtmf": optional_dict(digit=st.text(max_size=3)),
    },
    {
        "name": st.text(max_size=20),
        "streamId": st.text(max_size=36),
        "sequenceNumber": sequence_numbers,
        # Their own dialect: name=hex pairs, or JSON text, or an object.
        "extra_headers": st.one_of(
            st.text(alphabet='XBridgeTokn=0123456789abcdefg,;{}" ', max_size=60),
            st.dictionaries(st.sampled_from(["X-PH-From", "X-PH-To", "other"]), st.text(max_size=10)),
        ),
    },
)

vonage_shaped = st.one_of(
    event_shaped(
        ["websocket:connected", "websocket:dtmf", "websocket:notify", "websocket:cleared"],
        {
            "dtmf": optional_dict(digit=st.text(max_size=3)),
            "payload": optional_dict(name=st.text(max_size=20)),
        },
        {
            "content-type": st.sampled_from(
                ["audio/l16;rate=16000", "audio/l16;rate=8000", "audio/l16;rate=24000", "audio/pcmu", ""]
            ),
            "call_id": st.text(max_size=20),
            "digit": st.one_of(st.text(max_size=3), st.integers(-1, 12)),
            "duration": json_values,
            "from": st.text(max_size=16),
        },
    ),
)
# Vonage's audio is binary: frames of any size, partial samples, far too big.
vonage_frames = st.one_of(
    st.binary(max_size=700),
    st.integers(0, 2000).map(lambda n: bytes(n)),
    st.integers(33_000, 40_000).map(lambda n: bytes(n)),
)
