from __future__ import annotations

import pytest

from bridge.audio import PCMA_8K, PCMU_8K
from bridge.sip.sdp import SdpError, SdpSession, parse_offer


def offer(
    formats: str = "8 0 101", extra: str = "", connection: str = "10.0.0.2", video: bool = False
) -> bytes:
    lines = ["v=0", "o=x 1 1 IN IP4 10.0.0.2", "s=-", f"c=IN IP4 {connection}", "t=0 0"]
    if video:
        lines += ["m=video 5004 RTP/AVP 96", "a=rtpmap:96 H264/90000"]
    lines += [f"m=audio 4000 RTP/AVP {formats}", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"]
    lines += [extra] if extra else []
    return ("\r\n".join(lines) + "\r\n").encode()


def test_the_offers_order_decides_the_codec_and_dtmf_keeps_its_payload_type() -> None:
    o = parse_offer(offer("8 0 101"))
    assert (o.payload_type, o.line, o.dtmf_payload_type) == (8, PCMA_8K, 101)
    assert (o.address, o.port, o.direction, o.peer_listens) == ("10.0.0.2", 4000, "sendrecv", True)
    o = parse_offer(offer("18 0 8"))
    assert (o.payload_type, o.line, o.dtmf_payload_type) == (0, PCMU_8K, None)


def test_answer_names_the_chosen_codec_events_ptime_and_declines_other_streams() -> None:
    o = parse_offer(offer("0 101", video=True))
    answer = SdpSession("192.0.2.7").answer(o, 20000).decode()
    assert "c=IN IP4 192.0.2.7" in answer
    assert "m=video 0 RTP/AVP 96" in answer
    assert "m=audio 20000 RTP/AVP 0 101" in answer
    assert "a=rtpmap:0 PCMU/8000" in answer and "a=rtpmap:101 telephone-event/8000" in answer
    assert "a=ptime:20" in answer and "a=sendrecv" in answer
    assert answer.index("m=video") < answer.index("m=audio")  # same order as the offer


@pytest.mark.parametrize(
    ("extra", "connection", "answer_direction", "listens"),
    [
        ("a=sendonly", "10.0.0.2", "recvonly", False),
        ("a=inactive", "10.0.0.2", "inactive", False),
        ("a=recvonly", "10.0.0.2", "sendonly", True),
        ("", "0.0.0.0", "recvonly", False),
    ],
)
def test_hold_is_answered_in_kind_and_stops_our_audio(
    extra: str, connection: str, answer_direction: str, listens: bool
) -> None:
    o = parse_offer(offer("0", extra, connection))
    assert o.answer_direction == answer_direction
    assert o.peer_listens is listens
    session = SdpSession("192.0.2.7")
    first, second = session.answer(o, 20000).decode(), session.answer(o, 20000).decode()
    assert f"a={answer_direction}" in first
    assert first.split("\r\n")[1].split()[2] == "1" and second.split("\r\n")[1].split()[2] == "2"


def test_no_common_codec_is_488_and_garbage_is_400() -> None:
    with pytest.raises(SdpError) as exc:
        parse_offer(offer("9 18"))
    assert exc.value.status == 488
    with pytest.raises(SdpError) as exc:
        parse_offer(b"v=0\r\nm=audio x RTP/AVP 0\r\n")
    assert exc.value.status == 400
    with pytest.raises(SdpError):
        parse_offer(offer("0").replace(b"RTP/AVP", b"RTP/SAVP"))
