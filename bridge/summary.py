"""The post-call summary: what the model is asked once the caller has gone, and how its answer is read."""

from __future__ import annotations

import json
from dataclasses import dataclass

SUMMARY_METADATA = {"purpose": "post_call_summary"}


@dataclass(frozen=True, slots=True)
class CallSummary:
    summary: str
    disposition: str | None


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
    if intent:
        summary = f"{summary}\nCaller's intent: {intent}".strip()
    return CallSummary(summary[:2000], disposition if disposition in dispositions else None)
