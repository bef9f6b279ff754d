"""Twilio's routes: the voice webhook (TwiML `<Connect><Stream>`), the `<Connect action>` request once
the stream ended, and the media socket, whose upgrade Twilio signs; transfers through the REST API.
Plus the browser softphone's stream, which speaks the same dialect."""

from __future__ import annotations

from aiohttp import web

from bridge.carrier.answer_flow import CarrierRoutes, serve_media_socket, setting_text
from bridge.carrier.events import CallStarted
from bridge.carrier.registry import Carrier
from bridge.carrier.transfer import CarrierTransfer, transfers_unavailable
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.carrier.twilio.rest import TwilioCalls
from bridge.carrier.twilio.signature import TwilioSignature
from bridge.carrier.twilio.twiml import TwimlAnswers
from bridge.carrier.webhook import CarrierPaths
from bridge.resources import BRIDGE_KEY

PATHS = CarrierPaths(answer="/twilio/voice", media="/twilio/media", after_stream="/twilio/connect-done")


def rest_transfer(auth_token: str, api_base: str) -> CarrierTransfer:
    """Have Twilio replace the call's TwiML with a `<Dial>` (REST), as the account the stream names."""

    async def transfer(started: CallStarted, number: str, public_base: str) -> None:
        async with TwilioCalls(started.account_sid, auth_token, api_base=api_base or None) as rest:
            await rest.transfer(started.call_sid, number)

    return transfer


def setup_routes(app: web.Application, carrier: Carrier) -> None:
    bridge = app[BRIDGE_KEY]
    if token := setting_text(bridge.settings.twilio_auth_token):
        transfer = rest_transfer(token, bridge.settings.twilio_api_base)
    else:
        transfer = transfers_unavailable(
            "no Twilio credentials are configured (TWILIO_AUTH_TOKEN)", "TWILIO_AUTH_TOKEN"
        )
    CarrierRoutes(bridge, carrier, TwimlAnswers(PATHS), TwilioSignature, transfer).mount(app)


async def browser_media_socket(request: web.Request) -> web.StreamResponse:
    """The softphone's stream: already signed in (admin cookie, same origin), so no Twilio checks."""
    return await serve_media_socket(request.app[BRIDGE_KEY], request, TwilioCodec(), None)
