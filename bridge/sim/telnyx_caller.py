"""A Telnyx media stream plus caller: `CallerEmulator` speaking Telnyx's bidirectional RTP dialect.

Opening `connected` and `start` (stream_id, call_control_id, from/to, custom_parameters, media_format),
then `media` every 20 ms with `chunk`, `timestamp` and a top-level `sequence_number`, `dtmf`, `mark`
echoes and `stop`, all as `bridge.carrier.telnyx.codec` documents them. Telnyx says frame order is not
guaranteed, so `swap_frames` names frames that leave just after the one following them, exercising
the bridge's reordering. Outbound it accepts only what Telnyx takes: `media` with a base64 payload,
`mark` with a name, `clear`. Playback semantics are Twilio's, as Telnyx documents them for its
stream (docs/protocols.md §TX3): marks echoed once the audio before them played, pending marks echoed
by a clear.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from bridge.audio import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, swap_pcm16_byte_order
from bridge.sim.carrier_emulator import (
    FRAME_MS,
    CallerEmulator,
    Message,
    OutboundError,
    outbound_audio,
    outbound_json,
)

ENCODINGS = {PCMU_8K: "PCMU", PCMA_8K: "PCMA", L16_16K: "L16"}


class TelnyxCallerEmulator(CallerEmulator):
    carrier = "telnyx"

    def __init__(
        self,
        url: str,
        *,
        audio_format: AudioFormat = PCMU_8K,
        swap_frames: Collection[int] = (),
        from_number: str = "+14155550123",
        to_number: str = "+18005551212",
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        if audio_format not in ENCODINGS:
            raise ValueError(f"Telnyx streams here are PCMU/PCMA 8 kHz or L16 16 kHz, not {audio_format}")
        self.line = audio_format
        self.swap_frames = frozenset(swap_frames)
        self.from_number, self.to_number = from_number, to_number
        self.reordered = 0  # frames actually sent after their successor
        self._held: tuple[Message, Callable[[float], None] | None] | None = None

    @property
    def call_control_id(self) -> str:
        return self.call_sid

    def _wire_audio(self, audio: bytes) -> bytes:
        return swap_pcm16_byte_order(audio) if self.line.encoding == "l16" else audio

    def _opening_messages(self) -> list[Message]:
        return [
            {"event": "connected", "version": "1.0.0"},
            {
                "event": "start",
                "sequence_number": self._next_sequence(),
                "stream_id": self.stream_sid,
                "start": {
                    "user_id": self.account_sid,
                    "call_control_id": self.call_control_id,
                    "call_session_id": self.stream_sid,
                    "from": self.from_number,
                    "to": self.to_number,
                    "client_state": None,
                    "custom_parameters": self.custom_parameters,
                    "media_format": {
                        "encoding": ENCODINGS[self.line],
                        "sample_rate": self.line.rate,
                        "channels": 1,
                    },
                },
            },
        ]

    def _media_message(self, n: int, payload: bytes) -> Message:
        return {
            "event": "media",
            "sequence_number": self._next_sequence(),
            "media": {
                "track": "inbound",
                "chunk": str(n + 1),
                "timestamp": str(n * FRAME_MS),
                "payload": base64.b64encode(self._wire_audio(payload)).decode("ascii"),
            },
            "stream_id": self.stream_sid,
        }

    def _send(self, message: Message, at_ms: float, on_sent: Callable[[float], None] | None = None) -> None:
        if isinstance(message, dict) and message.get("event") == "media":
            n = int(message["media"]["chunk"]) - 1
            if n in self.swap_frames and self._held is None:
                self._held = (message, on_sent)  # leaves right after the next frame
                return
            super()._send(message, at_ms, on_sent)
            if self._held is not None:
                held, held_sent = self._held
                self._held = None
                self.reordered += 1
                super()._send(held, at_ms, held_sent)
            return
        super()._send(message, at_ms, on_sent)

    def _dtmf_message(self, digit: str) -> Message:
        return {
            "event": "dtmf",
            "sequence_number": self._next_sequence(),
            "stream_id": self.stream_sid,
            "occurred_at": datetime.now(UTC).isoformat(),
            "dtmf": {"digit": digit},
        }

    def _echo_message(self, name: str) -> Message:
        return {
            "event": "mark",
            "sequence_number": self._next_sequence(),
            "stream_id": self.stream_sid,
            "mark": {"name": name},
        }

    def _stop_message(self) -> Message | None:
        return {
            "event": "stop",
            "sequence_number": self._next_sequence(),
            "stream_id": self.stream_sid,
            "stop": {"user_id": self.account_sid, "call_control_id": self.call_control_id},
        }

    def parse_outbound(self, data: str | bytes) -> tuple[str, Any]:
        event, message = outbound_json(data)
        if event == "clear":
            return "clear", None
        if event not in ("media", "mark"):
            raise OutboundError(f"event {event!r} is not media, mark or clear")
        body = message.get(event)
        if not isinstance(body, dict):
            raise OutboundError(f"{event}: missing '{event}' object")
        if event == "mark":
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise OutboundError("mark: missing mark.name")
            return "mark", name
        return "media", self._wire_audio(outbound_audio(body.get("payload"), "media", self.line))
