"""The SIP leg's playout clock, driven tick by tick: hold pauses playout and drops music on hold."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.audio import PCMU_8K
from bridge.carrier.events import CallerAudio, Mark, PlayAudio, PlaybackMark
from bridge.sip.dialog import ReInvite
from bridge.sip.leg import SipLeg
from bridge.sip.rtp import RtpPacket, parse_rtp
from bridge.sip.sdp import parse_offer
from tests.sip.test_dialog import dialog, request

PEER_MEDIA = ("192.0.2.5", 40000)


def sdp(direction: str) -> bytes:
    return (
        "v=0\r\no=p 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
        f"m=audio {PEER_MEDIA[1]} RTP/AVP 0\r\na={direction}\r\n"
    ).encode()


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        assert address == PEER_MEDIA
        self.sent.append(data)


class Log:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def started_leg() -> tuple[SipLeg, Wire]:
    d = dialog()
    d.state = "confirmed"
    leg = SipLeg(d, parse_offer(sdp("sendrecv")), 30000, "198.51.100.1", lambda _: None, lambda: None, Log())
    wire = Wire()
    leg.rtp = wire  # type: ignore[assignment]
    leg.started = object()  # type: ignore[assignment]
    return leg, wire


def reinvite(leg: SipLeg, cseq: int, direction: str) -> None:
    leg.dialog.receive_request(
        request("INVITE", cseq, f"z9hG4bK-{cseq}", to_tag="ours", body=sdp(direction)), PEER_MEDIA, 0.0
    )
    assert any(isinstance(e, ReInvite) for e in leg.dialog.events)
    leg.dialog_events()  # the leg answers it
    leg.dialog.receive_request(request("ACK", cseq, "z9hG4bK-ack", to_tag="ours"), PEER_MEDIA, 0.0)


def events(leg: SipLeg) -> list[Any]:
    out = []
    while not leg._events.empty():
        out.append(leg._events.get_nowait()[0])
    return out


def test_hold_pauses_playout_and_resume_plays_the_rest() -> None:
    async def run() -> None:
        leg, wire = started_leg()
        frames = [bytes([n]) * 160 for n in range(6)]
        for n, frame in enumerate(frames):
            await leg.send(PlayAudio(frame))
            await leg.send(Mark(f"m{n}"))
        for tick in range(2):
            leg._tick(tick)
        assert [parse_rtp(p).payload for p in wire.sent] == frames[:2]
        # A mark is reported on the tick after its frame went out, once that frame has played.
        assert [e.name for e in events(leg) if isinstance(e, PlaybackMark)] == ["m0"]

        reinvite(leg, 2, "sendonly")
        for tick in range(2, 52):  # a second on hold: nothing sent, nothing more reported played
            leg._tick(tick)
        assert len(wire.sent) == 2
        assert [e.name for e in events(leg) if isinstance(e, PlaybackMark)] == ["m1"]

        reinvite(leg, 3, "sendrecv")
        for tick in range(52, 60):
            leg._tick(tick)
        packets = [parse_rtp(p) for p in wire.sent]
        assert [p.payload for p in packets] == frames  # every frame, in order, none lost to the hold
        assert [e.name for e in events(leg) if isinstance(e, PlaybackMark)] == ["m2", "m3", "m4", "m5"]
        assert not leg._outbound
        assert packets[2].marker and packets[2].timestamp - packets[1].timestamp == 160 * 51

    asyncio.run(run())


def test_what_a_holding_peer_sends_is_not_the_callers_voice() -> None:
    async def run() -> None:
        leg, _ = started_leg()
        music = PCMU_8K.from_pcm16(b"\x10\x20" * 160)
        reinvite(leg, 2, "sendonly")
        for n in range(10):
            leg.rtp_received(RtpPacket(0, n, 160 * n, 7, music).serialise(), PEER_MEDIA)
            leg._tick(n)
        assert [e for e in events(leg) if isinstance(e, CallerAudio)] == []
        reinvite(leg, 3, "sendrecv")
        for n in range(10, 20):
            leg.rtp_received(RtpPacket(0, n, 160 * n, 7, music).serialise(), PEER_MEDIA)
            leg._tick(n)
        assert [e.payload for e in events(leg) if isinstance(e, CallerAudio)]

    asyncio.run(run())
