"""Vonage's answer and event URLs and its media websocket.

A Vonage application has an answer URL (asked for an NCCO when a call arrives, GET by default or
POST with a JSON body if so configured) and an event URL (POSTed call status changes). Our NCCO is
one `connect` action to a `websocket` endpoint at `/vonage/media`, L16 at 16 kHz, whose `headers`
carry the call id, the numbers and a one-time stream token; Vonage hands them back at the top level
of `websocket:connected` (see `bridge.carrier.vonage`).

Signed webhooks: with the application's signed-webhook option on, Vonage sends
`Authorization: Bearer <JWT>`, HS256 with the account's signature secret, whose `payload_hash` claim is
the SHA-256 of the request body (Vonage's "Signed webhooks" guide; its Python SDK checks the signature
with PyJWT the same way). The hash's spelling, hex digits, is unverified (compared case-blind).
With `VONAGE_SIGNATURE_SECRET` set, the answer and event URLs refuse (403) a missing, forged, expired
or stale token, or a body that does not match its hash.
Unverified: whether Vonage's tokens carry `exp` (honoured when present); we also refuse a token
issued more than `MAX_TOKEN_AGE_S` ago, so a captured request cannot be replayed later. The media
socket's upgrade carries no signature we could check, so the stream token binds it to an answer we
signed-checked, redeemed once at `websocket:connected`.

Transfers need Vonage's REST API, which authenticates with the application's private key (an RS256
JWT); the bridge holds no such key, so a Vonage leg reports transfers as unavailable.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import jwt
import msgspec
from aiohttp import web

from bridge.carrier.events import CallStarted
from bridge.carrier.json_message import decode_json
from bridge.carrier.signature import STREAM_TOKEN_PARAMETER, websocket_url
from bridge.carrier.vonage import CALL_ID_HEADER, VonageCodec
from bridge.logs import get_logger, mask_number
from bridge.resources import BRIDGE_KEY, Bridge, media_stream, public_base_url

log = get_logger("bridge.vonage")

ANSWER_PATH = "/vonage/answer"
EVENT_PATH = "/vonage/event"
MEDIA_PATH = "/vonage/media"
CONTENT_TYPE = "audio/l16;rate=16000"  # wideband: 16 kHz goes straight to the model's 24 kHz
MAX_TOKEN_AGE_S = 300.0  # a signed request older than this is a replay, not a webhook
CLOCK_SKEW_S = 30.0
BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."


def webhook_is_signed(secret: str, authorization: str | None, body: bytes, now: float | None = None) -> bool:
    """Is this request's `Authorization: Bearer <JWT>` Vonage's signature over `body`?"""
    if not secret or not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        claims = jwt.decode(
            token.strip(), secret, algorithms=["HS256"], options={"require": ["iat"]}, leeway=CLOCK_SKEW_S
        )
    except jwt.PyJWTError:
        return False
    now = time.time() if now is None else now
    issued = claims["iat"]  # PyJWT has checked it is a number and not in the future
    if now - issued > MAX_TOKEN_AGE_S:
        return False
    if body:
        given = claims.get("payload_hash")
        expected = hashlib.sha256(body).hexdigest()
        if not isinstance(given, str) or not hmac.compare_digest(given.lower().encode(), expected.encode()):
            return False
    return True


def connect_websocket(media_uri: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The NCCO connecting the call to our media socket, `headers` echoed in `websocket:connected`."""
    endpoint = {"type": "websocket", "uri": media_uri, "content-type": CONTENT_TYPE, "headers": dict(headers)}
    return [{"action": "connect", "endpoint": [endpoint]}]


def busy(message: str, fallback_number: str = "", our_number: str = "") -> list[dict[str, Any]]:
    """Tell the caller we cannot take the call now; connect `fallback_number` if there is one.

    Vonage writes numbers in E.164 without the '+'; a `connect` to a phone presents one of our own
    numbers as the caller (the one that was dialled)."""
    ncco: list[dict[str, Any]] = [{"action": "talk", "text": message}]
    if fallback_number:
        action: dict[str, Any] = {
            "action": "connect",
            "endpoint": [{"type": "phone", "number": fallback_number.lstrip("+")}],
        }
        if our_number:
            action["from"] = our_number.lstrip("+")
        ncco.append(action)
    return ncco


class VonageRoutes:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    @property
    def secret(self) -> str:
        value = self.bridge.settings.vonage_signature_secret
        return value.get_secret_value() if value is not None else ""

    def _signed(self, request: web.Request, body: bytes) -> bool:
        """Signed by Vonage? Always true when no signature secret is configured."""
        if not self.secret:
            return True
        if webhook_is_signed(self.secret, request.headers.get("Authorization"), body):
            return True
        log.warning("vonage signature rejected", path=request.path, remote=request.remote)
        return False

    async def answer(self, request: web.Request) -> web.StreamResponse:
        """The answer URL: an NCCO connecting the call to our media socket (or a busy message)."""
        body = await request.read()
        if not self._signed(request, body):
            return web.Response(status=403)
        params: dict[str, Any] = dict(request.query)
        if body:
            try:
                posted = decode_json(body)
            except msgspec.DecodeError:
                return web.Response(status=400, text="body is not JSON")
            if not isinstance(posted, dict):
                return web.Response(status=400, text="body is not a JSON object")
            params.update(posted)
        call_id, caller, callee = (str(params.get(name) or "") for name in ("uuid", "from", "to"))
        if not call_id:
            return web.Response(status=400, text="no call uuid")
        bridge = self.bridge
        if bridge.turned_away(call_id, "vonage"):
            return web.json_response(busy(BUSY_MESSAGE, bridge.settings.fallback_number, callee))
        bridge.prepared.prepare(call_id, bridge.open_prepared)
        base = public_base_url(bridge.settings, request)
        headers = {CALL_ID_HEADER: call_id, "from": caller, "to": callee, "direction": "inbound"}
        if self.secret:
            headers[STREAM_TOKEN_PARAMETER] = bridge.stream_tokens.issue(call_id)
        log.info("vonage answer", call_sid=call_id, caller=mask_number(caller), callee=mask_number(callee))
        return web.json_response(connect_websocket(websocket_url(base + MEDIA_PATH), headers))

    async def event(self, request: web.Request) -> web.StreamResponse:
        """The event URL: call status changes, logged; the call itself is followed on the socket."""
        body = await request.read()
        if not self._signed(request, body):
            return web.Response(status=403)
        try:
            event = decode_json(body) if body else {}
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

    async def media(self, request: web.Request) -> web.StreamResponse:
        """Vonage's media socket; its `websocket:connected` must carry the token our answer issued."""
        return await media_stream(self.bridge, request, VonageCodec(), self.stream_authorized, None)

    def stream_authorized(self, started: CallStarted) -> bool:
        if not self.secret:
            return True
        token = started.custom_parameters.get(STREAM_TOKEN_PARAMETER)
        return self.bridge.stream_tokens.redeem(started.call_sid, token)


def setup_vonage_routes(app: web.Application) -> None:
    """Mount the answer URL (GET, or POST with a JSON body), the event URL and the media socket."""
    routes = VonageRoutes(app[BRIDGE_KEY])
    app.router.add_get(ANSWER_PATH, routes.answer)
    app.router.add_post(ANSWER_PATH, routes.answer)
    app.router.add_post(EVENT_PATH, routes.event)
    app.router.add_get(MEDIA_PATH, routes.media)
