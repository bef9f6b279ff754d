"""Twilio's call webhook read, and the TwiML that answers it (docs/protocols.md §T2).

SignalWire's cXML and Telnyx's TeXML are TwiML dialects: their routes read and answer with
`TwimlAnswers` too, at their own paths and, for Telnyx, with its own `<Stream>` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from twilio.twiml.voice_response import Connect, VoiceResponse

from bridge.carrier.public_url import public_url, websocket_url
from bridge.carrier.webhook import CarrierPaths, IncomingCall, StreamAnswer, WebhookRequest, form_call


def connect_stream(
    stream_url: str,
    parameters: Mapping[str, str],
    action_url: str = "",
    stream_attributes: Mapping[str, str] | None = None,
) -> str:
    """`<Connect><Stream>` to `stream_url` (which must have no query: Twilio forbids one), passing
    `parameters` as `<Parameter>`s (empty ones left out). `action_url`: where Twilio asks what to do
    once the stream has ended (docs/protocols.md §T1, §T2). `stream_attributes`: further `<Stream>`
    attributes in snake_case (written lowerCamelCase)."""
    response = VoiceResponse()
    connect = Connect(action=action_url, method="POST") if action_url else Connect()
    stream = connect.stream(url=stream_url, name="bridge", **dict(stream_attributes or {}))
    for name, value in parameters.items():
        if value:
            stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def turn_away(message: str, fallback_number: str = "") -> str:
    """Say `message` (if any), then dial `fallback_number` if there is one, else hang up."""
    response = VoiceResponse()
    if message:
        response.say(message)
    if fallback_number:
        response.dial(fallback_number)
    else:
        response.hangup()
    return str(response)


@dataclass(frozen=True, slots=True)
class TwimlAnswers:
    """A TwiML carrier's form webhooks (`CallSid`, `From`, `To`, `Direction`) and its answers."""

    paths: CarrierPaths
    stream_attributes: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "text/xml"

    def incoming_call(self, webhook: WebhookRequest) -> IncomingCall:
        return form_call(webhook.form, "CallSid")

    def connect(self, answer: StreamAnswer) -> str:
        base, paths = answer.public_base, self.paths
        return connect_stream(
            websocket_url(public_url(base, paths.media)),
            answer.parameters(),
            action_url=public_url(base, paths.after_stream) if paths.after_stream else "",
            stream_attributes=self.stream_attributes,
        )

    def turn_away(self, message: str, fallback_number: str, callee: str = "") -> str:
        return turn_away(message, fallback_number)
