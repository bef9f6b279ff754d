"""Each carrier's media-stream dialect, as the hostile-input tests need it: its codec, a start the codec
accepts, hostile messages in its shape, and its caller emulator and media path for calls end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import strategies as st

from bridge.carrier.plivo.codec import PlivoCodec
from bridge.carrier.telnyx.codec import TelnyxCodec
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.carrier.vonage.codec import CALL_ID_HEADER, VonageCodec
from bridge.sim.carrier_emulator import CallerEmulator, TwilioCallerEmulator
from bridge.sim.plivo_caller import PlivoCallerEmulator
from bridge.sim.signalwire_caller import SignalWireCallerEmulator
from bridge.sim.telnyx_caller import TelnyxCallerEmulator
from bridge.sim.vonage_caller import VonageCallerEmulator
from bridge.websocket_leg import CarrierCodec
from tests.security.strategies import (
    deeply_nested,
    garbage,
    plivo_shaped,
    telnyx_shaped,
    twilio_deep_media,
    twilio_shaped,
    vonage_frames,
    vonage_shaped,
    wire,
)

_ANY_BYTES = st.binary(max_size=300)


@dataclass(frozen=True)
class Dialect:
    name: str
    codec: Callable[[], CarrierCodec]
    start: Callable[[str], str]  # a start for this call id
    shaped: st.SearchStrategy[dict[str, Any]]
    deep: Callable[[str], list[str]]  # messages nested past any decoder's depth, for this call id
    caller: Callable[[str, str], CallerEmulator]  # (media URL, call id) -> a caller on this carrier
    media_path: str
    binary: st.SearchStrategy[bytes] = _ANY_BYTES

    def hostile(self) -> st.SearchStrategy[str | bytes]:
        """Messages in this dialect's shape, junk of every kind, and the deeply nested ones."""
        deep = st.sampled_from(self.deep("C-hostile"))
        return st.one_of(wire(self.shaped), wire(self.shaped), garbage, self.binary, deep, deep)


def _twilio_start(call_id: str) -> str:
    start = {"streamSid": "MZ" + call_id, "callSid": call_id, "mediaFormat": {"encoding": "audio/x-mulaw"}}
    return json.dumps({"event": "start", "start": start, "streamSid": "MZ" + call_id})


def _telnyx_start(call_id: str) -> str:
    media_format = {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    start = {"call_control_id": call_id, "media_format": media_format}
    return json.dumps({"event": "start", "stream_id": "S" + call_id, "start": start})


def _plivo_start(call_id: str) -> str:
    start = {"streamId": "S" + call_id, "callId": call_id, "mediaFormat": {"encoding": "audio/x-mulaw"}}
    return json.dumps({"event": "start", "start": start})


def _vonage_start(call_id: str) -> str:
    return json.dumps(
        {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", CALL_ID_HEADER: call_id}
    )


def _json_media_deep(sequence: str) -> Callable[[str], list[str]]:
    def deep(_call_id: str) -> list[str]:
        media = {"event": "media", "media": {"track": "inbound", "payload": "AAAA", "chunk": "1"}}
        paths = [("media", "track"), ("media", "chunk"), ("media", "timestamp"), (sequence,), ("x",)]
        return deeply_nested(media, *paths)

    return deep


def _vonage_deep(_call_id: str) -> list[str]:
    dtmf = {"event": "websocket:dtmf", "digit": "1"}
    return deeply_nested(dtmf, ("digit",), ("dtmf",), ("payload",), ("x",))


_TWILIO = Dialect(
    "twilio",
    TwilioCodec,
    _twilio_start,
    twilio_shaped,
    lambda call_id: twilio_deep_media("MZ" + call_id),
    lambda url, call_id: TwilioCallerEmulator(url, call_sid=call_id),
    "/twilio/media",
)

DIALECTS = {
    d.name: d
    for d in [
        _TWILIO,
        replace(  # SignalWire speaks Twilio's dialect
            _TWILIO,
            name="signalwire",
            codec=lambda: TwilioCodec("signalwire"),
            caller=lambda url, call_id: SignalWireCallerEmulator(url, call_sid=call_id),
            media_path="/signalwire/media",
        ),
        Dialect(
            "telnyx",
            TelnyxCodec,
            _telnyx_start,
            telnyx_shaped,
            _json_media_deep("sequence_number"),
            lambda url, call_id: TelnyxCallerEmulator(url, call_sid=call_id),
            "/telnyx/media",
        ),
        Dialect(
            "plivo",
            PlivoCodec,
            _plivo_start,
            plivo_shaped,
            _json_media_deep("sequenceNumber"),
            lambda url, call_id: PlivoCallerEmulator(url, call_sid=call_id),
            "/plivo/media",
        ),
        Dialect(
            "vonage",
            VonageCodec,
            _vonage_start,
            vonage_shaped,
            _vonage_deep,
            lambda url, call_id: VonageCallerEmulator(
                url, call_sid=call_id, custom_parameters={CALL_ID_HEADER: call_id}
            ),
            "/vonage/media",
            binary=vonage_frames,
        ),
    ]
}
