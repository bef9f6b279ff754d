"""The caller's media side, owned by the test: sipp does the signalling and advertises this socket's
port in its SDP (`-key rtp_port N`, `[rtp_port]` in the scenario), so every RTP packet of the bridge's
reply lands here with its arrival time, and the caller talks back from here, from the port the bridge
was told about (the leg accepts media only from the offer's address)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from bridge.audio import PCMU_8K
from bridge.sip.rtp import RtpPacket, parse_rtp

FRAME_BYTES = 160  # 20 ms of µ-law at 8 kHz


@dataclass(frozen=True)
class Arrival:
    at_ms: float  # time.monotonic() in ms when the test's loop read it
    packet: RtpPacket

    @property
    def pcm(self) -> bytes:
        return PCMU_8K.to_pcm16(self.packet.payload)


def tone_share(pcm16: bytes, hz: float, rate: int = 8000) -> float:
    """The fraction of a frame's energy within 60 Hz of `hz` (1.0: a pure tone at `hz`)."""
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    total = spectrum.sum()
    if total <= 0:
        return 0.0
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) <= 60].sum() / total)


class RtpPeer(asyncio.DatagramProtocol):
    """Records what the bridge sends; streams 20 ms µ-law frames back (silence unless told to talk)."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.bridge_address: tuple[str, int] | None = None  # learnt from the first packet (symmetric RTP)
        self.transport: asyncio.DatagramTransport | None = None
        self._speech: bytearray = bytearray()  # µ-law still to say
        self._said: asyncio.Event = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._heard = asyncio.Event()  # the bridge's first packet came: we know where to talk
        self.sent = 0
        self.said: list[tuple[float, bytes]] = []  # (time.monotonic() ms it was sent, µ-law frame)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(ValueError):
            packet = parse_rtp(data)
            self.arrivals.append(Arrival(time.monotonic() * 1000.0, packet))
            if self.bridge_address is None:
                self.bridge_address = addr
                self._heard.set()

    def say(self, pcm16_8k: bytes) -> asyncio.Event:
        """Talk: the audio goes out in place of silence from the next frame; the event is set once sent."""
        self._speech += PCMU_8K.from_pcm16(pcm16_8k)
        self._said = asyncio.Event()
        return self._said

    async def _send_forever(self) -> None:
        """A frame every 20 ms on an absolute schedule, as phones send, from the bridge's first packet on."""
        loop = asyncio.get_running_loop()
        await self._heard.wait()
        silence = PCMU_8K.silence(FRAME_BYTES)
        start, n = loop.time(), 0
        while True:
            if self._speech:
                frame, self._speech = bytes(self._speech[:FRAME_BYTES]), self._speech[FRAME_BYTES:]
                frame += silence[len(frame) :]
            else:
                frame = silence
                self._said.set()
            packet = RtpPacket(0, (4000 + n) & 0xFFFF, 80_000 + 160 * n, 0x5EED1234, frame, marker=n == 0)
            assert self.transport is not None
            self.transport.sendto(packet.serialise(), self.bridge_address)
            self.said.append((time.monotonic() * 1000.0, frame))
            self.sent += 1
            n += 1
            delay = start + n * 0.020 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # this loop stalled: go on from now rather than send a burst
                start = loop.time() - n * 0.020

    def packets_matching(self, hz: float, share: float = 0.5) -> list[Arrival]:
        """Received packets whose audio is mostly a tone at `hz`."""
        return [a for a in self.arrivals if tone_share(a.pcm, hz) >= share]


@contextlib.asynccontextmanager
async def rtp_peer(talk: bool = True) -> AsyncIterator[RtpPeer]:
    """An RtpPeer on a free loopback port; with `talk` it streams frames once the bridge has sent one."""
    loop = asyncio.get_running_loop()
    peer = RtpPeer()
    await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    if talk:
        peer._sender = loop.create_task(peer._send_forever())
    try:
        yield peer
    finally:
        if peer._sender is not None:
            peer._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peer._sender
        assert peer.transport is not None
        peer.transport.close()
