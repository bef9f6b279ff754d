"""Plain events the Realtime codec produces from server messages, whatever the dialect."""

from __future__ import annotations

from typing import Any

import msgspec


class SessionReady(msgspec.Struct, frozen=True):
    """session.created or session.updated."""

    updated: bool
    session: dict[str, Any]


class SpeechStarted(msgspec.Struct, frozen=True):
    item_id: str
    audio_start_ms: int


class SpeechStopped(msgspec.Struct, frozen=True):
    item_id: str
    audio_end_ms: int


class InputCommitted(msgspec.Struct, frozen=True):
    item_id: str
    previous_item_id: str | None


class ItemAdded(msgspec.Struct, frozen=True):
    """An item is in the conversation (GA conversation.item.added / beta conversation.item.created)."""

    item_id: str
    item_type: str
    role: str | None
    previous_item_id: str | None


class ResponseCreated(msgspec.Struct, frozen=True):
    response_id: str
    conversation: str | None = None
    metadata: dict[str, Any] | None = None


class OutputItemAdded(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str
    item_type: str
    role: str | None


class AudioDelta(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str
    content_index: int
    audio: bytes


class AudioDone(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str


class OutputTranscriptDelta(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str
    delta: str


class OutputTranscriptDone(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str
    transcript: str


class OutputTextDone(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str
    text: str


class InputTranscript(msgspec.Struct, frozen=True):
    item_id: str
    transcript: str


class InputTranscriptFailed(msgspec.Struct, frozen=True):
    item_id: str
    message: str


class FunctionCall(msgspec.Struct, frozen=True):
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


class ResponseDone(msgspec.Struct, frozen=True):
    response_id: str
    status: str
    reason: str | None
    usage: dict[str, Any] | None
    output: list[dict[str, Any]] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] | None = None
    conversation: str | None = None


class ItemTruncated(msgspec.Struct, frozen=True):
    item_id: str
    content_index: int
    audio_end_ms: int


class ServerError(msgspec.Struct, frozen=True):
    type: str
    code: str | None
    message: str
    client_event_id: str | None


class Ignored(msgspec.Struct, frozen=True):
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
