"""One SIP call as a `CarrierLeg`: its dialog, its RTP socket, and the playout clock the bridge owns.

Outbound audio waits in a queue of 20 ms frames; a clock sends each frame as RTP at its due time
(due times are computed from the clock's start, so scheduling delays never accumulate into drift)
and reports each mark once every frame queued before it has been sent and played out (on the tick
after the last of them). The one-way network
delay to the caller's ear is taken as zero: we cannot measure it without RTCP, and on a trunk it is
tens of ms, under the Call's barge-in tolerance. A clear drops the queue at once and echoes the
marks waiting in it. While the caller holds the call, playout pauses (nothing is sent, no mark is
reported played) and what they send (music on hold) is not passed on as the caller's voice.
The same clock plays out inbound audio from the jitter buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bridge.carrier.events import (
    CallEnded,
    CallerAudio,
    CallStarted,
    CarrierCommand,
    CarrierEvent,
    ClearPlayback,
    Dtmf,
    Hangup,
    Mark,
    PlayAudio,
    PlaybackMark,
)
from bridge.carrier.transfer import TransferFailed
from bridge.carrier.webhook import RECORD_PARAMETER
from bridge.clock import now_ms
from bridge.sip.dialog import Acked, Datagram, Dialog, Ended, InfoDigit, ReferOutcome, ReInvite
from bridge.sip.jitter import JitterBuffer
from bridge.sip.message import header_uri, uri_host_port, uri_user
from bridge.sip.rtp import DtmfReceiver, RtpError, RtpSender, is_rtcp, parse_rtp
from bridge.sip.sdp import Offer, SdpError, SdpSession, parse_offer

FRAME_S = 0.020
ANSWER_WAIT_S = 5.0  # ring at most this long for the model's session before answering anyway
ACK_WAIT_S = 32.0  # 64·T1: the 2xx is resent until then
REFER_WAIT_S = 30.0  # a transfer target that never reports is a failed transfer
SSRC_TAKEOVER_MS = 200.0
MAX_CALL_ID = 64  # the call log's call_id column
MAX_CATCH_UP = 10  # frames the clock sends at once after a long stall; older ones are dropped
RECORD_HEADER = "X-Record"  # on the INVITE, `1` asks for the call to be recorded (RECORDING=requested)


def call_log_id(call_id: str) -> str:
    """The SIP Call-ID as the call's id; one longer than the call log's 64 characters keeps its start
    and gains a digest of the whole, so it stays unique and recognisable."""
    if len(call_id) <= MAX_CALL_ID:
        return call_id
    return f"{call_id[:47]}~{hashlib.sha256(call_id.encode()).hexdigest()[:16]}"


class RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.receive = receive

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a peer that stopped listening: the dialog decides


class SipLeg:
    carrier = "sip"
    play_chunk_ms = 1000  # the leg's own RTP clock cuts any piece into 20 ms packets

    def __init__(
        self,
        dialog: Dialog,
        offer: Offer,
        rtp_port: int,
        public_host: str,
        send_sip: Callable[[list[Datagram]], None],
        release: Callable[[], None],
        logger: Any,
    ) -> None:
        self.dialog = dialog
        self.offer = offer
        self.rtp: asyncio.DatagramTransport | None = None  # set by the endpoint once the socket is wrapped
        self.rtp_port = rtp_port
        self.log = logger
        self.started: CallStarted | None = None
        self.upstream_ready = asyncio.Event()
        self._send_sip = send_sip
        self._release = release
        self._sdp = SdpSession(public_host)
        self._sender = RtpSender(offer.payload_type)
        self._jitter = JitterBuffer(offer.line.silence(offer.line.frame_bytes(20)))
        self._dtmf = DtmfReceiver()
        self._frame_bytes = offer.line.frame_bytes(20)
        self._events: asyncio.Queue[tuple[CarrierEvent, float]] = asyncio.Queue()
        self._outbound: deque[bytes | str] = deque()  # frames, and mark names between them
        self._frames_queued = 0
        self._playing = False  # a frame went out on the last tick and is still being heard
        self._acked = asyncio.Event()
        self._ended = asyncio.Event()
        self._drained = asyncio.Event()
        self._refer: asyncio.Future[tuple[bool, str]] | None = None
        self._clock: asyncio.Task[None] | None = None
        self._closed = False
        self._ssrc: int | None = None
        self._ssrc_heard_at = 0.0
        self.foreign_packets = 0
        self._allowed_sources = {offer.address, dialog.source[0]}
        self.bad_packets = 0
        self.packets_in = 0
        self.frames_sent = 0
        self.late_ticks = 0

    # -- CarrierLeg -------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """The caller put us on hold: what they send now is music on hold, not the caller talking."""
        return not self.offer.peer_listens

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        j = self._jitter.stats
        return {
            "rtp_sent": self.frames_sent,
            "rtp_received": self.packets_in,
            "bad_packets": self.bad_packets,
            "foreign_packets": self.foreign_packets,
            "jitter_late": j.late,
            "jitter_concealed": j.concealed,
            "jitter_target_ms": self._jitter.target_ms,
            "late_ticks": self.late_ticks,
        }

    async def wait_for_start(self) -> CallStarted | None:
        """Ring until the model's session is open, answer, and start once the ACK is in."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_WAIT_S):
                await _first(self.upstream_ready.wait(), self._ended.wait())
        if self._ended.is_set() or self.dialog.state != "early":
            await self.close("caller_hangup")
            return None
        answer = self._sdp.answer(self.offer, self.rtp_port)
        self._send_sip([self.dialog.final(200, now_ms(), answer)])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACK_WAIT_S + 1):
                await _first(self._acked.wait(), self._ended.wait())
        if not self._acked.is_set() or self.dialog.state != "confirmed":
            self.log.warning("no ACK for our answer, ending the call")
            await self.close("no_ack")
            return None
        invite = self.dialog.invite
        parameters = {
            "from": uri_user(header_uri(invite.get("From"))),
            "to": uri_user(header_uri(invite.get("To"))),
            "direction": "inbound",
        }
        if record := invite.get(RECORD_HEADER):  # the trunk or PBX asks for a recording
            parameters[RECORD_PARAMETER] = record
        self.started = CallStarted(
            stream_sid=self.dialog.local_tag,
            call_sid=call_log_id(self.dialog.call_id),
            custom_parameters=parameters,
            line=self.offer.line,
        )
        self._clock = asyncio.get_running_loop().create_task(self._run_clock())
        return self.started

    async def events(self) -> AsyncIterator[tuple[CarrierEvent, float]]:
        while True:
            event, at = await self._events.get()
            yield event, at
            if isinstance(event, CallEnded):
                return

    async def send(self, command: CarrierCommand) -> None:
        if isinstance(command, PlayAudio):
            payload = command.payload
            for i in range(0, len(payload), self._frame_bytes):
                frame = payload[i : i + self._frame_bytes]
                if len(frame) < self._frame_bytes:  # the last piece of an item: padded to a whole frame
                    frame += self.offer.line.silence(self._frame_bytes - len(frame))
                self._outbound.append(frame)
                self._frames_queued += 1
            self._drained.clear()
        elif isinstance(command, Mark):
            if self._frames_queued or self._playing:
                self._outbound.append(command.name)
            else:
                self._emit(PlaybackMark(command.name))
        elif isinstance(command, ClearPlayback):
            marks = [item for item in self._outbound if isinstance(item, str)]
            self._outbound.clear()
            self._frames_queued = 0
            self._drained.set()
            for name in marks:
                self._emit(PlaybackMark(name))
        elif isinstance(command, Hangup):
            await self.close(command.reason)

    async def close(self, reason: str, code: int = 1000) -> None:
        if self._closed:
            return
        self._closed = True
        if self.dialog.state != "terminated":
            self._send_sip(self.dialog.bye(now_ms()))
            self.log.info("sent BYE", reason=reason)
        self._ended.set()
        self._emit(CallEnded(reason))
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        if self.rtp is not None:
            self.rtp.close()
        self._release()

    async def apologise(self, audio: bytes) -> None:
        if self.started is None or self._closed:
            return
        await self.send(ClearPlayback())
        await self.send(PlayAudio(audio))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(len(audio) / self.offer.line.bytes_per_ms / 1000 + 5):
                await _first(self._drained.wait(), self._ended.wait())

    async def transfer(self, number: str) -> None:
        """REFER the caller to `number` (sip:number@peer-host, or a tel: URI as given); wait for the
        NOTIFY that the target answered. TransferFailed says why it did not."""
        if self.started is None or self.dialog.state != "confirmed":
            raise TransferFailed("the call is not connected")
        if number.startswith(("sip:", "sips:", "tel:")):
            target = number
        else:
            host, port = uri_host_port(self.dialog.remote_target)
            target = f"sip:{number}@{host}" + (f":{port}" if port != 5060 else "") + ";user=phone"
        self._refer = asyncio.get_running_loop().create_future()
        self._send_sip(self.dialog.refer(target, now_ms()))
        try:
            async with asyncio.timeout(REFER_WAIT_S):
                ok, detail = await self._refer
        except TimeoutError:
            raise TransferFailed("the transfer target did not answer in time") from None
        finally:
            self._refer = None
        if not ok:
            raise TransferFailed(f"the peer refused the transfer: {detail}")

    # -- from the endpoint ------------------------------------------------------------------------

    def dialog_events(self) -> None:
        """Act on what the dialog learnt from the last message or timer."""
        events, self.dialog.events = self.dialog.events, []
        for event in events:
            if isinstance(event, Acked):
                self._acked.set()
            elif isinstance(event, Ended):
                if event.reason != "hung_up":
                    self._ended.set()
                    self._emit(CallEnded("caller_hangup" if event.reason == "caller_hangup" else "error"))
            elif isinstance(event, ReInvite):
                self._reinvite(event)
            elif isinstance(event, ReferOutcome):
                if self._refer is not None and not self._refer.done():
                    self._refer.set_result((event.ok, event.detail))
            elif isinstance(event, InfoDigit):
                self._emit(Dtmf(event.digit))

    def _reinvite(self, event: ReInvite) -> None:
        try:
            offer = parse_offer(event.request.body) if event.request.body else self.offer
            if offer.line != self.offer.line:
                raise SdpError("the call's codec cannot change")
        except SdpError as exc:
            self.log.info("re-INVITE refused", reason=str(exc))
            self._send_sip([self.dialog.final(exc.status, now_ms())])
            return
        was_listening = self.offer.peer_listens
        self.offer = offer
        self._allowed_sources.add(offer.address)
        if self._sender.payload_type != offer.payload_type:
            self._sender.payload_type = offer.payload_type
        if was_listening != offer.peer_listens:
            self.log.info("call held" if not offer.peer_listens else "call resumed")
        self._send_sip([self.dialog.final(200, now_ms(), self._sdp.answer(offer, self.rtp_port))])

    def rtp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] not in self._allowed_sources or is_rtcp(data):
            return  # RTCP (muxed) is not needed; strangers' packets are not the caller's voice
        try:
            packet = parse_rtp(data)
        except RtpError:
            self.bad_packets += 1
            return
        self.packets_in += 1
        now = now_ms()
        if packet.payload_type == self.offer.dtmf_payload_type:
            for digit in self._dtmf.receive(packet):
                self._emit(Dtmf(digit), now)
        elif packet.payload_type == self.offer.payload_type and self.started is not None and not self.held:
            if packet.ssrc != self._ssrc:
                # One source at a time: another SSRC takes over only once the current one fell silent
                # (a re-INVITE to new media, a transfer), never interleaved with it.
                if self._ssrc is not None and now - self._ssrc_heard_at < SSRC_TAKEOVER_MS:
                    self.foreign_packets += 1
                    return
                self._ssrc = packet.ssrc
                self._jitter.reset()
            self._ssrc_heard_at = now
            self._jitter.push(packet.sequence, packet.timestamp, packet.payload, now)

    # -- the clock --------------------------------------------------------------------------------

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        frame = 0
        while True:
            due = start + frame * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME_S:
                self.late_ticks += 1
                behind = int(-delay / FRAME_S)
                if behind > MAX_CATCH_UP:  # the loop stalled: drop the backlog's due times, not audio
                    start += (behind - MAX_CATCH_UP) * FRAME_S
                    continue
            self._tick(frame)
            frame += 1

    def _tick(self, frame_index: int) -> None:
        out = self._outbound
        # The frame sent on the previous tick has now played: report the marks behind it. A mark
        # says "played", and the ledger's clock model reads it so.
        while out and isinstance(out[0], str):
            self._emit(PlaybackMark(out.popleft()))  # type: ignore[arg-type]
        self._playing = False
        # On hold the clock runs on (the RTP timestamp counts the pause) but playout waits: audio
        # nobody can hear is neither sent nor reported played, so the caller hears it on resume.
        if self.offer.peer_listens:
            self._playing = bool(out)
            if out:
                payload = out.popleft()
                assert isinstance(payload, bytes)
                self._frames_queued -= 1
                if self.rtp is not None:
                    self.rtp.sendto(
                        self._sender.packet(payload, frame_index), (self.offer.address, self.offer.port)
                    )
                    self.frames_sent += 1
            if not out:
                self._drained.set()
        inbound = self._jitter.pop()
        if inbound is not None:
            # Stamped when it reached us, not when the buffer let it go: the caller said it then
            # (a concealed frame, which never came, is stamped now).
            self._emit(CallerAudio(inbound), self._jitter.popped_arrival_ms)

    def _emit(self, event: CarrierEvent, at: float | None = None) -> None:
        self._events.put_nowait((event, now_ms() if at is None else at))


async def _first(*waits: Awaitable[Any]) -> None:
    """Return when the first of these finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
