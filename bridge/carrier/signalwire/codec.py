"""SignalWire's `<Connect><Stream>` media stream is Twilio's dialect (docs/protocols.md §SW1): Twilio's
codec, under SignalWire's name in the call log."""

from __future__ import annotations

from bridge.carrier.twilio.codec import TwilioCodec


def signalwire_codec() -> TwilioCodec:
    return TwilioCodec("signalwire")
