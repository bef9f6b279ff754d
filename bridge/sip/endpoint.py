"""The SIP endpoint on SIP_LISTEN: one UDP socket, a dialog per call, an RTP socket per call.

Out-of-dialog requests are answered here (OPTIONS, 481s, the 401/403/488/503 refusals of a new
INVITE, resent until their ACK like any final response); everything with our tag goes to its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.clock import now_ms
from bridge.logs import get_logger, mask_number
from bridge.pump import CallPump
from bridge.resources import Bridge
from bridge.sip.auth import DigestAuth, parse_allowed
from bridge.sip.dialog import ALLOW, SERVER, Datagram, Dialog, Retransmitter
from bridge.sip.leg import RtpProtocol, SipLeg
from bridge.sip.message import SipMessage, SipParseError, header_uri, new_tag, parse, response, uri_user
from bridge.sip.sdp import Offer, SdpError, parse_offer

log = get_logger("bridge.sip")

TICK_S = 0.05
ANSWERED_TTL_MS = 32_000.0  # how long a refusal is remembered to answer its retransmissions alike
LINGER_MS = 32_000.0  # a finished dialog stays to absorb late retransmissions and ACKs
BYE_WAIT_S = 2.0  # at shutdown: time for our BYEs to be answered


class RtpPorts:
    """Even ports from RTP_PORT_RANGE, one per call, back in the pool when the call ends."""

    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self.low, self.high = low, high
        self.used: set[int] = set()
        self._next = low

    def bind(self) -> tuple[socket.socket, int] | None:
        count = (self.high - self.low) // 2 + 1
        for _ in range(count):
            port = self._next
            self._next = self._next + 2 if self._next + 2 <= self.high else self.low
            if port in self.used:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, port))
            except OSError:
                sock.close()  # taken by another process: try the next one
                continue
            sock.setblocking(False)
            self.used.add(port)
            return sock, port
        return None

    def release(self, port: int) -> None:
        self.used.discard(port)


def local_address_towards(peer: str) -> str:
    """The address this host uses to reach `peer` (a connected UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@dataclass
class _Call:
    dialog: Dialog
    leg: SipLeg
    task: asyncio.Task[None] | None = None
    finished_at: float | None = None


@dataclass
class SipEndpoint(asyncio.DatagramProtocol):
    bridge: Bridge
    host: str
    port: int
    public_address: str = ""
    auth: DigestAuth | None = None
    allowed: tuple[Any, ...] = ()
    calls: dict[tuple[str, str], _Call] = field(default_factory=dict)  # (Call-ID, our tag)
    ringing: dict[tuple[str, str], _Call] = field(default_factory=dict)  # (Call-ID, their tag)

    def __post_init__(self) -> None:
        low, high = self.bridge.settings.rtp_ports
        self.rtp_ports = RtpPorts(self.host, low, high)
        self.transport: asyncio.DatagramTransport | None = None
        self._refusals = Retransmitter()  # final responses to INVITEs we refused, until their ACK
        self._answered: dict[tuple[str, str], tuple[bytes, float]] = {}  # (Call-ID, branch) -> refusal
        self._ticker: asyncio.Task[None] | None = None
        self.bad_datagrams = 0

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]
        self._ticker = loop.create_task(self._tick_forever())
        log.info(
            "SIP listening", host=self.host, port=self.port, rtp_ports=self.bridge.settings.rtp_port_range
        )

    async def stop(self) -> None:
        """BYE to every live call, a moment for the answers, then close."""
        legs = [c.leg for c in self.calls.values() if not c.leg.closed]
        await asyncio.gather(*(leg.close("shutdown") for leg in legs), return_exceptions=True)
        deadline = asyncio.get_running_loop().time() + BYE_WAIT_S
        while any(c.dialog.retransmit for c in self.calls.values() if c.dialog.state == "terminated"):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(TICK_S)  # the ticker resends our BYEs meanwhile
        tasks = [c.task for c in self.calls.values() if c.task is not None and not c.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.transport is not None:
            self.transport.close()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._tick(now_ms())
            except Exception:
                log.exception("SIP timer tick failed")

    def _tick(self, now: float) -> None:
        resend, _ = self._refusals.due(now)
        self.send(resend)
        for key, call in list(self.calls.items()):
            self.send(call.dialog.due(now))
            call.leg.dialog_events()
            if call.leg.closed and call.finished_at is None:
                call.finished_at = now
            if call.finished_at is not None and (
                now - call.finished_at > LINGER_MS or not call.dialog.retransmit
            ):
                del self.calls[key]
                self.ringing.pop((call.dialog.call_id, call.dialog.remote_tag), None)
        for key, (_, at) in list(self._answered.items()):
            if now - at > ANSWERED_TTL_MS:
                del self._answered[key]

    # -- datagrams --------------------------------------------------------------------------------

    def send(self, datagrams: list[Datagram]) -> None:
        if self.transport is None:
            return
        for data, address in datagrams:
            self.transport.sendto(data, address)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error", error=str(exc))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626)
        try:
            message = parse(data)
        except SipParseError as exc:
            self.bad_datagrams += 1
            log.debug("malformed SIP datagram dropped", reason=str(exc), remote=addr[0])
            return
        try:
            if message.is_request:
                self._request(message, addr)
            else:
                self._response(message)
        except Exception:
            log.exception("SIP message handling failed", method=message.method, status=message.status)

    def _response(self, message: SipMessage) -> None:
        call = self.calls.get((message.call_id, message.from_tag))  # our requests carry our tag in From
        if call is not None:
            self.send(call.dialog.receive_response(message, now_ms()))
            call.leg.dialog_events()

    def _request(self, request: SipMessage, addr: tuple[str, int]) -> None:
        now = now_ms()
        method, to_tag = request.method, request.to_tag
        if method == "ACK" and self._refusals.cancel((request.call_id, to_tag)):
            return
        if to_tag:
            call = self.calls.get((request.call_id, to_tag))
        else:
            call = self.ringing.get((request.call_id, request.from_tag))
            if call is not None and method not in ("INVITE", "CANCEL", "ACK"):
                call = None
        if call is not None:
            self.send(call.dialog.receive_request(request, addr, now))
            call.leg.dialog_events()
            return
        if method == "ACK":
            return
        if to_tag or method in ("BYE", "CANCEL", "NOTIFY", "INFO"):
            self._reply(request, addr, 481)
        elif method == "OPTIONS":
            self._reply(request, addr, 200, Allow=ALLOW, Accept="application/sdp")
        elif method == "INVITE":
            self._new_call(request, addr, now)
        else:
            self._reply(request, addr, 405, Allow=ALLOW)

    def _reply(self, request: SipMessage, addr: tuple[str, int], status: int, **extra: str) -> None:
        out = response(request, status, new_tag())
        out.add("Server", SERVER)
        for name, value in extra.items():
            out.add(name.replace("_", "-"), value)
        self.send([(out.serialise(), addr)])

    def _refuse(
        self, invite: SipMessage, addr: tuple[str, int], status: int, now: float, **extra: str
    ) -> None:
        """A final non-2xx to a new INVITE: resent until its ACK, and again for a retransmitted INVITE."""
        tag = new_tag()
        out = response(invite, status, tag)
        out.add("Server", SERVER)
        for name, value in extra.items():
            out.add(name.replace("_", "-"), value)
        data = out.serialise()
        self._refusals.add((invite.call_id, tag), data, addr, now)
        self._answered[(invite.call_id, invite.branch)] = (data, now)
        self.send([(data, addr)])

    # -- a new call -------------------------------------------------------------------------------

    def _admitted(self, request: SipMessage, addr: tuple[str, int], now: float) -> bool:
        if self.allowed:
            with contextlib.suppress(ValueError):
                source = ipaddress.ip_address(addr[0])
                if any(source in network for network in self.allowed):
                    return True
        if self.auth is None:
            if self.allowed:
                log.warning("INVITE from an address not in SIP_ALLOWED_IPS refused", remote=addr[0])
                self._refuse(request, addr, 403, now)
                return False
            return True  # neither configured: development only (warned at start-up)
        verdict = self.auth.check("INVITE", request.get("Authorization"), time.time())
        if verdict.ok:
            return True
        if verdict.status == 401:
            self._refuse(request, addr, 401, now, WWW_Authenticate=self.auth.challenge(verdict.stale))
        else:
            log.warning("INVITE with wrong credentials refused", remote=addr[0])
            self._refuse(request, addr, 403, now)
        return False

    def _new_call(self, invite: SipMessage, addr: tuple[str, int], now: float) -> None:
        if (answered := self._answered.get((invite.call_id, invite.branch))) is not None:
            self.send([(answered[0], addr)])  # a retransmission of an INVITE we refused
            return
        if not self._admitted(invite, addr, now):
            return
        call_id = invite.call_id
        if self.bridge.turned_away(call_id, "sip"):
            self._refuse(invite, addr, 503, now, Retry_After="30")
            return
        try:
            offer = parse_offer(invite.body)
        except SdpError as exc:
            log.info("INVITE refused: unusable offer", reason=str(exc), remote=addr[0])
            self._refuse(invite, addr, exc.status, now, Warning=f'399 bridge "{exc}"')
            return
        bound = self.rtp_ports.bind()
        if bound is None:
            log.warning("INVITE refused: no free RTP port", range=self.bridge.settings.rtp_port_range)
            self._refuse(invite, addr, 503, now, Retry_After="5")
            return
        self._start_call(invite, addr, offer, *bound)

    def _start_call(
        self, invite: SipMessage, addr: tuple[str, int], offer: Offer, sock: socket.socket, port: int
    ) -> None:
        loop = asyncio.get_running_loop()
        public = self.public_address or (
            self.host if self.host not in ("0.0.0.0", "") else local_address_towards(addr[0])
        )
        tag = new_tag()
        dialog = Dialog(invite, addr, tag, f"sip:bridge@{public}:{self.port}", f"{public}:{self.port}")
        caller = uri_user(header_uri(invite.get("From")))
        logger = log.bind(remote=addr[0], carrier="sip")
        leg = SipLeg(dialog, offer, port, public, self.send, lambda: self.rtp_ports.release(port), logger)
        call = _Call(dialog, leg)
        self.calls[(invite.call_id, tag)] = call
        self.ringing[(invite.call_id, invite.from_tag)] = call
        self.send([dialog.provisional(100), dialog.provisional(180)])
        log.info("INVITE", call_sid=invite.call_id, caller=mask_number(caller), remote=addr[0], rtp_port=port)

        bridge = self.bridge
        # A SIP call's API is the called number's (UPSTREAM_API_BY_NUMBER), else UPSTREAM_API: the pump
        # reads the same number from the leg's parameters.
        api, _ = bridge.call_config.upstream_for(uri_user(header_uri(invite.get("To"))))

        async def opener() -> Any:
            try:
                return await bridge.open_prepared(api=api)
            finally:
                leg.upstream_ready.set()

        bridge.prepared.prepare(invite.call_id, opener)
        call.task = loop.create_task(self._run(leg, sock, logger))

    async def _run(self, leg: SipLeg, sock: socket.socket, logger: Any) -> None:
        pump = CallPump(self.bridge.stream_context(None), leg, logger)
        try:
            loop = asyncio.get_running_loop()
            leg.rtp, _ = await loop.create_datagram_endpoint(lambda: RtpProtocol(leg.rtp_received), sock=sock)
            await pump.run()
        except Exception:
            pump.log.exception("SIP call failed")
        finally:
            if not leg.closed:
                with contextlib.suppress(Exception):
                    await leg.close("error")


def sip_endpoint_for(bridge: Bridge) -> SipEndpoint:
    settings = bridge.settings
    host, _, port = settings.sip_listen.rpartition(":")
    host = host.strip("[]")
    auth = None
    if (
        settings.sip_username
        and settings.sip_password is not None
        and settings.sip_password.get_secret_value()
    ):
        auth = DigestAuth(settings.sip_username, settings.sip_password.get_secret_value(), settings.sip_realm)
    return SipEndpoint(
        bridge,
        host,
        int(port),
        public_address=settings.sip_public_address,
        auth=auth,
        allowed=parse_allowed(settings.sip_allowed_ips),
    )


SIP_ENDPOINT: web.AppKey[SipEndpoint] = web.AppKey("sip_endpoint")


def setup_sip(app: web.Application, bridge: Bridge) -> None:
    """With SIP_LISTEN set: the endpoint starts after the call log and stops (BYE to live calls)
    before it, as a cleanup context appended after the call log's."""
    if not bridge.settings.sip_listen:
        return
    endpoint = sip_endpoint_for(bridge)
    app[SIP_ENDPOINT] = endpoint

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if endpoint.auth is None and not endpoint.allowed:
            log.warning(
                "SIP_LISTEN is set with neither SIP_PASSWORD nor SIP_ALLOWED_IPS: anyone who reaches the SIP "
                "port can place calls (development only)"
            )
        await endpoint.start()
        yield
        await endpoint.stop()

    app.cleanup_ctx.append(lifecycle)
