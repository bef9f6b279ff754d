"""SignalWire's routes: the cXML voice webhook (`<Connect><Stream>`, Twilio's dialect at SignalWire's
own paths), the `<Connect action>` request once the stream ended, and the media socket.

Transfers are not offered: they need SignalWire REST credentials (project id, API token, space URL)
this bridge has no settings for, so the assistant is told transfers are unavailable.
"""

from __future__ import annotations

from aiohttp import web

from bridge.carrier.answer_flow import CarrierRoutes
from bridge.carrier.registry import Carrier
from bridge.carrier.signalwire.signature import signalwire_signature
from bridge.carrier.transfer import transfers_unavailable
from bridge.carrier.twilio.twiml import TwimlAnswers
from bridge.carrier.webhook import CarrierPaths
from bridge.resources import BRIDGE_KEY

PATHS = CarrierPaths(
    answer="/signalwire/voice", media="/signalwire/media", after_stream="/signalwire/connect-done"
)
NO_TRANSFERS = "the bridge has no SignalWire REST credentials to transfer with"


def setup_routes(app: web.Application, carrier: Carrier) -> None:
    answers, transfer = TwimlAnswers(PATHS), transfers_unavailable(NO_TRANSFERS)
    CarrierRoutes(app[BRIDGE_KEY], carrier, answers, signalwire_signature, transfer).mount(app)
