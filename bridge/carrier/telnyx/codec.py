"""Telnyx Media Streaming (bidirectional RTP mode) as a sans-IO codec.

The wire (Telnyx "Stream call media over WebSocket", docs/protocols.md §TX2): JSON text frames, snake_case.
In: `connected`; `start` with `stream_id` and `start.{call_control_id, from, to, custom_parameters,
media_format{encoding, sample_rate, channels}}`; `media` with `media.{track, chunk, timestamp,
payload}` (base64 RTP payload, no header) and a top-level `sequence_number`; `dtmf` (`dtmf.digit`);
`mark` (`mark.name`); `error` (`payload.{code, title, detail}`); `stop`. Out: `media`
(`media.payload`, 20 ms to 30 s of audio), `mark`, `clear`; one stream per socket, so no stream id.

Telnyx says frame order is not guaranteed. Inbound frames are put back in `chunk` order through a
small window: a frame that arrives early is held until the ones before it came (or until the window
is full: then the missing frame is counted in `sequence_gaps` and skipped), and a frame arriving after
its place was skipped is dropped and counted in `late_frames`. In-order frames pass with no delay.

What was played: the bridge sends a `mark` after its audio and Telnyx echoes it once that audio has
played (at once when nothing is playing), and a `clear` sends the pending marks back at once; Telnyx
documents both (docs/protocols.md §TX3). That is the ledger's input, exactly as with Twilio.

`error` frames are valid messages that report a problem (e.g. 100003 malformed_frame, 100004
invalid_media, 100005 rate_limit_reached): they decode to None and are logged and counted, never
raised as CarrierProtocolError, which would count the carrier's own report as junk from a hostile
peer and, after enough of them, end a call that is still working.

Unverified details: `custom_parameters` in `start` (TeXML `<Parameter>`s; an object, or a list of
`{name, value}`, both accepted); L16 payloads are big-endian (RTP's L16, RFC 3551) and are swapped to
the bridge's little-endian PCM16.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.audio import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, swap_pcm16_byte_order
from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierEvent,
    CarrierProtocolError,
    Connected,
)
from bridge.carrier.json_message import (
    JsonCommands,
    as_int,
    decode_event,
    dtmf,
    field,
    mark_echo,
    media_payload,
    start_parts,
)
from bridge.logs import get_logger

log = get_logger("bridge.telnyx")

# The line formats Telnyx can be asked for (`codec`/`bidirectionalCodec`, sampling rate) that the
# bridge can play; G722, OPUS and AMR-WB cannot be decoded here and are refused at `start`.
LINE_FORMATS: dict[tuple[str, int], AudioFormat] = {
    ("PCMU", 8000): PCMU_8K,
    ("PCMA", 8000): PCMA_8K,
    ("L16", 16000): L16_16K,
}
# One inbound frame is 20 ms (160 bytes of µ-law, 640 of L16 at 16 kHz): far more is not a phone frame.
MAX_INBOUND_PAYLOAD_BYTES = 16_000
REORDER_WINDOW = 3  # frames held waiting for a missing one: at most 60 ms of added delay, only then

_encoder = msgspec.json.Encoder()


def _custom_parameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items() if v is not None}
    if isinstance(raw, list):
        params: dict[str, str] = {}
        for entry in raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise CarrierProtocolError("start: 'custom_parameters' entry has no 'name'")
            params[entry["name"]] = str(entry.get("value", ""))
        return params
    raise CarrierProtocolError("start: 'custom_parameters' is neither an object nor a list")


class TelnyxCodec(JsonCommands):
    """State of one Telnyx media stream: its stream id, line format and the inbound reorder window."""

    carrier = "telnyx"
    play_chunk_ms = 1000  # Telnyx takes 20 ms to 30 s per media message

    def __init__(self, reorder_window: int = REORDER_WINDOW) -> None:
        self.reorder_window = reorder_window
        self.stream_id: str | None = None
        self.line: AudioFormat | None = None
        self.sequence_gaps = 0  # frames never received (skipped once the window was full)
        self.late_frames = 0  # frames that came after their place was skipped, or twice
        self.reordered_frames = 0  # frames that arrived early and were held for the ones before them
        self.carrier_errors = 0
        self.last_error = ""
        self._next_chunk: int | None = None
        self._held: dict[int, bytes] = {}

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, text: str | bytes) -> CarrierEvent | None:
        event, message = decode_event(text)

        if event == "media":
            return self._media(message)
        if event == "mark":
            return mark_echo(message)
        if event == "start":
            return self._start(message)
        if event == "connected":
            return Connected(protocol="telnyx", version=str(message.get("version", "")))
        if event == "dtmf":
            return dtmf(message)
        if event == "stop":
            self._held.clear()  # the call is over: held frames will never be heard upstream
            return CallEnded(reason="caller_hangup")
        if event == "error":
            self._carrier_error(message)
            return None
        return None  # Unknown events are ignored: new ones may be added.

    def _start(self, message: dict[str, Any]) -> CallStarted:
        if self.stream_id is not None:
            raise CarrierProtocolError("start: duplicate start on one stream")
        start, stream_id, fmt = start_parts(message, "stream_id", "media_format")
        call_control_id = field(start, "call_control_id", str, "start")
        encoding = str(fmt.get("encoding", "PCMU")).upper()
        rate = as_int(fmt.get("sample_rate", 8000))
        channels = as_int(fmt.get("channels", 1))
        line = LINE_FORMATS.get((encoding, rate or 0))
        if line is None or channels != 1:
            raise CarrierProtocolError(
                f"start: unsupported media format {encoding[:16]} at {rate} Hz, {channels} channel(s)"
            )
        params = _custom_parameters(start.get("custom_parameters"))
        for name in ("from", "to"):
            if isinstance(start.get(name), str) and start[name]:
                params[name] = start[name]
        params.setdefault("direction", "inbound")
        params["call_control_id"] = call_control_id  # what Call Control commands (transfer) address
        self.stream_id, self.line = stream_id, line
        return CallStarted(
            stream_sid=stream_id,
            # The webhook's CallSid, which the stream token and the pre-opened session are bound to;
            # TeXML's CallSid is believed to be the call_control_id (unverified), so either way it holds.
            call_sid=params.get("call_sid") or call_control_id,
            account_sid=str(start.get("user_id", "")),
            custom_parameters=params,
            line=line,
        )

    def _media(self, message: dict[str, Any]) -> CallerAudio | None:
        if self.stream_id is None or self.line is None:
            raise CarrierProtocolError("media: received before start")
        media = field(message, "media", dict, "media")
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return None  # Only the caller's track is relayed upstream.
        audio = media_payload(media, MAX_INBOUND_PAYLOAD_BYTES)
        if self.line.encoding == "l16":
            if len(audio) % 2:
                raise CarrierProtocolError("media: L16 payload has an odd number of bytes")
            audio = swap_pcm16_byte_order(audio)
        chunk = as_int(media.get("chunk"))
        if chunk is None:
            chunk = as_int(message.get("sequence_number"))
        in_order = self._reorder(chunk, audio)
        if not in_order:
            return None
        return CallerAudio(payload=in_order, timestamp_ms=as_int(media.get("timestamp")))

    def _reorder(self, chunk: int | None, audio: bytes) -> bytes:
        """The audio that is now in order, oldest first (empty while a missing frame is awaited)."""
        if chunk is None:
            return audio  # nothing to order by: take frames as they come
        if self._next_chunk is None:
            self._next_chunk = chunk
        if chunk < self._next_chunk or chunk in self._held:
            self.late_frames += 1
            return b""
        if chunk > self._next_chunk:
            self.reordered_frames += 1
        self._held[chunk] = audio
        ready = bytearray()
        while self._held:
            if self._next_chunk in self._held:
                ready += self._held.pop(self._next_chunk)
                self._next_chunk += 1
            elif len(self._held) >= self.reorder_window:
                # The missing frame is not coming: go on without it.
                self.sequence_gaps += 1
                self._next_chunk = min(self._held)
            else:
                break
        return bytes(ready)

    def _carrier_error(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        code = as_int(payload.get("code"))
        title = str(payload.get("title", ""))[:80]
        detail = str(payload.get("detail", ""))[:200]
        self.carrier_errors += 1
        self.last_error = f"{code} {title}".strip()
        # Once at warning, then at debug: a rate-limit storm must not become a log storm.
        level = log.warning if self.carrier_errors == 1 else log.debug
        level(
            "telnyx reported a media stream error",
            code=code,
            title=title,
            detail=detail,
            stream_id=self.stream_id,
            count=self.carrier_errors,
        )

    # -- encode ------------------------------------------------------------------------------------

    @property
    def stream_started(self) -> bool:
        return self.stream_id is not None and self.line is not None

    def play_audio_message(self, audio: bytes) -> dict[str, Any]:
        if self.line is not None and self.line.encoding == "l16":
            audio = swap_pcm16_byte_order(audio)
        return {"event": "media", "media": {"payload": audio}}

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "mark": {"name": name}}

    def clear_message(self) -> dict[str, Any]:
        return {"event": "clear"}
