"""Vonage's signed webhooks: with the application's signed-webhook option on, Vonage sends
`Authorization: Bearer <JWT>`, HS256 with the account's signature secret (VONAGE_SIGNATURE_SECRET),
whose `payload_hash` claim is the SHA-256 of the request body (Vonage's "Signed webhooks" guide; its
Python SDK checks the signature with PyJWT the same way). The hash's spelling, hex digits, is
unverified (compared case-blind).

Unverified: whether Vonage's tokens carry `exp` (honoured when present); we also refuse a token
issued more than `MAX_TOKEN_AGE_S` ago, so a captured request cannot be replayed later. The media
socket's upgrade carries no signature we could check, so the stream token binds it to an answer we
signature-checked, redeemed once at `websocket:connected`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from bridge.carrier.webhook import WebhookRequest

MAX_TOKEN_AGE_S = 300.0  # a signed request older than this is a replay, not a webhook
CLOCK_SKEW_S = 30.0


def jwt_signs_body(secret: str, authorization: str | None, body: bytes, now: float | None = None) -> bool:
    """Is this request's `Authorization: Bearer <JWT>` Vonage's signature over `body`?"""
    if not secret or not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        claims = jwt.decode(
            token.strip(), secret, algorithms=["HS256"], options={"require": ["iat"]}, leeway=CLOCK_SKEW_S
        )
    except jwt.PyJWTError:
        return False
    now = time.time() if now is None else now
    issued = claims["iat"]  # PyJWT has checked it is a number and not in the future
    if now - issued > MAX_TOKEN_AGE_S:
        return False
    if body:
        given = claims.get("payload_hash")
        expected = hashlib.sha256(body).hexdigest()
        if not isinstance(given, str) or not hmac.compare_digest(given.lower().encode(), expected.encode()):
            return False
    return True


@dataclass(frozen=True, slots=True)
class VonageSignature:
    secret: str

    def webhook_is_signed(self, webhook: WebhookRequest) -> bool:
        return jwt_signs_body(self.secret, webhook.headers.get("Authorization"), webhook.body)

    def accepts_upgrade(self, upgrade: WebhookRequest) -> bool:
        return True  # nothing to check before `websocket:connected`, where the stream token is
