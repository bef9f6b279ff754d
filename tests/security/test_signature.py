"""Twilio request signatures (SignalWire's too) and one-time stream tokens.

Expected signatures come from the twilio SDK's own `RequestValidator.compute_signature` or from the
test vectors of docs/protocols.md §T6 and §T7, never from the code under test, so agreement here means
agreement with Twilio.
"""

from __future__ import annotations

import string

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, MultiDict
from twilio.request_validator import RequestValidator

from bridge.carrier.public_url import http_url, public_base, public_url, websocket_url
from bridge.carrier.signalwire.signature import signalwire_signature
from bridge.carrier.stream_tokens import StreamTokens
from bridge.carrier.twilio.signature import (
    SIGNATURE_HEADER,
    TwilioSignature,
    form_is_signed,
    upgrade_url_is_signed,
)
from bridge.carrier.webhook import WebhookRequest

# docs/protocols.md §T6: Twilio's documented example.
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

# docs/protocols.md §T7: the media socket upgrade.
WS_URL = "wss://example.com/media-stream"
WS_SIGNATURE = "XFfwGS2Ev7f9qAP9MmRoMS7C724="

TOKEN = "0123456789abcdef0123456789abcdef"


def sdk_signature(url: str, params: object = None, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params or {})


# -- voice webhook ------------------------------------------------------------------------------------


def test_documented_vector() -> None:
    assert sdk_signature(DOC_URL, DOC_PARAMS, DOC_TOKEN) == DOC_SIGNATURE  # the SDK agrees with the doc
    assert form_is_signed(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_form_as_aiohttp_gives_it() -> None:
    form = MultiDict(DOC_PARAMS)
    assert form_is_signed(DOC_TOKEN, DOC_URL, form, DOC_SIGNATURE)


@pytest.mark.parametrize(
    "change",
    [
        {"Digits": "1235"},  # a value tampered with
        {"Extra": "1"},  # a parameter added
        {"To": ""},  # a value emptied
    ],
)
def test_tampered_form_is_rejected(change: dict[str, str]) -> None:
    assert not form_is_signed(DOC_TOKEN, DOC_URL, DOC_PARAMS | change, DOC_SIGNATURE)


def test_removed_parameter_is_rejected() -> None:
    params = {k: v for k, v in DOC_PARAMS.items() if k != "Digits"}
    assert not form_is_signed(DOC_TOKEN, DOC_URL, params, DOC_SIGNATURE)


@pytest.mark.parametrize(
    "url",
    [
        "http://mycompany.com/myapp.php?foo=1&bar=2",  # TLS terminated, scheme not rebuilt
        "https://evil.example/myapp.php?foo=1&bar=2",
        "https://mycompany.com/other.php?foo=1&bar=2",
        "https://mycompany.com/myapp.php?foo=1&bar=3",
        "https://mycompany.com/myapp.php?bar=2&foo=1",  # the query is signed as written, not sorted
        "https://mycompany.com/myapp.php",
    ],
)
def test_wrong_url_is_rejected(url: str) -> None:
    assert not form_is_signed(DOC_TOKEN, url, DOC_PARAMS, DOC_SIGNATURE)


@pytest.mark.parametrize(
    "signature", [None, "", "0/KCTR6DLpKmkAf8muzZqo1nDgQ", "x" * 28, DOC_SIGNATURE.lower()]
)
def test_missing_or_forged_signature_is_rejected(signature: str | None) -> None:
    assert not form_is_signed(DOC_TOKEN, DOC_URL, DOC_PARAMS, signature)


def test_other_accounts_token_is_rejected() -> None:
    assert not form_is_signed("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_empty_auth_token_never_validates() -> None:
    # An empty HMAC key is public: anyone could compute the signature.
    forged = sdk_signature(DOC_URL, DOC_PARAMS, token="")
    assert not form_is_signed("", DOC_URL, DOC_PARAMS, forged)


@pytest.mark.parametrize(
    ("signed_url", "requested_url"),
    [
        ("https://mycompany.com:443/myapp.php?foo=1", "https://mycompany.com/myapp.php?foo=1"),
        ("https://mycompany.com/myapp.php?foo=1", "https://mycompany.com:443/myapp.php?foo=1"),
        ("http://mycompany.com:80/voice", "http://mycompany.com/voice"),
    ],
)
def test_default_port_quirk(signed_url: str, requested_url: str) -> None:
    signature = sdk_signature(signed_url, DOC_PARAMS)
    assert form_is_signed(TOKEN, requested_url, DOC_PARAMS, signature)


def test_sdk_strips_any_port() -> None:
    # The SDK also tries the URL without its port, whatever the port: same host and path, same signer.
    assert form_is_signed(
        DOC_TOKEN, "https://mycompany.com:8443/myapp.php?foo=1&bar=2", DOC_PARAMS, DOC_SIGNATURE
    )


def test_repeated_names_all_count() -> None:
    form = MultiDict([("CallSid", "CA1"), ("Tag", "b"), ("Tag", "a")])
    signature = sdk_signature("https://h.example/twilio/voice", form)
    assert form_is_signed(TOKEN, "https://h.example/twilio/voice", form, signature)
    only_one = MultiDict([("CallSid", "CA1"), ("Tag", "b")])
    assert not form_is_signed(TOKEN, "https://h.example/twilio/voice", only_one, signature)


def test_file_upload_is_never_a_twilio_webhook() -> None:
    form: MultiDict[object] = MultiDict([("CallSid", "CA1"), ("file", object())])
    assert not form_is_signed(TOKEN, "https://h.example/twilio/voice", form, "x" * 28)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=8),
    query=st.text(alphabet=string.ascii_letters + string.digits + "=&%", max_size=20),
)
def test_any_form_signed_by_the_sdk_validates(params: dict[str, str], query: str) -> None:
    url = "https://bridge.example.com/twilio/voice" + (f"?{query}" if query else "")
    signature = sdk_signature(url, params)
    assert form_is_signed(TOKEN, url, params, signature)
    assert not form_is_signed(TOKEN, url, params | {"Injected": "1"}, signature)


