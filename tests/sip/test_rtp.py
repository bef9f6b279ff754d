from __future__ import annotations

import itertools
import struct

import pytest

from bridge.sip.rtp import DtmfReceiver, RtpError, RtpPacket, RtpSender, is_rtcp, parse_rtp


def test_sender_numbers_frames_and_marks_each_talkspurt() -> None:
    sender = RtpSender(0)
    packets = [parse_rtp(sender.packet(bytes([n]) * 160, frame)) for n, frame in enumerate([0, 1, 2, 10, 11])]
    assert len({p.ssrc for p in packets}) == 1
    seqs = [p.sequence for p in packets]
    assert seqs == [
        (seqs[0] + i) & 0xFFFF for i in range(5)
    ]  # no gaps in sequence numbers, even after silence
    ts = [p.timestamp for p in packets]
    assert [b - a for a, b in itertools.pairwise(ts)] == [
        160,
        160,
        160 * 8,
        160,
    ]  # silence advances time
    assert [p.marker for p in packets] == [True, False, False, True, False]
    assert RtpSender(0).ssrc != sender.ssrc or RtpSender(0).sequence != sender.sequence  # random starts


def test_parse_skips_csrcs_extension_and_padding() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 0x80 | 8, 7, 99, 5)
    packet = header + b"CSRC" + struct.pack("!HH", 0xBEDE, 1) + b"EXT!" + b"abc" + b"\x00\x02"
    p = parse_rtp(packet)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.marker, p.payload) == (
        8,
        7,
        99,
        5,
        True,
        b"abc",
    )
    with pytest.raises(RtpError):
        parse_rtp(b"\x40" + header[1:])  # version 1
    with pytest.raises(RtpError):
        parse_rtp(header[:8])
    assert is_rtcp(bytes([0x80, 200]) + b"\x00" * 6) and not is_rtcp(header)


def event(ts: int, digit: int, end: bool, duration: int, seq: int) -> RtpPacket:
    payload = struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)
    return RtpPacket(101, seq, ts, 1, payload)


def test_one_digit_per_event_with_retransmitted_ends_deduplicated() -> None:
    rx = DtmfReceiver()
    got: list[str] = []
    seq = 0
    for ts, digit in ((1000, 5), (3000, 11)):
        for duration in (160, 320, 480):
            got += rx.receive(event(ts, digit, False, duration, seq := seq + 1))
        for _ in range(3):  # the end is sent three times
            got += rx.receive(event(ts, digit, True, 640, seq := seq + 1))
    assert got == ["5", "#"]


def test_an_event_whose_ends_were_all_lost_is_reported_when_the_next_starts() -> None:
    rx = DtmfReceiver()
    assert rx.receive(event(1000, 1, False, 160, 1)) == []
    assert rx.receive(event(2000, 2, False, 160, 2)) == ["1"]
    assert rx.receive(event(2000, 2, True, 480, 3)) == ["2"]
    assert rx.receive(event(1000, 1, True, 480, 4)) == []  # a late end of an event already reported
