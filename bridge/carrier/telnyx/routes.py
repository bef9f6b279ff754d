"""Telnyx's routes: the TeXML answer (POST /telnyx/texml), the media socket (GET /telnyx/media), and
transfers through Call Control.

A TeXML application points the number at /telnyx/texml. The answer is TeXML (TwiML-compatible)
`<Connect><Stream bidirectionalMode="rtp" ...>` asking for PCMU at 8 kHz both ways (the phone
network's own codec: Telnyx need not transcode), with the call's details and the one-time stream
token as `<Parameter>`s, which Telnyx hands over in the stream's `start` message (TeXML `<Stream>`
docs). With TELNYX_PUBLIC_KEY set the webhook must carry a valid signature and the stream must
present its token. With TELNYX_API_KEY set, transfers go through Call Control.
"""

from __future__ import annotations

from aiohttp import web

from bridge.carrier.answer_flow import CarrierRoutes, setting_text
from bridge.carrier.events import CallStarted
from bridge.carrier.registry import Carrier
from bridge.carrier.telnyx.rest import TelnyxCallControl
from bridge.carrier.telnyx.signature import TelnyxSignature
from bridge.carrier.transfer import CarrierTransfer, TransferFailed, transfers_unavailable
from bridge.carrier.twilio.twiml import TwimlAnswers
from bridge.carrier.webhook import CarrierPaths
from bridge.resources import BRIDGE_KEY

PATHS = CarrierPaths(answer="/telnyx/texml", media="/telnyx/media")
# TeXML <Stream> attributes (Telnyx TeXML "Stream" docs): the caller's track only, PCMU both ways.
STREAM_ATTRIBUTES = {
    "track": "inbound_track",
    "codec": "PCMU",
    "bidirectional_mode": "rtp",
    "bidirectional_codec": "PCMU",
    "bidirectional_sampling_rate": "8000",
}


def call_control_transfer(control: TelnyxCallControl) -> CarrierTransfer:
    """Transfer the Call Control call the stream's `start` named."""

    async def transfer(started: CallStarted, number: str, public_base: str) -> None:
        call_control_id = started.custom_parameters.get("call_control_id", "")
        if not call_control_id:
            raise TransferFailed("the stream did not say which Telnyx call it belongs to")
        await control.transfer(call_control_id, number)

    return transfer


def setup_routes(app: web.Application, carrier: Carrier) -> None:
    """Mount the Telnyx endpoints. A TELNYX_PUBLIC_KEY that is not an Ed25519 key stops start-up."""
    bridge = app[BRIDGE_KEY]
    settings = bridge.settings
    if api_key := setting_text(settings.telnyx_api_key):
        transfer = call_control_transfer(TelnyxCallControl(api_key, settings.telnyx_api_base))
    else:
        transfer = transfers_unavailable("no Telnyx API key is configured (TELNYX_API_KEY)", "TELNYX_API_KEY")
    answers = TwimlAnswers(PATHS, stream_attributes=STREAM_ATTRIBUTES)
    CarrierRoutes(bridge, carrier, answers, TelnyxSignature.from_public_key, transfer).mount(app)
