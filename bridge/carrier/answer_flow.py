"""The flow every carrier's routes share, written once: answer the call webhook, answer what comes
after a stream, and serve the media socket.

A call webhook is answered in this order: is it signed (403 if not) → is the bridge draining or full
(then the busy message, and the fallback number if one is set) → prepare the upstream session while
the carrier reads our answer → the answer connecting the call to our media socket, carrying the
call's details and, when webhooks are checked, a one-time stream token. A call we placed comes back
to the same webhook with its token in the URL (`?placed=`): it was admitted when it was placed (only
draining turns it away, silently), and its session and stream get the call's own configuration.
The media socket then checks the stream token at the stream's start (`stream_authorized`), the one
token check for every carrier.

What differs per carrier comes in as parts (`bridge.carrier.webhook`): how its webhooks are read and
its answers written, how it signs, and how it transfers a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict
from pydantic import SecretStr

from bridge.carrier.events import CallStarted
from bridge.carrier.outbound import PLACED_CALL_QUERY
from bridge.carrier.public_url import http_url, public_base, public_url
from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER, UPSTREAM_PARAMETER
from bridge.carrier.transfer import CarrierTransfer
from bridge.carrier.webhook import (
    RECORD_PARAMETER,
    AnswerDocuments,
    IncomingCall,
    StreamAnswer,
    UnusableWebhook,
    WebhookRequest,
    WebhookSignature,
    record_requested,
)
from bridge.carrier_leg import Transfer
from bridge.config import Settings
from bridge.logs import get_logger, mask_number
from bridge.media_stream import handle_media_stream
from bridge.resources import Bridge
from bridge.websocket_leg import CarrierCodec

if TYPE_CHECKING:
    from bridge.carrier.registry import Carrier
    from bridge.outbound.calls import PlacedCall

log = get_logger("bridge.carrier")

BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."
MAX_WEBHOOK_BYTES = 64 * 1024  # a call webhook is a few hundred bytes of form or JSON


def stream_claims(upstream_api: str, record: bool) -> str:
    """What a stream token vouches for beside its call, as the webhook chose it and the stream's
    parameters carry it back: a Live call's API (such a stream must carry `upstream=live`, and no other
    stream can claim it; a Realtime call's stream may leave the parameter out, as streams did before it
    existed), and that the webhook asked for a recording."""
    claims = []
    if upstream_api == "live":
        claims.append(f"{UPSTREAM_PARAMETER}=live")
    if record:
        claims.append(f"{RECORD_PARAMETER}=1")
    return "&".join(claims)


def setting_text(value: SecretStr | str | None) -> str:
    """A setting's value, secret or not, "" when unset."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value or ""


def public_base_url(settings: Settings, request: web.Request) -> str:
    """The base URL the carrier reached us at: PUBLIC_URL, else what the proxy says, else Host."""
    return public_base(settings.public_url, request.scheme, request.host, request.headers)


def webhook_request(settings: Settings, request: web.Request, body: bytes = b"") -> WebhookRequest:
    """The request as a signature sees it, with `body` already read (an upgrade has none)."""
    form: MultiDict[str] = MultiDict()
    if body and request.method == "POST" and request.content_type != "application/json":
        try:
            form = MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise web.HTTPBadRequest(text="form body is not UTF-8") from None
    return WebhookRequest(
        method=request.method,
        url=public_url(public_base_url(settings, request), request.raw_path),
        headers=request.headers,
        query=request.query,
        body=body,
        form=form,
    )


async def read_webhook(settings: Settings, request: web.Request) -> WebhookRequest:
    """Read a webhook's body, refusing (413) one larger than any carrier's webhook."""
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_WEBHOOK_BYTES, request.content_length)
    body = await request.read()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_WEBHOOK_BYTES, len(body))
    return webhook_request(settings, request, body)


async def serve_media_socket(
    bridge: Bridge,
    request: web.Request,
    codec: CarrierCodec,
    authorize: Callable[[CallStarted], bool] | None,
    transfer: Transfer | None = None,
) -> web.StreamResponse:
    """Any carrier's media-stream websocket, once its upgrade request was checked: 503 when full."""
    if len(bridge.active_calls) >= bridge.settings.max_calls:
        log.warning("media stream refused: at capacity", active_calls=len(bridge.active_calls))
        raise web.HTTPServiceUnavailable(text="at capacity")
    return await handle_media_stream(bridge.stream_context(authorize), request, codec, transfer=transfer)


