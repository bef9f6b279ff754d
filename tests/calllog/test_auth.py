"""Operators: labelled tokens, the session cookie that says who is signed in, and OPERATOR_TOKENS."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bridge.calllog.auth import COOKIE_NAME, OperatorAuth, parse_operator_tokens
from bridge.config import ConfigError, load_settings

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789abc"
AUTH = OperatorAuth(ADMIN, {"alice": ALICE, "bob": BOB})


def request(*, bearer: str = "", cookie: str = "") -> web.Request:
    headers = {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if cookie:
        headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
    return make_mocked_request("GET", "/calls", headers=headers)


def cookie_for(auth: OperatorAuth, operator: str) -> str:
    response = web.Response()
    auth.set_session(request(), response, operator)
    return response.cookies[COOKIE_NAME].value


def test_each_token_signs_in_as_its_operator() -> None:
    assert AUTH.labels == ["admin", "alice", "bob"]
    assert AUTH.operator(request(bearer=ADMIN)) == "admin"
    assert AUTH.operator(request(bearer=ALICE)) == "alice"
    assert AUTH.operator(request(bearer=f"  {BOB} ")) == "bob"
    for wrong in ("", "alice", ALICE[:-1], ALICE + "x", ALICE.upper(), "Bearer"):
        assert AUTH.operator(request(bearer=wrong)) is None, wrong
    assert AUTH.operator_for_token(BOB) == "bob" and AUTH.operator_for_token("") is None


def test_the_cookie_says_who_without_holding_a_token_and_cannot_be_turned_into_another() -> None:
    alice = cookie_for(AUTH, "alice")
    assert alice.startswith("alice.") and ALICE not in alice and ADMIN not in alice
    assert AUTH.operator(request(cookie=alice)) == "alice"
    # Another process with the same tokens (a worker, a replica) knows the cookie too.
    assert OperatorAuth(ADMIN, {"alice": ALICE}).operator(request(cookie=alice)) == "alice"
    # Relabelled, or with the token changed, it opens nothing.
    assert AUTH.operator(request(cookie="bob." + alice.partition(".")[2])) is None
    assert AUTH.operator(request(cookie="admin." + alice.partition(".")[2])) is None
    assert OperatorAuth(ADMIN, {"alice": ALICE + "-new"}).operator(request(cookie=alice)) is None
    assert AUTH.operator(request(cookie=alice.partition(".")[2])) is None
    assert AUTH.operator(request(cookie="nobody.00")) is None
    # A wrong bearer token does not spoil a good cookie (a browser with an old header).
    assert AUTH.operator(request(bearer="stale", cookie=alice)) == "alice"


def test_operator_tokens_are_read_and_checked_without_a_token_in_any_message() -> None:
    assert parse_operator_tokens(f" alice:{ALICE} ,, bob : {BOB} ") == {"alice": ALICE, "bob": BOB}
    settings = load_settings({"ADMIN_TOKEN": ADMIN, "OPERATOR_TOKENS": f"alice:{ALICE},bob:{BOB}"})
    assert settings.operators == {"alice": ALICE, "bob": BOB}
    assert ALICE not in repr(settings) and ALICE not in str(settings.model_dump())
    bad = {
        f"alice {ALICE}": "entry 1 must be label:token",
        f"al ice:{ALICE}": "entry 1 must be label:token",
        f"alice:{ALICE},bob:short-token": 'entry 2 ("bob"): the token needs 16 characters or more',
        f"alice:{ALICE},alice:{BOB}": 'entry 2 ("alice"): that label is given twice',
        f"admin:{ALICE}": '"admin" is the label of ADMIN_TOKEN',
        f"alice:{ALICE},bob:{ALICE}": 'entry 2 ("bob"): that token is already another operator\'s',
        f"alice:{ADMIN}": "that token is already another operator's",
    }
    for value, message in bad.items():
        with pytest.raises(ConfigError) as info:
            load_settings({"ADMIN_TOKEN": ADMIN, "OPERATOR_TOKENS": value})
        assert str(info.value) == f"OPERATOR_TOKENS {message}" or message in str(info.value), value
        assert str(info.value).startswith("OPERATOR_TOKENS ")
        for secret in (ALICE, BOB, ADMIN, "short-token"):
            assert secret not in str(info.value)
