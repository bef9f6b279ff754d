"""Plivo's signature V3, checked against Plivo's own SDK, and the check on a request."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, MultiDict
from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

from bridge.carrier.plivo.signature import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    PlivoSignature,
    request_is_signed,
    signature_v3,
)
from bridge.carrier.webhook import WebhookRequest

CALL = "12345678-1234-1234-1234-123456789abc"
TOKEN = "MTIzNDU2Nzg5MGFiY2RlZjEyMzQ1Ng"
FORM = {
    "CallUUID": CALL,
    "From": "14155550123",
    "To": "18005551212",
    "Direction": "inbound",
    "CallStatus": "ringing",
}


def sdk_signature(method: str, url: str, params: dict[str, str], nonce: str) -> str:
    base = construct_get_url(url, dict(params)) if method == "GET" else construct_post_url(url, dict(params))
    return get_signature_v3(TOKEN.encode(), base, nonce.encode()).decode()


@pytest.mark.parametrize(
    ("method", "url", "params"),
    [
        ("POST", "https://bridge.example/plivo/answer", FORM),
        ("POST", "https://bridge.example/plivo/transfer?to=%2B15550001111", FORM),
        ("POST", "https://bridge.example/plivo/answer?b=2&a=1", {}),
        ("POST", "https://bridge.example/plivo/answer", {}),
        ("GET", "https://bridge.example/plivo/answer?CallUUID=abc&From=1415&To=1800", {}),
        ("GET", "https://bridge.example:8443/plivo/answer", {}),
    ],
)
def test_our_signature_v3_is_plivos(method: str, url: str, params: dict[str, str]) -> None:
    nonce = "12345678901234567890"
    ours = signature_v3(TOKEN, method, url, params, nonce)
    assert ours == sdk_signature(method, url, params, nonce)
    assert request_is_signed(TOKEN, method, url, params, ours, nonce)
    # A second active token's signature beside ours still passes; anything changed fails.
    assert request_is_signed(TOKEN, method, url, params, f"AAAA,{ours}", nonce)
    assert not request_is_signed(TOKEN, method, url, params, ours, nonce + "0")
    assert not request_is_signed("other-token", method, url, params, ours, nonce)
    assert not request_is_signed(TOKEN, method, url.replace("bridge", "evil"), params, ours, nonce)
    assert not request_is_signed(TOKEN, method, url, params, None, nonce)
    assert not request_is_signed("", method, url, params, ours, nonce)
    if params:
        tampered = {**params, "From": "19005550000"}
        assert not request_is_signed(TOKEN, method, url, tampered, ours, nonce)


def test_the_check_on_a_request_signs_a_posts_form_and_a_gets_url() -> None:
    nonce = "09876543210987654321"
    scheme = PlivoSignature(TOKEN)
    url = "https://bridge.example/plivo/answer"
    headers = CIMultiDict({SIGNATURE_HEADER: sdk_signature("POST", url, FORM, nonce), NONCE_HEADER: nonce})
    assert scheme.webhook_is_signed(WebhookRequest("POST", url, headers, form=MultiDict(FORM)))
    tampered = MultiDict({**FORM, "To": "19005550000"})
    assert not scheme.webhook_is_signed(WebhookRequest("POST", url, headers, form=tampered))
    get_url = url + "?CallUUID=abc&From=1415"
    headers = CIMultiDict({SIGNATURE_HEADER: sdk_signature("GET", get_url, {}, nonce), NONCE_HEADER: nonce})
    assert scheme.webhook_is_signed(WebhookRequest("GET", get_url, headers))
    assert not scheme.webhook_is_signed(WebhookRequest("GET", url + "?CallUUID=abd&From=1415", headers))
