"""The Realtime codec: every event the bridge sends validates against the openai SDK's own types for
its dialect (docs/protocols.md §R12), and server events of both dialects decode to the same meaning."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec, RealtimeProtocolError, SessionOptions
from tests.realtime_types import validate_client_event

DIALECTS = ["ga", "beta"]


def options(**overrides: object) -> SessionOptions:
    base = dict(instructions="Be brief.", voice="marin", transcription_model="gpt-4o-mini-transcribe")
    return SessionOptions(**(base | overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "opts",
    [
        options(),
        options(turn_detection="semantic_vad", vad_eagerness="high", noise_reduction="off"),
        options(turn_detection="none", transcription_model=""),
        options(audio_format="pcmu", interrupt_response=False),
        options(
            tools=(
                {
                    "type": "function",
                    "name": "end_call",
                    "description": "Hang up.",
                    "parameters": {"type": "object", "properties": {}},
                },
            )
        ),
    ],
)
def test_session_update_validates(dialect: str, opts: SessionOptions) -> None:
    validate_client_event(RealtimeCodec(dialect).session_update(opts), dialect)  # type: ignore[arg-type]


def test_ga_session_asks_for_pcm_24k_both_ways() -> None:
    session = RealtimeCodec("ga").session_update(options())["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["type"] == "realtime"


def test_beta_session_is_flat() -> None:
    session = RealtimeCodec("beta").session_update(options())["session"]
    assert session["input_audio_format"] == session["output_audio_format"] == "pcm16"
    assert session["voice"] == "marin"


def test_prompt_reference_is_ga_only() -> None:
    opts = options(prompt_id="pmpt_123", prompt_version="4", prompt_variables={"city": "Oslo"})
    event = RealtimeCodec("ga").session_update(opts)
    validate_client_event(event, "ga")
    assert event["session"]["prompt"] == {"id": "pmpt_123", "version": "4", "variables": {"city": "Oslo"}}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_client_events_validate(dialect: str) -> None:
    c = RealtimeCodec(dialect)  # type: ignore[arg-type]
    for event in [
        c.append_audio(b"\x00\x01" * 480),
        c.truncate("item_1", 1520),
        c.cancel_response(),
        c.cancel_response("resp_1"),
        c.create_response(),
        c.create_response("Greet the caller."),
        c.create_response("Summarise.", out_of_band=True, text_only=True, metadata={"purpose": "summary"}),
        c.user_text("The caller pressed 1.", previous_item_id="item_0"),
        c.function_output("call_1", '{"ok": true}'),
        c.history_item("user", "I need a refund."),
        c.history_item("assistant", "Sure, what is the order number?"),
    ]:
        validate_client_event(json.loads(c.encode(event)), dialect)


def server(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, "event_id": "event_1", **fields})


@pytest.mark.parametrize(("ga", "beta"), [("response.output_audio.delta", "response.audio.delta")])
def test_audio_delta_in_both_dialects(ga: str, beta: str) -> None:
    audio = b"\x10\x00" * 240
    fields = dict(
        response_id="r", item_id="i", output_index=0, content_index=0, delta=base64.b64encode(audio).decode()
    )
    for kind in (ga, beta):
        assert RealtimeCodec().decode(server(kind, **fields)) == rt.AudioDelta("r", "i", 0, audio)


def test_renamed_events_map_to_one_meaning() -> None:
    c = RealtimeCodec()
    for kind in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
        decoded = c.decode(server(kind, response_id="r", item_id="i", transcript="hi"))
        assert decoded == rt.OutputTranscriptDone("r", "i", "hi")
    item = {"id": "item_9", "type": "message", "role": "user"}
    for kind in ("conversation.item.added", "conversation.item.created"):
        decoded = c.decode(server(kind, item=item, previous_item_id="item_8"))
        assert decoded == rt.ItemAdded("item_9", "message", "user", "item_8")


def test_vad_events_and_response_done() -> None:
    c = RealtimeCodec()
    assert c.decode(
        server("input_audio_buffer.speech_started", audio_start_ms=1200, item_id="u1")
    ) == rt.SpeechStarted("u1", 1200)
    done = c.decode(
        server(
            "response.done",
            response={
                "id": "r1",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
                "usage": {"total_tokens": 3},
                "output": [],
            },
        )
    )
    assert isinstance(done, rt.ResponseDone)
    assert (done.status, done.reason, done.usage) == ("cancelled", "turn_detected", {"total_tokens": 3})


def test_error_event() -> None:
    decoded = RealtimeCodec().decode(
        server(
            "error",
            error={
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "Audio content of 2450ms is already shorter than 2535ms",
                "param": None,
                "event_id": None,
            },
        )
    )
    assert decoded == rt.ServerError(
        "invalid_request_error",
        "invalid_value",
        "Audio content of 2450ms is already shorter than 2535ms",
        None,
    )


def test_unknown_and_bad_server_messages() -> None:
    c = RealtimeCodec()
    assert c.decode(server("rate_limits.updated", rate_limits=[])) == rt.Ignored("rate_limits.updated")
    with pytest.raises(RealtimeProtocolError):
        c.decode("{not json")
    with pytest.raises(RealtimeProtocolError):
        c.decode(server("response.output_audio.delta", delta="%%%"))
