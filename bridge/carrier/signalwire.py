"""SignalWire's cXML `<Connect><Stream>`: Twilio's media-stream dialect at SignalWire's own paths.

The wire is Twilio's (PROTOCOLS.md A9), so the codec is `TwilioCodec("signalwire")` and the answer is
built by `bridge.twiml`. What differs is who signs: SignalWire signs its compatibility (cXML) webhooks
with the project's Signing Key, in `X-SignalWire-Signature` (and `X-Twilio-Signature` as an alias),
as base64(HMAC-SHA1(key, URL + sorted form parameters)): Twilio's scheme, so Twilio's validator
does it with the Signing Key in place of the Auth Token (SignalWire's own validators,
signalwire-typescript src/WebhookValidator.ts "Scheme B", compute exactly that).

Unverified: whether SignalWire signs the media websocket upgrade the way Twilio does. With
SIGNALWIRE_SIGNING_KEY set it is required, and the one-time stream token is required at `start`
either way. Transfers are not offered: they need SignalWire REST credentials (project id, API
token, space URL) this bridge has no settings for, so the assistant is told transfers are unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from bridge.carrier.events import CallStarted
from bridge.carrier.signature import STREAM_TOKEN_PARAMETER
from bridge.carrier.twilio import TwilioCodec
from bridge.logs import get_logger, mask_number
from bridge.resources import BRIDGE_KEY, Bridge, media_stream, public_base_url, signed_twilio_style
from bridge.twiml import after_stream, connect_stream, http_url, media_stream_url, unavailable

log = get_logger("bridge.signalwire")

CARRIER = "signalwire"
VOICE_PATH = "/signalwire/voice"
MEDIA_PATH = "/signalwire/media"
CONNECT_DONE_PATH = "/signalwire/connect-done"
SIGNATURE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")
BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."


def signing_key(bridge: Bridge) -> str:
    key = bridge.settings.signalwire_signing_key
    return key.get_secret_value() if key is not None else ""


def request_signature(headers: Mapping[str, str]) -> str | None:
    for name in SIGNATURE_HEADERS:
        if value := headers.get(name):
            return value
    return None


class SignalWireRoutes:
    """The three SignalWire endpoints."""

    def _signed(self, request: web.Request, bridge: Bridge, form: Mapping[str, str] | None = None) -> bool:
        """Signed with the Signing Key (form: a webhook; None: the media upgrade)? True with no key."""
        key = signing_key(bridge)
        if not key:
            return True
        ok = signed_twilio_style(key, bridge.settings, request, request_signature(request.headers), form)
        if not ok:
            log.warning("signalwire signature rejected", path=request.path, remote=request.remote)
        return ok

    async def voice(self, request: web.Request) -> web.Response:
        bridge = request.app[BRIDGE_KEY]
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._signed(request, bridge, form):
            return web.Response(status=403)
        call_sid = form.get("CallSid", "")
        caller, callee = form.get("From", ""), form.get("To", "")
        if bridge.turned_away(call_sid, CARRIER):
            cxml = unavailable(BUSY_MESSAGE, bridge.settings.fallback_number)
            return web.Response(text=cxml, content_type="text/xml")
        direction = "outbound" if form.get("Direction", "").startswith("outbound") else "inbound"
        if call_sid:
            bridge.prepared.prepare(call_sid, bridge.open_prepared)
        base_url = public_base_url(bridge.settings, request)
        log.info(
            "signalwire webhook", call_sid=call_sid, caller=mask_number(caller), callee=mask_number(callee)
        )
        parameters = {"from": caller, "to": callee, "call_sid": call_sid, "direction": direction}
        if signing_key(bridge) and call_sid:
            parameters[STREAM_TOKEN_PARAMETER] = bridge.stream_tokens.issue(call_sid)
        cxml = connect_stream(
            media_stream_url(base_url, MEDIA_PATH),
            parameters,
            action_url=http_url(base_url, CONNECT_DONE_PATH),
        )
        return web.Response(text=cxml, content_type="text/xml")

    async def connect_done(self, request: web.Request) -> web.Response:
        """SignalWire asks what next once our stream ended: the fallback number if we failed the call."""
        bridge = request.app[BRIDGE_KEY]
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._signed(request, bridge, form):
            return web.Response(status=403)
        fallback = bridge.fallback_after_stream(form.get("CallSid", ""))
        return web.Response(text=after_stream(fallback), content_type="text/xml")

    async def media(self, request: web.Request) -> web.StreamResponse:
        bridge = request.app[BRIDGE_KEY]
        # Whether SignalWire signs the websocket upgrade is unverified: a signature that is there must
        # be right, but none is not refused. The one-time token checked at `start` is what binds the
        # stream to a signed webhook, so an unsigned upgrade still cannot place a call.
        if request_signature(request.headers) is not None and not self._signed(request, bridge):
            return web.Response(status=403)

        def authorize(started: CallStarted) -> bool:
            if not signing_key(bridge):
                return True
            token = started.custom_parameters.get(STREAM_TOKEN_PARAMETER)
            return bridge.stream_tokens.redeem(started.call_sid, token)

        return await media_stream(bridge, request, TwilioCodec(CARRIER), authorize, transfer=None)


def setup_signalwire_routes(app: web.Application) -> None:
    routes = SignalWireRoutes()
    app.router.add_post(VOICE_PATH, routes.voice)
    app.router.add_post(CONNECT_DONE_PATH, routes.connect_done)
    app.router.add_get(MEDIA_PATH, routes.media)
