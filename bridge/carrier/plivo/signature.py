"""Plivo's request signature V3, as Plivo's SDKs compute it: base64(HMAC-SHA256(auth token, base + "." +
nonce)), where base is the URL Plivo requested without its query, then for a POST "?" + the URL's
query parameters sorted as `k=v&…` (+ "." when both exist) + the form parameters sorted by name as
`namevalue…`; for a GET "?" + the query and form parameters together as `k=v&…`.
`X-Plivo-Signature-V3` may list several signatures (one per active token), comma-separated, with the
nonce in `X-Plivo-Signature-V3-Nonce`.

Plivo documents no signature on the websocket upgrade, so the stream is bound to its signed answer by
the one-time token instead. Unverified: whether Plivo signs the `<Redirect>` and `aleg_url` requests
exactly like the answer URL (its docs say every callback carries the V3 headers, and that is what is
checked).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from multidict import MultiMapping

from bridge.carrier.webhook import WebhookRequest

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str | list[str]]


def _sorted_pairs(params: Params) -> list[tuple[str, str]]:
    """Every (name, value), names sorted and a repeated name's values sorted, as V3 signs them."""
    pairs = []
    for name in sorted(params):
        values = params[name]
        pairs += [(name, value) for value in (sorted(values) if isinstance(values, list) else [values])]
    return pairs


def _sorted_query(params: Params) -> str:
    return "&".join(f"{name}={value}" for name, value in _sorted_pairs(params))


def _sorted_form(params: Params) -> str:
    return "".join(f"{name}{value}" for name, value in _sorted_pairs(params))


def signed_string(method: str, url: str, params: Params) -> str:
    """What Plivo signs for a request to `url` carrying form (POST) or query (GET) `params`."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query: dict[str, str | list[str]] = dict(parse_qs(parts.query, keep_blank_values=True))
    if method.upper() == "GET":
        merged = {**params, **query}  # the URL's own query wins, as in Plivo's SDKs
        text = _sorted_query(merged)
        return f"{base}?{text}" if text else base
    text = _sorted_query(query)
    if params:
        return f"{base}?{text}{'.' if text else ''}{_sorted_form(params)}"
    return f"{base}?{text}" if text else base


def signature_v3(auth_token: str, method: str, url: str, params: Params, nonce: str) -> str:
    message = f"{signed_string(method, url, params)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), message, hashlib.sha256).digest()).decode()


def request_is_signed(
    auth_token: str, method: str, url: str, params: Params, signatures: str | None, nonce: str | None
) -> bool:
    """Does any signature in the `X-Plivo-Signature-V3` header sign this request with `auth_token`?"""
    if not auth_token or not signatures or not nonce:
        return False
    expected = signature_v3(auth_token, method, url, params, nonce).encode()
    return any(hmac.compare_digest(expected, s.strip().encode()) for s in signatures.split(","))


def signed_params(form: MultiMapping[str]) -> dict[str, str | list[str]]:
    """A form as V3 signs it: a repeated name's values as a list."""
    params: dict[str, str | list[str]] = {}
    for name in dict.fromkeys(form):  # each name once, in order
        values = form.getall(name)
        params[name] = values[0] if len(values) == 1 else list(values)
    return params


@dataclass(frozen=True, slots=True)
class PlivoSignature:
    auth_token: str

    def webhook_is_signed(self, webhook: WebhookRequest) -> bool:
        params = {} if webhook.method == "GET" else signed_params(webhook.form)  # a GET's are in its URL
        headers = webhook.headers
        return request_is_signed(
            self.auth_token,
            webhook.method,
            webhook.url,
            params,
            headers.get(SIGNATURE_HEADER),
            headers.get(NONCE_HEADER),
        )

    def accepts_upgrade(self, upgrade: WebhookRequest) -> bool:
        return True  # nothing to check before `start`, where the stream token is
