"""Plain events the Realtime codec produces from server messages, whatever the dialect."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionReady:
    """session.created or session.updated."""

    updated: bool
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """An item is in the conversation (GA conversation.item.added / beta conversation.item.created)."""

    item_id: str
    item_type: str
    role: str | None
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str
    conversation: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str
    role: str | None


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class OutputTranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class OutputTranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class OutputTextDone:
    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str
    reason: str | None
    usage: dict[str, Any] | None
    output: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    conversation: str | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ServerError:
    type: str
    code: str | None
    message: str
    client_event_id: str | None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid server event the bridge has no use for (rate_limits.updated, content_part.*, ...)."""

    type: str


RealtimeEvent = (
    SessionReady
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | ItemAdded
    | ResponseCreated
    | OutputItemAdded
    | AudioDelta
    | AudioDone
    | OutputTranscriptDelta
    | OutputTranscriptDone
    | OutputTextDone
    | InputTranscript
    | InputTranscriptFailed
    | FunctionCall
    | ResponseDone
    | ItemTruncated
    | ServerError
    | Ignored
)
