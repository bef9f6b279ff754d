"""What a call writes to its call log as it happens: one typed kind per thing that can happen.

The `Call` produces `LogRecord`s; the pump hands each to the call log (`CallLogSink.event`), to the
metrics and, for the kinds an operator watches, to the process log. The kinds are stored as their
string values, so the database and the call-log pages read the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RecordKind(StrEnum):
    CALLER_TRANSCRIPT = "caller_transcript"  # item_id, text, spoken_ms
    # The caller spoke but we have no words: item_id, spoken_ms, words: off | failed | empty (+ message)
    CALLER_SPOKE = "caller_spoke"
    # item_id, text, interrupted (+ full_text, heard_ms, cut_by: a barge-in, the line closing, a lost
    # session): logged once heard to its end, or as far as heard
    ASSISTANT_TRANSCRIPT = "assistant_transcript"
    BARGE_IN = "barge_in"  # reaction_ms, item_id, sent_ms, heard_ms, items_truncated, rtt_ms
    GREETING_LATENCY = "greeting_latency"  # ms: stream start -> the greeting's first audio sent
    TURN_LATENCY = "turn_latency"  # ms: the caller stopped speaking -> the reply's first audio sent
    DTMF = "dtmf"  # digit
    TOOL_CALL = "tool_call"  # call_id, name, arguments
    TOOL_RESULT = "tool_result"  # call_id, name, ok, duration_ms, result | error
    NOTE = "note"  # text added from outside: injected, image, source
    # What an operator did (bridge.control_api): operator (their label), action (say | inject | hangup |
    # transfer), outcome (done | refused | failed), and its details: text, image, respond, number, error
    OPERATOR_ACTION = "operator_action"
    ERROR = "error"  # source (carrier | upstream), code, message (+ attempts, attempt_ms, spent_ms: the
    # model was lost for good, `UpstreamLoss`)
    SESSION_RESTORED = "session_restored"  # items (the conversation handed to a new session), lost (why
    # the old one ended), attempts, attempt_ms, spent_ms (`ConnectReport`)
    # A call we placed: who answered and what the call did about it (answered_by, message_end, or
    # assumed: no verdict in time; action: converse | hang_up | await_message_end | leave_message |
    # none; after_ms: since the stream started).
    ANSWERING = "answering"
    # A call we placed, as its carrier reports it (status: queued, ringing, answered, completed, busy,
    # no_answer, failed, canceled; or answered_by). Written by whichever process the carrier's callback
    # reaches, not by the call's owner (bridge.calllog.placed_calls).
    CALL_PROGRESS = "call_progress"
    USAGE = "usage"  # a response's token usage, as the service reports it (totals, not an event)
    SUMMARY = "summary"  # the post-call summary: summary, disposition (the call's columns, not an event)
    # Live calls (bridge.live.call)
    LIVE_SESSION = "live_session"  # session_id, model, audio_format, voice, delegation, lead_ms,
    #                                dropped_before_start_ms
    SESSION_USAGE = "session_usage"  # session_seconds billed so far (totals, not an event)
    SESSION_CLOSED = "session_closed"  # reason, seconds, confirmed (False: estimated: no session.closed)
    DELEGATION = "delegation"  # delegation_id, target, offset_ms
    BACKEND_RESPONSE = "backend_response"  # delegation_id, response_id, status, model, usage, error
    SUMMARY_UNAVAILABLE = "summary_unavailable"  # reason: no post-call summary on this call's API
    LIVE_AUDIO = "live_audio"  # how the call's audio was paced: underruns, silence filled and shed, ...


# Also written to the process log as they happen: what an operator watching a live call looks for.
LOGGED_KINDS = frozenset(
    {
        RecordKind.BARGE_IN,
        RecordKind.ERROR,
        RecordKind.GREETING_LATENCY,
        RecordKind.TURN_LATENCY,
        RecordKind.DTMF,
        RecordKind.ANSWERING,
    }
)
TRANSCRIPT_KINDS = (RecordKind.CALLER_TRANSCRIPT, RecordKind.ASSISTANT_TRANSCRIPT)


@dataclass(slots=True)
class LogRecord:
    kind: RecordKind
    data: dict[str, Any]
    at: float | None = None  # when it happened, if earlier than when it was recorded (same clock as `now`)
