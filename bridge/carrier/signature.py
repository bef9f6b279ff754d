"""Is this request from Twilio? `X-Twilio-Signature` checks and one-time media stream tokens.

Plain functions over strings and mappings (PROTOCOLS.md A7), so the web layer only gathers the public
URL, the form and the header. The public URL is what Twilio requested, not what reached us: behind a
TLS terminator the scheme, host and port differ, and rebuilding the wrong URL is the usual reason a
valid signature fails.

A signed upgrade proves Twilio opened the socket, not which call it belongs to, and a captured
`wss://` URL plus signature could be replayed. So the TwiML also carries a short-lived token bound to
the CallSid whose webhook we verified, redeemed once against the `start` message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from multidict import MultiDict
from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"
STREAM_TOKEN_PARAMETER = "stream_token"

# Neither part can hold the MAC's field separator, so (CallSid, expiry, nonce) is encoded unambiguously.
_TOKEN = re.compile(r"(?P<expires>[0-9]{1,16})\.(?P<nonce>[A-Za-z0-9_-]{1,32})\.(?P<mac>[A-Za-z0-9_-]{1,64})")

_WS_SCHEME = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
_HTTP_SCHEME = {"wss": "https", "https": "https", "ws": "http", "http": "http"}


def _first(header_value: str) -> str:
    # Each proxy hop appends its own value; the first is what the client (Twilio) used.
    return header_value.split(",")[0].strip()


def public_base(configured: str, scheme: str, host: str, headers: Mapping[str, str]) -> str:
    """Base URL Twilio reached us at: the configured PUBLIC_URL, else what the proxy reports, else Host.

    Without PUBLIC_URL the forwarded headers are client-controlled; a signature still needs the Auth
    Token, but only PUBLIC_URL pins the host, so production should set it.
    """
    if configured:
        return configured.rstrip("/")
    proto = _first(headers.get("X-Forwarded-Proto", "")) or scheme
    forwarded_host = _first(headers.get("X-Forwarded-Host", "")) or host
    return f"{proto}://{forwarded_host}"


def public_url(base: str, raw_path: str) -> str:
    """The full URL Twilio signed: base (which may carry a path prefix) plus the raw path and query.

    `raw_path` must be as received (percent-encoding intact), e.g. aiohttp's `request.raw_path`.
    """
    return base.rstrip("/") + raw_path


def _with_scheme(url: str, schemes: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=schemes.get(parts.scheme, parts.scheme)))


def websocket_url(url: str) -> str:
    """`wss://` form of an `https://` URL (`ws://` for `http://`), as written in `<Stream url>`."""
    return _with_scheme(url, _WS_SCHEME)


def http_url(url: str) -> str:
    return _with_scheme(url, _HTTP_SCHEME)


def webhook_is_signed(
    auth_token: str, public_url: str, form: Mapping[str, object], signature: str | None
) -> bool:
    """Does `signature` sign this form POST to `public_url` with `auth_token` (PROTOCOLS.md A7.1)?

    `form` may repeat names (aiohttp's MultiDictProxy); all values count, as Twilio signs them.
    The SDK also accepts the URL with and without its default port (A7.1 point 7).
    """
    if not auth_token or not signature:
        return False
    pairs: list[tuple[str, str]] = []
    for name, value in form.items():
        if not isinstance(value, str):
            return False  # A file upload: never a Twilio webhook.
        pairs.append((name, value))
    return bool(RequestValidator(auth_token).validate(public_url, MultiDict(pairs), signature))


def upgrade_is_signed(auth_token: str, public_ws_url: str, signature: str | None) -> bool:
    """Does `signature` sign the media websocket URL (PROTOCOLS.md A7.2)?

    Twilio signs the URL it connected to with no parameters. Whether that is the `wss://` or the
    `https://` spelling is unverified for Media Streams, so either passes; both need the Auth Token.
    """
    if not auth_token or not signature:
        return False
    validator = RequestValidator(auth_token)
    candidates = dict.fromkeys((websocket_url(public_ws_url), http_url(public_ws_url)))
    return any(validator.validate(url, {}, signature) for url in candidates)


class StreamTokens:
    """One-time tokens for `<Parameter name="stream_token">`, bound to a CallSid, valid `ttl_s` seconds.

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
        """Tokens keyed from the Auth Token, so every instance of the bridge agrees without more config.

        Derived, not the token itself: a leaked stream token must reveal nothing usable against Twilio.
        """
        secret = hmac.new(auth_token.encode(), b"bridge stream token v1", hashlib.sha256).digest()
        return cls(secret, ttl_s=ttl_s, clock=clock)

    def issue(self, call_sid: str) -> str:
        expires_ms = int((self._clock() + self.ttl_s) * 1000)
        nonce = secrets.token_urlsafe(9)
        return f"{expires_ms}.{nonce}.{self._mac(call_sid, expires_ms, nonce)}"

    def redeem(self, call_sid: str, token: str | None) -> bool:
        """True once for a token issued for `call_sid` and not yet expired; False ever after."""
        match = _TOKEN.fullmatch(token) if token else None
        if match is None:
            return False
        expires_ms, nonce, mac = int(match["expires"]), match["nonce"], match["mac"]
        now = self._clock()
        if now * 1000 > expires_ms:
            return False
        if not hmac.compare_digest(mac, self._mac(call_sid, expires_ms, nonce)):
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

    def _mac(self, call_sid: str, expires_ms: int, nonce: str) -> str:
        message = f"{call_sid}\n{expires_ms}\n{nonce}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[: self._MAC_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def _forget_expired(self, now: float) -> None:
        # Tokens are redeemed roughly in expiry order; one stuck behind a later one lingers at most a TTL.
        order = self._redeemed_order
        while order and order[0][0] < now:
            _, token = order.popleft()
            self._redeemed.pop(token, None)
