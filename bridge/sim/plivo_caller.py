"""A caller on a Plivo number: the carrier-neutral `CallerEmulator` speaking Plivo Audio Streaming.

It sends what Plivo sends (bridge/carrier/plivo.py lists the messages): `start` with the stream's
`extra_headers`, a `media` message per 20 ms frame (`chunk` counting from 1), `dtmf`, and `stop` on
hang-up. What the bridge sends back is checked the way Plivo would take it (`playAudio` in the stream's
own contentType and sampleRate, `checkpoint` and `clearAudio` for this streamId) and goes through the
`Playout`: a checkpoint is answered by `playedStream` once the audio queued before it has played
(at once if nothing is queued); `clearAudio` is answered by `clearedAudio`, and the checkpoints whose
audio it discarded are never echoed, as Plivo documents ("playedStream will only be emitted if the
preceding events were played successfully").
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from bridge.audio import PCMU_8K, AudioFormat
from bridge.carrier.plivo.codec import content_type, encode_extra_headers
from bridge.sim.carrier_emulator import CallerEmulator, Message, OutboundError, outbound_audio, outbound_json
from bridge.sim.playout import MarkStatus


class PlivoCallerEmulator(CallerEmulator):
    carrier = "plivo"

    def __init__(
        self,
        url: str,
        *,
        media_format: AudioFormat = PCMU_8K,
        extra_headers: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`extra_headers`: the `<Stream extraHeaders>` an answer gave, repeated verbatim the way Plivo
        repeats it; otherwise it is spelled from `custom_parameters`."""
        kwargs.setdefault("call_sid", str(uuid.uuid4()))
        kwargs.setdefault("stream_sid", str(uuid.uuid4()))
        kwargs.setdefault("account_sid", "MA" + uuid.uuid4().hex[:18].upper())
        super().__init__(url, **kwargs)
        content_type(media_format)  # refuses a format Plivo cannot stream
        self.line = media_format
        self._wire_type, _, _ = content_type(media_format).partition(";")
        # What the answer's extraHeaders said, as Plivo repeats it on start, media and dtmf.
        if extra_headers is None:
            extra_headers = encode_extra_headers(self.custom_parameters)
        self.extra_headers = extra_headers
        self.cleared_answered = 0

    def _stamp(self) -> str:
        return str(int(time.time() * 1000))

    def _opening_messages(self) -> list[Message]:
        return [
            {
                "event": "start",
                "sequenceNumber": self._next_int(),
                "start": {
                    "callId": self.call_sid,
                    "streamId": self.stream_sid,
                    "accountId": self.account_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": self._wire_type, "sampleRate": self.line.rate},
                },
                "extra_headers": self.extra_headers,
            }
        ]

    def _next_int(self) -> int:
        return int(self._next_sequence())

    def _media_message(self, n: int, payload: bytes) -> Message:
        return {
            "event": "media",
            "sequenceNumber": self._next_int(),
            "streamId": self.stream_sid,
            "media": {
                "track": "inbound",
                "timestamp": self._stamp(),
                "chunk": n + 1,
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "extra_headers": self.extra_headers,
        }

    def _dtmf_message(self, digit: str) -> Message:
        return {
            "event": "dtmf",
            "sequenceNumber": self._next_int(),
            "streamId": self.stream_sid,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": self._stamp()},
            "extra_headers": self.extra_headers,
        }

    def _echo_message(self, name: str) -> Message:
        return {
            "event": "playedStream",
            "sequenceNumber": self._next_int(),
            "streamId": self.stream_sid,
            "name": name,
        }

    def _stop_message(self) -> Message | None:
        return {
            "event": "stop",
            "sequenceNumber": self._next_int(),
            "streamId": self.stream_sid,
            "reason": "hangup",
        }

    def _send_echoes(self) -> None:
        for mark in self.playout.take_echoes():
            if mark.status is MarkStatus.CLEARED:
                continue  # Plivo never reports a checkpoint whose audio a clearAudio discarded
            assert mark.echoed_at_ms is not None
            self._send(self._echo_message(mark.name), mark.echoed_at_ms, self._echo_sent_callback(mark))
        while self.cleared_answered < len(self.playout.clears):
            clear = self.playout.clears[self.cleared_answered]
            self.cleared_answered += 1
            self._send(
                {"event": "clearedAudio", "sequenceNumber": self._next_int(), "streamId": self.stream_sid},
                clear.received_at_ms,
            )

    def parse_outbound(self, data: str | bytes) -> tuple[str, Any]:
        event, message = outbound_json(data)
        if event not in ("playAudio", "checkpoint", "clearAudio"):
            raise OutboundError(f"event {event!r} is not playAudio, checkpoint or clearAudio")
        # Plivo's own playAudio example has no streamId; when one is given it must be this stream's.
        stream_id = message.get("streamId", self.stream_sid if event == "playAudio" else None)
        if stream_id != self.stream_sid:
            raise OutboundError(f"{event}: streamId {stream_id!r} is not this stream")
        if event == "clearAudio":
            return "clear", None
        if event == "checkpoint":
            name = message.get("name")
            if not isinstance(name, str) or not name:
                raise OutboundError("checkpoint: missing name")
            return "mark", name
        media = message.get("media")
        if not isinstance(media, dict):
            raise OutboundError("playAudio: missing 'media' object")
        if media.get("contentType") != self._wire_type or media.get("sampleRate") != self.line.rate:
            # Plivo does not switch codecs mid-stream; audio in another format would play as noise.
            raise OutboundError(
                f"playAudio: {media.get('contentType')!r} at {media.get('sampleRate')!r} Hz is not "
                f"the stream's {self._wire_type} at {self.line.rate} Hz"
            )
        return "media", outbound_audio(media.get("payload"), "playAudio", self.line)
