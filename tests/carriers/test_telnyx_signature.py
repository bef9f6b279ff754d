"""Telnyx's Ed25519 webhook signature: the scheme, its public key forms, and the check on a request."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import CIMultiDict

from bridge.carrier.telnyx.signature import TelnyxSignature, body_is_signed, load_public_key
from bridge.carrier.webhook import WebhookRequest

PRIVATE = Ed25519PrivateKey.generate()
PUBLIC_B64 = base64.b64encode(
    PRIVATE.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()


def sign(timestamp: str, body: bytes) -> str:
    return base64.b64encode(PRIVATE.sign(timestamp.encode() + b"|" + body)).decode()


def test_signature_valid_forged_stale_and_tampered() -> None:
    key = load_public_key(PUBLIC_B64)
    body = b"CallSid=v3%3Aabc&From=%2B14155550123"
    now = time.time()
    ts = str(int(now))
    assert body_is_signed(key, body, sign(ts, body), ts, now)
    assert not body_is_signed(key, body + b"&x=1", sign(ts, body), ts, now)  # tampered body
    assert not body_is_signed(key, body, sign(ts, body), str(int(now) + 1), now)  # other timestamp
    old = str(int(now) - 301)
    assert not body_is_signed(key, body, sign(old, body), old, now)  # older than 5 minutes
    assert not body_is_signed(key, body, None, ts, now)
    assert not body_is_signed(key, body, sign(ts, body), None, now)
    assert not body_is_signed(key, body, "bm90IGEgc2lnbmF0dXJl", ts, now)  # not 64 bytes
    assert not body_is_signed(key, body, sign(ts, body), "-12", now)
    other = Ed25519PrivateKey.generate()
    forged = base64.b64encode(other.sign(ts.encode() + b"|" + body)).decode()
    assert not body_is_signed(key, body, forged, ts, now)


def test_public_key_forms() -> None:
    der = PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(base64.b64encode(der).decode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) == base64.b64decode(PUBLIC_B64)
    with pytest.raises(ValueError, match="not base64"):
        load_public_key("%%%")
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(base64.b64encode(b"short").decode())


def test_the_check_on_a_request_reads_the_body_and_both_headers() -> None:
    body = b"CallSid=v3%3Aabc&From=%2B14155550123"
    now = 1_700_000_000.0
    ts = str(int(now))
    scheme = TelnyxSignature(load_public_key(PUBLIC_B64), clock=lambda: now)

    def request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
        return WebhookRequest("POST", "https://bridge.example/telnyx/texml", CIMultiDict(headers), body=body)

    signed = {"Telnyx-Signature-Ed25519": sign(ts, body), "Telnyx-Timestamp": ts}  # any letter case
    assert scheme.webhook_is_signed(request(body, signed))
    assert not scheme.webhook_is_signed(request(body + b"&x=1", signed))
    assert not scheme.webhook_is_signed(request(body, {"Telnyx-Timestamp": ts}))
    late = TelnyxSignature(load_public_key(PUBLIC_B64), clock=lambda: now + 301)
    assert not late.webhook_is_signed(request(body, signed))
