"""The Live codec against the openai SDK's own Live types: every event it builds validates as a client
event (unknown keys refused, as the service refuses them), and every server event it reads is first shown
to be a valid SDK server event, so the codec is tested on the shapes the service really sends."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.audio import L16_8K, L16_16K, L16_24K, PCMA_8K, PCMU_8K, AudioFormat
from bridge.live import events as ev
from bridge.live.codec import (
    _KNOWN,
    LiveCodec,
    LiveProtocolError,
    LiveSessionOptions,
    context_chunks,
    estimated_tokens,
    live_format_for,
)
from bridge.tools.builtin import end_call_definition, transfer_call_definition
from tests.realtime_types import (
    LIVE_CLIENT,
    LIVE_SERVER,
    validate_backend_event,
    validate_client_event,
    validate_server_event,
)

TOOLS = (end_call_definition(), transfer_call_definition(("+15550100",)))


def options(**overrides: Any) -> LiveSessionOptions:
    return LiveSessionOptions(**({"instructions": "Be brief and kind."} | overrides))


def sent(codec: LiveCodec, event: dict[str, Any]) -> dict[str, Any]:
    """What the service receives, validated as the SDK's client event."""
    wire = json.loads(codec.encode(event))
    validate_client_event(wire, "live")
    return wire


# -- client events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        options(),
        options(audio_format=PCMA_8K, voice="cedar", model="gpt-live-1.1"),
        options(audio_format=L16_16K, instructions="   "),
        options(audio_format=L16_24K, acknowledgement_delay_ms=400, safety_identifier="user-7"),
        options(delegation="responses", backend_model="gpt-5.5"),
        options(
            delegation="responses",
            backend_model="gpt-5.5",
            backend_instructions="Use tools when the caller asks for an action.",
            tools=TOOLS,
            tool_choice="required",
            reasoning_effort="low",
        ),
        options(history=(("user", "I need a refund."), ("assistant", "Sure, the order number?"))),
        options(history=(("developer", "The caller is a returning customer."),)),
    ],
)
def test_session_start_validates(opts: LiveSessionOptions) -> None:
    wire = sent(LiveCodec(), LiveCodec().session_start(opts))
    assert wire["type"] == "session.start"
    assert wire["session"]["model"] == opts.model


def test_session_start_sends_the_phone_format_both_ways_and_the_delegation() -> None:
    codec = LiveCodec()
    start = sent(codec, codec.session_start(options(voice="marin")))["session"]
    assert start["audio"] == {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}}
    custom = sent(codec, codec.session_start(options(voice="voice_abc123")))["session"]
    assert custom["audio"]["output"] == {"voice": {"id": "voice_abc123"}}
    assert start["delegation"] == {"type": "client"}
    assert start["instructions"] == "Be brief and kind."
    assert "input" not in start

    with_tools = options(delegation="responses", backend_model="gpt-5.5", tools=TOOLS)
    responses = sent(codec, codec.session_start(with_tools))["session"]["delegation"]["responses"]
    assert responses["model"] == "gpt-5.5"
    assert [t["name"] for t in responses["tools"]] == ["end_call", "transfer_call"]
    assert responses["tools"][0]["parameters"] == TOOLS[0]["parameters"]
    assert responses["tool_choice"] == "auto"


def test_blank_instructions_are_left_to_the_service() -> None:
    codec = LiveCodec()
    assert "instructions" not in codec.session_start(options(instructions=" \n"))["session"]


