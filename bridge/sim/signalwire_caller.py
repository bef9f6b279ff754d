"""A SignalWire cXML media stream plus caller: SignalWire speaks Twilio's Media Streams dialect."""

from __future__ import annotations

from bridge.sim.carrier_emulator import TwilioCallerEmulator


class SignalWireCallerEmulator(TwilioCallerEmulator):
    carrier = "signalwire"
