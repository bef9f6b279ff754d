"""How stored calls are shown outside: masked numbers, JSON-ready dicts, transcript text, CSV rows."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from bridge.calllog.schema import RECORDING_COLUMNS, TOTAL_COLUMNS
from bridge.log_records import TRANSCRIPT_KINDS, RecordKind

_DIGIT = re.compile(r"\d")
_PHONE_LIKE = re.compile(r"[+\-]?[\d*\s().\-]*")


def mask_number(number: str, keep: int = 4) -> str:
    """`+15551231234` -> `+*******1234`: every digit but the last `keep` hidden, other characters kept."""
    digits = len(_DIGIT.findall(number))
    hide = max(digits - keep, 0)
    if not hide:
        return number
    seen = 0

    def star(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return "*" if seen <= hide else match.group()

    return _DIGIT.sub(star, number)


def public_call(call: dict[str, Any], *, reveal: bool) -> dict[str, Any]:
    """A store call dict as the API shows it (numbers masked unless `reveal`)."""
    out = {k: v for k, v in call.items() if k not in RECORDING_COLUMNS}
    if not reveal:
        out["from_number"] = mask_number(call["from_number"])
        out["to_number"] = mask_number(call["to_number"])
    out["numbers_masked"] = not reveal
    out["recording"] = public_recording(call)
    return out


def public_recording(call: dict[str, Any]) -> dict[str, Any] | None:
    """The call's recording as the API shows it; None when the call was not recorded.

    `started_at` is the wall-clock time of the recording's first sample: an event at time t is heard
    (t - started_at) seconds into it. `url` serves the files (`?format=` one of `formats`) once ready.
    """
    status = call.get("recording_status")
    if status is None:
        return None
    formats = [f for f in (call.get("recording_formats") or "").split(",") if f]
    ready = status == "ready"
    return {
        "status": status,
        "started_at": call.get("recording_started_at"),
        "duration_s": call.get("recording_duration_s"),
        "formats": formats,
        "channels": {"left": "caller", "right": "assistant"},
        "location": call.get("recording_location"),
        "error": call.get("recording_error"),
        "url": f"/api/calls/{quote(call['call_id'], safe='')}/recording" if ready else None,
    }


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def clock(offset_s: float) -> str:
    """Seconds since the call started as `mm:ss.t` (minutes keep counting past 59)."""
    tenths = max(round(offset_s * 10), 0)
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def transcript_text(call: dict[str, Any]) -> str:
    """One line per utterance: `[00:03.2] Caller: ...`, `[00:04.0] Assistant: ... [cut off]`."""
    lines = []
    started: datetime = call["started_at"]
    for event in call["events"]:
        kind, data = event["kind"], event["data"]
        if kind not in TRANSCRIPT_KINDS:
            continue
        text = str(data.get("text") or "").strip()
        if not text:
            continue
        who = "Caller" if kind == RecordKind.CALLER_TRANSCRIPT else "Assistant"
        cut = " [cut off]" if kind == RecordKind.ASSISTANT_TRANSCRIPT and data.get("interrupted") else ""
        lines.append(f"[{clock((event['at'] - started).total_seconds())}] {who}: {text}{cut}")
    return "\n".join(lines) + ("\n" if lines else "")


CSV_COLUMNS = (
    "call_id",
    "started_at",
    "ended_at",
    "duration_s",
    "status",
    "end_reason",
    "direction",
    "outbound_status",  # calls we placed: how far they got, and who answered
    "answered_by",
    "from_number",
    "to_number",
    "carrier",
    "model",
    "voice",
    *TOTAL_COLUMNS,
    "disposition",
    "summary",
    "call_sid",
    "stream_sid",
)


def csv_row(call: dict[str, Any]) -> list[str]:
    return [_csv_cell(call.get(column)) for column in CSV_COLUMNS]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    # Spreadsheets run a cell starting with = + - @ as a formula; phone numbers legitimately start
    # with + (and masked ones with +*), so only text that isn't number-like gets neutralised.
    if text[:1] in ("=", "@", "\t", "\r") or (text[:1] in ("+", "-") and not _PHONE_LIKE.fullmatch(text)):
        return "'" + text
    return text
