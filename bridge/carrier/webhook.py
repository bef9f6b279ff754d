"""A carrier's webhook as the answer flow sees it, and the two parts each carrier supplies to read it.

Plain data and protocols, no I/O: `bridge.carrier.answer_flow` gathers a `WebhookRequest` once from
the HTTP request, a carrier's `WebhookSignature` decides whether the carrier sent it, and its
`AnswerDocuments` read the call from it and write the answer (TwiML, Plivo XML, an NCCO).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from multidict import MultiDict, MultiMapping

from bridge.carrier.outbound import PLACED_CALL_PARAMETER
from bridge.carrier.stream_tokens import STREAM_TOKEN_PARAMETER, UPSTREAM_PARAMETER

# The stream parameter that asks for the call to be recorded (under RECORDING=requested). The answer
# flow sets it from the call webhook URL's own `record` query parameter, and the stream token vouches
# for it; the SIP leg from an `X-Record` header; the softphone from its checkbox.
RECORD_PARAMETER = "record"
_YES = ("1", "true", "yes", "on")


def record_requested(parameters: Mapping[str, str]) -> bool:
    """Does `record` say yes (1, true, yes, on; any case)?"""
    return str(parameters.get(RECORD_PARAMETER, "")).strip().lower() in _YES


@dataclass(frozen=True, slots=True)
class CarrierPaths:
    """Where a carrier's requests reach us."""

    answer: str  # the call webhook
    media: str  # the media socket
    after_stream: str = ""  # asked what next once our stream ended; "" for carriers that do not ask
    methods: tuple[str, ...] = ("POST",)  # of the call webhook and the after-stream request


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One request from a carrier (a webhook, or a media socket's upgrade), as its signature sees it."""

    method: str
    url: str  # as the carrier requested it: the public base, then the raw path and query
    headers: Mapping[str, str]  # case-insensitive, as HTTP has them
    query: MultiMapping[str] = field(default_factory=MultiDict)
    body: bytes = b""
    # A POSTed form (URL-encoded) body, read; empty otherwise.
    form: MultiMapping[str] = field(default_factory=MultiDict)


class UnusableWebhook(ValueError):
    """A webhook we cannot answer (no call id, a body that is not what the carrier sends); str() says
    what was wrong, never the body."""


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """What a carrier's call webhook says about the call it asks us to answer."""

    call_id: str  # the carrier's id of the call: what the stream token and the prepared session bind to
    caller: str
    callee: str
    direction: str = "inbound"  # or "outbound": a call the carrier placed for us


def form_call(params: MultiMapping[str], call_id_name: str) -> IncomingCall:
    """The call a form webhook in Twilio's spelling describes (Plivo's too): its id under `call_id_name`,
    then `From`, `To` and `Direction` ("outbound-api", "outbound-dial", ... are all outbound)."""
    direction = "outbound" if params.get("Direction", "").startswith("outbound") else "inbound"
    return IncomingCall(params.get(call_id_name, ""), params.get("From", ""), params.get("To", ""), direction)


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """What an answer connecting `call` to our media socket must carry."""

    call: IncomingCall
    public_base: str  # http(s) base URL the carrier reaches us at; the documents name our paths under it
    stream_token: str = ""  # the one-time token the stream must present; empty when webhooks are unchecked
    upstream_api: str = "realtime"  # the voice API the call was given (the token vouches for it too)
    placed_call: str = ""  # our id of the call, when we placed it (the stream finds its configuration)
    record: bool = False  # the webhook asked for the call to be recorded (`record_requested`)

    def parameters(self) -> dict[str, str]:
        """The stream's parameters, handed back by the carrier in the stream's start message."""
        call = self.call
        parameters = {
            "from": call.caller,
            "to": call.callee,
            "call_sid": call.call_id,
            "direction": call.direction,
        }
        return parameters | self.bound_parameters()

    def bound_parameters(self) -> dict[str, str]:
        """The parameters the stream must carry back unchanged: its token, and what the token binds."""
        parameters = {UPSTREAM_PARAMETER: self.upstream_api}
        if self.stream_token:
            parameters[STREAM_TOKEN_PARAMETER] = self.stream_token
        if self.placed_call:
            parameters[PLACED_CALL_PARAMETER] = self.placed_call
        if self.record:
            parameters[RECORD_PARAMETER] = "1"
        return parameters


class WebhookSignature(Protocol):
    """A carrier's signature scheme, holding the key it checks with."""

    def webhook_is_signed(self, webhook: WebhookRequest) -> bool:
        """Did the carrier send this webhook (its signature over what it signs is valid and fresh)?"""
        ...

    def accepts_upgrade(self, upgrade: WebhookRequest) -> bool:
        """May this media socket upgrade go on to its start message, where the stream token is checked?
        (Only Twilio's dialect signs upgrades; the others bind the stream by its token alone.)"""
        ...


class AnswerDocuments(Protocol):
    """How a carrier's webhooks are read and its answers written."""

    paths: CarrierPaths  # the answers name the media socket and the after-stream request by these
    content_type: str  # of every answer document

    def incoming_call(self, webhook: WebhookRequest) -> IncomingCall:
        """The call a webhook asks about; UnusableWebhook if it names none we can answer."""
        ...

    def connect(self, answer: StreamAnswer) -> str:
        """The answer connecting the call to our media socket."""
        ...

    def turn_away(self, message: str, fallback_number: str, callee: str = "") -> str:
        """Say `message` (if any), then send the caller to `fallback_number` (if any; `callee`, the
        number dialled, is who calls it where the carrier needs one), else hang up."""
        ...
