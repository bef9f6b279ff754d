"""Telnyx's endpoints: the TeXML answer (POST /telnyx/texml), the media socket (GET /telnyx/media),
and transfers through Call Control.

A TeXML application points the number at /telnyx/texml. The answer is TeXML (TwiML-compatible)
`<Connect><Stream bidirectionalMode="rtp" ...>` asking for PCMU at 8 kHz both ways (the phone
network's own codec: Telnyx need not transcode), with the call's details and the one-time stream
token as `<Parameter>`s, which Telnyx hands over in the stream's `start` message (TeXML `<Stream>`
docs). With TELNYX_PUBLIC_KEY set the webhook must carry a valid Ed25519 signature
(`telnyx-signature-ed25519` over `timestamp|body`, `telnyx-timestamp` within 5 minutes) and the stream
must present its token. Telnyx documents no signature on the websocket upgrade, so the token is what
ties a stream to a webhook we verified. Whether Telnyx signs TeXML fetches exactly like its Call
Control webhooks is unverified.

Transfers (TELNYX_API_KEY set): `POST {TELNYX_API_BASE}/v2/calls/{call_control_id}/actions/transfer`
with `{"to": number}`. That a TeXML-driven call accepts this Call Control command is unverified.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.carrier.events import CallStarted
from bridge.carrier.signature import STREAM_TOKEN_PARAMETER
from bridge.carrier.telnyx import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TelnyxCodec,
    load_public_key,
    webhook_is_signed,
)
from bridge.carrier_leg import Transfer
from bridge.logs import get_logger, mask_number
from bridge.resources import BRIDGE_KEY, Bridge, media_stream, public_base_url
from bridge.twiml import connect_stream, media_stream_url, unavailable

log = get_logger("bridge.telnyx")

CARRIER = "telnyx"
TEXML_PATH = "/telnyx/texml"
MEDIA_PATH = "/telnyx/media"
DEFAULT_API_BASE = "https://api.telnyx.com"
TRANSFER_TIMEOUT_S = 10.0
MAX_WEBHOOK_BYTES = 64 * 1024
BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."
# TeXML <Stream> attributes (Telnyx TeXML "Stream" docs): the caller's track only, PCMU both ways.
STREAM_ATTRIBUTES = {
    "track": "inbound_track",
    "codec": "PCMU",
    "bidirectional_mode": "rtp",
    "bidirectional_codec": "PCMU",
    "bidirectional_sampling_rate": "8000",
}


class TelnyxCallControl:
    """The one Call Control command the bridge needs: transfer a live call to a number."""

    def __init__(self, api_key: str, api_base: str = "", timeout_s: float = TRANSFER_TIMEOUT_S) -> None:
        self._api_key = api_key
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.timeout_s = timeout_s

    async def transfer(self, call_control_id: str, number: str) -> str | None:
        """Returns why it failed (status and Telnyx's error code/title, never the key), or None."""
        url = f"{self.api_base}/v2/calls/{quote(call_control_id, safe='')}/actions/transfer"
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as http,
                http.post(url, json={"to": number}, headers=headers) as response,
            ):
                if 200 <= response.status < 300:
                    return None
                summary = _error_summary(await response.text())
                return f"Telnyx transfer failed: HTTP {response.status}{summary}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"Telnyx transfer failed: {type(exc).__name__}"


def _error_summary(body: str) -> str:
    # Telnyx errors: {"errors": [{"code": "90018", "title": "Call has already ended", "detail": ...}]}
    try:
        errors = json.loads(body).get("errors") or []
        first: dict[str, Any] = errors[0] if isinstance(errors[0], dict) else {}
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f" (code {str(first.get('code', ''))[:16]}: {str(first.get('title', ''))[:80]})"


class TelnyxRoutes:
    """The Telnyx endpoints, checking webhooks with the account's public key (None: unchecked)."""

    def __init__(self, public_key: Ed25519PublicKey | None) -> None:
        self.public_key = public_key

    def _signed(self, request: web.Request, body: bytes) -> bool:
        if self.public_key is None:
            return True
        ok = webhook_is_signed(
            self.public_key,
            body,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            time.time(),
        )
        if not ok:
            log.warning("telnyx signature rejected", path=request.path, remote=request.remote)
        return ok

    async def texml(self, request: web.Request) -> web.Response:
        bridge = request.app[BRIDGE_KEY]
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
            return web.Response(status=413)
        body = await request.read()
        if not self._signed(request, body):
            return web.Response(status=403)
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return web.Response(status=400, text="form body is not UTF-8")
        call_sid = form.get("CallSid", "")
        caller, callee = form.get("From", ""), form.get("To", "")
        if bridge.turned_away(call_sid, CARRIER):
            return _texml(unavailable(BUSY_MESSAGE, bridge.settings.fallback_number))
        direction = "outbound" if form.get("Direction", "").startswith("outbound") else "inbound"
        if call_sid:
            bridge.prepared.prepare(call_sid, bridge.open_prepared)
        log.info("telnyx webhook", call_sid=call_sid, caller=mask_number(caller), callee=mask_number(callee))
        parameters = {"from": caller, "to": callee, "call_sid": call_sid, "direction": direction}
        if self.public_key is not None and call_sid:
            parameters[STREAM_TOKEN_PARAMETER] = bridge.stream_tokens.issue(call_sid)
        stream_url = media_stream_url(public_base_url(bridge.settings, request), MEDIA_PATH)
        return _texml(connect_stream(stream_url, parameters, stream_attributes=STREAM_ATTRIBUTES))

    async def media(self, request: web.Request) -> web.StreamResponse:
        bridge = request.app[BRIDGE_KEY]

        def authorize(started: CallStarted) -> bool:
            if self.public_key is None:
                return True
            token = started.custom_parameters.get(STREAM_TOKEN_PARAMETER)
            return bridge.stream_tokens.redeem(started.call_sid, token)

        return await media_stream(bridge, request, TelnyxCodec(), authorize, transfer=_transfer(bridge))


def _transfer(bridge: Bridge) -> Transfer | None:
    api_key = bridge.settings.telnyx_api_key
    if api_key is None or not api_key.get_secret_value():
        return None  # the leg tells the assistant transfers are not available on telnyx calls
    control = TelnyxCallControl(api_key.get_secret_value(), bridge.settings.telnyx_api_base)

    async def transfer(started: CallStarted, number: str) -> str | None:
        call_control_id = started.custom_parameters.get("call_control_id", "")
        if not call_control_id:
            return "the stream did not say which Telnyx call it belongs to"
        return await control.transfer(call_control_id, number)

    return transfer


def _texml(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/xml")


def setup_telnyx_routes(app: web.Application) -> None:
    """Mount the Telnyx endpoints. A TELNYX_PUBLIC_KEY that is not an Ed25519 key stops start-up."""
    encoded = app[BRIDGE_KEY].settings.telnyx_public_key
    routes = TelnyxRoutes(load_public_key(encoded) if encoded else None)
    app.router.add_post(TEXML_PATH, routes.texml)
    app.router.add_get(MEDIA_PATH, routes.media)
