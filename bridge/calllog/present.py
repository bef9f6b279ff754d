"""How stored calls are shown outside: masked numbers, JSON-ready dicts, transcript text, CSV rows."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from bridge.calllog.schema import RECORDING_COLUMNS, TOTAL_COLUMNS
from bridge.log_records import RecordKind

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


# Stored for the queries alone.
_INTERNAL_COLUMNS = frozenset({*RECORDING_COLUMNS, "search_text"})
SNIPPET_CHARS = 120


def public_call(call: dict[str, Any], *, reveal: bool, searched: str | None = None) -> dict[str, Any]:
    """A store call dict as the API shows it (numbers masked unless `reveal`). `searched`: the search
    that found it; its `match` then holds a snippet of the text around what was found."""
    out = {k: v for k, v in call.items() if k not in _INTERNAL_COLUMNS}
    if not reveal:
        out["from_number"] = mask_number(call["from_number"])
        out["to_number"] = mask_number(call["to_number"])
        if "events" in call:
            out["events"] = [_masked_event(event) for event in call["events"]]
    out["numbers_masked"] = not reveal
    out["recording"] = public_recording(call)
    if (match := call.get("match")) is not None:
        out["match"] = public_match(match, searched or "", reveal=reveal)
    return out


def _masked_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as shown with numbers masked: an operator's transfer names the number it went to."""
    data = event["data"]
    if event["kind"] != RecordKind.OPERATOR_ACTION or not isinstance(data.get("number"), str):
        return event
    return {**event, "data": {**data, "number": mask_number(data["number"])}}


def public_match(match: dict[str, Any], searched: str, *, reveal: bool) -> dict[str, Any]:
    """Where a search found a call: the field, and the text to show (a snippet, a masked number)."""
    out = dict(match)
    if match["field"] in ("from_number", "to_number"):
        out["text"] = match["text"] if reveal else mask_number(match["text"])
    elif match["field"] in ("caller", "assistant", "summary"):
        out["text"] = snippet(match["text"], searched)
    return out


def snippet(text: str, searched: str, width: int = SNIPPET_CHARS) -> str:
    """`text` cut to about `width` characters around the first place `searched` occurs in it, with
    an ellipsis where it was cut, on word boundaries."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    found = _find_folded(text, " ".join(searched.split()))
    at, length = found if found is not None else (0, 0)
    start = max(0, min(at - (width - length) // 3, len(text) - width))
    end = min(len(text), start + width)
    if start > 0:
        space = text.find(" ", start, at if at > start else end)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", max(at + length, start), end)
        end = space if space != -1 else end
    return ("…" if start > 0 else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def _find_folded(text: str, needle: str) -> tuple[int, int] | None:
    """Where `needle` occurs in `text` ignoring case, as (start, length) in `text`."""
    if not needle:
        return None
    match = re.search(re.escape(needle), text, re.IGNORECASE)
    if match is not None:
        return match.start(), match.end() - match.start()
    folded = needle.casefold()  # "STRASSE" finds "Straße": casefold changes lengths, so walk
    for start in range(len(text)):
        for end in range(start + 1, min(len(text), start + len(folded) + 2) + 1):
            if text[start:end].casefold() == folded:
                return start, end - start
    return None


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
    """One line per turn, and per operator action: `[00:03.2] Caller: ...`, `[00:04.0] Assistant: ...
    [cut off; not heard: ...]`, `[00:05.1] Caller: (spoke 4.3 s, not transcribed)`,
    `[00:07.0] Operator alice, say: "Please hold."`."""
    lines = []
    started: datetime = call["started_at"]
    for event in call["events"]:
        line = _transcript_line(event["kind"], event["data"])
        if line:
            lines.append(f"[{clock((event['at'] - started).total_seconds())}] {line}")
    return "\n".join(lines) + ("\n" if lines else "")


_WORDLESS = {"off": "not transcribed", "failed": "the transcription failed", "empty": "no words made out"}


def _transcript_line(kind: str, data: dict[str, Any]) -> str:
    text = str(data.get("text") or "").strip()
    if kind == RecordKind.CALLER_TRANSCRIPT:
        return f"Caller: {text}" if text else ""
    if kind == RecordKind.ASSISTANT_TRANSCRIPT:
        if not data.get("interrupted"):
            return f"Assistant: {text}" if text else ""
        full = str(data.get("full_text") or "")
        rest = full[len(text) :].strip() if full.startswith(text) else ""
        unheard = f"; not heard: {rest}" if rest else ""
        return f"Assistant: {text + ' ' if text else ''}[cut off{unheard}]"
    if kind == RecordKind.CALLER_SPOKE:
        spoken = data.get("spoken_ms")
        how_long = f"spoke {spoken / 1000:.1f} s" if isinstance(spoken, int | float) else "spoke"
        return f"Caller: ({how_long}, {_WORDLESS.get(str(data.get('words')), 'no words')})"
    if kind == RecordKind.OPERATOR_ACTION:
        said = f' "{text}"' if text else ""
        to = f" to {data['number']}" if data.get("number") else ""
        why = f": {data['error']}" if data.get("error") else ""
        how = "" if data.get("outcome") == "done" else f" ({data.get('outcome')}{why})"
        return f"Operator {data.get('operator')}, {data.get('action')}:{said}{to}{how}".rstrip(":")
    return ""


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
    "upstream_api",
    "model",
    "voice",
    *TOTAL_COLUMNS,
    "disposition",
    "intent",
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
