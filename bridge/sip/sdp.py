"""SDP offer/answer (RFC 4566, RFC 3264) for one audio stream: G.711 at 8 kHz and RFC 4733 events.

We answer the offer's first usable audio stream with the first of PCMU/PCMA in the offer's order
(the offerer's preference), telephone-event with the offer's payload type, ptime 20, and the direction
that mirrors the offer's (hold: sendonly/inactive, or the old-style c=0.0.0.0).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from bridge.audio import PCMA_8K, PCMU_8K, AudioFormat

STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
CODECS = {"PCMU": PCMU_8K, "PCMA": PCMA_8K}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
PTIME_MS = 20


class SdpError(ValueError):
    """An offer we cannot answer; `status` is the SIP response to give (400 or 488)."""

    def __init__(self, message: str, status: int = 488) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class MediaLine:
    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str = ""
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    direction: str = ""


@dataclass(frozen=True, slots=True)
class Offer:
    """What we take from an offer: where to send, in which codec, and whether the peer listens."""

    address: str
    port: int
    payload_type: int
    line: AudioFormat
    dtmf_payload_type: int | None
    direction: str  # the offer's direction for the audio stream
    media: tuple[tuple[str, str, str], ...]  # (kind, proto, first format) of every m= line, in order
    audio_index: int

    @property
    def peer_listens(self) -> bool:
        """May we send RTP? Not to a held peer (sendonly/inactive, or c=0.0.0.0)."""
        return self.direction in ("sendrecv", "recvonly") and self.address != "0.0.0.0" and self.port > 0

    @property
    def answer_direction(self) -> str:
        if self.address == "0.0.0.0" and self.direction in ("sendrecv", "sendonly"):
            return "recvonly"  # RFC 2543 hold: it will not hear us, though it may still send
        return ANSWER_DIRECTION[self.direction]


def parse_offer(body: bytes) -> Offer:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8", 400) from None
    session_connection, session_direction = "", "sendrecv"
    media: list[MediaLine] = []
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        current = media[-1] if media else None
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError("bad m= line", 400)
            media.append(MediaLine(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:]))
        elif kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN":
                raise SdpError("bad c= line", 400)
            if parts[1] != "IP4":
                raise SdpError("only IPv4 media is supported")
            address = parts[2].split("/")[0]
            if current is None:
                session_connection = address
            else:
                current.connection = address
        elif kind == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if current is None:
                    session_direction = name
                else:
                    current.direction = name
            elif name == "rtpmap" and current is not None:
                pt, _, encoding = arg.partition(" ")
                codec, _, rate = encoding.partition("/")
                if pt.isdigit() and rate.split("/")[0].isdigit():
                    current.rtpmap[int(pt)] = (codec.strip().upper(), int(rate.split("/")[0]))
    for index, m in enumerate(media):
        if m.kind != "audio" or m.port == 0:
            continue
        if m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            continue  # SRTP and the like: not ours to answer
        address = m.connection or session_connection
        if not address:
            raise SdpError("no c= line for the audio stream", 400)
        chosen: tuple[int, AudioFormat] | None = None
        dtmf: int | None = None
        for fmt in m.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            name, rate = m.rtpmap.get(pt) or STATIC.get(pt, ("", 0))
            if chosen is None and name in CODECS and rate == 8000:
                chosen = (pt, CODECS[name])
            elif dtmf is None and name == "TELEPHONE-EVENT" and rate == 8000:
                dtmf = pt
        if chosen is None:
            raise SdpError("no common codec: PCMU or PCMA at 8 kHz required")
        return Offer(
            address=address,
            port=m.port,
            payload_type=chosen[0],
            line=chosen[1],
            dtmf_payload_type=dtmf,
            direction=m.direction or session_direction,
            media=tuple((x.kind, x.proto, x.formats[0] if x.formats else "0") for x in media),
            audio_index=index,
        )
    raise SdpError("no audio stream on RTP/AVP in the offer")


@dataclass(slots=True)
class SdpSession:
    """Our side of the session description: the same o= id across answers, the version bumped."""

    address: str
    session_id: int = field(default_factory=lambda: secrets.randbelow(2**31))
    version: int = 0

    def answer(self, offer: Offer, rtp_port: int) -> bytes:
        self.version += 1
        codec = "PCMU" if offer.line == PCMU_8K else "PCMA"
        lines = [
            "v=0",
            f"o=bridge {self.session_id} {self.version} IN IP4 {self.address}",
            "s=bridge",
            f"c=IN IP4 {self.address}",
            "t=0 0",
        ]
        for index, (kind, proto, first) in enumerate(offer.media):
            if index != offer.audio_index:
                lines.append(f"m={kind} 0 {proto} {first}")  # declined (RFC 3264 §6)
                continue
            formats = [str(offer.payload_type)]
            if offer.dtmf_payload_type is not None:
                formats.append(str(offer.dtmf_payload_type))
            lines.append(f"m=audio {rtp_port} RTP/AVP {' '.join(formats)}")
            lines.append(f"a=rtpmap:{offer.payload_type} {codec}/8000")
            if offer.dtmf_payload_type is not None:
                lines.append(f"a=rtpmap:{offer.dtmf_payload_type} telephone-event/8000")
                lines.append(f"a=fmtp:{offer.dtmf_payload_type} 0-15")
            lines.append(f"a=ptime:{PTIME_MS}")
            lines.append(f"a={offer.answer_direction}")
        return ("\r\n".join(lines) + "\r\n").encode()
