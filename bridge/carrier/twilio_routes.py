"""Twilio's routes: the voice webhook (TwiML `<Connect><Stream>`), the `<Connect action>` callback, and
the media stream; plus the browser softphone's stream, which speaks the same dialect."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from bridge.carrier.events import CallStarted
from bridge.carrier.signature import SIGNATURE_HEADER, STREAM_TOKEN_PARAMETER
from bridge.carrier.transfer import TransferFailed
from bridge.carrier.twilio import TwilioCodec
from bridge.carrier.twilio_rest import TwilioCalls
from bridge.logs import get_logger, mask_number
from bridge.resources import BRIDGE_KEY, Bridge, media_stream, public_base_url, signed_twilio_style
from bridge.twiml import (
    CONNECT_DONE_PATH,
    MEDIA_PATH,
    after_stream,
    connect_stream,
    http_url,
    media_stream_url,
    unavailable,
)

log = get_logger("bridge.server")


class TwilioRoutes:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def voice_webhook(self, request: web.Request) -> web.Response:
        bridge = self.bridge
        form = await request.post()
        if not self.signed(request, {k: str(v) for k, v in form.items()}):
            return web.Response(status=403)
        call_sid = str(form.get("CallSid", ""))
        caller, callee = str(form.get("From", "")), str(form.get("To", ""))
        if bridge.turned_away(call_sid, "twilio"):
            message = "Sorry, all our lines are busy right now. Please call again in a few minutes."
            twiml = unavailable(message, bridge.settings.fallback_number)
            return web.Response(text=twiml, content_type="text/xml")
        direction = "outbound" if str(form.get("Direction", "")).startswith("outbound") else "inbound"
        if call_sid:
            bridge.prepared.prepare(call_sid, bridge.open_prepared)
        base_url = public_base_url(bridge.settings, request)
        stream_url = media_stream_url(base_url)
        log.info("voice webhook", call_sid=call_sid, caller=mask_number(caller), callee=mask_number(callee))
        parameters = {"from": caller, "to": callee, "call_sid": call_sid, "direction": direction}
        if bridge.twilio_token and call_sid:
            parameters[STREAM_TOKEN_PARAMETER] = bridge.stream_tokens.issue(call_sid)
        twiml = connect_stream(stream_url, parameters, action_url=http_url(base_url, CONNECT_DONE_PATH))
        return web.Response(text=twiml, content_type="text/xml")

    async def connect_done(self, request: web.Request) -> web.Response:
        """Twilio asks what next once our stream ended: the fallback number if we failed the call."""
        form = await request.post()
        if not self.signed(request, {k: str(v) for k, v in form.items()}):
            return web.Response(status=403)
        fallback = self.bridge.fallback_after_stream(str(form.get("CallSid", "")))
        return web.Response(text=after_stream(fallback), content_type="text/xml")

    async def media(self, request: web.Request) -> web.StreamResponse:
        """Twilio's media stream: signed upgrade, then a start carrying its one-time stream token."""
        if not self.signed(request):
            return web.Response(status=403)
        return await media_stream(self.bridge, request, TwilioCodec(), self.stream_authorized, self.transfer)

    def signed(self, request: web.Request, form: Mapping[str, str] | None = None) -> bool:
        """Did Twilio send this (X-Twilio-Signature)? Always true when no Auth Token is configured."""
        token = self.bridge.twilio_token
        if not token:
            return True
        ok = signed_twilio_style(
            token, self.bridge.settings, request, request.headers.get(SIGNATURE_HEADER), form
        )
        if not ok:
            log.warning("twilio signature rejected", path=request.path, remote=request.remote)
        return ok

    def stream_authorized(self, started: CallStarted) -> bool:
        """The stream carries the one-time token its webhook issued (a captured URL cannot replay)."""
        if not self.bridge.twilio_token:
            return True
        token = started.custom_parameters.get(STREAM_TOKEN_PARAMETER)
        return self.bridge.stream_tokens.redeem(started.call_sid, token)

    async def transfer(self, started: CallStarted, number: str) -> None:
        """Have Twilio replace the call's TwiML with a <Dial> (REST); TransferFailed says why not."""
        token = self.bridge.twilio_token
        if not token:
            raise TransferFailed("no Twilio credentials are configured (TWILIO_AUTH_TOKEN)")
        api_base = self.bridge.settings.twilio_api_base or None
        async with TwilioCalls(started.account_sid, token, api_base=api_base) as rest:
            await rest.transfer(started.call_sid, number)


async def browser_media_socket(request: web.Request) -> web.StreamResponse:
    """The softphone's stream: already signed in (admin cookie, same origin), so no Twilio checks."""
    return await media_stream(request.app[BRIDGE_KEY], request, TwilioCodec(), None)


def setup_twilio_routes(app: web.Application) -> None:
    routes = TwilioRoutes(app[BRIDGE_KEY])
    app.router.add_post("/twilio/voice", routes.voice_webhook)
    app.router.add_post(CONNECT_DONE_PATH, routes.connect_done)
    app.router.add_get(MEDIA_PATH, routes.media)
