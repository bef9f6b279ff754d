"""The post-call summary: what the model is asked once the caller has gone, and how its answer is read.

`PostCallSummary` is the exchange, sans-IO: the events to send the still-open session, then every
server event fed to it until it says it is done. A response the model was still giving when the
caller hung up is cancelled first: nobody will hear it, and its output is paid for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.log_records import LogRecord, RecordKind
from bridge.realtime import events as rt
from bridge.realtime.codec import RealtimeCodec

SUMMARY_METADATA = {"purpose": "post_call_summary"}
SUMMARY_TIMEOUT_S = 15.0  # the phone leg is already closed; this only bounds the session's life


@dataclass(frozen=True, slots=True)
class CallSummary:
    summary: str
    disposition: str | None
    intent: str | None = None  # what the caller wanted, in a few words


def summary_instructions(dispositions: tuple[str, ...]) -> str:
    return (
        "The phone call has ended. For the support team, answer with JSON only, no prose around it: "
        '{"summary": "two or three sentences on what happened", "intent": "what the caller wanted, in a '
        f'few words", "disposition": one of {json.dumps(list(dispositions))}}}.'
    )


def parse_summary(text: str, dispositions: tuple[str, ...]) -> CallSummary | None:
    """Read the model's answer; prose instead of JSON is kept as the summary rather than lost."""
    text = text.strip()
    if not text:
        return None
    start, end = text.find("{"), text.rfind("}")
    try:
        answer = json.loads(text[start : end + 1]) if start != -1 and end > start else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return CallSummary(text[:2000], None)
    summary = str(answer.get("summary") or "").strip()
    intent = str(answer.get("intent") or "").strip()
    disposition = answer.get("disposition")
    return CallSummary(
        summary[:2000], disposition if disposition in dispositions else None, intent[:200] or None
    )


class PostCallSummary:
    """Ask for a summary out of band (it never joins the conversation), text only; read the answer.

    `events`: what to send, in order. Feed each server event to `receive` until it returns True (or
    `timeout_s` passed); `result` is then the summary, or None (no answer, or the request was refused),
    and `outcome` what the call log keeps of it. (`bridge.live.call.LiveSessionEnd` is the same kind of
    exchange for a Live call.)"""

    timeout_s = SUMMARY_TIMEOUT_S

    def __init__(
        self, codec: RealtimeCodec, dispositions: tuple[str, ...], still_answering: str | None = None
    ) -> None:
        """`still_answering`: the response the model was giving when the caller hung up, if any."""
        self._dispositions = dispositions
        request = codec.create_response(
            summary_instructions(dispositions), out_of_band=True, text_only=True, metadata=SUMMARY_METADATA
        )
        self._request_id: str = request["event_id"]
        self.events: list[dict[str, Any]] = []
        if still_answering is not None:
            self.events.append(codec.cancel_response(still_answering))
        self.events.append(request)
        self._response_id: str | None = None
        self._text = ""
        self.result: CallSummary | None = None

    def receive(self, event: rt.RealtimeEvent, now: float) -> bool:
        """One server event (which arrived at `now`); True once the summary is in, or refused."""
        if isinstance(event, rt.ResponseCreated):
            if event.metadata == SUMMARY_METADATA:
                self._response_id = event.response_id
        elif isinstance(event, rt.OutputTextDone | rt.OutputTranscriptDone):
            if event.response_id == self._response_id:
                self._text = event.text if isinstance(event, rt.OutputTextDone) else event.transcript
        elif isinstance(event, rt.ResponseDone):
            if event.response_id == self._response_id or event.metadata == SUMMARY_METADATA:
                self.result = parse_summary(self._text, self._dispositions)
                return True
        elif isinstance(event, rt.ServerError):
            return event.client_event_id == self._request_id  # refused: there will be no summary
        return False

    def outcome(self, now: float) -> list[LogRecord]:
        result = self.result
        if result is None:
            return []
        data = {"summary": result.summary, "disposition": result.disposition, "intent": result.intent}
        return [LogRecord(RecordKind.SUMMARY, data)]
