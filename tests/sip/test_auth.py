from __future__ import annotations

import hashlib
import ipaddress

import pytest

from bridge.sip.auth import DigestAuth, parse_allowed, parse_auth_params


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(auth: DigestAuth, password: str, nonce: str, uri: str = "sip:service@127.0.0.1") -> str:
    ha1, ha2 = md5(f"trunk:{auth.realm}:{password}"), md5(f"INVITE:{uri}")
    response = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")
    return (
        f'Digest username="trunk", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"'
    )


def test_challenge_then_the_right_answer_is_admitted() -> None:
    auth = DigestAuth("trunk", "secret", "bridge")
    assert auth.check("INVITE", "").status == 401
    nonce = parse_auth_params(auth.challenge())["nonce"]
    assert auth.check("INVITE", authorization(auth, "secret", nonce)).ok


def test_wrong_password_forged_or_expired_nonce() -> None:
    auth = DigestAuth("trunk", "secret", "bridge")
    nonce = auth.nonce(now=1_000_000)
    assert auth.check("INVITE", authorization(auth, "wrong", nonce), now=1_000_010).status == 403
    expired = auth.check("INVITE", authorization(auth, "secret", nonce), now=1_000_000 + 301)
    assert (expired.status, expired.stale) == (401, True)
    other = DigestAuth("trunk", "secret", "bridge")  # another key: its nonces are not ours
    forged = auth.check("INVITE", authorization(auth, "secret", other.nonce(now=1_000_000)), now=1_000_010)
    assert (forged.status, forged.stale) == (401, False)


def test_allow_list_parses_addresses_and_blocks() -> None:
    nets = parse_allowed("192.0.2.10, 198.51.100.0/24")
    assert ipaddress.ip_address("198.51.100.77") in nets[1]
    assert ipaddress.ip_address("192.0.2.11") not in nets[0]
    with pytest.raises(ValueError, match="not an address"):
        parse_allowed("10.0.0.0/33")
