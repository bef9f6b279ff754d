"""Twilio's routes: the voice webhook (TwiML `<Connect><Stream>`), the `<Connect action>` callback, and
the media stream; plus the browser softphone's stream, which speaks the same dialect."""

from __future__ import annotations

from aiohttp import web

from bridge.carrier.signature import STREAM_TOKEN_PARAMETER
from bridge.carrier.twilio import TwilioCodec
from bridge.logs import get_logger, mask_number
from bridge.resources import BRIDGE_KEY, media_stream, public_base_url
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


async def voice_webhook(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    form = await request.post()
    if not bridge.signed(request, {k: str(v) for k, v in form.items()}):
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


async def connect_done(request: web.Request) -> web.Response:
    """Twilio asks what next once our stream ended: the fallback number if we failed the call."""
    bridge = request.app[BRIDGE_KEY]
    form = await request.post()
    if not bridge.signed(request, {k: str(v) for k, v in form.items()}):
        return web.Response(status=403)
    fallback = bridge.fallback_after_stream(str(form.get("CallSid", "")))
    return web.Response(text=after_stream(fallback), content_type="text/xml")


async def media_socket(request: web.Request) -> web.StreamResponse:
    """Twilio's media stream: signed upgrade, then a start carrying its one-time stream token."""
    bridge = request.app[BRIDGE_KEY]
    if not bridge.signed(request):
        return web.Response(status=403)
    return await media_stream(
        bridge, request, TwilioCodec(), bridge.stream_authorized, transfer=bridge.twilio_transfer
    )


async def browser_media_socket(request: web.Request) -> web.StreamResponse:
    """The softphone's stream: already signed in (admin cookie, same origin), so no Twilio checks."""
    return await media_stream(request.app[BRIDGE_KEY], request, TwilioCodec(), None)


def setup_twilio_routes(app: web.Application) -> None:
    app.router.add_post("/twilio/voice", voice_webhook)
    app.router.add_post(CONNECT_DONE_PATH, connect_done)
    app.router.add_get(MEDIA_PATH, media_socket)
