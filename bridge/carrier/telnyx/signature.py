"""Telnyx's webhook signature: Ed25519 over `timestamp|body`, the signature base64 in
`telnyx-signature-ed25519` and the Unix timestamp in `telnyx-timestamp`, checked with the account's
public key from the Telnyx portal (TELNYX_PUBLIC_KEY).

Telnyx documents no signature on the media socket's upgrade, so the one-time stream token is what ties
a stream to a webhook we verified. Whether Telnyx signs TeXML fetches exactly like its Call Control
webhooks is unverified.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.carrier.webhook import WebhookRequest

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_TOLERANCE_S = 300
# DER SubjectPublicKeyInfo prefix of an Ed25519 key: a portal key pasted in that form is accepted too.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def load_public_key(encoded: str) -> Ed25519PublicKey:
    """TELNYX_PUBLIC_KEY (base64 of the raw 32-byte key, or of its DER form) -> a key; ValueError if not."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("TELNYX_PUBLIC_KEY is not base64") from None
    if len(raw) == len(_ED25519_SPKI_PREFIX) + 32 and raw.startswith(_ED25519_SPKI_PREFIX):
        raw = raw[len(_ED25519_SPKI_PREFIX) :]
    if len(raw) != 32:
        raise ValueError("TELNYX_PUBLIC_KEY is not an Ed25519 public key (32 bytes, base64)")
    return Ed25519PublicKey.from_public_bytes(raw)


def body_is_signed(
    public_key: Ed25519PublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now_s: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Is `signature` Telnyx's Ed25519 signature of `timestamp|body`, made within `tolerance_s` of now?

    The timestamp is inside the signed message, so a captured request cannot be replayed later
    than the tolerance; a future timestamp beyond it is refused too (a clock that far off is wrong).
    """
    if not signature or not timestamp:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now_s - int(timestamp)) > tolerance_s:
        return False
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw_signature) != 64:
        return False
    try:
        public_key.verify(raw_signature, timestamp.encode("ascii") + b"|" + body)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TelnyxSignature:
    public_key: Ed25519PublicKey
    clock: Callable[[], float] = time.time

    @classmethod
    def from_public_key(cls, encoded: str) -> TelnyxSignature:
        """From TELNYX_PUBLIC_KEY; ValueError (stopping start-up) if it is not an Ed25519 key."""
        return cls(load_public_key(encoded))

    def webhook_is_signed(self, webhook: WebhookRequest) -> bool:
        headers = webhook.headers
        return body_is_signed(
            self.public_key,
            webhook.body,
            headers.get(SIGNATURE_HEADER),
            headers.get(TIMESTAMP_HEADER),
            self.clock(),
        )

    def accepts_upgrade(self, upgrade: WebhookRequest) -> bool:
        return True  # nothing to check before `start`, where the stream token is
