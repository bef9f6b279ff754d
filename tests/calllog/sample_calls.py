"""Realistic calls recorded through the CallRecorder, shared by the API and browser tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.calllog import CallRecorder

DAY = datetime(2025, 11, 21, tzinfo=UTC)

# One `response.done` usage object in the Realtime GA shape.
USAGE: dict[str, Any] = {
    "total_tokens": 1600,
    "input_tokens": 1200,
    "output_tokens": 400,
    "input_token_details": {
        "text_tokens": 200,
        "audio_tokens": 1000,
        "image_tokens": 0,
        "cached_tokens": 600,
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 500, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 80, "audio_tokens": 320},
}
# What one USAGE costs on gpt-realtime-2.1 at the default prices (USD per 1M tokens):
# 100*4 + 500*32 + 100*0.4 + 500*0.4 + 80*24 + 320*64 = 39040 -> $0.03904
USAGE_COST = 0.03904


def start(
    recorder: CallRecorder,
    call_id: str,
    started_at: datetime,
    *,
    from_number: str = "+15551231234",
    to_number: str = "+15557654321",
    direction: str = "inbound",
) -> None:
    recorder.call_started(
        call_id=call_id,
        call_sid=call_id,
        stream_sid=f"MZ{call_id[2:]}",
        from_number=from_number,
        to_number=to_number,
        direction=direction,
        model="gpt-realtime-2.1",
        voice="marin",
        started_at=started_at,
        metadata={"region": "us1"},
    )


def record_refund_call(
    recorder: CallRecorder,
    call_id: str = "CA0001refund",
    started_at: datetime = DAY + timedelta(hours=15, minutes=2, seconds=10),
    from_number: str = "+15551231234",
) -> None:
    """A finished call: greeting, a tool lookup, a barge-in that cuts the assistant off, a keypress."""
    start(recorder, call_id, started_at, from_number=from_number)

    def ev(seconds: float, kind: str, **data: Any) -> None:
        recorder.event(call_id, kind, data, at=started_at + timedelta(seconds=seconds))

    ev(0.6, "greeting_latency", ms=640)
    ev(
        0.7,
        "assistant_transcript",
        item_id="a1",
        text="Hi, thanks for calling Acme support. How can I help you today?",
        interrupted=False,
    )
    ev(4.1, "caller_transcript", item_id="u1", text="Hi, I'd like a refund for my order from last week.")
    ev(5.9, "turn_latency", ms=820)
    ev(6.0, "tool_call", call_id="t1", name="lookup_order", arguments='{"phone": "last4:1234"}')
    ev(
        6.2,
        "tool_result",
        call_id="t1",
        name="lookup_order",
        ok=True,
        result={"order": "A-1042", "total": "49.90", "status": "delivered"},
        duration_ms=140,
    )
    ev(
        6.4,
        "assistant_transcript",
        item_id="a2",
        text="I found order A-1042 for 49 dollars 90. Refunds usually take five",
        full_text="I found order A-1042 for 49 dollars 90. Refunds usually take five to seven business days, "
        "and you will get an email as soon as it has been processed.",
        interrupted=True,
        heard_ms=2300,
    )
    ev(
        7.0,
        "operator_action",
        operator="alice",
        action="inject",
        outcome="done",
        text="Premium customer since 2019: refund without questions.",
        image=False,
        respond=False,
    )
    ev(8.9, "barge_in", item_id="a2", reaction_ms=180, sent_ms=4100, heard_ms=2300)
    ev(9.3, "caller_transcript", item_id="u2", text="Sorry — can you send that email to my work address?")
    ev(10.8, "turn_latency", ms=610)
    ev(
        10.9,
        "assistant_transcript",
        item_id="a3",
        text="Of course. Press 1 to confirm the work address we have on file.",
        interrupted=False,
    )
    ev(14.2, "dtmf", digit="1")
    ev(15.0, "turn_latency", ms=1450)
    ev(
        15.1,
        "assistant_transcript",
        item_id="a4",
        text="Done. Your refund is on its way. Anything else?",
        interrupted=False,
    )
    ev(18.0, "caller_transcript", item_id="u3", text="No, that's all. Thank you!")
    for _ in range(3):
        recorder.usage(call_id, USAGE)
    recorder.call_ended(call_id, "caller_hangup", at=started_at + timedelta(seconds=63.5))
    recorder.summary(call_id, REFUND_SUMMARY, "resolved", "a refund for last week's order")


REFUND_SUMMARY = (
    "The caller asked for a refund for last week's order A-1042 (49.90). The assistant found the order, "
    "said refunds take five to seven business days, and will send the confirmation to the caller's "
    "work email."
)


def record_failed_call(recorder: CallRecorder, call_id: str, started_at: datetime, from_number: str) -> None:
    start(recorder, call_id, started_at, from_number=from_number)
    at = started_at + timedelta(seconds=2)
    recorder.event(call_id, "caller_transcript", {"item_id": "u1", "text": "Is my appointment still on?"}, at)
    recorder.event(
        call_id,
        "error",
        {"source": "upstream", "code": "server_error", "message": "The Realtime service closed the session"},
        at + timedelta(seconds=1),
    )
    recorder.usage(call_id, USAGE)
    recorder.call_ended(call_id, "upstream_failure", at=at + timedelta(seconds=2))


def record_transferred_call(
    recorder: CallRecorder, call_id: str, started_at: datetime, from_number: str
) -> None:
    start(recorder, call_id, started_at, from_number=from_number, direction="outbound")
    at = started_at + timedelta(seconds=1)
    recorder.event(
        call_id,
        "assistant_transcript",
        {"item_id": "a1", "text": "Hello, this is Acme calling about your delivery.", "interrupted": False},
        at,
    )
    recorder.event(
        call_id,
        "caller_transcript",
        {"item_id": "u1", "text": "Can I talk to a person please?"},
        at + timedelta(seconds=4),
    )
    recorder.event(
        call_id,
        "tool_call",
        {"call_id": "t9", "name": "transfer_call", "arguments": '{"to": "agents"}'},
        at + timedelta(seconds=6),
    )
    recorder.event(
        call_id,
        "tool_result",
        {
            "call_id": "t9",
            "name": "transfer_call",
            "ok": False,
            "error": "no agent available",
            "duration_ms": 900,
        },
        at + timedelta(seconds=7),
    )
    recorder.usage(call_id, USAGE)
    recorder.call_ended(call_id, "transferred", at=at + timedelta(seconds=95))
    recorder.summary(
        call_id,
        "Outbound delivery call. The customer asked for a person; the transfer failed (no agent available).",
        "escalated",
        "to speak to a person",
    )


def record_day_of_calls(recorder: CallRecorder) -> None:
    """A support team's afternoon: the refund call plus a few others, one still live."""
    record_refund_call(recorder)
    record_failed_call(recorder, "CA0002failed", DAY + timedelta(hours=14, minutes=41), "+14155550187")
    record_transferred_call(recorder, "CA0003transfer", DAY + timedelta(hours=13, minutes=5), "+442071838750")
    for i, minute in enumerate((12, 27, 48)):
        call_id = f"CA01{i}short"
        begin = DAY + timedelta(hours=11, minutes=minute)
        start(recorder, call_id, begin, from_number=f"+1312555{4400 + i:04d}")
        if i == 2:  # a call from before caller transcription was on: how long they spoke, no words
            said = {"item_id": "u1", "spoken_ms": 2100, "words": "off"}
            recorder.event(call_id, "caller_spoke", said, begin + timedelta(seconds=3))
        else:
            said = {"item_id": "u1", "text": "What are your opening hours?"}
            recorder.event(call_id, "caller_transcript", said, begin + timedelta(seconds=3))
        answer = {
            "item_id": "a1",
            "text": "We are open nine to five, Monday to Friday.",
            "interrupted": False,
        }
        recorder.event(call_id, "assistant_transcript", answer, begin + timedelta(seconds=5))
        recorder.usage(call_id, USAGE)
        recorder.call_ended(call_id, "assistant_ended", at=begin + timedelta(seconds=41 + i))
        summary = "Asked for the opening hours; the assistant gave them and ended the call."
        recorder.summary(call_id, summary, "resolved", "opening hours")
    recorder.call_never_connected(
        call_id="CA0004never",
        carrier="twilio",
        from_number="+13125550199",
        to_number="+15557654321",
        direction="inbound",
        model="gpt-realtime-2.1",
        voice="marin",
        answered_at=DAY + timedelta(hours=14, minutes=20),
        noticed_at=DAY + timedelta(hours=14, minutes=20, seconds=30),
    )
    live = datetime.now(UTC) - timedelta(seconds=95)
    start(recorder, "CA0009live", live, from_number="+15559876543")
    said = {"item_id": "u1", "text": "Hi, I'm calling about a delivery."}
    recorder.event("CA0009live", "caller_transcript", said, live + timedelta(seconds=3))


