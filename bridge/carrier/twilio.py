"""Twilio Media Streams (bidirectional `<Connect><Stream>`) as a sans-IO codec.

`decode` turns one websocket text message into a plain carrier event (or None for messages we
deliberately ignore); `encode` turns a carrier command into the JSON text Twilio accepts. Neither
touches a socket. PROTOCOLS.md A3-A5 is the reference.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.carrier.events import (
    DTMF_DIGITS,
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
from bridge.carrier.json_message import SequenceGaps, as_int, decode_event, field, media_payload

# One inbound frame is 20 ms (160 bytes); anything far beyond a second is not a phone frame.
MAX_INBOUND_PAYLOAD_BYTES = 16_000

_encoder = msgspec.json.Encoder()


class _Media(msgspec.Struct):
    payload: bytes  # msgspec decodes the base64 while parsing: no second pass over the text
    track: Any = "inbound"
    timestamp: Any = None


class _MediaMessage(msgspec.Struct):
    """The one message that arrives 50 times a second, read straight into its fields."""

    event: str
    media: _Media
    sequenceNumber: Any = None


_media_decoder = msgspec.json.Decoder(_MediaMessage)


class TwilioCodec:
    """State of one Twilio media stream's message framing: the stream sid and sequence numbers.

    SignalWire's `<Connect><Stream>` speaks the same dialect; `carrier` names which one this is.
    """

    play_chunk_ms = 1000  # Twilio takes any size; a second per message keeps messages small

    def __init__(self, carrier: str = "twilio") -> None:
        self.carrier = carrier
        self.stream_sid: str | None = None
        self._sequence = SequenceGaps()

    @property
    def sequence_gaps(self) -> int:
        return self._sequence.gaps

    def decode(self, text: str | bytes) -> CarrierEvent | None:
        if self.stream_sid is not None and isinstance(text, str) and '"media"' in text[:48]:
            audio = self._fast_media(text)
            if audio is not None:
                return audio
        event, message = decode_event(text)
        self._sequence.see(message.get("sequenceNumber"))

        if event == "media":
            return self._media(message)
        if event == "mark":
            mark = field(message, "mark", dict, "mark")
            return PlaybackMark(name=field(mark, "name", str, "mark"))
        if event == "start":
            return self._start(message)
        if event == "connected":
            return Connected(
                protocol=str(message.get("protocol", "")), version=str(message.get("version", ""))
            )
        if event == "dtmf":
            dtmf = field(message, "dtmf", dict, "dtmf")
            digit = field(dtmf, "digit", str, "dtmf")
            if digit not in DTMF_DIGITS:
                raise CarrierProtocolError("dtmf: digit is not one of 0-9 * # A-D")
            return Dtmf(digit=digit)
        if event == "stop":
            return CallEnded(reason="caller_hangup")
        return None  # Unknown events are ignored, as Twilio asks (new ones may be added).

    def _fast_media(self, text: str) -> CallerAudio | None:
        """A well-formed caller `media` message read by type; None sends anything else (bad input
        included) down the general path, so results and errors are the same either way."""
        try:
            message = _media_decoder.decode(text)
        except msgspec.DecodeError:  # also a wrong type or bad base64 (ValidationError)
            return None
        media = message.media
        if message.event != "media" or len(media.payload) > MAX_INBOUND_PAYLOAD_BYTES:
            return None
        self._sequence.see(message.sequenceNumber)
        if media.track != "inbound":
            return CallerAudio(payload=b"")
        return CallerAudio(payload=media.payload, timestamp_ms=as_int(media.timestamp))

    def _start(self, message: dict[str, Any]) -> CallStarted:
        if self.stream_sid is not None:
            raise CarrierProtocolError("start: duplicate start on one stream")
        start = field(message, "start", dict, "start")
        stream_sid = start.get("streamSid") or message.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise CarrierProtocolError("start: 'streamSid' missing")
        call_sid = field(start, "callSid", str, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise CarrierProtocolError("start: 'customParameters' is not an object")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise CarrierProtocolError("start: 'mediaFormat' is not an object")
        encoding = fmt.get("encoding", "audio/x-mulaw")
        rate = as_int(fmt.get("sampleRate", 8000))
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
        media = field(message, "media", dict, "media")
        if media.get("track", "inbound") != "inbound":
            return CallerAudio(payload=b"")  # Only the caller's track is relayed upstream.
        audio = media_payload(media, MAX_INBOUND_PAYLOAD_BYTES)
        return CallerAudio(payload=audio, timestamp_ms=as_int(media.get("timestamp")))

    def encode(self, command: CarrierCommand) -> str | None:
        """JSON text for Twilio, or None for commands that are not messages (hang-up closes the socket)."""
        if self.stream_sid is None:
            raise CarrierProtocolError("cannot send to Twilio before the stream started")
        if isinstance(command, PlayAudio):
            # msgspec writes bytes as standard base64 (with padding) straight into the message.
            message: dict[str, Any] = {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"payload": command.payload},
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