# -- rebuilding the public URL -------------------------------------------------------------------------


def test_configured_public_url_wins_over_headers() -> None:
    headers = CIMultiDict({"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"})
    assert public_base("https://bridge.example.com/", "http", "10.0.0.5:8080", headers) == (
        "https://bridge.example.com"
    )


def test_forwarded_headers_first_hop() -> None:
    headers = CIMultiDict({"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "bridge.example.com, lb"})
    assert public_base("", "http", "10.0.0.5:8080", headers) == "https://bridge.example.com"


def test_no_proxy_headers_uses_the_request() -> None:
    assert public_base("", "http", "127.0.0.1:8080", CIMultiDict()) == "http://127.0.0.1:8080"


def test_webhook_behind_tls_terminator_with_raw_query() -> None:
    """What the server does: PUBLIC_URL + raw path and query, percent-encoding as Twilio sent it."""
    request = make_mocked_request(
        "POST",
        "/twilio/voice?tenant=a%20b&x=%2F",
        headers={"Host": "10.0.0.5:8080", "X-Forwarded-Proto": "https"},
    )
    url = public_url(
        public_base("https://bridge.example.com", request.scheme, request.host, request.headers),
        request.raw_path,
    )
    assert url == "https://bridge.example.com/twilio/voice?tenant=a%20b&x=%2F"
    signature = sdk_signature(url, DOC_PARAMS)
    assert form_is_signed(TOKEN, url, DOC_PARAMS, signature)
    # The decoded form of the same URL is not what Twilio signed.
    assert not form_is_signed(
        TOKEN, "https://bridge.example.com/twilio/voice?tenant=a b&x=/", DOC_PARAMS, signature
    )


def test_public_url_keeps_a_path_prefix() -> None:
    assert (
        public_url("https://example.com/bridge/", "/twilio/voice")
        == "https://example.com/bridge/twilio/voice"
    )


# -- media socket upgrade --------------------------------------------------------------------------------


def test_upgrade_vector() -> None:
    assert sdk_signature(WS_URL, token=DOC_TOKEN) == WS_SIGNATURE
    assert upgrade_url_is_signed(DOC_TOKEN, WS_URL, WS_SIGNATURE)


def test_upgrade_signed_over_the_https_form_is_accepted() -> None:
    signature = sdk_signature("https://example.com/media-stream", token=DOC_TOKEN)
    assert upgrade_url_is_signed(DOC_TOKEN, WS_URL, signature)


def test_upgrade_url_given_in_https_form() -> None:
    # The server may hand in the https:// request URL; the wss:// signature must still match.
    assert upgrade_url_is_signed(DOC_TOKEN, "https://example.com/media-stream", WS_SIGNATURE)


def test_plain_ws_and_http_forms_pair_up() -> None:
    signature = sdk_signature("ws://127.0.0.1:8080/twilio/media")
    assert upgrade_url_is_signed(TOKEN, "ws://127.0.0.1:8080/twilio/media", signature)
    assert upgrade_url_is_signed(TOKEN, "http://127.0.0.1:8080/twilio/media", signature)


@pytest.mark.parametrize(
    "signed_url",
    [
        "http://example.com/media-stream",  # TLS on one side only is a different URL
        "wss://example.com/media-stream?token=1",
        "wss://example.com/media",
        "wss://evil.example/media-stream",
    ],
)
def test_upgrade_for_another_url_is_rejected(signed_url: str) -> None:
    assert not upgrade_url_is_signed(DOC_TOKEN, WS_URL, sdk_signature(signed_url, token=DOC_TOKEN))


def test_upgrade_with_a_query_added_by_the_client_is_rejected() -> None:
    assert not upgrade_url_is_signed(DOC_TOKEN, WS_URL + "?x=1", WS_SIGNATURE)


@pytest.mark.parametrize("signature", [None, "", WS_SIGNATURE[:-1], DOC_SIGNATURE])
def test_upgrade_missing_or_forged_signature(signature: str | None) -> None:
    assert not upgrade_url_is_signed(DOC_TOKEN, WS_URL, signature)


def test_upgrade_needs_an_auth_token() -> None:
    assert not upgrade_url_is_signed("", WS_URL, sdk_signature(WS_URL, token=""))


def test_upgrade_port_quirk_on_the_https_form() -> None:
    signature = sdk_signature("https://example.com:443/media-stream", token=DOC_TOKEN)
    assert upgrade_url_is_signed(DOC_TOKEN, WS_URL, signature)


def test_scheme_mapping() -> None:
    assert websocket_url("https://h.example/p/twilio/media") == "wss://h.example/p/twilio/media"
    assert websocket_url("http://127.0.0.1:1/twilio/media") == "ws://127.0.0.1:1/twilio/media"
    assert http_url("wss://h.example:8443/x") == "https://h.example:8443/x"
    assert http_url("ws://h/x") == "http://h/x"


def test_upgrade_request_as_the_server_sees_it() -> None:
    request = make_mocked_request(
        "GET",
        "/twilio/media",
        headers={
            "Host": "10.0.0.5:8080",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "bridge.example.com",
        },
    )
    base = public_base("", request.scheme, request.host, request.headers)
    url = websocket_url(public_url(base, request.raw_path))
    assert url == "wss://bridge.example.com/twilio/media"
    signature = sdk_signature("wss://bridge.example.com/twilio/media")
    assert upgrade_url_is_signed(TOKEN, url, signature)
    assert SIGNATURE_HEADER == "X-Twilio-Signature"


# -- the scheme on a request, for Twilio and SignalWire -------------------------------------------------


def request(url: str, headers: dict[str, str], form: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(
        "POST" if form is not None else "GET", url, CIMultiDict(headers), form=MultiDict(form or {})
    )


def test_twilio_signature_on_a_webhook_and_an_upgrade() -> None:
    scheme = TwilioSignature(DOC_TOKEN)
    assert scheme.webhook_is_signed(request(DOC_URL, {"x-twilio-signature": DOC_SIGNATURE}, DOC_PARAMS))
    assert not scheme.webhook_is_signed(
        request(DOC_URL, {"X-Twilio-Signature": DOC_SIGNATURE}, DOC_PARAMS | {"To": ""})
    )
    assert not scheme.webhook_is_signed(
        request(DOC_URL, {"X-SignalWire-Signature": DOC_SIGNATURE}, DOC_PARAMS)
    )
    # The upgrade is checked against the URL the server rebuilt (http form, as aiohttp sees it).
    assert scheme.accepts_upgrade(
        request("https://example.com/media-stream", {SIGNATURE_HEADER: WS_SIGNATURE})
    )
    assert not scheme.accepts_upgrade(request("https://example.com/media-stream", {}))
    assert not scheme.accepts_upgrade(request("https://example.com/other", {SIGNATURE_HEADER: WS_SIGNATURE}))


def test_signalwire_signs_as_twilio_under_its_own_header_and_may_leave_the_upgrade_unsigned() -> None:
    scheme = signalwire_signature(DOC_TOKEN)
    for header in ("X-SignalWire-Signature", "X-Twilio-Signature"):
        assert scheme.webhook_is_signed(request(DOC_URL, {header: DOC_SIGNATURE}, DOC_PARAMS))
    assert not scheme.webhook_is_signed(request(DOC_URL, {}, DOC_PARAMS))
    assert not signalwire_signature("54321").webhook_is_signed(
        request(DOC_URL, {"X-SignalWire-Signature": DOC_SIGNATURE}, DOC_PARAMS)
    )
    # An upgrade without a signature goes on to its stream token; one with a wrong signature does not.
    assert scheme.accepts_upgrade(request("https://example.com/media-stream", {}))
    assert scheme.accepts_upgrade(
        request("https://example.com/media-stream", {"X-SignalWire-Signature": WS_SIGNATURE})
    )
    assert not scheme.accepts_upgrade(
        request("https://example.com/media-stream", {"X-SignalWire-Signature": "x" * 28})
    )


# -- one-time stream tokens ---------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


CALL = "CA" + "1" * 32


def test_token_redeems_once() -> None:
    tokens = StreamTokens(b"k" * 32, clock=Clock())
    token = tokens.issue(CALL)
    assert tokens.redeem(CALL, token)
    assert not tokens.redeem(CALL, token)


def test_token_is_bound_to_its_call() -> None:
    tokens = StreamTokens(b"k" * 32, clock=Clock())
    token = tokens.issue(CALL)
    assert not tokens.redeem("CA" + "2" * 32, token)
    assert tokens.redeem(CALL, token)  # a failed attempt for another call does not burn it


def test_token_vouches_for_its_claims() -> None:
    """A token issued for a recorded call does not redeem for a stream that dropped the claim, nor an
    unclaimed one for a stream that added it; a token issued without claims is what it always was."""
    tokens = StreamTokens(b"k" * 32, clock=Clock())
    recorded, plain = tokens.issue(CALL, "record=1"), tokens.issue(CALL)
    assert not tokens.redeem(CALL, recorded) and not tokens.redeem(CALL, plain, "record=1")
    assert tokens.redeem(CALL, recorded, "record=1") and tokens.redeem(CALL, plain)


def test_token_expires() -> None:
    clock = Clock()
    tokens = StreamTokens(b"k" * 32, clock=clock)
    early, late = tokens.issue(CALL), tokens.issue(CALL)
    clock.t += 59.9
    assert tokens.redeem(CALL, early)
    clock.t += 0.2
    assert not tokens.redeem(CALL, late)


def test_custom_ttl() -> None:
    clock = Clock()
    tokens = StreamTokens(b"k" * 32, ttl_s=5, clock=clock)
    token = tokens.issue(CALL)
    clock.t += 5.5
    assert not tokens.redeem(CALL, token)


def test_tokens_are_unique() -> None:
    tokens = StreamTokens(b"k" * 32, clock=Clock())
    issued = {tokens.issue(CALL) for _ in range(100)}
    assert len(issued) == 100


def test_extending_the_expiry_breaks_the_mac() -> None:
    clock = Clock()
    tokens = StreamTokens(b"k" * 32, clock=clock)
    expires, nonce, mac = tokens.issue(CALL).split(".")
    clock.t += 120
    assert not tokens.redeem(CALL, f"{int(expires) + 3_600_000}.{nonce}.{mac}")


def test_other_secret_is_rejected() -> None:
    clock = Clock()
    ours, theirs = StreamTokens(b"a" * 32, clock=clock), StreamTokens(b"b" * 32, clock=clock)
    assert not ours.redeem(CALL, theirs.issue(CALL))


def test_instances_keyed_from_the_auth_token_agree() -> None:
    clock = Clock()
    webhook_side = StreamTokens.from_auth_token(TOKEN, clock=clock)
    socket_side = StreamTokens.from_auth_token(TOKEN, clock=clock)
    assert socket_side.redeem(CALL, webhook_side.issue(CALL))
    other_account = StreamTokens.from_auth_token("f" * 32, clock=clock)
    assert not other_account.redeem(CALL, webhook_side.issue(CALL))


def test_default_secret_is_random_per_instance() -> None:
    assert not StreamTokens().redeem(CALL, StreamTokens().issue(CALL))


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        ".",
        "..",
        "1.2",
        "1.a.b.c",
        "x" * 10_000,
        "١٢٣.abc.def",
        "99999999999999999999.a.b",
        "1.a.b\n",
    ],
)
def test_malformed_tokens(token: str | None) -> None:
    assert not StreamTokens(b"k" * 32, clock=Clock()).redeem(CALL, token)


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=120), call_sid=st.text(max_size=40))
def test_random_strings_never_redeem(token: str, call_sid: str) -> None:
    assert not StreamTokens(b"k" * 32, clock=Clock()).redeem(call_sid, token)


