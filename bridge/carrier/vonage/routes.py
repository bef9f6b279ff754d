"""Vonage's routes: the answer URL (an NCCO connecting the call to our media socket), the event URL
(POSTed call status changes, logged) and the media socket.

With VONAGE_SIGNATURE_SECRET set, the answer and event URLs refuse (403) a request whose signature
is missing, forged, expired or stale, or whose body does not match it.

Transfers need Vonage's REST API, which authenticates with the application's private key (an RS256
JWT); the bridge holds no such key, so a Vonage leg reports transfers as unavailable.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from bridge.carrier.answer_flow import CarrierRoutes
from bridge.carrier.json_message import decode_json
from bridge.carrier.registry import Carrier
from bridge.carrier.transfer import transfers_unavailable
from bridge.carrier.vonage.ncco import NccoAnswers
from bridge.carrier.vonage.signature import VonageSignature
from bridge.carrier.webhook import CarrierPaths
from bridge.logs import get_logger, mask_number
from bridge.resources import BRIDGE_KEY

log = get_logger("bridge.vonage")

# The answer URL is fetched with GET by default, or POSTed a JSON body if the application says so.
PATHS = CarrierPaths(answer="/vonage/answer", media="/vonage/media", methods=("GET", "POST"))
EVENT_PATH = "/vonage/event"
NO_TRANSFERS = "Vonage transfers need the application's private key, which the bridge has not"


def setup_routes(app: web.Application, carrier: Carrier) -> None:
    """Mount the answer URL, the event URL and the media socket."""
    transfer = transfers_unavailable(NO_TRANSFERS)
    routes = CarrierRoutes(app[BRIDGE_KEY], carrier, NccoAnswers(PATHS), VonageSignature, transfer)
    routes.mount(app)

    async def event(request: web.Request) -> web.StreamResponse:
        """The event URL: call status changes, logged; the call itself is followed on the socket."""
        webhook = await routes.signed_webhook(request)
        try:
            event = decode_json(webhook.body) if webhook.body else {}
        except msgspec.DecodeError:
            return web.Response(status=400, text="body is not JSON")
        if isinstance(event, dict):
            log.debug(
                "vonage event",
                call_sid=str(event.get("uuid", "")),
                status=str(event.get("status", "")),
                caller=mask_number(str(event.get("from") or "")),
                callee=mask_number(str(event.get("to") or "")),
            )
        return web.Response(status=204)

    app.router.add_post(EVENT_PATH, event)
