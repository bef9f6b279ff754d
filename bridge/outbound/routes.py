"""Placing calls over HTTP: `POST /api/calls` (admin token), and the route every carrier's progress
callbacks about placed calls go through.

`POST /api/calls` answers 201 with the call's id as soon as the carrier has taken the call (it is
`queued`: ringing and the rest follow in the call log, at `/calls`, and at the request's callback_url).
Errors are JSON `{"error": ...}`: 400 for a bad request (every problem named), 401 without the admin
token, 429 beyond a limit (with Retry-After), 502 when the carrier refused the call (its id is given:
the call log has why), 503 when calls cannot be placed now (it says why).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.calllog.auth import OperatorAuth
from bridge.calllog.placed_calls import LimitReached
from bridge.calllog.store import database_unavailable
from bridge.carrier.answer_flow import public_base_url, read_webhook
from bridge.carrier.outbound import PLACED_CALL_QUERY, CallNotPlaced, CallProgress
from bridge.carrier.public_url import http_url
from bridge.carrier.webhook import UnusableWebhook, WebhookRequest
from bridge.logs import get_logger
from bridge.outbound.calls import OutboundUnavailable
from bridge.outbound.request import BadOutboundRequest, OutboundRequest
from bridge.resources import Bridge

log = get_logger("bridge.outbound")

MAX_REQUEST_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: object) -> web.Response:
    headers = dict(_NO_STORE)
    if (retry := extra.pop("retry_after_s", None)) is not None:
        headers["Retry-After"] = str(retry)
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def setup_outbound_routes(app: web.Application, bridge: Bridge) -> None:
    auth = OperatorAuth(bridge.admin_token)  # the admin alone places calls, not every operator

    async def place(request: web.Request) -> web.Response:
        if not auth.authenticated(request):
            response = _error(401, "unauthorized")
            response.headers["WWW-Authenticate"] = 'Bearer realm="calls"'
            return response
        outbound = bridge.outbound
        if outbound is None:
            return _error(
                503, "placing calls needs the call log (CALL_LOG_URL), where their progress is kept"
            )
        if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
            return _error(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        raw = await request.read()  # aiohttp refuses more than client_max_size on its own
        if len(raw) > MAX_REQUEST_BYTES:
            return _error(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes")
        try:
            body = json.loads(raw or b"null")
            wanted = OutboundRequest.parse(body)
        except ValueError as exc:  # not JSON, or BadOutboundRequest
            message = str(exc) if isinstance(exc, BadOutboundRequest) else "the body must be JSON"
            return _error(400, message)
        here = http_url(public_base_url(bridge.settings, request))
        try:
            placed = await outbound.place(wanted, here, at_capacity=bridge.at_capacity)
        except BadOutboundRequest as exc:
            return _error(400, str(exc))
        except LimitReached as exc:
            log.warning("call not placed: limit reached", limit=exc.limit)
            return _error(429, str(exc), limit=exc.limit, retry_after_s=exc.retry_after_s)
        except OutboundUnavailable as exc:
            return _error(503, str(exc))
        except CallNotPlaced as exc:
            return _error(502, f"the carrier did not place the call: {exc}")
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            log.warning("call not placed: the call log is unavailable", error=type(exc).__name__)
            return _error(503, "the call-log database is unavailable; try again shortly", retry_after_s=5)
        body_out = {
            "call_id": placed.call_id,
            "status": "queued",
            "to": placed.to,
            "from": placed.from_,
            "carrier": placed.carrier,
            "url": f"/api/calls/{placed.call_id}",
            "page": f"/calls/{placed.call_id}",
        }
        headers = {**_NO_STORE, "Location": body_out["url"]}
        return web.json_response(body_out, status=201, headers=headers)

    app.router.add_post("/api/calls", place)


def progress_callback(
    bridge: Bridge, carrier: str, read: Callable[[WebhookRequest], CallProgress]
) -> Handler:
    """A carrier's callback about a call we placed, with `read` turning it into CallProgress: signed
    by the account that placed the call and carrying the call's token, or refused (403)."""

    async def handler(request: web.Request) -> web.Response:
        outbound = bridge.outbound
        dialer = outbound.dialer(carrier) if outbound is not None else None
        if outbound is None or dialer is None:
            return web.Response(status=404, text="no calls are placed through this carrier")
        webhook = await read_webhook(bridge.settings, request)
        if not dialer.signature.webhook_is_signed(webhook):
            log.warning("placed call callback refused: bad signature", carrier=carrier, remote=request.remote)
            return web.Response(status=403)
        call_id = outbound.tokens.call_id(webhook.query.get(PLACED_CALL_QUERY))
        if call_id is None:
            log.warning("placed call callback refused: bad token", carrier=carrier, remote=request.remote)
            return web.Response(status=403)
        try:
            progress = read(webhook)
        except UnusableWebhook as exc:
            return web.Response(status=400, text=str(exc))
        try:
            known = await outbound.progress(call_id, progress)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            log.error("placed call progress lost: the call log is unavailable", call_id=call_id)
            return web.Response(status=503)
        return web.Response(status=204 if known else 404)

    return handler
