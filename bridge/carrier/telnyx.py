"""Telnyx Media Streaming (bidirectional RTP mode) as a sans-IO codec, and Telnyx's webhook signature.

The wire (Telnyx "Stream call media over WebSocket", PROTOCOLS.md A9): JSON text frames, snake_case.
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
played. That is the ledger's input, exactly as with Twilio. The docs list `mark` both ways; that the
echo comes when the audio before it finished playing, and that a `clear` makes pending marks come
back at once, is Twilio's behaviour assumed here, not verified against Telnyx.

`error` frames are valid messages that report a problem (e.g. 100003 malformed_frame, 100004
invalid_media, 100005 rate_limit_reached): they decode to None and are logged and counted, never
raised as CarrierProtocolError, which would count the carrier's own report as junk from a hostile
peer and, after enough of them, end a call that is still working.

Unverified details: `custom_parameters` in `start` (TeXML `<Parameter>`s; an object, or a list of
`{name, value}`, both accepted); L16 payloads are big-endian (RTP's L16, RFC 3551) and are swapped to
the bridge's little-endian PCM16.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.audio import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, swap_pcm16_byte_order
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
from bridge.carrier.json_message import as_int, decode_event, field, media_payload
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


class TelnyxCodec:
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
            mark = field(message, "mark", dict, "mark")
            return PlaybackMark(name=field(mark, "name", str, "mark"))
        if event == "start":
            return self._start(message)
        if event == "connected":
            return Connected(protocol="telnyx", version=str(message.get("version", "")))
        if event == "dtmf":
            dtmf = field(message, "dtmf", dict, "dtmf")
            digit = field(dtmf, "digit", str, "dtmf")
            if digit not in DTMF_DIGITS:
                raise CarrierProtocolError("dtmf: digit is not one of 0-9 * # A-D")
            return Dtmf(digit=digit)
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
        start = field(message, "start", dict, "start")
        stream_id = message.get("stream_id") or start.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise CarrierProtocolError("start: 'stream_id' missing")
        call_control_id = field(start, "call_control_id", str, "start")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise CarrierProtocolError("start: 'media_format' is not an object")
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

    def encode(self, command: CarrierCommand) -> str | None:
        """JSON text for Telnyx, or None for commands that are not messages (hang-up closes the socket)."""
        if self.stream_id is None or self.line is None:
            raise CarrierProtocolError("cannot send to Telnyx before the stream started")
        if isinstance(command, PlayAudio):
            audio = swap_pcm16_byte_order(command.payload) if self.line.encoding == "l16" else command.payload
            # msgspec writes bytes as standard base64 (with padding) straight into the message.
            message: dict[str, Any] = {"event": "media", "media": {"payload": audio}}
        elif isinstance(command, Mark):
            message = {"event": "mark", "mark": {"name": command.name}}
        elif isinstance(command, ClearPlayback):
            message = {"event": "clear"}
        elif isinstance(command, Hangup):
            return None
        else:  # pragma: no cover - exhaustive over CarrierCommand
            raise TypeError(f"not a carrier command: {command!r}")
        return _encoder.encode(message).decode("utf-8")


# -- webhook signatures ------------------------------------------------------------------------------

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_TOLERANCE_S = 300
# DER SubjectPublicKeyInfo prefix of an Ed25519 key: a portal key pasted in that form is accepted too.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def load_public_key(encoded: str) -> Ed25519PublicKey:
    """TELNYX_PUBLIC_KEY (base64 of the raw 32-byte key, or of its DER form) -> a key; ValueError if not."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("TELNYX_PUBLIC_KEY is not base64") from None
    if len(raw) == len(_ED25519_SPKI_PREFIX) + 32 and raw.startswith(_ED25519_SPKI_PREFIX):
        raw = raw[len(_ED25519_SPKI_PREFIX) :]
    if len(raw) != 32:
        raise ValueError("TELNYX_PUBLIC_KEY is not an Ed25519 public key (32 bytes, base64)")
    return Ed25519PublicKey.from_public_bytes(raw)


def webhook_is_signed(
    public_key: Ed25519PublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now_s: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Is `signature` Telnyx's Ed25519 signature of `timestamp|body`, made within `tolerance_s` of now?

    The timestamp is inside the signed message, so a captured request cannot be replayed later
    than the tolerance; a future timestamp beyond it is refused too (a clock that far off is wrong).
    """
    if not signature or not timestamp:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now_s - int(timestamp)) > tolerance_s:
        return False
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw_signature) != 64:
        return False
    try:
        public_key.verify(raw_signature, timestamp.encode("ascii") + b"|" + body)
    except InvalidSignature:
        return False
    return True
