"""The write operations the recorder queues and the store applies, one batch per writer cycle.

Every op is safe to apply twice (a batch is retried whole when the database fails mid-way, and a
commit whose acknowledgement was lost gets replayed): starts and events are keyed and inserted
"on conflict do nothing" (a start replaces only a never-connected record), totals are absolute
values, and an end only applies to a call in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class CallStartedOp:
    call_id: str
    call_sid: str
    stream_sid: str
    carrier: str
    from_number: str
    to_number: str
    direction: str
    model: str
    voice: str
    started_at: datetime
    metadata: dict[str, Any] | None
    upstream_api: str = "realtime"
    # The recording process (bridge.calllog.leases.ReplicaIdentity); None outside a server.
    owner_id: str | None = None
    owner_incarnation: str | None = None
    owner_url: str | None = None
    # A call we placed: its row exists since we placed it; the start names its stream and its owner.
    placed: bool = False


@dataclass(frozen=True, slots=True)
class EventOp:
    call_id: str
    seq: int  # 1, 2, 3... per call, in the order the recorder received them
    at: datetime
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallTotalsOp:
    """The call's running aggregates as they stand now; a later one for the same call supersedes it."""

    call_id: str
    input_text_tokens: int
    input_audio_tokens: int
    input_cached_tokens: int
    output_text_tokens: int
    output_audio_tokens: int
    cost_usd: float | None
    turn_latency_p50_ms: int | None
    turn_latency_max_ms: int | None
    barge_in_count: int
    error_count: int
    # Live calls (None / 0 for Realtime ones)
    live_session_id: str | None = None
    session_seconds: float | None = None
    backend_model: str | None = None
    backend_input_tokens: int = 0
    backend_cached_tokens: int = 0
    backend_output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CallEndedOp:
    call_id: str
    ended_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class UnconnectedCallOp:
    """A call whose webhook was answered but whose media stream never connected: recorded ended
    (NEVER_CONNECTED) unless the call is already recorded, and replaced if its stream starts after all."""

    call: CallStartedOp  # as it would have started: when its webhook was answered, by whom
    noticed_at: datetime  # when its stream was given up on

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(frozen=True, slots=True)
class CallSummaryOp:
    """The model's post-call summary; it arrives after the call ended."""

    call_id: str
    summary: str
    disposition: str | None
    intent: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingOp:
    """The call's recording as it stands now (bridge.recording); a later one for the call supersedes it."""

    call_id: str
    status: str  # recording | ready | failed
    started_at: datetime | None = None
    location: str | None = None
    formats: tuple[str, ...] = ()
    duration_s: float | None = None
    error: str | None = None


LogOp = CallStartedOp | EventOp | CallTotalsOp | CallEndedOp | CallSummaryOp | RecordingOp | UnconnectedCallOp
