"""Twilio's callbacks about a call we placed, read as `CallProgress` (docs/protocols.md §T9): the
status callback (`CallStatus`) and the asynchronous answering-machine verdict (`AnsweredBy`)."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.answer_detection import AnsweredBy, Verdict
from bridge.carrier import outbound as progress
from bridge.carrier.outbound import CallProgress
from bridge.carrier.webhook import UnusableWebhook

STATUSES: dict[str, str | None] = {
    "queued": progress.QUEUED,
    "initiated": None,  # dialling has begun: logged, still queued
    "ringing": progress.RINGING,
    "in-progress": progress.ANSWERED,
    "completed": progress.COMPLETED,
    "busy": progress.BUSY,
    "no-answer": progress.NO_ANSWER,
    "failed": progress.FAILED,
    "canceled": progress.CANCELED,
}
VERDICTS = {
    "human": Verdict(AnsweredBy.HUMAN),
    "machine_start": Verdict(AnsweredBy.MACHINE),
    "machine_end_beep": Verdict(AnsweredBy.MACHINE, message_end="beep"),
    "machine_end_silence": Verdict(AnsweredBy.MACHINE, message_end="silence"),
    "machine_end_other": Verdict(AnsweredBy.MACHINE, message_end="other"),
    "fax": Verdict(AnsweredBy.FAX),
    "unknown": Verdict(AnsweredBy.UNKNOWN),
}


def status_progress(form: Mapping[str, str]) -> CallProgress:
    """A status callback. A status we do not know is kept in the log and changes nothing."""
    carrier_status = form.get("CallStatus", "")
    if not carrier_status:
        raise UnusableWebhook("the status callback has no CallStatus")
    detail = {}
    if sip := form.get("SipResponseCode"):
        detail["sip_response_code"] = sip
    if (duration := form.get("CallDuration", "")).isdigit():
        detail["duration_s"] = int(duration)
    return CallProgress(carrier_status, STATUSES.get(carrier_status), detail=detail)


def verdict_progress(form: Mapping[str, str]) -> CallProgress:
    """An asynchronous AMD callback; an `AnsweredBy` we do not know counts as unknown (a person)."""
    answered_by = form.get("AnsweredBy", "")
    if not answered_by:
        raise UnusableWebhook("the answering-machine callback has no AnsweredBy")
    verdict = VERDICTS.get(answered_by, Verdict(AnsweredBy.UNKNOWN))
    detail = {}
    if (took := form.get("MachineDetectionDuration", "")).isdigit():
        detail["detection_ms"] = int(took)
    return CallProgress(answered_by, verdict=verdict, detail=detail)
