"""Client events as the upstream codecs send them: JSON encoded once, numbered event ids, audio appends."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_APPEND_FRAME = len('{"type":"","audio":"')  # the JSON around an append's type, before its base64


class EncodedEvent(dict[str, Any]):
    """A client event built together with its JSON (`wire`), which the codec's `encode` returns as is.

    Still the plain dict of the event for anyone reading it; only the audio append uses it, to skip a
    second pass over 1.3 KB of base64 per frame."""

    __slots__ = ("wire",)

    def __init__(self, wire: bytes, **event: Any) -> None:
        super().__init__(event)
        self.wire = wire


def audio_append(event_type: str, audio: bytes) -> EncodedEvent:
    """`{"type": event_type, "audio": <base64>}`. msgspec writes the bytes as standard base64 straight into
    the JSON; the dict's copy is for readers only. No event_id: sent 50 times a second per call, and the
    services never acknowledge an append."""
    wire = _encoder.encode({"type": event_type, "audio": audio})
    return EncodedEvent(wire, type=event_type, audio=wire[_APPEND_FRAME + len(event_type) : -2].decode())


class ClientEventEncoder:
    """The sending half every upstream codec shares: JSON out, and event ids the service's errors echo."""

    def __init__(self) -> None:
        self._next_event = 0

    def encode(self, event: dict[str, Any]) -> bytes:
        if type(event) is EncodedEvent:
            return event.wire
        return _encoder.encode(event)

    def _event_id(self) -> str:
        self._next_event += 1
        return f"bridge_{self._next_event}"
