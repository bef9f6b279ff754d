"""Twilio Media Streams (bidirectional `<Connect><Stream>`) as a sans-IO codec.

`decode` turns one websocket text message into a plain carrier event (or None for messages we
deliberately ignore); `encode` turns a carrier command into the JSON text Twilio accepts. Neither
touches a socket. docs/protocols.md §T3, §T4, §T5 is the reference.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierEvent,
    CarrierProtocolError,
    Connected,
    PlaybackMark,
)
from bridge.carrier.json_message import (
    JsonCommands,
    SequenceGaps,
    as_int,
    decode_event,
    dtmf,
    field,
    mark_echo,
    media_payload,
    start_parts,
)

# One inbound frame is 20 ms (160 bytes); anything far beyond a second is not a phone frame.
MAX_INBOUND_PAYLOAD_BYTES = 16_000

_encoder = msgspec.json.Encoder()


# Scalars only: a nested value is refused where it starts instead of being built (the general path,
# which guards against deep nesting, then decides), and every other shape goes that way too.
class _Media(msgspec.Struct):
    payload: bytes  # msgspec decodes the base64 while parsing: no second pass over the text
    track: str = "inbound"


class _MediaMessage(msgspec.Struct):
    """The one message that arrives 50 times a second, read straight into its fields."""

    event: str
    media: _Media
    sequenceNumber: str | int | None = None


_media_decoder = msgspec.json.Decoder(_MediaMessage)


class _Mark(msgspec.Struct):
    name: str


class _MarkMessage(msgspec.Struct):
    """A mark echo: one for every 100 ms of the model's audio, read straight into its fields too."""

    event: str
    mark: _Mark
    sequenceNumber: str | int | None = None


_mark_decoder = msgspec.json.Decoder(_MarkMessage)


class TwilioCodec(JsonCommands):
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
        if isinstance(text, str):
            head = text[:48]
            if self.stream_sid is not None and '"media"' in head:
                audio = self._fast_media(text)
                if audio is not None:
                    return audio
            elif '"mark"' in head and (echo := self._fast_mark(text)) is not None:
                return echo
        event, message = decode_event(text)
        self._sequence.see(message.get("sequenceNumber"))

        if event == "media":
            return self._media(message)
        if event == "mark":
            return mark_echo(message)
        if event == "start":
            return self._start(message)
        if event == "connected":
            return Connected(
                protocol=str(message.get("protocol", "")), version=str(message.get("version", ""))
            )
        if event == "dtmf":
            return dtmf(message)
        if event == "stop":
            return CallEnded(reason="caller_hangup")
        return None  # Unknown events are ignored, as Twilio asks (new ones may be added).

    def _fast_media(self, text: str) -> CallerAudio | None:
        """A well-formed caller `media` message read by type; None sends anything else (bad input
        included) down the general path, so results and errors are the same either way."""
        try:
            message = _media_decoder.decode(text)
        # DecodeError is also a wrong type or bad base64 (ValidationError); RecursionError is a value
        # nested past msgspec's depth limit, which the general path refuses as "not JSON".
        except (msgspec.DecodeError, RecursionError):
            return None
        media = message.media
        if message.event != "media" or len(media.payload) > MAX_INBOUND_PAYLOAD_BYTES:
            return None
        self._sequence.see(message.sequenceNumber)
        if media.track != "inbound":
            return CallerAudio(payload=b"")
        return CallerAudio(media.payload)

    def _fast_mark(self, text: str) -> PlaybackMark | None:
        """A well-formed mark echo read by type; None sends anything else down the general path."""
        try:
            message = _mark_decoder.decode(text)
        except (msgspec.DecodeError, RecursionError):
            return None
        if message.event != "mark":
            return None
        self._sequence.see(message.sequenceNumber)
        return PlaybackMark(name=message.mark.name)

    def _start(self, message: dict[str, Any]) -> CallStarted:
        if self.stream_sid is not None:
            raise CarrierProtocolError("start: duplicate start on one stream")
        start, stream_sid, fmt = start_parts(message, "streamSid", "mediaFormat")
        call_sid = field(start, "callSid", str, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise CarrierProtocolError("start: 'customParameters' is not an object")
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
        # Twilio's `timestamp` is not read: the bridge stamps each frame with its own clock on arrival.
        return CallerAudio(payload=media_payload(media, MAX_INBOUND_PAYLOAD_BYTES))

    @property
    def stream_started(self) -> bool:
        return self.stream_sid is not None

    def play_audio_message(self, audio: bytes) -> dict[str, Any]:
        return {"event": "media", "streamSid": self.stream_sid, "media": {"payload": audio}}

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}

    def clear_message(self) -> dict[str, Any]:
        return {"event": "clear", "streamSid": self.stream_sid}