@settings(max_examples=200, deadline=None)
@given(call_sid=st.text(max_size=60), other=st.text(max_size=60))
def test_any_call_sid_round_trips_and_binds(call_sid: str, other: str) -> None:
    tokens = StreamTokens(b"k" * 32, clock=Clock())
    token = tokens.issue(call_sid)
    if other != call_sid:
        assert not tokens.redeem(other, token)
    assert tokens.redeem(call_sid, token)


def test_memory_is_bounded() -> None:
    tokens = StreamTokens(b"k" * 32, clock=Clock(), max_redeemed=10)
    for i in range(50):
        assert tokens.redeem(f"CA{i}", tokens.issue(f"CA{i}"))
    assert tokens.redeemed_count == 10


def test_expired_redemptions_are_forgotten() -> None:
    clock = Clock()
    tokens = StreamTokens(b"k" * 32, clock=clock)
    old = tokens.issue(CALL)
    assert tokens.redeem(CALL, old)
    clock.t += 61
    assert tokens.redeem(CALL, tokens.issue(CALL))
    assert tokens.redeemed_count == 1
    assert not tokens.redeem(CALL, old)  # forgotten, but expired: still refused


def test_forged_tokens_take_no_memory() -> None:
    tokens = StreamTokens(b"k" * 32, clock=Clock())
    good = tokens.issue(CALL)
    expires, nonce, _ = good.split(".")
    for i in range(1000):
        assert not tokens.redeem(CALL, f"{expires}.{nonce}.{i:027d}")
    assert tokens.redeemed_count == 0
