"""Reading one carrier JSON message: the checks every JSON carrier dialect makes the same way.

Errors name what was wrong, never the payload (a log line must not carry a caller's audio or number).
"""

from __future__ import annotations

import base64
import binascii
import gc
from typing import Any

import msgspec

from bridge.carrier.events import CarrierProtocolError

_decoder = msgspec.json.Decoder()


def decode_json(data: str | bytes) -> Any:
    """JSON from a carrier (or anyone posing as one); anything else, too deep included, raises
    msgspec.DecodeError."""
    # A hostile message nests thousands deep and the decoder recurses as deep. A collection that
    # starts down there runs finalizers (an unclosed socket's, say) with no stack left, and they
    # fail unseen; so the collector waits until the decoder is back.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _decoder.decode(data)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise msgspec.DecodeError(type(exc).__name__) from None
    finally:
        if collecting:
            gc.enable()


def decode_event(data: str | bytes) -> tuple[str, dict[str, Any]]:
    """The message's `event` name and the message, from one websocket text frame."""
    if isinstance(data, bytes):
        raise CarrierProtocolError("binary frame on a JSON stream")
    try:
        message = decode_json(data)
    except msgspec.DecodeError:
        raise CarrierProtocolError("message is not JSON") from None
    if not isinstance(message, dict):
        raise CarrierProtocolError("message is not a JSON object")
    event = message.get("event")
    if not isinstance(event, str):
        raise CarrierProtocolError("message has no 'event'")
    return event, message


def as_int(value: Any) -> int | None:
    """A counter sent as a JSON number or as a string of digits (Twilio sends strings); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # isdigit() also accepts '²' and digits int() refuses; past 18 digits no counter is real.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise CarrierProtocolError(f"{where}: '{name}' missing or not a {kind.__name__}")
    return value


def media_payload(media: dict[str, Any], max_bytes: int) -> bytes:
    """The audio of a `media` object: base64 of at most `max_bytes` (anything bigger is no phone frame)."""
    payload = field(media, "payload", str, "media")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise CarrierProtocolError("media: payload larger than any phone frame")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise CarrierProtocolError("media: payload is not valid base64") from None


class SequenceGaps:
    """Breaks in a carrier's message counter: each one a message lost, or one out of order."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.gaps = 0

    def see(self, raw: Any) -> None:
        number = as_int(raw)
        if number is None:
            return
        if self.last is not None and number != self.last + 1:
            self.gaps += 1
        self.last = number
