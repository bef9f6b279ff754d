"""Vonage's answer documents (NCCOs) and its answer URL's request read.

Our NCCO is one `connect` action to a `websocket` endpoint at our media socket, L16 at 16 kHz, whose
`headers` carry the call id, the numbers and a one-time stream token; Vonage hands them back at the
top level of `websocket:connected` (see `bridge.carrier.vonage.codec`). The answer URL is asked with
GET and a query by default, or POST with a JSON body if the application is so configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from bridge.carrier.json_message import decode_json
from bridge.carrier.public_url import public_url, websocket_url
from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER
from bridge.carrier.vonage.codec import CALL_ID_HEADER
from bridge.carrier.webhook import (
    RECORD_PARAMETER,
    CarrierPaths,
    IncomingCall,
    StreamAnswer,
    UnusableWebhook,
    WebhookRequest,
)

CONTENT_TYPE = "audio/l16;rate=16000"  # wideband: 16 kHz goes straight to the model's 24 kHz

_encoder = msgspec.json.Encoder()


def connect_websocket(media_uri: str, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The NCCO connecting the call to our media socket, `headers` echoed in `websocket:connected`."""
    endpoint = {"type": "websocket", "uri": media_uri, "content-type": CONTENT_TYPE, "headers": dict(headers)}
    return [{"action": "connect", "endpoint": [endpoint]}]


def turn_away(message: str, fallback_number: str = "", our_number: str = "") -> list[dict[str, Any]]:
    """Say `message` (if any), then connect `fallback_number` if there is one; with no further action
    Vonage hangs up.

    Vonage writes numbers in E.164 without the '+'; a `connect` to a phone presents one of our own
    numbers as the caller (the one that was dialled)."""
    ncco: list[dict[str, Any]] = [{"action": "talk", "text": message}] if message else []
    if fallback_number:
        action: dict[str, Any] = {
            "action": "connect",
            "endpoint": [{"type": "phone", "number": fallback_number.lstrip("+")}],
        }
        if our_number:
            action["from"] = our_number.lstrip("+")
        ncco.append(action)
    return ncco


@dataclass(frozen=True, slots=True)
class NccoAnswers:
    paths: CarrierPaths
    content_type: str = "application/json"

    def incoming_call(self, webhook: WebhookRequest) -> IncomingCall:
        params: dict[str, Any] = dict(webhook.query)
        if webhook.body:
            try:
                posted = decode_json(webhook.body)
            except msgspec.DecodeError:
                raise UnusableWebhook("body is not JSON") from None
            if not isinstance(posted, dict):
                raise UnusableWebhook("body is not a JSON object")
            params.update(posted)
        call_id, caller, callee = (str(params.get(name) or "") for name in ("uuid", "from", "to"))
        if not call_id:
            raise UnusableWebhook("no call uuid")
        return IncomingCall(call_id, caller, callee)  # an answer URL is asked about inbound calls

    def connect(self, answer: StreamAnswer) -> str:
        call = answer.call
        headers = {
            CALL_ID_HEADER: call.call_id,
            "from": call.caller,
            "to": call.callee,
            "direction": call.direction,
        }
        if answer.stream_token:
            headers[STREAM_TOKEN_PARAMETER] = answer.stream_token
        if answer.record:
            headers[RECORD_PARAMETER] = "1"
        media_uri = websocket_url(public_url(answer.public_base, self.paths.media))
        return _encoder.encode(connect_websocket(media_uri, headers)).decode()

    def turn_away(self, message: str, fallback_number: str, callee: str = "") -> str:
        return _encoder.encode(turn_away(message, fallback_number, our_number=callee)).decode()
