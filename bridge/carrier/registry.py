"""Every carrier the bridge speaks, in one list: the names CARRIERS may hold, the setting holding the
key each one's webhooks are checked with (BRIDGE_ENV=production refuses to start without it), the
module that mounts its routes, and its media-stream codec.

The settings read this list and the server mounts from it. It imports no route module (those need
the settings), only the sans-IO codecs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.carrier.plivo.codec import PlivoCodec
from bridge.carrier.signalwire.codec import signalwire_codec
from bridge.carrier.telnyx.codec import TelnyxCodec
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.carrier.vonage.codec import VonageCodec

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.websocket_leg import CarrierCodec


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str  # in CARRIERS, in paths (/<name>/...) and in the call log
    signing_key: str  # the Settings field its webhooks' signatures are checked with
    routes: str  # the module whose setup_routes(app, carrier) mounts its webhooks and media socket
    codec: Callable[[], CarrierCodec]  # one per media stream

    def setup_routes(self, app: web.Application) -> None:
        importlib.import_module(self.routes).setup_routes(app, self)


CARRIERS: dict[str, Carrier] = {
    carrier.name: carrier
    for carrier in (
        Carrier("twilio", "twilio_auth_token", "bridge.carrier.twilio.routes", TwilioCodec),
        Carrier("signalwire", "signalwire_signing_key", "bridge.carrier.signalwire.routes", signalwire_codec),
        Carrier("telnyx", "telnyx_public_key", "bridge.carrier.telnyx.routes", TelnyxCodec),
        Carrier("plivo", "plivo_auth_token", "bridge.carrier.plivo.routes", PlivoCodec),
        Carrier("vonage", "vonage_signature_secret", "bridge.carrier.vonage.routes", VonageCodec),
    )
}
