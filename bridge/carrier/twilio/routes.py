"""Twilio's routes: the voice webhook (TwiML `<Connect><Stream>`), the `<Connect action>` request once
the stream ended, and the media socket, whose upgrade Twilio signs; transfers through the REST API.
Calls we place go through its REST API too, their progress and answering-machine verdicts coming back
to two callbacks. Plus the browser softphone's stream, which speaks the same dialect."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

from aiohttp import web

from bridge.carrier.answer_flow import CarrierRoutes, serve_media_socket, setting_text
from bridge.carrier.events import CallStarted
from bridge.carrier.outbound import PlacedCallPaths
from bridge.carrier.registry import Carrier
from bridge.carrier.transfer import CarrierTransfer, transfers_unavailable
from bridge.carrier.twilio.call_progress import status_progress, verdict_progress
from bridge.carrier.twilio.codec import TwilioCodec
from bridge.carrier.twilio.rest import TwilioCalls
from bridge.carrier.twilio.signature import TwilioSignature
from bridge.carrier.twilio.twiml import TwimlAnswers
from bridge.carrier.webhook import CarrierPaths
from bridge.logs import get_logger
from bridge.outbound.routes import progress_callback
from bridge.resources import BRIDGE_KEY, Bridge

log = get_logger("bridge.carrier")

PATHS = CarrierPaths(answer="/twilio/voice", media="/twilio/media", after_stream="/twilio/connect-done")
PLACED_PATHS = PlacedCallPaths(
    answer=PATHS.answer, status="/twilio/placed/status", verdict="/twilio/placed/amd"
)


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
    app.router.add_post(
        PLACED_PATHS.status, progress_callback(bridge, "twilio", lambda w: status_progress(w.form))
    )
    app.router.add_post(
        PLACED_PATHS.verdict, progress_callback(bridge, "twilio", lambda w: verdict_progress(w.form))
    )
    app.cleanup_ctx.append(lambda app: _dialer(bridge))


async def _dialer(bridge: Bridge) -> AsyncIterator[None]:
    """Place calls through the Twilio account (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN), or, outside
    production without one, through the Twilio stand-in whose callees are the package's own."""
    outbound, settings = bridge.outbound, bridge.settings
    if outbound is None:
        yield
        return
    token = setting_text(settings.twilio_auth_token)
    stand_in = None
    dialer = None
    if settings.twilio_account_sid and token:
        dialer = TwilioCalls(settings.twilio_account_sid, token, api_base=settings.twilio_api_base or None)
    elif settings.simulated_callee:
        from bridge.sim.callee import demo_callee
        from bridge.sim.twilio_api import TwilioApiStandIn

        # The stand-in signs with the Auth Token this bridge checks, when it has one; else with one
        # every worker and replica derives alike, so its callbacks check out wherever they land.
        shared = bridge.shared_key(b"bridge simulated twilio account v1")
        token = token or base64.urlsafe_b64encode(shared).decode("ascii").rstrip("=")
        stand_in = TwilioApiStandIn("AC" + shared[:16].hex(), token)
        stand_in.callees = demo_callee
        await stand_in.start()
        dialer = TwilioCalls(stand_in.account_sid, stand_in.auth_token, api_base=stand_in.base_url)
        log.warning(
            "OUTBOUND DEMO: no TWILIO_ACCOUNT_SID, calls placed through Twilio go to the simulated callee "
            "(+15550100 a person, +15550101 an answering machine, +15550102 busy, +15550103 no answer)",
            stand_in=stand_in.base_url,
        )
    else:
        outbound.unavailable(
            "twilio", "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to place calls through Twilio"
        )
    if dialer is not None:
        outbound.register(dialer, PLACED_PATHS)
    yield
    if dialer is not None:
        await dialer.close()
    if stand_in is not None:
        await stand_in.stop()


async def browser_media_socket(request: web.Request) -> web.StreamResponse:
    """The softphone's stream: already signed in (admin cookie, same origin), so no Twilio checks."""
    return await serve_media_socket(request.app[BRIDGE_KEY], request, TwilioCodec(), None)
