"""Vonage Voice API websockets (NCCO `connect` to a `websocket` endpoint) as a sans-IO codec.

The wire (docs/protocols.md §V1, §V2, §V3, with their sources):

* Vonage opens the socket to the NCCO's `uri`. Its first message is text,
  `{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}`, with every key of
  the NCCO endpoint's `headers` object copied to the top level (not under "headers"). Our answer URL
  puts the call id, from, to and a one-time stream token there (`bridge.carrier.vonage.ncco`).
* Audio is raw PCM16 little-endian (L16) in **binary** frames, 20 ms each both ways: 640 bytes at
  16 kHz, 320 at 8 kHz. Everything else is JSON text: `websocket:dtmf` (`digit`, `duration`),
  `websocket:notify`, `websocket:cleared`. We send `{"action": "notify", "payload": {...}}` and
  `{"action": "clear"}`. Hanging up is closing the socket: Vonage then ends the websocket leg.
* Vonage plays what we send from a buffer, in order, in real time; it may be written faster than
  real time up to the buffer's size (1024 frames, about 20 s, in the guide; about 3072 observed).
  The bridge writes the model's audio as it arrives, unpaced, so a single reply far longer than
  20 s, generated much faster than real time, could overflow it.

How "what was played" is known: a `notify` queued behind audio comes back as `websocket:notify`
with our payload once the audio before it has played, as Twilio echoes a `mark`. The name of our
mark travels in the payload (`{"name": "a12"}`) and comes back as `PlaybackMark`, so the `Call`'s
playback ledger (probes to measure the round trip, a mark every 100 ms, barge-in settlement) works
unchanged. `clear` drops the buffer and is acknowledged with `websocket:cleared`; the ledger settles
at the moment it sends the clear, so the acknowledgement is informational.

Unverified (no public statement found; the most plausible reading is used):
* that a `notify` sent while nothing is buffered is echoed at once (the ledger's round-trip probes
  rely on it; if Vonage instead held it, probes would only be slow, never wrong);
* what becomes of notifies still queued at a `clear`: we assume they are dropped with the audio. The
  ledger treats any late echo of a cleared mark as "discarded", so either behaviour is safe;
* that the nested `{"dtmf": {"digit": ...}}` form some clients also accept ever occurs (accepted);
* `audio/l16;rate=24000`: mentioned by some sources, not by the guide; not requested, and refused.

Outbound frames must be exactly 20 ms. The `Call` cuts the model's audio into 20 ms frames except
the last piece of an item, which is padded here with silence to a whole frame. That is harmless
for barge-in accounting: the ledger counts only the unpadded bytes, so padding is never counted as
speech the caller heard, and an item's heard time is clamped to what was sent of it; the padding
only shifts the next item's audio later by under 20 ms, until the notify the `Call` sends right
after an item's last piece is echoed and re-anchors the ledger's clock.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.audio import L16_8K, L16_16K, AudioFormat
from bridge.carrier.events import (
    CallerAudio,
    CallStarted,
    CarrierCommand,
    CarrierEvent,
    CarrierProtocolError,
    ClearPlayback,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.json_message import decode_event, dtmf_digit

FRAME_MS = 20
LINE_FORMATS = {8000: L16_8K, 16000: L16_16K}  # what the guide documents for `audio/l16;rate=…`
# Vonage sends 20 ms frames; anything beyond a second of audio in one message is not a phone frame.
MAX_FRAME_MS = 1000
# The NCCO `headers` keys our answer URL writes (bridge.carrier.vonage.ncco).
CALL_ID_HEADER = "call_id"
MAX_HEADER_VALUE = 512  # Vonage caps the whole `headers` object at 512 bytes

_encoder = msgspec.json.Encoder()


def line_format(content_type: str) -> AudioFormat:
    """The line format a `content-type` such as `audio/l16;rate=16000` names; CarrierProtocolError if
    it is not L16 at 8 or 16 kHz."""
    media_type, *params = (part.strip() for part in content_type.split(";"))
    rate: int | None = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "rate" and value.strip().isascii() and value.strip().isdigit():
            rate = int(value.strip()[:9])
    fmt = LINE_FORMATS.get(rate) if media_type.lower() == "audio/l16" and rate is not None else None
    if fmt is None:
        raise CarrierProtocolError(f"websocket:connected: unsupported content-type {content_type[:60]!r}")
    return fmt


class VonageCodec:
    """One Vonage websocket: the line format from `websocket:connected`, then audio and events."""

    carrier = "vonage"
    play_chunk_ms = FRAME_MS  # one binary message is exactly one 20 ms frame, so at most that much
    sequence_gaps = 0  # binary frames carry no sequence numbers

    def __init__(self) -> None:
        self.started: CallStarted | None = None

    @property
    def line(self) -> AudioFormat:
        if self.started is None:
            raise CarrierProtocolError("audio before websocket:connected")
        return self.started.line

    def decode(self, data: str | bytes) -> CarrierEvent | None:
        if isinstance(data, bytes | bytearray | memoryview):
            return self._audio(bytes(data))
        event, message = decode_event(data)
        if event == "websocket:connected":
            return self._connected(message)
        if self.started is None:
            raise CarrierProtocolError(f"{event[:40]}: received before websocket:connected")
        if event == "websocket:notify":
            payload = message.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str) or not name:
                raise CarrierProtocolError("websocket:notify: payload has no 'name'")
            return PlaybackMark(name=name)
        if event == "websocket:dtmf":
            return Dtmf(digit=self._digit(message))
        # websocket:cleared acknowledges a clear the ledger settled when it was sent; anything else
        # is new to us, and Vonage may add events: both are ignored.
        return None

    def _connected(self, message: dict[str, Any]) -> CallStarted:
        if self.started is not None:
            raise CarrierProtocolError("websocket:connected: duplicate on one socket")
        content_type = message.get("content-type")
        if not isinstance(content_type, str):
            raise CarrierProtocolError("websocket:connected: 'content-type' missing")
        line = line_format(content_type)
        headers: dict[str, str] = {}
        for name, value in message.items():
            if name in ("event", "content-type"):
                continue
            # Our own headers are strings; other scalars are kept as text, nested objects skipped.
            if isinstance(value, str | int | float | bool) and len(str(value)) <= MAX_HEADER_VALUE:
                headers[str(name)] = str(value)
        call_id = headers.pop(CALL_ID_HEADER, "")
        if not call_id:
            raise CarrierProtocolError("websocket:connected: no 'call_id' header (not our NCCO)")
        # One socket per call leg: the call id names the stream too.
        self.started = CallStarted(stream_sid=call_id, call_sid=call_id, custom_parameters=headers, line=line)
        return self.started

    def _audio(self, frame: bytes) -> CallerAudio:
        line = self.line
        if not frame:
            raise CarrierProtocolError("binary frame is empty")
        if len(frame) % line.bytes_per_sample:
            raise CarrierProtocolError("binary frame holds a partial PCM16 sample")
        if len(frame) > line.frame_bytes(MAX_FRAME_MS):
            raise CarrierProtocolError("binary frame larger than any phone frame")
        return CallerAudio(payload=frame)

    @staticmethod
    def _digit(message: dict[str, Any]) -> str:
        digit = message.get("digit")
        nested = message.get("dtmf")
        if digit is None and isinstance(nested, dict):
            digit = nested.get("digit")
        if isinstance(digit, int) and not isinstance(digit, bool):
            digit = str(digit)
        return dtmf_digit(digit, "websocket:dtmf")

    def encode(self, command: CarrierCommand) -> str | bytes | None:
        """A binary frame or JSON text for Vonage, or None for a hang-up (closing the socket is it)."""
        if isinstance(command, PlayAudio):
            return self._frame(command.payload)
        if isinstance(command, Hangup):
            return None
        if self.started is None:
            raise CarrierProtocolError("cannot send to Vonage before websocket:connected")
        if isinstance(command, Mark):
            message: dict[str, Any] = {"action": "notify", "payload": {"name": command.name}}
        elif isinstance(command, ClearPlayback):
            message = {"action": "clear"}
        else:  # pragma: no cover - exhaustive over CarrierCommand
            raise TypeError(f"not a carrier command: {command!r}")
        return _encoder.encode(message).decode("utf-8")

    def _frame(self, audio: bytes) -> bytes:
        line = self.line
        size = line.frame_bytes(FRAME_MS)
        if len(audio) % line.bytes_per_sample:
            raise ValueError(f"PlayAudio holds a partial PCM16 sample ({len(audio)} bytes)")
        if len(audio) > size:
            # The Call sends 20 ms frames and apologise() pieces of play_chunk_ms: never more.
            raise ValueError(f"PlayAudio of {len(audio)} bytes exceeds one {FRAME_MS} ms frame ({size})")
        return audio + line.silence(size - len(audio))
