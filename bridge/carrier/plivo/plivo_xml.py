"""Plivo's answer documents (Plivo XML): the bidirectional `<Stream>` to our media socket, `<Dial>`
and `<Hangup>`, and the answer webhook's parameters read.

`<Stream keepCallAlive="true">` runs the rest of the document only once the stream has ended, so the
`<Redirect>` after it asks the bridge's after-stream URL what next. The stream's parameters (caller,
callee, direction and the one-time stream token) travel in `extraHeaders`, which Plivo hands back in
the `start` message (`bridge.carrier.plivo.codec` says how they are spelled).

Unverified: whether `<Dial><Number>` accepts a leading "+" (Plivo's examples write bare digits, so the
"+" is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

from bridge.audio import PCMU_8K
from bridge.carrier.plivo.codec import content_type, encode_extra_headers
from bridge.carrier.public_url import public_url, websocket_url
from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER
from bridge.carrier.webhook import (
    RECORD_PARAMETER,
    CarrierPaths,
    IncomingCall,
    StreamAnswer,
    WebhookRequest,
    form_call,
)


def _document(response: ElementTree.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(response, encoding="unicode")


def stream_xml(stream_url: str, extra_headers: str, after_url: str, line_content_type: str) -> str:
    response = ElementTree.Element("Response")
    attributes = {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "audioTrack": "inbound",
        "contentType": line_content_type,
    }
    if extra_headers:
        attributes["extraHeaders"] = extra_headers
    ElementTree.SubElement(response, "Stream", attributes).text = stream_url
    ElementTree.SubElement(response, "Redirect", {"method": "POST"}).text = after_url
    return _document(response)


def dial_xml(number: str, message: str = "") -> str:
    """`<Dial>` to an E.164 number (Plivo writes numbers as bare digits), after `message` if any."""
    response = ElementTree.Element("Response")
    if message:
        ElementTree.SubElement(response, "Speak").text = message
    dial = ElementTree.SubElement(response, "Dial")
    ElementTree.SubElement(dial, "Number").text = number.removeprefix("+")
    return _document(response)


def hangup_xml(message: str = "") -> str:
    response = ElementTree.Element("Response")
    if message:
        ElementTree.SubElement(response, "Speak").text = message
    ElementTree.SubElement(response, "Hangup")
    return _document(response)


@dataclass(frozen=True, slots=True)
class PlivoAnswers:
    """Plivo's answer and callback requests (GET with a query, or a POSTed form) and its XML answers."""

    paths: CarrierPaths
    content_type: str = "application/xml"

    def incoming_call(self, webhook: WebhookRequest) -> IncomingCall:
        return form_call(webhook.query if webhook.method == "GET" else webhook.form, "CallUUID")

    def connect(self, answer: StreamAnswer) -> str:
        call = answer.call
        parameters = {"from": call.caller, "to": call.callee, "direction": call.direction}
        if answer.stream_token:
            parameters[STREAM_TOKEN_PARAMETER] = answer.stream_token
        if answer.record:
            parameters[RECORD_PARAMETER] = "1"
        try:
            headers = encode_extra_headers(parameters)
        except ValueError:
            # Long SIP URIs can overflow Plivo's 512 bytes; the token matters, the numbers are for the log.
            del parameters["from"], parameters["to"]
            headers = encode_extra_headers(parameters)
        base = answer.public_base
        return stream_xml(
            websocket_url(public_url(base, self.paths.media)),
            headers,
            public_url(base, self.paths.after_stream),
            content_type(PCMU_8K),
        )

    def turn_away(self, message: str, fallback_number: str, callee: str = "") -> str:
        return dial_xml(fallback_number, message) if fallback_number else hangup_xml(message)