class CarrierRoutes:
    """One carrier's call webhook, after-stream request and media socket, as aiohttp handlers.

    `scheme` makes the carrier's signature check from its signing key (the registry names the setting).
    With no key configured nothing is checked and no stream token is issued (the start-up warns).
    `transfer` is how the carrier hands a call to another number (`transfers_unavailable(why)` where it
    cannot).
    """

    def __init__(
        self,
        bridge: Bridge,
        carrier: Carrier,
        documents: AnswerDocuments,
        scheme: Callable[[str], WebhookSignature],
        transfer: CarrierTransfer,
    ) -> None:
        self.bridge = bridge
        self.carrier = carrier
        self.documents = documents
        key = setting_text(getattr(bridge.settings, carrier.signing_key))
        self.signature: WebhookSignature | None = scheme(key) if key else None
        self.transfer = transfer

    def mount(self, app: web.Application) -> None:
        """Serve the call webhook, the after-stream request (where the carrier asks one) and the socket."""
        paths = self.documents.paths
        for method in paths.methods:
            app.router.add_route(method, paths.answer, self.answer)
            if paths.after_stream:
                app.router.add_route(method, paths.after_stream, self.after_stream)
        app.router.add_get(paths.media, self.media)

    async def answer(self, request: web.Request) -> web.Response:
        """The call webhook: the busy message when the bridge cannot take the call, else the answer
        connecting it to our media socket, its upstream session opening meanwhile."""
        webhook = await self.signed_webhook(request)
        call = self._incoming_call(webhook)
        bridge, name = self.bridge, self.carrier.name
        placed = None
        if (placed_token := webhook.query.get(PLACED_CALL_QUERY)) is not None:
            placed = await self._placed_call(placed_token, call.call_id, request)
            if bridge.draining:
                log.warning("placed call answered while draining: hung up", call_id=placed.call_id)
                return self.document(self.documents.turn_away("", ""))
        elif bridge.turned_away(call.call_id, name):
            return self.document(
                self.documents.turn_away(BUSY_MESSAGE, bridge.settings.fallback_number, call.callee)
            )
        config = placed.config if placed is not None else bridge.call_config
        # An operator asks for a call's recording (RECORDING=requested) with `record=1` on the webhook
        # URL the carrier is given: a number's webhook, or an outbound call's.
        record = record_requested(webhook.query)
        recorded = bridge.recordings is not None and bridge.recordings.wanted(webhook.query)
        # `?upstream=live|realtime` on the webhook URL (an A/B test), else the called number's, else the
        # default (a call we placed: Realtime); the stream carries the choice back, vouched for by its
        # token.
        requested = webhook.query.get(UPSTREAM_PARAMETER, "")
        api, problem = config.upstream_for(call.callee, requested, recorded=recorded)
        if problem:
            log.warning("upstream choice not followed", carrier=name, call_sid=call.call_id, problem=problem)
        if call.call_id:
            bridge.prepared.prepare(call.call_id, lambda: bridge.open_prepared(config, api))
            bridge.awaited.answered(call, name)
        log.info(
            "call webhook answered",
            carrier=name,
            call_sid=call.call_id,
            caller=mask_number(call.caller),
            callee=mask_number(call.callee),
            direction=call.direction,
            upstream_api=api,
            placed_call=placed.call_id if placed is not None else None,
            record=record,
        )
        token = ""
        if self.signature is not None and call.call_id:
            token = bridge.stream_tokens.issue(call.call_id, stream_claims(api, record))
        public = http_url(public_base_url(bridge.settings, request))
        placed_call = placed.call_id if placed is not None else ""
        answer = StreamAnswer(call, public, token, api, placed_call=placed_call, record=record)
        return self.document(self.documents.connect(answer))

    async def _placed_call(self, token: str, carrier_call_id: str, request: web.Request) -> PlacedCall:
        """The call we placed whose answer this is; 403 for a token that names none of ours (or one
        another of the carrier's calls already answered)."""
        outbound = self.bridge.outbound
        placed = await outbound.answering(token, carrier_call_id) if outbound is not None else None
        if placed is None:
            log.warning("answer refused: no call we placed", carrier=self.carrier.name, remote=request.remote)
            raise web.HTTPForbidden()
        return placed

    async def after_stream(self, request: web.Request) -> web.Response:
        """The carrier asks what next once our stream ended: the fallback number if we failed the call,
        else hang up."""
        call = self._incoming_call(await self.signed_webhook(request))
        self.bridge.awaited.after_stream(call, self.carrier.name)
        fallback = self.bridge.fallback_after_stream(call.call_id)
        return self.document(self.documents.turn_away("", fallback))

    async def media(self, request: web.Request) -> web.StreamResponse:
        """The media socket: an upgrade the carrier's scheme accepts, then a start carrying its token."""
        bridge, signature = self.bridge, self.signature
        if signature is not None and not signature.accepts_upgrade(webhook_request(bridge.settings, request)):
            self._rejected(request)
            return web.Response(status=403)
        codec, transfer = self.carrier.codec(), self._transfer(request)
        return await serve_media_socket(bridge, request, codec, self.stream_authorized, transfer)

    def stream_authorized(self, started: CallStarted) -> bool:
        """Does the stream carry the one-time token its webhook was answered with (so a captured
        stream URL cannot place a call, nor switch its recording on or off)? Always, when webhooks
        are not checked."""
        if self.signature is None:
            return True
        params = started.custom_parameters
        token = params.get(STREAM_TOKEN_PARAMETER)
        claims = stream_claims(params.get(UPSTREAM_PARAMETER, ""), record_requested(params))
        return self.bridge.stream_tokens.redeem(started.call_sid, token, claims)

    async def signed_webhook(self, request: web.Request) -> WebhookRequest:
        """The request, once the carrier's signature over it checked out (403 otherwise)."""
        webhook = await read_webhook(self.bridge.settings, request)
        if self.signature is not None and not self.signature.webhook_is_signed(webhook):
            self._rejected(request)
            raise web.HTTPForbidden()
        return webhook

    def document(self, text: str) -> web.Response:
        return web.Response(text=text, content_type=self.documents.content_type)

    def _incoming_call(self, webhook: WebhookRequest) -> IncomingCall:
        try:
            return self.documents.incoming_call(webhook)
        except UnusableWebhook as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None

    def _transfer(self, request: web.Request) -> Transfer:
        carrier_transfer = self.transfer
        public = http_url(public_base_url(self.bridge.settings, request))

        async def transfer(started: CallStarted, number: str) -> None:
            await carrier_transfer(started, number, public)

        return transfer

    def _rejected(self, request: web.Request) -> None:
        log.warning("signature rejected", carrier=self.carrier.name, path=request.path, remote=request.remote)
