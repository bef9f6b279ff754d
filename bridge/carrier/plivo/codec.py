"""Plivo Audio Streaming (bidirectional XML `<Stream>`) as a sans-IO codec.

`decode` turns one websocket text message from Plivo into a plain carrier event (or None for messages
we deliberately ignore); `encode` turns a carrier command into the JSON text Plivo accepts.
docs/protocols.md §P1, §P2, §P3 summarise the dialect; the details below were checked against Plivo's
Audio Streaming documentation, its `<Stream>` XML reference, its official stream SDKs (Python
`plivo_stream`, Java `com.plivo.stream`) and pipecat's `PlivoFrameSerializer`.

Messages from Plivo:
  `start`   {"event","sequenceNumber","start":{"callId","streamId","accountId","tracks",
            "mediaFormat":{"encoding","sampleRate"}},"extra_headers"}
  `media`   {"event","sequenceNumber","streamId","media":{"track","timestamp","chunk","payload"}}
  `dtmf`    {"event","sequenceNumber","streamId","dtmf":{"track","digit","timestamp"}}
  `playedStream` {"event","sequenceNumber","streamId","name"}: every playAudio queued before the
            checkpoint `name` was played to the caller
  `clearedAudio` {"event","sequenceNumber","streamId"}: the answer to our `clearAudio`
  `stop`    modelled by Plivo's Java SDK (with a `reason`); the AsyncAPI description says stream ends
            go to the status callback only, so the socket closing is treated as the same hang-up.
Messages to Plivo: `playAudio` {"event","streamId","media":{"contentType","sampleRate","payload"}},
`checkpoint` {"event","streamId","name"}, `clearAudio` {"event","streamId"}.

How "what was played" is known: every `Mark` becomes a `checkpoint`; Plivo answers `playedStream` with
its name once the audio queued before it has played, which is exactly the carrier event the `Call`'s
playback ledger replays the caller's playout clock from (`PlaybackMark`). Plivo documents that
`playedStream` is emitted only if the preceding audio *was played*: checkpoints pending when a
`clearAudio` discards their audio are never echoed. The ledger settles everything unconfirmed at the
moment it sends the clear, so it needs no echo for discarded checkpoints; `clearedAudio` is informational.

`start.extra_headers` carries the `<Stream extraHeaders>` attribute. Plivo allows only [A-Za-z0-9] in it
(max 512 bytes); its docs show `a=1,b=2` in the XML and `a=1;b=2` in `start`, and one SDK describes it
as a JSON string, so all three spellings are read. Values are hex-encoded by `encode_extra_headers`
(the one-time stream token has dots and dashes), and the names map onto `custom_parameters`.

Unverified, with the reading chosen:
  * byte order of `audio/x-l16`: little-endian (what every implementation seen sends; RFC 3551's L16 is
    big-endian, but Plivo says only "raw audio");
  * whether a checkpoint sent while nothing is queued is echoed at once (assumed, as "everything before
    it" has trivially played); the ledger copes either way;
  * whether `playedStream`/`clearedAudio` share `sequenceNumber` with media (Plivo's own example shows
    `clearedAudio` with 0), so gaps are counted on `media.chunk`, the per-track media counter.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from bridge.audio import L16_8K, L16_16K, PCMU_8K, AudioFormat
from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierEvent,
    CarrierProtocolError,
    PlaybackMark,
)
from bridge.carrier.json_message import (
    JsonCommands,
    SequenceGaps,
    as_int,
    decode_event,
    decode_json,
    dtmf,
    field,
    media_payload,
)
from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER, UPSTREAM_PARAMETER
from bridge.carrier.webhook import RECORD_PARAMETER

# 20 ms is 160 bytes of µ-law or 640 of L16 at 16 kHz: more than a second is not a phone frame.
MAX_INBOUND_PAYLOAD_BYTES = 32_000  # a second of L16 at 16 kHz
MAX_EXTRA_HEADERS = 512  # Plivo's limit on the attribute

# (contentType, sampleRate) on the wire <-> the bridge's line formats.
_FORMATS: dict[tuple[str, int], AudioFormat] = {
    ("audio/x-mulaw", 8000): PCMU_8K,
    ("audio/x-l16", 8000): L16_8K,
    ("audio/x-l16", 16000): L16_16K,
}
_CONTENT_TYPES = {fmt: content_type for (content_type, _), fmt in _FORMATS.items()}

# custom_parameters name <-> extraHeaders name (Plivo allows no underscore in a name).
_HEADER_NAMES = {
    STREAM_TOKEN_PARAMETER: "streamtoken",
    UPSTREAM_PARAMETER: "upstream",
    "from": "from",
    "to": "to",
    "direction": "direction",
    RECORD_PARAMETER: "record",
}
_PARAMETER_NAMES = {header: parameter for parameter, header in _HEADER_NAMES.items()}
_ALNUM = re.compile(r"[A-Za-z0-9]+")

_encoder = msgspec.json.Encoder()


def content_type(line: AudioFormat) -> str:
    """`contentType` of the `<Stream>` element for a line format, e.g. `audio/x-mulaw;rate=8000`."""
    if line not in _CONTENT_TYPES:
        raise ValueError(f"Plivo streams no {line.encoding} at {line.rate} Hz")
    return f"{_CONTENT_TYPES[line]};rate={line.rate}"


def encode_extra_headers(parameters: dict[str, str]) -> str:
    """The `extraHeaders` attribute for our stream parameters: `name=hex(value)`, comma-separated.

    Hex keeps any value inside Plivo's [A-Za-z0-9] alphabet; empty values are left out.
    """
    pairs = []
    for name, value in parameters.items():
        header = _HEADER_NAMES.get(name)
        if header is None:
            raise ValueError(f"no extraHeaders name for parameter {name!r}")
        if value:
            pairs.append(f"{header}={value.encode().hex()}")
    text = ",".join(pairs)
    if len(text) > MAX_EXTRA_HEADERS:
        raise ValueError("extraHeaders longer than Plivo's 512 bytes")
    return text


def decode_extra_headers(raw: Any) -> dict[str, str]:
    """`custom_parameters` from `start.extra_headers`; names we did not set are ignored."""
    if raw is None or raw == "":
        return {}
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, str) and raw.lstrip().startswith("{"):
        try:
            obj = decode_json(raw)
        except msgspec.DecodeError:
            raise CarrierProtocolError("start: 'extra_headers' is not valid JSON") from None
        if not isinstance(obj, dict):
            raise CarrierProtocolError("start: 'extra_headers' is not an object")
        pairs = list(obj.items())
    elif isinstance(raw, str):
        pairs = [tuple(part.split("=", 1)) for part in re.split(r"[;,]", raw) if "=" in part]
    else:
        raise CarrierProtocolError("start: 'extra_headers' is neither text nor an object")
    params: dict[str, str] = {}
    for name, value in pairs:
        parameter = _PARAMETER_NAMES.get(str(name).strip().lower())
        if parameter is None:
            continue
        text = str(value).strip()
        if not _ALNUM.fullmatch(text) or len(text) % 2:
            raise CarrierProtocolError(f"start: extra header '{name}' is not hex")
        try:
            params[parameter] = bytes.fromhex(text).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise CarrierProtocolError(f"start: extra header '{name}' is not hex of UTF-8") from None
    return params


class PlivoCodec(JsonCommands):
    """State of one Plivo audio stream: its id, its line format and the media chunk counter."""

    carrier = "plivo"
    play_chunk_ms = 500  # Plivo states no limit on one playAudio; half a second keeps messages small

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.line: AudioFormat = PCMU_8K
        self._chunks = SequenceGaps()

    @property
    def sequence_gaps(self) -> int:
        return self._chunks.gaps

    def decode(self, data: str | bytes) -> CarrierEvent | None:
        event, message = decode_event(data)

        if event == "media":
            return self._media(message)
        if event == "playedStream":
            self._require_start(event)
            return PlaybackMark(name=field(message, "name", str, "playedStream"))
        if event == "start":
            return self._start(message)
        if event == "dtmf":
            self._require_start(event)
            return dtmf(message)
        if event == "stop":
            return CallEnded(reason="caller_hangup")
        # clearedAudio only confirms our clearAudio (the ledger settled the clear when it was sent);
        # unknown events are ignored, as new ones may be added.
        return None

    def _require_start(self, event: str) -> None:
        if self.stream_id is None:
            raise CarrierProtocolError(f"{event}: received before start")

    def _start(self, message: dict[str, Any]) -> CallStarted:
        if self.stream_id is not None:
            raise CarrierProtocolError("start: duplicate start on one stream")
        start = field(message, "start", dict, "start")
        stream_id = field(start, "streamId", str, "start")
        call_id = field(start, "callId", str, "start")
        if not stream_id or not call_id:
            raise CarrierProtocolError("start: 'streamId' or 'callId' is empty")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise CarrierProtocolError("start: 'mediaFormat' is not an object")
        encoding = fmt.get("encoding", "audio/x-mulaw")
        rate = as_int(fmt.get("sampleRate", 8000))
        line = _FORMATS.get((encoding, rate)) if isinstance(encoding, str) and rate is not None else None
        if line is None:
            raise CarrierProtocolError(f"start: unsupported media format {encoding!s:.40} at {rate} Hz")
        params = decode_extra_headers(message.get("extra_headers"))
        self.stream_id, self.line = stream_id, line
        return CallStarted(
            stream_sid=stream_id,
            call_sid=call_id,
            account_sid=str(start.get("accountId", "")),
            custom_parameters=params,
            line=line,
        )

    def _media(self, message: dict[str, Any]) -> CallerAudio:
        self._require_start("media")
        media = field(message, "media", dict, "media")
        if media.get("track", "inbound") != "inbound":
            return CallerAudio(payload=b"")  # Only the caller's track is relayed upstream.
        audio = media_payload(media, MAX_INBOUND_PAYLOAD_BYTES)
        if len(audio) % self.line.bytes_per_sample:
            raise CarrierProtocolError("media: payload is not whole samples")
        self._chunks.see(media.get("chunk"))
        return CallerAudio(payload=audio, timestamp_ms=as_int(media.get("timestamp")))

    @property
    def stream_started(self) -> bool:
        return self.stream_id is not None

    def play_audio_message(self, audio: bytes) -> dict[str, Any]:
        media = {"contentType": _CONTENT_TYPES[self.line], "sampleRate": self.line.rate, "payload": audio}
        return {"event": "playAudio", "streamId": self.stream_id, "media": media}

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "checkpoint", "streamId": self.stream_id, "name": name}

    def clear_message(self) -> dict[str, Any]:
        return {"event": "clearAudio", "streamId": self.stream_id}
