"""A pcap of µ-law RTP for sipp's `play_pcap_audio`: Ethernet/IPv4/UDP frames, one per 20 ms packet.

sipp replays the UDP payloads with the capture's timing towards the media address the bridge's SDP
answer gave, so the file only needs plausible addresses and correct RTP.
"""

from __future__ import annotations

import struct
from pathlib import Path

from bridge.audio import PCMU_8K
from bridge.sip.rtp import RtpPacket

LINKTYPE_ETHERNET = 1
DTMF_PT = 101


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, src_port: int = 6000, dst_port: int = 10000) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ethernet = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ethernet + ip + udp


def rtp_packets(
    pcm16_8k: bytes, ssrc: int = 0x1234ABCD, sequence: int = 1000, timestamp: int = 50_000
) -> list[bytes]:
    """20 ms µ-law RTP packets of `pcm16_8k` (PCM16 mono 8 kHz), the first with the marker bit."""
    ulaw = PCMU_8K.from_pcm16(pcm16_8k)
    packets = []
    for n, i in enumerate(range(0, len(ulaw) - 159, 160)):
        packet = RtpPacket(0, sequence + n, timestamp + 160 * n, ssrc, ulaw[i : i + 160], marker=n == 0)
        packets.append(packet.serialise())
    return packets


def with_dtmf(
    pcm16_8k: bytes, digits: str, ssrc: int = 0x1234ABCD, sequence: int = 1000, timestamp: int = 50_000
) -> list[bytes]:
    """µ-law audio, then each digit as an RFC 4733 event in place of 120 ms of it: three progress
    packets and the end packet sent three times, all with the event's start timestamp."""
    ulaw = PCMU_8K.from_pcm16(pcm16_8k)
    frames = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]
    packets, n = [], 0
    for index, frame in enumerate(frames):
        packets.append(RtpPacket(0, sequence + n, timestamp + 160 * index, ssrc, frame).serialise())
        n += 1
    for k, digit in enumerate(digits):
        start = timestamp + 160 * (len(frames) + 10 * k)
        code = "0123456789*#ABCD".index(digit)
        for step in range(6):
            end = step >= 3
            duration = 160 * min(step + 1, 4)
            payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
            packets.append(
                RtpPacket(DTMF_PT, sequence + n, start, ssrc, payload, marker=step == 0).serialise()
            )
            n += 1
    return packets


def write_pcap(path: Path, packets: list[bytes], interval_ms: float = 20.0) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    for n, payload in enumerate(packets):
        frame = _frame(payload)
        micros = round(n * interval_ms * 1000)
        out.append(
            struct.pack(
                "<IIII", 1_700_000_000 + micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)
            )
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