def record_live_call(
    recorder: CallRecorder,
    call_id: str = "CA0020gptlive",
    started_at: datetime = DAY + timedelta(hours=15, minutes=30),
    *,
    seconds: int = 90,
    heard_after_stop_ms: int = 170,
) -> None:
    """A finished call answered by the Live API: billed by session seconds, one barge-in, a backend
    lookup (whose tokens are billed apart)."""
    recorder.call_started(
        call_id=call_id,
        call_sid=call_id,
        stream_sid=f"MZ{call_id[2:]}",
        from_number="+15551239876",
        to_number="+15557654321",
        direction="inbound",
        model="gpt-live-1",
        voice="marin",
        started_at=started_at,
        upstream_api="live",
    )

    def ev(at_s: float, kind: str, **data: Any) -> None:
        recorder.event(call_id, kind, data, at=started_at + timedelta(seconds=at_s))

    ev(0.4, "live_session", session_id=f"live_{call_id}", model="gpt-live-1", delegation="responses")
    ev(0.9, "greeting_latency", ms=880)
    ev(1.0, "assistant_transcript", item_id="turn_1", text="Hello, Acme here.", interrupted=False)
    ev(4.0, "caller_transcript", text="Where is my order?")
    ev(5.0, "turn_latency", ms=940)
    ev(5.1, "delegation", delegation_id="dlg_1", target="responses", offset_ms=4900)
    usage = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400}, "output_tokens": 200}
    ev(6.0, "backend_response", status="completed", model="gpt-5-mini", usage=usage)
    ev(
        9.0,
        "barge_in",
        item_id="turn_3",
        sent_ms=2400,
        heard_ms=2100,
        heard_after_stop_ms=heard_after_stop_ms,
    )
    recorder.usage(call_id, {"session_seconds": seconds})
    recorder.call_ended(call_id, "caller_hangup", at=started_at + timedelta(seconds=seconds))
