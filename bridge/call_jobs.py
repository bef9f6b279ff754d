"""Work a `Call` asks the pump to do beside the call, off the audio path, and report back on.

The call decides; the pump only runs these and hands the outcome back (`Call.tool_result`,
`Call.turn_reviewed`, `Call.transfer_finished`, `Call.answered`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.answer_detection import Verdict


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """The model asked for one of the configured webhook tools."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class TurnReview:
    """RESPONSE_MODE=manual: the caller finished a turn; the hook sees it before we answer."""

    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """Have the carrier connect the caller to `number` (allowed, and the model's preamble was heard)."""

    request: ToolRequest
    number: str


@dataclass(frozen=True, slots=True)
class AwaitVerdict:
    """A call we placed waits for the carrier to say who answered (`Call.answered`), wherever its
    word arrives (it may reach another replica first); after `seen`, for the next word (a machine's
    message end)."""

    seen: Verdict | None = None


CallJob = ToolRequest | TurnReview | TransferRequest | AwaitVerdict
