"""SignalWire's webhook signature: Twilio's scheme (base64 HMAC-SHA1 of the URL and the sorted form)
keyed with the project's Signing Key, sent as `X-SignalWire-Signature` and, as an alias,
`X-Twilio-Signature`. SignalWire's own validators (signalwire-typescript src/WebhookValidator.ts
"Scheme B") compute exactly that, so Twilio's check does it.

Unverified: whether SignalWire signs the media socket's upgrade the way Twilio does. A signature that
is there must be right, but none is not refused: the one-time stream token, required at `start`
whenever the Signing Key is set, is what binds the stream to a signed webhook.
"""

from __future__ import annotations

from bridge.carrier.twilio.signature import TwilioSignature

SIGNATURE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")


def signalwire_signature(signing_key: str) -> TwilioSignature:
    return TwilioSignature(signing_key, headers=SIGNATURE_HEADERS, unsigned_upgrades=True)
