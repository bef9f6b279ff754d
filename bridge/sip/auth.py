"""Who may place calls: an IP allow-list, or HTTP digest (RFC 2617 / RFC 7616 MD5, qop=auth).

Nonces are `time.hmac(time)`: any replica holding the key can check one, and no per-nonce state is
kept (a nonce is good for NONCE_TTL_S; replay within that window is bounded by the dialog's Call-ID
being unique, and every call is logged).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field

NONCE_TTL_S = 300


def parse_allowed(setting: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """SIP_ALLOWED_IPS: comma-separated addresses or CIDR blocks; raises ValueError on a bad one."""
    networks = []
    for part in setting.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"SIP_ALLOWED_IPS: {part.strip()!r} is not an address or CIDR block"
                ) from None
    return tuple(networks)


def parse_auth_params(value: str) -> dict[str, str]:
    """`Digest a="b", c=d` -> {"a": "b", "c": "d"} (names lower-cased)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            end = i + 1
            chunks = []
            while end < n and rest[end] != '"':
                if rest[end] == "\\" and end + 1 < n:
                    end += 1
                chunks.append(rest[end])
                end += 1
            params[key] = "".join(chunks)
            i = end + 1
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return params


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # MD5: what SIP digest peers speak


@dataclass(slots=True)
class Verdict:
    ok: bool
    status: int = 0  # when not ok: 401 (challenge, maybe stale) or 403 (wrong credentials)
    stale: bool = False


@dataclass
class DigestAuth:
    username: str
    password: str
    realm: str
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    ttl_s: float = NONCE_TTL_S

    def nonce(self, now: float | None = None) -> str:
        stamp = f"{int(now if now is not None else time.time()):x}"
        return f"{stamp}.{hmac.new(self.key, stamp.encode(), hashlib.sha256).hexdigest()[:32]}"

    def _nonce_state(self, nonce: str, now: float) -> str:
        """ "good", "stale" (ours but expired) or "bad"."""
        stamp, _, mac = nonce.partition(".")
        expected = hmac.new(self.key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not mac or not hmac.compare_digest(mac, expected):
            return "bad"
        try:
            issued = int(stamp, 16)
        except ValueError:
            return "bad"
        return "good" if 0 <= now - issued <= self.ttl_s else "stale"

    def challenge(self, stale: bool = False, now: float | None = None) -> str:
        value = f'Digest realm="{self.realm}", nonce="{self.nonce(now)}", algorithm=MD5, qop="auth"'
        return value + (", stale=true" if stale else "")

    def check(self, method: str, authorization: str, now: float | None = None) -> Verdict:
        """Is this Authorization header right for a `method` request? No header: a challenge."""
        now = time.time() if now is None else now
        params = parse_auth_params(authorization)
        if not params:
            return Verdict(False, 401)
        state = self._nonce_state(params.get("nonce", ""), now)
        if state != "good":
            return Verdict(False, 401, stale=state == "stale")
        if params.get("algorithm", "MD5").upper() != "MD5" or params.get("realm") != self.realm:
            return Verdict(False, 403)
        if not hmac.compare_digest(params.get("username", ""), self.username):
            return Verdict(False, 403)
        ha1 = _md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = _md5(f"{method}:{params.get('uri', '')}")
        qop = params.get("qop", "")
        if qop == "auth":
            nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
            expected = _md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        elif not qop:
            expected = _md5(f"{ha1}:{params['nonce']}:{ha2}")  # RFC 2069 compatibility
        else:
            return Verdict(False, 403)
        if not hmac.compare_digest(params.get("response", "").lower(), expected):
            return Verdict(False, 403)
        return Verdict(True)
