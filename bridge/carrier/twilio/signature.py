"""Twilio's request signature, `X-Twilio-Signature` (docs/protocols.md §T6, §T7): base64 HMAC-SHA1,
keyed with the Auth Token, of the URL Twilio requested followed by the POSTed form's names and values
sorted by name.
SignalWire signs its cXML webhooks the same way with its Signing Key (`bridge.carrier.signalwire.signature`).

`form_is_signed` and `upgrade_url_is_signed` are the scheme over plain strings and mappings;
`TwilioSignature` applies it to a gathered request, as every carrier's signature does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from multidict import MultiDict
from twilio.request_validator import RequestValidator

from bridge.carrier.public_url import http_url, websocket_url
from bridge.carrier.webhook import WebhookRequest

SIGNATURE_HEADER = "X-Twilio-Signature"


def form_is_signed(
    auth_token: str, public_url: str, form: Mapping[str, object], signature: str | None
) -> bool:
    """Does `signature` sign this form POST to `public_url` with `auth_token` (docs/protocols.md §T6)?

    `form` may repeat names (aiohttp's MultiDictProxy); all values count, as Twilio signs them.
    The SDK also accepts the URL with and without its default port (docs/protocols.md §T6).
    """
    if not auth_token or not signature:
        return False
    pairs: list[tuple[str, str]] = []
    for name, value in form.items():
        if not isinstance(value, str):
            return False  # A file upload: never a Twilio webhook.
        pairs.append((name, value))
    return bool(RequestValidator(auth_token).validate(public_url, MultiDict(pairs), signature))


def upgrade_url_is_signed(auth_token: str, public_ws_url: str, signature: str | None) -> bool:
    """Does `signature` sign the media websocket URL (docs/protocols.md §T7)?

    Twilio signs the URL it connected to with no parameters. Whether that is the `wss://` or the
    `https://` spelling is unverified for Media Streams, so either passes; both need the Auth Token.
    """
    if not auth_token or not signature:
        return False
    validator = RequestValidator(auth_token)
    candidates = dict.fromkeys((websocket_url(public_ws_url), http_url(public_ws_url)))
    return any(validator.validate(url, {}, signature) for url in candidates)


@dataclass(frozen=True, slots=True)
class TwilioSignature:
    """Twilio's scheme keyed with `key`, the signature read from the first of `headers` present."""

    key: str
    headers: tuple[str, ...] = (SIGNATURE_HEADER,)
    # Whether the media socket's upgrade is signed at all is unverified for SignalWire: there, an upgrade
    # without a signature goes on to its start message, where the stream token is still required.
    unsigned_upgrades: bool = False

    def signature(self, headers: Mapping[str, str]) -> str | None:
        for name in self.headers:
            if value := headers.get(name):
                return value
        return None

    def webhook_is_signed(self, webhook: WebhookRequest) -> bool:
        return form_is_signed(self.key, webhook.url, webhook.form, self.signature(webhook.headers))

    def accepts_upgrade(self, upgrade: WebhookRequest) -> bool:
        signature = self.signature(upgrade.headers)
        if signature is None and self.unsigned_upgrades:
            return True
        return upgrade_url_is_signed(self.key, websocket_url(upgrade.url), signature)
