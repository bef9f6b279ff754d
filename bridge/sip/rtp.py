"""RTP (RFC 3550) packets, our outbound stream's numbering, and RFC 4733 DTMF events received."""

from __future__ import annotations

import secrets
import struct
from collections import deque
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")
SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz
DIGITS = "0123456789*#ABCD"


class RtpError(ValueError):
    """Not an RTP packet we can use."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def serialise(self) -> bytes:
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        return HEADER.pack(0x80, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc) + (
            self.payload
        )


def is_rtcp(data: bytes) -> bool:
    """RTCP multiplexed on the RTP port (RFC 5761): packet types 192-223 fall where RTP's M+PT would."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < HEADER.size:
        raise RtpError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError("not RTP version 2")
    offset = HEADER.size + 4 * (first & 0x0F)  # CSRCs
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        words = struct.unpack_from("!H", data, offset + 2)[0]
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last byte says how much
        if end == 0 or data[-1] == 0 or data[-1] > end - offset:
            raise RtpError("bad padding")
        end -= data[-1]
    if offset > end:
        raise RtpError("header longer than the packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[offset:end], bool(second & 0x80))


class RtpSender:
    """Our stream: random SSRC, sequence and timestamp starts; the timestamp follows the playout clock
    (so silence between talkspurts advances it) and the first packet after silence has the marker."""

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._last_frame: int | None = None  # frame index on the playout clock of the last packet
        self.packets = 0
        self.octets = 0

    def packet(self, payload: bytes, frame_index: int) -> bytes:
        """The packet for `payload` due at playout frame `frame_index` (20 ms each, from the call's start)."""
        talkspurt = self._last_frame is None or frame_index > self._last_frame + 1
        if self._last_frame is not None:
            self._timestamp += SAMPLES_PER_FRAME * max(1, frame_index - self._last_frame)
        self._last_frame = frame_index
        packet = RtpPacket(self.payload_type, self.sequence, self._timestamp, self.ssrc, payload, talkspurt)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return packet.serialise()


class DtmfReceiver:
    """RFC 4733 telephone-events -> digits, one per event: an event is identified by its RTP timestamp,
    reported at its first end packet (the end is sent three times), or when the next event starts
    with no end seen (all of its end packets lost)."""

    def __init__(self) -> None:
        self._current: tuple[int, int] | None = None  # (timestamp, event) of the event in progress
        self._reported: deque[int] = deque(maxlen=32)  # timestamps of the events reported lately

    def receive(self, packet: RtpPacket) -> list[str]:
        if len(packet.payload) < 4:
            return []
        event, flags = packet.payload[0], packet.payload[1]
        if event >= len(DIGITS):
            return []  # flash-hook and tones: not digits
        digits: list[str] = []
        ts = packet.timestamp
        if ts in self._reported:
            return []
        if self._current is not None and self._current[0] != ts:
            digits.append(DIGITS[self._current[1]])  # the previous event never ended for us
            self._remember(self._current[0])
        self._current = (ts, event)
        if flags & 0x80:  # end bit
            digits.append(DIGITS[event])
            self._remember(ts)
            self._current = None
        return digits

    def _remember(self, timestamp: int) -> None:
        self._reported.append(timestamp)
