"""Vonage's signed webhooks (a JWT over the body's hash), and the check on a request."""

from __future__ import annotations

import hashlib
import time

import jwt
from multidict import CIMultiDict

from bridge.carrier.vonage.signature import MAX_TOKEN_AGE_S, VonageSignature, jwt_signs_body
from bridge.carrier.webhook import WebhookRequest

SECRET = "vonage-signature-secret-for-the-tests-0123456789"


def token(body: bytes = b"", **claims: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"iat": now, "jti": "j1", "iss": "Vonage", **claims}
    if body and "payload_hash" not in claims:
        payload["payload_hash"] = hashlib.sha256(body).hexdigest()
    return "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")


def test_a_vonage_signed_request_is_accepted() -> None:
    body = b'{"uuid": "u1", "from": "447700900123"}'
    assert jwt_signs_body(SECRET, token(body), body)
    assert jwt_signs_body(SECRET, token(), b"")  # a GET has no body to hash


def test_forged_stale_expired_and_tampered_requests_are_refused() -> None:
    body = b'{"uuid": "u1"}'
    assert not jwt_signs_body(SECRET, None, body)
    assert not jwt_signs_body(SECRET, "Bearer", body)
    assert not jwt_signs_body(SECRET, "Basic abc", body)
    assert not jwt_signs_body(SECRET, "Bearer not.a.jwt", body)
    forged = "Bearer " + jwt.encode({"iat": int(time.time())}, "another-secret-of-enough-length-000", "HS256")
    assert not jwt_signs_body(SECRET, forged, b"")
    assert not jwt_signs_body(SECRET, token(body), b'{"uuid": "u2"}')  # body changed on the way
    assert not jwt_signs_body(SECRET, token(body, payload_hash=None), body)
    assert not jwt_signs_body(SECRET, token(body, exp=int(time.time()) - 120), body)
    stale = int(time.time() - MAX_TOKEN_AGE_S - 60)
    assert not jwt_signs_body(SECRET, token(body, iat=stale), body)
    no_iat = "Bearer " + jwt.encode({"payload_hash": hashlib.sha256(body).hexdigest()}, SECRET, "HS256")
    assert not jwt_signs_body(SECRET, no_iat, body)
    unsigned = "Bearer " + jwt.encode({"iat": int(time.time())}, None, algorithm="none")
    assert not jwt_signs_body(SECRET, unsigned, b"")
    assert not jwt_signs_body("", token(body), body)


def test_the_check_on_a_request_reads_its_authorization_and_body() -> None:
    body = b'{"uuid": "u1", "from": "447700900123"}'
    url = "https://bridge.example/vonage/answer"
    scheme = VonageSignature(SECRET)

    def request(method: str, authorization: str | None, body: bytes = b"") -> WebhookRequest:
        headers = CIMultiDict({"authorization": authorization} if authorization else {})  # any letter case
        return WebhookRequest(method, url, headers, body=body)

    assert scheme.webhook_is_signed(request("POST", token(body), body))
    assert scheme.webhook_is_signed(request("GET", token()))
    assert not scheme.webhook_is_signed(request("POST", token(), body))  # the body was not what was signed
    assert not scheme.webhook_is_signed(request("POST", None, body))