def test_history_parts_follow_the_role() -> None:
    codec = LiveCodec()
    history = (("user", "a"), ("assistant", "b"), ("developer", "c"))
    items = sent(codec, codec.session_start(options(history=history)))["session"]["input"]
    assert [(i["role"], i["content"][0]["type"]) for i in items] == [
        ("user", "input_text"),
        ("assistant", "output_text"),
        ("developer", "input_text"),
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"audio_format": L16_8K}, "audio/pcmu"),
        ({"delegation": "responses"}, "backend model"),
        ({"tools": TOOLS}, "Responses backend"),
        ({"history": (("user", "x"),) * 129}, "128"),
    ],
)
def test_options_refuse_what_the_service_would(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options(**overrides)


@pytest.mark.parametrize(
    ("line", "session"),
    [(PCMU_8K, PCMU_8K), (PCMA_8K, PCMA_8K), (L16_16K, L16_16K), (L16_24K, L16_24K), (L16_8K, L16_24K)],
)
def test_live_format_for_a_line(line: AudioFormat, session: AudioFormat) -> None:
    assert live_format_for(line) == session


def test_every_other_client_event_validates() -> None:
    codec = LiveCodec()
    events = [
        codec.append_audio(b"\xff" * 160),
        codec.append_context("instructions", "The caller pressed 1."),
        codec.append_context("thinking", "Order 42 shipped yesterday.", delegation_id=None),
        codec.append_context("commentary", "Greet the caller now, then listen."),
        codec.append_context("commentary", "The refund went through.", delegation_id="dlg_1"),
        codec.function_output("call_1", '{"ok": true}'),
        codec.continue_backend(),
        codec.update_tools(TOOLS, "auto"),
        codec.mute_input(True),
        codec.mute_input(False),
        codec.play_fixture(b"\x00\x00" * 2400),
        codec.session_close(),
    ]
    types = {sent(codec, e)["type"] for e in events}
    assert types <= set(LIVE_CLIENT)


def test_context_appends_always_carry_delegation_id() -> None:
    # Required but nullable on the wire: a missing key is a different event from an explicit null.
    wire = sent(LiveCodec(), LiveCodec().append_context("thinking", "x"))
    assert "delegation_id" in wire and wire["delegation_id"] is None


def test_audio_append_wire_is_the_dict_it_describes() -> None:
    codec = LiveCodec()
    event = codec.append_audio(bytes(range(256)))
    wire = json.loads(codec.encode(event))
    assert wire == dict(event)
    assert base64.b64decode(wire["audio"]) == bytes(range(256))
    assert "event_id" not in wire


def test_event_ids_are_unique() -> None:
    codec = LiveCodec()
    ids = [codec.session_close()["event_id"] for _ in range(5)] + [codec.continue_backend()["event_id"]]
    assert len(set(ids)) == len(ids)


def test_context_chunks_fit_one_append_and_keep_every_word() -> None:
    text = " ".join(f"Sentence number {i} says something useful about the order." for i in range(200))
    chunks = context_chunks(text)
    assert len(chunks) > 1
    assert all(estimated_tokens(c) <= 450 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    unbroken = "x" * 5000  # no sentence end, no space
    pieces = context_chunks(unbroken)
    assert "".join(pieces) == unbroken and all(estimated_tokens(p) <= 450 for p in pieces)
    assert context_chunks("Short.") == ["Short."]
    assert context_chunks("  ") == []
    assert estimated_tokens("日本語") == 3


# -- server events ------------------------------------------------------------------------------------

SESSION = {
    "id": "live_123",
    "expires_at": 1_900_000_000,
    "model": "gpt-live-1",
    "status": "active",
    "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}},
    "delegation": {"type": "responses", "responses": {"model": "gpt-5.5", "tools": []}},
    "instructions": "Be brief.",
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_900_000_000,
    "model": "gpt-5.5",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "status": "completed",
}
USAGE = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 8},
    "total_tokens": 140,
}


def backend(inner: dict[str, Any], delegation_id: str | None = "dlg_1") -> dict[str, Any]:
    validate_backend_event(inner)
    return {"type": "response.event", "event_id": "event_9", "event": inner, "delegation_id": delegation_id}


FUNCTION_CALL = {
    "id": "fc_1",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_1",
    "name": "end_call",
    "arguments": '{"reason": "done"}',
}

