"""Tools the bridge itself provides (ending and transferring the call), and a tool's failure as the
model reads it."""

from __future__ import annotations

import json
from typing import Any

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


def failure(message: str) -> str:
    """A tool error as the model reads it: it can tell the caller what went wrong."""
    return json.dumps({"error": message})


def end_call_definition() -> dict[str, Any]:
    return {
        "type": "function",
        "name": END_CALL,
        "description": (
            "End the phone call when the caller says goodbye, asks to hang up, or the conversation is "
            "over. You will then say one short goodbye, and the line closes once the caller heard it."
        ),
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
    }


def transfer_call_definition(numbers: tuple[str, ...]) -> dict[str, Any]:
    others = f" Allowed numbers: {', '.join(numbers)}." if len(numbers) > 1 else ""
    return {
        "type": "function",
        "name": TRANSFER_CALL,
        "description": (
            "Transfer the caller to a human. First tell the caller you are transferring them, then call "
            "this. Give a number only if the caller asked for a specific one." + others
        ),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}, "number": {"type": "string"}},
        },
    }
