"""Plivo's routes: the answer URL, the after-stream redirect, the audio-stream websocket, and the
document a transfer fetches.

* `POST|GET /plivo/answer` (the number's or application's Answer URL) answers a bidirectional
  `<Stream keepCallAlive="true">` to `/plivo/media` (`bridge.carrier.plivo.plivo_xml`).
* `POST|GET /plivo/after-stream` is the `<Redirect>` that follows the stream: the fallback number for
  a call the bridge failed, else hang up.
* `GET /plivo/media` is the stream; its `start` must present the token its answer issued.
* Transfers use the Call API (`bridge.carrier.plivo.rest`): Plivo fetches `/plivo/transfer?to=…`
  (signed like any of its requests), which answers `<Dial>`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from bridge.carrier.answer_flow import CarrierRoutes, setting_text
from bridge.carrier.events import CallStarted
from bridge.carrier.plivo.plivo_xml import PlivoAnswers, dial_xml
from bridge.carrier.plivo.rest import transfer_call
from bridge.carrier.plivo.signature import PlivoSignature
from bridge.carrier.public_url import public_url
from bridge.carrier.registry import Carrier
from bridge.carrier.transfer import CarrierTransfer, TransferFailed, transfers_unavailable
from bridge.carrier.webhook import CarrierPaths
from bridge.logs import get_logger, mask_number
from bridge.phone_numbers import valid_e164
from bridge.resources import BRIDGE_KEY

log = get_logger("bridge.plivo")

# Plivo may fetch its answer, redirect and transfer URLs with POST or GET (its `*_method` options).
PATHS = CarrierPaths(
    answer="/plivo/answer", media="/plivo/media", after_stream="/plivo/after-stream", methods=("POST", "GET")
)
TRANSFER_PATH = "/plivo/transfer"
NO_CREDENTIALS = "no Plivo credentials are configured (PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN)"


def call_api_transfer(auth_id: str, auth_token: str, api_base: str) -> CarrierTransfer:
    """Have Plivo fetch our transfer document for `number` and run it on the call."""

    async def transfer(started: CallStarted, number: str, public_base: str) -> None:
        if not valid_e164(number):
            raise TransferFailed("the transfer number is not E.164")
        aleg_url = f"{public_url(public_base, TRANSFER_PATH)}?{urlencode({'to': number})}"
        await transfer_call(auth_id, auth_token, started.call_sid, aleg_url, api_base=api_base)

    return transfer


def setup_routes(app: web.Application, carrier: Carrier) -> None:
    bridge = app[BRIDGE_KEY]
    settings = bridge.settings
    token = setting_text(settings.plivo_auth_token)
    if settings.plivo_auth_id and token:
        transfer = call_api_transfer(settings.plivo_auth_id, token, settings.plivo_api_base)
    else:
        missing = "PLIVO_AUTH_TOKEN" if settings.plivo_auth_id else "PLIVO_AUTH_ID"
        transfer = transfers_unavailable(NO_CREDENTIALS, missing)
    answers = PlivoAnswers(PATHS)
    routes = CarrierRoutes(bridge, carrier, answers, PlivoSignature, transfer)
    routes.mount(app)

    async def transfer_document(request: web.Request) -> web.Response:
        """The `aleg_url` of a transfer the bridge asked for: dial the number. Only Plivo may fetch it."""
        if routes.signature is None:
            raise web.HTTPForbidden()  # transfers need the credentials, so this is never legitimate
        webhook = await routes.signed_webhook(request)
        number = request.query.get("to", "")
        if not valid_e164(number):
            raise web.HTTPBadRequest(text="to must be an E.164 number")
        call_id = answers.incoming_call(webhook).call_id
        log.info("plivo transfer document", call_sid=call_id, to=mask_number(number))
        return routes.document(dial_xml(number))

    for method in PATHS.methods:
        app.router.add_route(method, TRANSFER_PATH, transfer_document)
