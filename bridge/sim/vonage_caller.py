"""A caller on a Vonage line: Vonage's side of an NCCO `connect` to a websocket, as the bridge sees it.

It speaks the wire `bridge.carrier.vonage.codec` describes: `websocket:connected` first, with the NCCO
endpoint's `headers` at its top level (pass them as `custom_parameters`), then a binary 640-byte
L16 frame every 20 ms, `websocket:dtmf` for keypresses, `websocket:notify` echoing each notify's
payload once the audio queued before it has played, and `websocket:cleared` after a clear. A hang-up
just closes the socket, as Vonage does when the caller hangs up.

It rejects, as protocol errors, what Vonage would not take: a binary frame that is not exactly one
20 ms frame, JSON that is not a `notify` (with a payload object) or a `clear`, and audio beyond the
outbound buffer (the guide's 1024 frames; Vonage is reported to hold up to 3072, and the smaller
figure is the one a bridge can rely on). A notify still queued when a clear arrives is dropped with
the audio, the reading `bridge.carrier.vonage.codec` takes (unverified).
"""

from __future__ import annotations

import json
from typing import Any

from bridge.audio import L16_16K, AudioFormat
from bridge.sim.carrier_emulator import FRAME_MS, CallerEmulator, Message, OutboundError
from bridge.sim.playout import MarkStatus

OUTBOUND_BUFFER_FRAMES = 1024
DTMF_DURATION_MS = 260  # the guide's example; most digital phone systems send a fixed length


class VonageCallerEmulator(CallerEmulator):
    carrier = "vonage"
    line: AudioFormat = L16_16K

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._notify_payloads: dict[str, Any] = {}
        self._clears_acknowledged = 0

    @property
    def content_type(self) -> str:
        return f"audio/l16;rate={self.line.rate}"

    def _opening_messages(self) -> list[Message]:
        return [{"event": "websocket:connected", "content-type": self.content_type, **self.custom_parameters}]

    def _media_message(self, n: int, payload: bytes) -> Message:
        return payload

    def _dtmf_message(self, digit: str) -> Message:
        return {"event": "websocket:dtmf", "digit": digit, "duration": DTMF_DURATION_MS}

    def _echo_message(self, name: str) -> Message:
        return {"event": "websocket:notify", "payload": self._notify_payloads.pop(name, {"name": name})}

    def _stop_message(self) -> Message | None:
        return None

    def _send_echoes(self) -> None:
        # Echoes become due as the playout advances; a clear is acknowledged after the echoes of
        # the marks that played before it, and the marks it discarded are never echoed.
        playout = self.playout
        for mark in playout.take_echoes():
            if mark.status is MarkStatus.CLEARED:
                self._notify_payloads.pop(mark.name, None)
                continue
            assert mark.echoed_at_ms is not None
            self._send(self._echo_message(mark.name), mark.echoed_at_ms, self._echo_sent_callback(mark))
        while self._clears_acknowledged < len(playout.clears):
            clear = playout.clears[self._clears_acknowledged]
            self._send({"event": "websocket:cleared"}, clear.received_at_ms)
            self._clears_acknowledged += 1

    def parse_outbound(self, data: str | bytes) -> tuple[str, Any]:
        if isinstance(data, bytes):
            frame = self.line.frame_bytes(FRAME_MS)
            if len(data) != frame:
                raise OutboundError(f"binary frame of {len(data)} bytes, not one {FRAME_MS} ms frame")
            self.playout.advance(self.clock())
            if self.playout.buffered_bytes + len(data) > OUTBOUND_BUFFER_FRAMES * frame:
                raise OutboundError(f"outbound buffer full ({OUTBOUND_BUFFER_FRAMES} frames): frame dropped")
            return "media", data
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            raise OutboundError("text frame is not JSON") from None
        if not isinstance(message, dict):
            raise OutboundError("text frame is not a JSON object")
        action = message.get("action")
        if action == "clear":
            return "clear", None
        if action != "notify":
            raise OutboundError(f"action {action!r} is not notify or clear")
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise OutboundError("notify: 'payload' is not an object")
        name = payload.get("name")
        if not isinstance(name, str):
            name = json.dumps(payload, sort_keys=True)  # any payload is allowed; this names its mark
        self._notify_payloads[name] = payload
        return "mark", name
