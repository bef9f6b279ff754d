"""Plain events the Live codec produces from GPT-Live server messages (docs/protocols.md §L).

The Live API has no responses, items or turn events on its voice side: the model speaks a continuous
audio stream and the only markers of what it said are the transcript fragments, each placed on the
session timeline (milliseconds since the session started). Backend work arrives as Responses API events
wrapped in `response.event`; the codec unwraps the few the bridge acts on.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

ContextKind = Literal["instructions", "thinking", "commentary"]


class SessionStarted(msgspec.Struct, frozen=True):
    """`session.started`: the resolved configuration; audio and commands may flow from now on."""

    session_id: str
    model: str
    expires_at: int  # Unix seconds
    audio_format: dict[str, Any] | None  # e.g. {"type": "audio/pcmu", "rate": 8000}
    voice: str | None
    delegation: str  # "client" (also when omitted), "responses" or "decisions"
    session: dict[str, Any]


class SessionUpdated(msgspec.Struct, frozen=True):
    session: dict[str, Any]
    client_event_id: str | None


class OutputAudio(msgspec.Struct, frozen=True):
    """One `session.output_audio.delta`, raw audio in the session's format (silence included)."""

    audio: bytes


class InputTranscript(msgspec.Struct, frozen=True):
    """A fragment of what the caller said; fragments concatenate in delivery order, no turn boundaries."""

    text: str
    start_ms: int
    end_ms: int


class OutputTranscript(msgspec.Struct, frozen=True):
    """A fragment of what the model said (not necessarily heard yet: it is generation, not playback)."""

    text: str
    start_ms: int
    end_ms: int


class ContextAppended(msgspec.Struct, frozen=True):
    """`session.{instructions,thinking,commentary}.appended`: accepted into the timeline, nothing more."""

    kind: ContextKind
    client_event_id: str | None
    start_ms: int
    end_ms: int


class InputMuted(msgspec.Struct, frozen=True):
    """`session.input_audio.muted` (muted=True) or `.unmuted` (muted=False)."""

    muted: bool
    client_event_id: str | None


class DelegationCreated(msgspec.Struct, frozen=True):
    """The model handed work to a backend; metadata only, never the task text."""

    delegation_id: str
    target: str  # "client" | "responses" | "decisions"
    offset_ms: int
    response_id: str | None


class FunctionCall(msgspec.Struct, frozen=True):
    """A completed function call of the Responses backend, for the bridge to run and answer."""

    delegation_id: str | None
    call_id: str
    name: str
    arguments: str
    item_id: str | None


class BackendResponseCreated(msgspec.Struct, frozen=True):
    delegation_id: str | None
    response_id: str


class BackendText(msgspec.Struct, frozen=True):
    """Text the Responses backend finished writing (the voice model speaks it in its own words)."""

    delegation_id: str | None
    text: str


class BackendResponseDone(msgspec.Struct, frozen=True):
    """`response.completed`, `.failed` or `.incomplete` of the backend, with its token usage."""

    delegation_id: str | None
    response_id: str
    status: str  # completed | failed | incomplete
    usage: dict[str, Any] | None
    error: str | None


class UsageUpdated(msgspec.Struct, frozen=True):
    """Cumulative billable seconds so far (never sum these); context use when the service knows it."""

    seconds: float
    active_seconds: int | None
    paused_seconds: int | None
    context_usage_ratio: float | None


class SessionClosed(msgspec.Struct, frozen=True):
    """The terminal event: why the session ended and its final billable duration."""

    reason: str  # close_requested | expired | content | remote_hangup | connection_lost (or newer)
    seconds: float | None
    session: dict[str, Any]


class FixturePlaying(msgspec.Struct, frozen=True):
    client_event_id: str | None


class FixturePlayed(msgspec.Struct, frozen=True):
    client_event_id: str | None


class ServerError(msgspec.Struct, frozen=True):
    type: str
    code: str | None
    message: str
    param: str | None
    client_event_id: str | None


class Info(msgspec.Struct, frozen=True):
    code: str
    message: str


class Ignored(msgspec.Struct, frozen=True):
    """A valid server event the bridge has no use for (decisions, transport notices, other backend events)."""

    type: str


LiveEvent = (
    SessionStarted
    | SessionUpdated
    | OutputAudio
    | InputTranscript
    | OutputTranscript
    | ContextAppended
    | InputMuted
    | DelegationCreated
    | FunctionCall
    | BackendResponseCreated
    | BackendText
    | BackendResponseDone
    | UsageUpdated
    | SessionClosed
    | FixturePlaying
    | FixturePlayed
    | ServerError
    | Info
    | Ignored
)
