"""Twilio Media Streams (bidirectional `<Connect><Stream>`) as a sans-IO codec.

`decode` turns one websocket text message into a plain carrier event (or None for messages we
deliberately ignore); `encode` turns a carrier command into the JSON text Twilio accepts. Neither
touches a socket. PROTOCOLS.md A3-A5 is the reference.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierCommand,
    CarrierEvent,
    CarrierProtocolError,
    ClearPlayback,
    Connected,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)

# One inbound frame is 20 ms (160 bytes); anything far beyond a second is not a phone frame.
MAX_INBOUND_PAYLOAD_BYTES = 16_000
DTMF_DIGITS = frozenset("0123456789*#ABCD")

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _as_int(value: Any) -> int | None:
    # Twilio sends sequenceNumber/chunk/timestamp as JSON strings holding integers (PROTOCOLS.md A3).
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # isdigit() also accepts '²' and digits int() refuses; past 18 digits no counter is real.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        raise CarrierProtocolError(f"{where}: '{name}' missing or not a {kind.__name__}")
    return value


class TwilioCodec:
    """State of one Twilio media stream's message framing: the stream sid and sequence numbers.

    SignalWire's `<Connect><Stream>` speaks the same dialect; `carrier` names which one this is.
    """

    play_chunk_ms = 1000  # Twilio takes any size; a second per message keeps messages small

    def __init__(self, carrier: str = "twilio") -> None:
        self.carrier = carrier
        self.stream_sid: str | None = None
        self.last_sequence: int | None = None
        self.sequence_gaps = 0

    def decode(self, text: str | bytes) -> CarrierEvent | None:
        if isinstance(text, bytes):
            raise CarrierProtocolError("binary frame on a JSON stream")
        try:
            message = _decoder.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise CarrierProtocolError("message is not JSON") from None
        if not isinstance(message, dict):
            raise CarrierProtocolError("message is not a JSON object")
        event = message.get("event")
        if not isinstance(event, str):
            raise CarrierProtocolError("message has no 'event'")
        self._track_sequence(message.get("sequenceNumber"))

        if event == "media":
            return self._media(message)
        if event == "mark":
            mark = _field(message, "mark", dict, "mark")
            return PlaybackMark(name=_field(mark, "name", str, "mark"))
        if event == "start":
            return self._start(message)
        if event == "connected":
            return Connected(
                protocol=str(message.get("protocol", "")), version=str(message.get("version", ""))
            )
        if event == "dtmf":
            dtmf = _field(message, "dtmf", dict, "dtmf")
            digit = _field(dtmf, "digit", str, "dtmf")
            if digit not in DTMF_DIGITS:
                raise CarrierProtocolError("dtmf: digit is not one of 0-9 * # A-D")
            return Dtmf(digit=digit)
        if event == "stop":
            return CallEnded(reason="caller_hangup")
        return None  # Unknown events are ignored, as Twilio asks (new ones may be added).

    def _track_sequence(self, raw: Any) -> None:
        number = _as_int(raw)
        if number is None:
            return
        if self.last_sequence is not None and number != self.last_sequence + 1:
            self.sequence_gaps += 1
        self.last_sequence = number

    def _start(self, message: dict[str, Any]) -> CallStarted:
        if self.stream_sid is not None:
            raise CarrierProtocolError("start: duplicate start on one stream")
        start = _field(message, "start", dict, "start")
        stream_sid = start.get("streamSid") or message.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise CarrierProtocolError("start: 'streamSid' missing")
        call_sid = _field(start, "callSid", str, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise CarrierProtocolError("start: 'customParameters' is not an object")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise CarrierProtocolError("start: 'mediaFormat' is not an object")
        encoding = fmt.get("encoding", "audio/x-mulaw")
        rate = _as_int(fmt.get("sampleRate", 8000))
        if encoding != "audio/x-mulaw" or rate != 8000:
            raise CarrierProtocolError(f"start: unsupported media format {encoding} at {rate} Hz")
        self.stream_sid = stream_sid
        return CallStarted(
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=str(start.get("accountSid", "")),
            custom_parameters={str(k): str(v) for k, v in params.items()},
        )

    def _media(self, message: dict[str, Any]) -> CallerAudio:
        if self.stream_sid is None:
            raise CarrierProtocolError("media: received before start")
        media = _field(message, "media", dict, "media")
        if media.get("track", "inbound") != "inbound":
            return CallerAudio(payload=b"")  # Only the caller's track is relayed upstream.
        payload = _field(media, "payload", str, "media")
        if len(payload) > MAX_INBOUND_PAYLOAD_BYTES * 4 // 3 + 4:
            raise CarrierProtocolError("media: payload larger than any phone frame")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise CarrierProtocolError("media: payload is not valid base64") from None
        return CallerAudio(payload=audio, timestamp_ms=_as_int(media.get("timestamp")))

    def encode(self, command: CarrierCommand) -> str | None:
        """JSON text for Twilio, or None for commands that are not messages (hang-up closes the socket)."""
        if self.stream_sid is None:
            raise CarrierProtocolError("cannot send to Twilio before the stream started")
        if isinstance(command, PlayAudio):
            message: dict[str, Any] = {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"payload": base64.b64encode(command.payload).decode("ascii")},
            }
        elif isinstance(command, Mark):
            message = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": command.name}}
        elif isinstance(command, ClearPlayback):
            message = {"event": "clear", "streamSid": self.stream_sid}
        elif isinstance(command, Hangup):
            return None
        else:  # pragma: no cover - exhaustive over CarrierCommand
            raise TypeError(f"not a carrier command: {command!r}")
        return _encoder.encode(message).decode("utf-8")
