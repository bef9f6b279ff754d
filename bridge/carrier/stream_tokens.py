"""One-time stream tokens: what binds a carrier's media stream to the webhook we verified.

A signed websocket upgrade (where a carrier signs one at all) proves the carrier opened the socket, not
which call it belongs to, and a captured `wss://` URL plus signature could be replayed. So the answer
to a signed webhook carries a short-lived token bound to that call's id (a TwiML `<Parameter>`, a Plivo
extra header, a Vonage NCCO header), redeemed once against the stream's start message.

A token can also vouch for what else the answer told the stream (`claims`, e.g. that the call is to be
recorded): a stream that changed it carries a token that no longer fits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable

STREAM_TOKEN_PARAMETER = "stream_token"
UPSTREAM_PARAMETER = "upstream"  # the voice API the webhook chose for the call; the token vouches for it

# Neither part can hold the MAC's field separator, so (CallSid, expiry, nonce) is encoded unambiguously.
_TOKEN = re.compile(r"(?P<expires>[0-9]{1,16})\.(?P<nonce>[A-Za-z0-9_-]{1,32})\.(?P<mac>[A-Za-z0-9_-]{1,64})")


class StreamTokens:
    """One-time tokens for the `stream_token` stream parameter, bound to a call id, valid `ttl_s` seconds.

    A token is `expiry.nonce.mac` with an HMAC over CallSid, expiry and nonce, so nothing is stored
    until a token is redeemed, and bridges sharing the secret accept each other's tokens (the webhook
    and the socket may reach different instances). Single use is enforced per instance by keeping
    redeemed tokens until they expire, at most `max_redeemed` of them: a forged token never gets that
    far, so only our own issued tokens can fill it.
    """

    _MAC_BYTES = 20

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        max_redeemed: int = 100_000,
    ) -> None:
        # Wall-clock time by default: expiries must mean the same on every instance sharing the secret.
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._clock = clock
        self.max_redeemed = max_redeemed
        self._redeemed: dict[str, float] = {}
        self._redeemed_order: deque[tuple[float, str]] = deque()

    @classmethod
    def from_auth_token(
        cls, auth_token: str, *, ttl_s: float = 60.0, clock: Callable[[], float] = time.time
    ) -> StreamTokens:
        """Tokens keyed from a shared secret (STREAM_TOKEN_SECRET, else Twilio's Auth Token), so every
        instance of the bridge agrees without more config.

        Derived, not the secret itself: a leaked stream token must reveal nothing usable against the carrier.
        """
        secret = hmac.new(auth_token.encode(), b"bridge stream token v1", hashlib.sha256).digest()
        return cls(secret, ttl_s=ttl_s, clock=clock)

    def issue(self, call_sid: str, claims: str = "") -> str:
        """A token for `call_sid`'s stream; `claims`: what else it vouches for (redeemed with the same)."""
        expires_ms = int((self._clock() + self.ttl_s) * 1000)
        nonce = secrets.token_urlsafe(9)
        return f"{expires_ms}.{nonce}.{self._mac(call_sid, expires_ms, nonce, claims)}"

    def redeem(self, call_sid: str, token: str | None, claims: str = "") -> bool:
        """True once for a token issued for `call_sid` (and `claims`) and not yet expired; False ever
        after."""
        match = _TOKEN.fullmatch(token) if token else None
        if match is None:
            return False
        expires_ms, nonce, mac = int(match["expires"]), match["nonce"], match["mac"]
        now = self._clock()
        if now * 1000 > expires_ms:
            return False
        if not hmac.compare_digest(mac, self._mac(call_sid, expires_ms, nonce, claims)):
            return False
        self._forget_expired(now)
        if token in self._redeemed:
            return False
        if len(self._redeemed) >= self.max_redeemed:
            _, oldest = self._redeemed_order.popleft()
            self._redeemed.pop(oldest, None)
        expires_s = expires_ms / 1000
        self._redeemed[token] = expires_s
        self._redeemed_order.append((expires_s, token))
        return True

    @property
    def redeemed_count(self) -> int:
        return len(self._redeemed)

    def _mac(self, call_sid: str, expires_ms: int, nonce: str, claims: str = "") -> str:
        # Without claims the message is what it always was: tokens issued before claims existed (another
        # replica on the previous release) still redeem.
        message = f"{call_sid}\n{expires_ms}\n{nonce}" + (f"\n{claims}" if claims else "")
        message = message.encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[: self._MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def _forget_expired(self, now: float) -> None:
        # Tokens are redeemed roughly in expiry order; one stuck behind a later one lingers at most a TTL.
        order = self._redeemed_order
        while order and order[0][0] < now:
            _, token = order.popleft()
            self._redeemed.pop(token, None)
