from __future__ import annotations

from bridge.sip.dialog import (
    T1_MS,
    T2_MS,
    TIMEOUT_MS,
    Acked,
    Dialog,
    Ended,
    InfoDigit,
    ReferOutcome,
    ReInvite,
)
from bridge.sip.message import SipMessage, parse

PEER = ("192.0.2.5", 5070)


def request(
    method: str, cseq: int, branch: str, to_tag: str = "", body: bytes = b"", **extra: str
) -> SipMessage:
    lines = [
        f"{method} sip:service@198.51.100.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.5:5070;branch={branch}",
        "From: <sip:+15550001111@192.0.2.5>;tag=theirs",
        "To: <sip:service@198.51.100.1>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: c1",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:caller@192.0.2.5:5070>",
        *(f"{k.replace('_', '-')}: {v}" for k, v in extra.items()),
    ]
    return parse(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def dialog() -> Dialog:
    return Dialog(request("INVITE", 1, "z9hG4bK-inv"), PEER, "ours", "sip:bridge@198.51.100.1:5060", "h:5060")


def statuses(datagrams: list) -> list[int]:
    return [parse(data).status for data, _ in datagrams]


def test_answer_is_resent_at_t1_doubling_until_the_ack() -> None:
    d = dialog()
    assert statuses([d.provisional(100), d.provisional(180)]) == [100, 180]
    ((data, address),) = [d.final(200, 0.0, b"v=0\r\n")]
    answer = parse(data)
    assert address == PEER and answer.to_tag == "ours" and answer.get("Contact")
    resent = [t for t in range(0, 10_000, 10) if d.due(float(t))]
    assert resent[:4] == [T1_MS, 3 * T1_MS, 7 * T1_MS, 7 * T1_MS + T2_MS]  # 500, 1000, 2000, 4000 (T2) apart
    assert d.receive_request(request("ACK", 1, "z9hG4bK-ack", "ours"), PEER, 10_000.0) == []
    assert d.events == [Acked()] and d.state == "confirmed"
    assert d.due(20_000.0) == []


def test_no_ack_ends_the_call_after_64_t1() -> None:
    d = dialog()
    d.final(200, 0.0, b"v=0\r\n")
    for t in range(0, int(TIMEOUT_MS) + 100, 50):
        d.due(float(t))
    assert d.events == [Ended("no_ack")]


def test_retransmitted_invite_is_absorbed_with_the_last_answer() -> None:
    d = dialog()
    d.provisional(180)
    assert statuses(d.receive_request(request("INVITE", 1, "z9hG4bK-inv"), PEER, 10.0)) == [180]
    assert d.events == []


def test_cancel_before_answer_is_200_and_487() -> None:
    d = dialog()
    d.provisional(180)
    out = d.receive_request(request("CANCEL", 1, "z9hG4bK-inv"), PEER, 10.0)
    assert statuses(out) == [200, 487]
    assert d.events == [Ended("caller_hangup", cancelled=True)]
    assert statuses(d.due(10.0 + T1_MS)) == [487]  # resent until its ACK
    d.receive_request(request("ACK", 1, "z9hG4bK-inv", "ours"), PEER, 600.0)
    assert d.due(5000.0) == []


def confirmed() -> Dialog:
    d = dialog()
    d.final(200, 0.0, b"v=0\r\n")
    d.receive_request(request("ACK", 1, "z9hG4bK-ack", "ours"), PEER, 10.0)
    d.events.clear()
    return d


def test_bye_from_the_caller_ends_the_call_once() -> None:
    d = confirmed()
    assert statuses(d.receive_request(request("BYE", 2, "z9hG4bK-bye", "ours"), PEER, 20.0)) == [200]
    assert statuses(d.receive_request(request("BYE", 2, "z9hG4bK-bye", "ours"), PEER, 520.0)) == [200]
    assert d.events == [Ended("caller_hangup")]
    assert statuses(d.receive_request(request("INFO", 3, "z9hG4bK-x", "ours"), PEER, 600.0)) == [481]


def test_our_bye_goes_to_the_contact_and_is_resent_until_answered() -> None:
    d = confirmed()
    ((data, address),) = d.bye(100.0)
    bye = parse(data)
    assert bye.method == "BYE" and address == ("192.0.2.5", 5070)
    assert bye.uri == "sip:caller@192.0.2.5:5070" and bye.from_tag == "ours" and bye.to_tag == "theirs"
    assert len(d.due(100.0 + T1_MS)) == 1
    answer = SipMessage(status=200, reason="OK", headers=[(n, v) for n, v in bye.headers])
    d.receive_response(answer, 700.0)
    assert d.due(5000.0) == []


def test_reinvite_hold_options_and_info_dtmf() -> None:
    d = confirmed()
    out = d.receive_request(request("INVITE", 2, "z9hG4bK-re", "ours", b"v=0\r\n"), PEER, 20.0)
    assert statuses(out) == [100] and isinstance(d.events[0], ReInvite)
    d.final(200, 30.0, b"v=0\r\n")
    d.receive_request(request("ACK", 2, "z9hG4bK-ack2", "ours"), PEER, 40.0)
    options = d.receive_request(request("OPTIONS", 3, "z9hG4bK-o", "ours"), PEER, 50.0)
    assert statuses(options) == [200] and "BYE" in parse(options[0][0]).get("Allow")
    body = b"Signal=5\r\nDuration=160\r\n"
    d.receive_request(
        request("INFO", 4, "z9hG4bK-i", "ours", body, Content_Type="application/dtmf-relay"), PEER, 60.0
    )
    assert d.events[-1] == InfoDigit("5")


def test_refer_succeeds_on_a_notify_with_200() -> None:
    d = confirmed()
    ((data, _),) = d.refer("sip:+15550002222@192.0.2.5;user=phone", 100.0)
    refer = parse(data)
    assert refer.get("Refer-To") == "<sip:+15550002222@192.0.2.5;user=phone>"
    cseq = 5
    trying = request("NOTIFY", cseq, "z9hG4bK-n1", "ours", b"SIP/2.0 100 Trying\r\n", Event="refer")
    assert statuses(d.receive_request(trying, PEER, 200.0)) == [200] and d.events == []
    ok = request("NOTIFY", cseq + 1, "z9hG4bK-n2", "ours", b"SIP/2.0 200 OK\r\n", Event="refer")
    d.receive_request(ok, PEER, 300.0)
    assert d.events == [ReferOutcome(True, "200 OK")]


def test_refer_refused_by_the_peer() -> None:
    d = confirmed()
    ((data, _),) = d.refer("sip:x@192.0.2.5", 100.0)
    refer = parse(data)
    d.receive_response(SipMessage(status=403, reason="Forbidden", headers=list(refer.headers)), 200.0)
    assert d.events == [ReferOutcome(False, "403 Forbidden")]
