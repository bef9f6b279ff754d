"""What a carrier supplies to place calls: a `Dialer`, and its callbacks read as `CallProgress`.

Carrier-neutral, no I/O: each carrier's folder implements `Dialer` with its REST API and maps its
status and answering-machine callbacks onto `CallProgress` in our words (`bridge.outbound` does the
rest: limits, the call log, the status events sent on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bridge.answer_detection import MachineDetection, Verdict

if TYPE_CHECKING:
    from bridge.carrier.webhook import WebhookSignature

PLACED_CALL_QUERY = "placed"  # the query parameter carrying a placed call's token on our URLs
PLACED_CALL_PARAMETER = "placed_call"  # the stream parameter naming the placed call (our call id)

# A placed call's progress in our words, in the order a call lives it (bridge.calllog.placed_calls).
QUEUED, RINGING, ANSWERED = "queued", "ringing", "answered"
COMPLETED, BUSY, NO_ANSWER, FAILED, CANCELED = "completed", "busy", "no_answer", "failed", "canceled"
# The end reason of a placed call that ended before its stream started, by its final status.
NEVER_CONNECTED = {
    COMPLETED: "caller_hangup",
    BUSY: "busy",
    NO_ANSWER: "no_answer",
    FAILED: "failed",
    CANCELED: "canceled",
}


@dataclass(frozen=True, slots=True)
class Placement:
    """One call to place, with the URLs the carrier is to reach us at (each carrying its token)."""

    call_id: str  # ours
    to: str
    from_: str
    answer_url: str  # fetched when the callee answers: our answer connecting the media stream
    status_url: str  # the carrier's status callbacks
    detection_url: str  # its answering-machine verdicts
    machine_detection: MachineDetection
    ring_timeout_s: int


@dataclass(frozen=True, slots=True)
class PlacedCallPaths:
    """Where a carrier's requests about a call we placed reach us (each URL carries the call's token)."""

    answer: str  # the carrier's call webhook, answered as any call is (bridge.carrier.answer_flow)
    status: str  # its status callbacks
    verdict: str  # its answering-machine verdicts


class CallNotPlaced(Exception):
    """The carrier refused the call or could not be reached; str() says why, in one line."""


@dataclass(frozen=True, slots=True)
class CallProgress:
    """One carrier callback about a placed call: a status, a verdict, or both."""

    carrier_status: str  # as the carrier said it (logged with the event)
    status: str | None = None  # ours (QUEUED ... CANCELED); None when the callback carries no status
    verdict: Verdict | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # what else is worth keeping (SIP code, ...)

    def event(self) -> dict[str, Any]:
        """The call_progress event recorded for it."""
        data: dict[str, Any] = {"carrier_status": self.carrier_status, **self.detail}
        if self.status is not None:
            data["status"] = self.status
        if self.verdict is not None:
            data["answered_by"] = self.verdict.answered_by.value
            if self.verdict.message_end:
                data["message_end"] = self.verdict.message_end
        return data


class Dialer(Protocol):
    """Places calls through one carrier account."""

    carrier: str  # the registry name
    signature: WebhookSignature  # how this account's callbacks are signed (always checked)

    async def place(self, placement: Placement) -> str:
        """Ask the carrier to place the call; returns its id of the call. CallNotPlaced if it did not."""
        ...

    async def close(self) -> None: ...