CASES: list[tuple[dict[str, Any], ev.LiveEvent]] = [
    (
        {"type": "session.started", "event_id": "e1", "session": SESSION},
        ev.SessionStarted(
            "live_123",
            "gpt-live-1",
            1_900_000_000,
            {"type": "audio/pcmu", "rate": 8000},
            "marin",
            "responses",
            SESSION,
        ),
    ),
    (
        {"type": "session.updated", "event_id": "e2", "session": SESSION, "client_event_id": "bridge_3"},
        ev.SessionUpdated(SESSION, "bridge_3"),
    ),
    (
        {"type": "session.output_audio.delta", "delta": base64.b64encode(b"\x7f\xff" * 80).decode()},
        ev.OutputAudio(b"\x7f\xff" * 80),
    ),
    (
        {
            "type": "session.input_transcript.delta",
            "event_id": "e3",
            "delta": "I'd like",
            "start_ms": 1200,
            "end_ms": 1400,
        },
        ev.InputTranscript("I'd like", 1200, 1400),
    ),
    (
        {
            "type": "session.output_transcript.delta",
            "event_id": "e4",
            "delta": " Sure",
            "start_ms": 2000,
            "end_ms": 2200,
        },
        ev.OutputTranscript(" Sure", 2000, 2200),
    ),
    (
        {
            "type": "session.instructions.appended",
            "event_id": "e5",
            "start_ms": 10,
            "end_ms": 10,
            "client_event_id": "bridge_4",
        },
        ev.ContextAppended("instructions", "bridge_4", 10, 10),
    ),
    (
        {"type": "session.thinking.appended", "event_id": "e6", "start_ms": 11, "end_ms": 11},
        ev.ContextAppended("thinking", None, 11, 11),
    ),
    (
        {
            "type": "session.commentary.appended",
            "event_id": "e7",
            "start_ms": 12,
            "end_ms": 15,
            "client_event_id": "bridge_5",
        },
        ev.ContextAppended("commentary", "bridge_5", 12, 15),
    ),
    ({"type": "session.input_audio.muted", "event_id": "e8"}, ev.InputMuted(True, None)),
    (
        {"type": "session.input_audio.unmuted", "event_id": "e9", "client_event_id": "bridge_6"},
        ev.InputMuted(False, "bridge_6"),
    ),
    (
        {
            "type": "session.delegation.created",
            "event_id": "e10",
            "offset_ms": 5400,
            "delegation": {
                "id": "dlg_1",
                "target": "responses",
                "type": "delegation",
                "response_id": "resp_1",
            },
        },
        ev.DelegationCreated("dlg_1", "responses", 5400, "resp_1"),
    ),
    (
        {
            "type": "session.delegation.created",
            "event_id": "e11",
            "offset_ms": 10,
            "delegation": {"id": "dlg_2", "target": "client", "type": "delegation"},
        },
        ev.DelegationCreated("dlg_2", "client", 10, None),
    ),
    (
        backend(
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": RESPONSE | {"status": "in_progress"},
            }
        ),
        ev.BackendResponseCreated("dlg_1", "resp_1"),
    ),
    (
        backend(
            {
                "type": "response.output_item.done",
                "sequence_number": 3,
                "output_index": 0,
                "item": FUNCTION_CALL,
            }
        ),
        ev.FunctionCall("dlg_1", "call_1", "end_call", '{"reason": "done"}', "fc_1"),
    ),
    (
        backend(
            {
                "type": "response.output_item.done",
                "sequence_number": 3,
                "output_index": 0,
                "item": FUNCTION_CALL | {"status": "incomplete"},
            }
        ),
        ev.Ignored("response.event/response.output_item.done"),
    ),
    (
        backend(
            {
                "type": "response.output_text.done",
                "sequence_number": 5,
                "output_index": 0,
                "content_index": 0,
                "item_id": "msg_1",
                "text": "Your refund is on its way.",
                "logprobs": [],
            },
            delegation_id=None,
        ),
        ev.BackendText(None, "Your refund is on its way."),
    ),
    (
        backend(
            {"type": "response.completed", "sequence_number": 6, "response": RESPONSE | {"usage": USAGE}}
        ),
        ev.BackendResponseDone("dlg_1", "resp_1", "completed", USAGE, None),
    ),
    (
        backend(
            {
                "type": "response.failed",
                "sequence_number": 6,
                "response": RESPONSE
                | {"status": "failed", "error": {"code": "server_error", "message": "The backend failed."}},
            }
        ),
        ev.BackendResponseDone("dlg_1", "resp_1", "failed", None, "The backend failed."),
    ),
    (
        backend(
            {
                "type": "response.incomplete",
                "sequence_number": 6,
                "response": RESPONSE
                | {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
            }
        ),
        ev.BackendResponseDone("dlg_1", "resp_1", "incomplete", None, "max_output_tokens"),
    ),
    (
        backend(
            {
                "type": "response.output_text.delta",
                "sequence_number": 4,
                "output_index": 0,
                "content_index": 0,
                "item_id": "msg_1",
                "delta": "Your",
                "logprobs": [],
            }
        ),
        ev.Ignored("response.event/response.output_text.delta"),
    ),
    (
        {
            "type": "session.usage.updated",
            "event_id": "e12",
            "usage": {"seconds": 61.0},
            "context_window": {"usage_ratio": 0.25},
        },
        ev.UsageUpdated(61.0, None, None, 0.25),
    ),
    (
        {
            "type": "session.usage.updated",
            "event_id": "e13",
            "usage": {"seconds": 30, "active_seconds": 20, "paused_seconds": 10},
        },
        ev.UsageUpdated(30, 20, 10, None),
    ),
    (
        {
            "type": "session.closed",
            "event_id": "e14",
            "reason": "close_requested",
            "session": SESSION,
            "usage": {"seconds": 95.0},
        },
        ev.SessionClosed("close_requested", 95.0, SESSION),
    ),
    (
        {"type": "session.output_audio.fixture.playing", "event_id": "e15", "client_event_id": "bridge_8"},
        ev.FixturePlaying("bridge_8"),
    ),
    ({"type": "session.output_audio.fixture.played", "event_id": "e16"}, ev.FixturePlayed(None)),
    (
        {
            "type": "error",
            "event_id": "e17",
            "error": {
                "type": "invalid_request_error",
                "code": "unknown_parameter",
                "message": "Unknown parameter: 'session.voice'.",
                "param": "session.voice",
                "client_event_id": "bridge_1",
            },
        },
        ev.ServerError(
            "invalid_request_error",
            "unknown_parameter",
            "Unknown parameter: 'session.voice'.",
            "session.voice",
            "bridge_1",
        ),
    ),
    (
        {"type": "info", "event_id": "e18", "code": "data_channel_permissions", "message": "Applied."},
        ev.Info("data_channel_permissions", "Applied."),
    ),
    (
        {"type": "transport.dtmf.received", "event_id": "e19", "event": "5"},
        ev.Ignored("transport.dtmf.received"),
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"), CASES, ids=lambda v: v["type"] if isinstance(v, dict) else ""
)
def test_server_event_decodes(message: dict[str, Any], expected: ev.LiveEvent) -> None:
    validate_server_event(message, "live")
    assert LiveCodec().decode(json.dumps(message)) == expected


def test_every_closing_reason_decodes() -> None:
    reasons = ["close_requested", "expired", "content", "remote_hangup", "connection_lost"]
    for reason in reasons:
        message = {
            "type": "session.closed",
            "event_id": "e",
            "reason": reason,
            "session": SESSION,
            "usage": {"seconds": 3},
        }
        validate_server_event(message, "live")
        assert LiveCodec().decode(json.dumps(message)).reason == reason  # type: ignore[union-attr]


def test_codec_reads_only_sdk_server_events_and_every_read_one_is_tested() -> None:
    assert set(LIVE_SERVER) >= _KNOWN
    assert {m["type"] for m, _ in CASES} >= _KNOWN


def test_custom_voice_and_omitted_delegation() -> None:
    session = SESSION | {"audio": {"output": {"voice": {"id": "voice_abc"}}}}
    del session["delegation"]
    message = {"type": "session.started", "event_id": "e", "session": session}
    validate_server_event(message, "live")
    started = LiveCodec().decode(json.dumps(message))
    assert isinstance(started, ev.SessionStarted)
    assert (started.voice, started.delegation, started.audio_format) == ("voice_abc", "client", None)


def test_newer_fields_are_ignored_and_newer_events_too() -> None:
    codec = LiveCodec()
    audio = {"type": "session.output_audio.delta", "delta": "AAA=", "start_ms": 1, "end_ms": 2, "new": 1}
    assert codec.decode(json.dumps(audio)) == ev.OutputAudio(b"\x00\x00")
    assert codec.decode('{"type": "session.something.new", "x": 1}') == ev.Ignored("session.something.new")


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        b"\xff\xfe",
        "[]",
        '{"no": "type"}',
        '{"type": 7}',
        '{"type": "session.output_audio.delta", "delta": "%%%"}',
        '{"type": "session.output_audio.delta"}',
        '{"type": "session.started", "session": {"model": "gpt-live-1"}}',
        '{"type": "session.closed", "usage": {"seconds": 1}}',
        '{"type": "session.delegation.created", "delegation": {}}',
        '{"type": "error", "error": "boom"}',
        '{"type": "response.event", "event": {"type": "response.output_item.done", "item": '
        '{"type": "function_call", "status": "completed", "arguments": "{}"}}}',
        "[" * 100_000,
    ],
)
def test_bad_server_messages_raise_a_clear_error(text: str | bytes) -> None:
    with pytest.raises(LiveProtocolError):
        LiveCodec().decode(text)
