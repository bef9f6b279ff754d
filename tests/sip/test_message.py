from __future__ import annotations

import pytest

from bridge.sip.message import (
    SipParseError,
    header_param,
    header_uri,
    parse,
    response,
    uri_host_port,
    uri_user,
)

INVITE = (
    b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.0;branch=z9hG4bK-x\r\n"
    b'f: "Alice, A." <sip:+15550001111@10.0.0.2>;tag=abc\r\n'
    b"t: <sip:service@127.0.0.1>\r\n"
    b"i: call-1@10.0.0.2\r\n"
    b"cseq: 7 INVITE\r\n"
    b"m: <sip:alice@10.0.0.2:5070>\r\n"
    b"Subject: a folded\r\n  header\r\n"
    b"l: 4\r\n\r\n"
    b"v=0\r\nEXTRA"
)


def test_compact_and_case_insensitive_headers_multiple_via_and_content_length() -> None:
    m = parse(INVITE)
    assert (m.method, m.uri) == ("INVITE", "sip:service@127.0.0.1:5060")
    assert m.call_id == "call-1@10.0.0.2"
    assert m.cseq == (7, "INVITE")
    assert m.get("CONTACT") == "<sip:alice@10.0.0.2:5070>"
    assert len(m.get_all("via")) == 3 and m.branch == "z9hG4bK-1"
    assert m.from_tag == "abc" and m.to_tag == ""
    assert m.get("Subject") == "a folded header"
    assert m.body == b"v=0\r"  # Content-Length wins over the datagram's tail


def test_response_round_trip_keeps_vias_and_adds_our_tag() -> None:
    request = parse(INVITE)
    out = parse(response(request, 180, "ourtag").serialise())
    assert out.status == 180 and out.reason == "Ringing"
    assert out.get_all("Via") == request.get_all("Via")
    assert out.to_tag == "ourtag" and out.from_tag == "abc"
    assert out.get("Content-Length") == "0"
    assert parse(response(request, 100, "ourtag").serialise()).to_tag == ""  # 100 carries no tag


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\nVia: x\r\n\r\n",  # missing From/To/Call-ID/CSeq
        INVITE.replace(b"cseq: 7 INVITE", b"cseq: seven INVITE"),
        INVITE.replace(b"cseq: 7 INVITE", b"cseq: 7 BYE"),
        INVITE.replace(b"l: 4", b"l: 400"),
        INVITE.replace(b"Subject: a", b"Bad Header a"),
        b"\xff\xfe" + INVITE,
    ],
)
def test_malformed_datagrams_raise_a_parse_error_only(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse(data)


def test_uri_helpers() -> None:
    assert header_uri('"Bob" <sip:bob@host:5080;transport=udp>;tag=9') == "sip:bob@host:5080;transport=udp"
    assert header_param('"Bob" <sip:bob@host;tag=no>;tag=9', "tag") == "9"
    assert uri_user("sip:+15550001111@host") == "+15550001111"
    assert uri_user("tel:+15550001111;phone-context=x") == "+15550001111"
    assert uri_user("sip:host") == ""
    assert uri_host_port("sip:bob@10.1.2.3:5080;lr") == ("10.1.2.3", 5080)
    assert uri_host_port("sip:[::1]:5062") == ("::1", 5062)
    assert uri_host_port("sip:example.com") == ("example.com", 5060)
