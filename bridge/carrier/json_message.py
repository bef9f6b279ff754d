"""Reading one carrier JSON message: the checks every JSON carrier dialect makes the same way.

Errors name what was wrong, never the payload (a log line must not carry a caller's audio or number).
"""

from __future__ import annotations

import base64
import binascii
import gc
from abc import ABC, abstractmethod
from typing import Any

import msgspec

from bridge.carrier.events import (
    DTMF_DIGITS,
    CarrierCommand,
    CarrierProtocolError,
    ClearPlayback,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


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
    # isdigit() also accepts '²' and digits int() refuses; past 18 digits no counter is real. Twilio's
    # digit strings are tested first: a media frame's counter is read 50 times a second per call.
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return None


def field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise CarrierProtocolError(f"{where}: '{name}' missing or not a {kind.__name__}")
    return value


def start_parts(
    message: dict[str, Any], stream_id_name: str, format_name: str
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A `start` message's `start` object, the stream's id (named `stream_id_name`, beside `start` or
    in it) and its media format object (named `format_name`; empty when absent)."""
    start = field(message, "start", dict, "start")
    stream_id = message.get(stream_id_name) or start.get(stream_id_name)
    if not isinstance(stream_id, str) or not stream_id:
        raise CarrierProtocolError(f"start: '{stream_id_name}' missing")
    media_format = start.get(format_name) or {}
    if not isinstance(media_format, dict):
        raise CarrierProtocolError(f"start: '{format_name}' is not an object")
    return start, stream_id, media_format


def dtmf_digit(digit: object, where: str) -> str:
    """`digit` if it is one of the sixteen DTMF keys."""
    if not isinstance(digit, str) or digit not in DTMF_DIGITS:
        raise CarrierProtocolError(f"{where}: digit is not one of 0-9 * # A-D")
    return digit


def dtmf(message: dict[str, Any]) -> Dtmf:
    """A `dtmf` message's key, `dtmf.digit` (Twilio, Telnyx and Plivo spell it alike)."""
    return Dtmf(dtmf_digit(field(field(message, "dtmf", dict, "dtmf"), "digit", str, "dtmf"), "dtmf"))


def mark_echo(message: dict[str, Any]) -> PlaybackMark:
    """A `mark` message's `mark.name` (Twilio and Telnyx spell it alike)."""
    return PlaybackMark(name=field(field(message, "mark", dict, "mark"), "name", str, "mark"))


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


class JsonCommands(ABC):
    """Carrier commands written as one JSON dialect's messages, once its stream has started: a codec
    supplies the dialect's message for each command, and `encode` is the same for all."""

    carrier: str

    @property
    @abstractmethod
    def stream_started(self) -> bool: ...

    @abstractmethod
    def play_audio_message(self, audio: bytes) -> dict[str, Any]: ...

    @abstractmethod
    def mark_message(self, name: str) -> dict[str, Any]: ...

    @abstractmethod
    def clear_message(self) -> dict[str, Any]: ...

    def encode(self, command: CarrierCommand) -> str | None:
        """JSON text for the carrier, or None for commands that are not messages (for a media stream,
        closing the socket is the hang-up). msgspec writes audio bytes as standard base64 (with
        padding) straight into the message."""
        if not self.stream_started:
            raise CarrierProtocolError(f"cannot send to {self.carrier} before the stream started")
        if isinstance(command, PlayAudio):
            message = self.play_audio_message(command.payload)
        elif isinstance(command, Mark):
            message = self.mark_message(command.name)
        elif isinstance(command, ClearPlayback):
            message = self.clear_message()
        elif isinstance(command, Hangup):
            return None
        else:  # pragma: no cover - exhaustive over CarrierCommand
            raise TypeError(f"not a carrier command: {command!r}")
        return _encoder.encode(message).decode("utf-8")
