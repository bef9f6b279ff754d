"""The UAS side of one SIP dialog (RFC 3261 §12-§17), sans-IO: messages in, datagrams and events out.

The owner feeds it requests and responses for its Call-ID and our tag, calls `due(now)` every few tens
of ms for retransmissions, and reads `events` after each call. Timers are RFC 3261's over UDP:
a 2xx (or other final) to an INVITE is resent at T1, 2·T1, … capped at T2 until the ACK, giving up
after 64·T1; our BYE/REFER are resent the same way until any response (Timer E/F).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

from bridge.sip.message import (
    SipMessage,
    header_uri,
    new_branch,
    response,
    uri_host_port,
)

T1_MS = 500.0
T2_MS = 4000.0
TIMEOUT_MS = 64 * T1_MS
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY, INFO"
SERVER = "bridge"
INFO_DIGITS = set("0123456789*#ABCD")

Address = tuple[str, int]
Datagram = tuple[bytes, Address]


@dataclass(frozen=True, slots=True)
class Acked:
    """The ACK for our 2xx arrived: the dialog (or the re-INVITE) is confirmed."""


@dataclass(frozen=True, slots=True)
class Ended:
    reason: str  # caller_hangup (BYE or CANCEL), no_ack, hung_up (our BYE went out)
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class ReInvite:
    """A re-INVITE: the owner must answer it with `final(...)` (an SDP answer, or 488)."""

    request: SipMessage


@dataclass(frozen=True, slots=True)
class ReferOutcome:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class InfoDigit:
    digit: str  # SIP INFO application/dtmf-relay, for peers that do not send RFC 4733


DialogEvent = Acked | Ended | ReInvite | ReferOutcome | InfoDigit


@dataclass(slots=True)
class _Pending:
    data: bytes
    address: Address
    interval: float
    next_at: float
    deadline: float


class Retransmitter:
    """Datagrams resent at T1 doubling up to T2 until cancelled, dropped after 64·T1."""

    def __init__(self) -> None:
        self._pending: dict[object, _Pending] = {}

    def add(self, key: object, data: bytes, address: Address, now: float) -> None:
        self._pending[key] = _Pending(data, address, T1_MS, now + T1_MS, now + TIMEOUT_MS)

    def cancel(self, key: object) -> bool:
        return self._pending.pop(key, None) is not None

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def due(self, now: float) -> tuple[list[Datagram], list[object]]:
        """(datagrams to resend now, keys that timed out)."""
        resend, expired = [], []
        for key, p in list(self._pending.items()):
            if now >= p.deadline:
                expired.append(key)
                del self._pending[key]
            elif now >= p.next_at:
                resend.append((p.data, p.address))
                p.interval = min(p.interval * 2, T2_MS)
                p.next_at = now + p.interval
        return resend, expired


def _is_public(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_global


def peer_address(target_uri: str, source: Address) -> Address:
    """Where in-dialog requests go: the remote target (Contact), unless it cannot be right from here:
    a host name (we do no DNS on the call path) or a private address behind a public source (NAT)."""
    host, port = uri_host_port(target_uri)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return source
    if not _is_public(host) and _is_public(source[0]):
        return source
    return host, port


@dataclass
class Dialog:
    invite: SipMessage
    source: Address
    local_tag: str
    contact: str  # our Contact URI, sip:bridge@host:port
    via_host: str  # host:port written in the Via of our requests
    events: list[DialogEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        invite = self.invite
        self.call_id = invite.call_id
        self.remote_tag = invite.from_tag
        self.remote_header = invite.get("From")  # the peer, as it named itself
        self.local_header = f"{invite.get('To')};tag={self.local_tag}"
        self.remote_target = header_uri(invite.get("Contact") or invite.get("From"))
        self.route_set = invite.get_all("Record-Route")
        self.remote_cseq = invite.cseq[0]
        self.local_cseq = secrets.randbelow(10000) + 1
        self.state = "early"  # early -> confirmed -> terminated
        self.answered = False
        self.retransmit = Retransmitter()
        self._last_invite_response: Datagram | None = None
        self._refer_cseq: int | None = None

    @property
    def peer(self) -> Address:
        if self.route_set:
            return peer_address(header_uri(self.route_set[0]), self.source)
        return peer_address(self.remote_target, self.source)

    # -- our responses to the INVITE (or re-INVITE) in progress -----------------------------------

    def _respond(self, request: SipMessage, status: int, **extra: str) -> SipMessage:
        out = response(request, status, self.local_tag)
        out.add("Server", SERVER)
        for name, value in extra.items():
            out.add(name.replace("_", "-"), value)
        return out

    def provisional(self, status: int) -> Datagram:
        out = self._respond(self.invite, status)
        if status > 100:
            out.add("Contact", f"<{self.contact}>")
        self._last_invite_response = (out.serialise(), self.source)
        return self._last_invite_response

    def final(self, status: int, now: float, body: bytes = b"", reason: str = "") -> Datagram:
        """The final response to the INVITE in progress, resent until its ACK."""
        out = self._respond(self.invite, status)
        if reason:
            out.reason = reason
        if 200 <= status < 300:
            out.add("Contact", f"<{self.contact}>")
            out.add("Allow", ALLOW)
            out.add("Supported", "replaces")
            for route in self.route_set:
                out.add("Record-Route", route)
            if body:
                out.add("Content-Type", "application/sdp")
                out.body = body
            self.answered = True
        elif self.state == "early":
            self.state = "terminated"
        data = (out.serialise(), self.source)
        self._last_invite_response = data
        self.retransmit.add(("invite", self.invite.cseq[0]), *data, now)
        return data

    # -- requests from the peer -------------------------------------------------------------------

    def receive_request(self, request: SipMessage, source: Address, now: float) -> list[Datagram]:
        method = request.method
        if method == "ACK":
            number = request.cseq[0]
            if self.retransmit.cancel(("invite", number)) and self.answered and self.state != "terminated":
                self.state = "confirmed"
                self.events.append(Acked())
            return []
        if method == "CANCEL":
            return self._cancel(request, source, now)
        if method == "INVITE" and request.branch == self.invite.branch:
            # A retransmission: the same answer again (the 2xx timer resends it on its own schedule too).
            return [self._last_invite_response] if self._last_invite_response else []
        number = request.cseq[0]
        if number < self.remote_cseq and method != "INVITE":
            return [(self._respond(request, 500, Retry_After="1").serialise(), source)]  # out of order
        self.remote_cseq = max(self.remote_cseq, number)
        if self.state == "terminated" and method != "BYE":
            return [(self._respond(request, 481).serialise(), source)]
        if method == "BYE":
            already = self.state == "terminated"
            self.state = "terminated"
            self.retransmit = Retransmitter()  # nothing of ours matters any more
            if not already:
                self.events.append(Ended("caller_hangup"))
            return [(self._respond(request, 200).serialise(), source)]
        if method == "INVITE":
            if ("invite", self.invite.cseq[0]) in self.retransmit:
                return [(self._respond(request, 491).serialise(), source)]  # one offer at a time
            self.invite, self.source = request, source
            if contact := request.get("Contact"):
                self.remote_target = header_uri(contact)
            self.events.append(ReInvite(request))
            return [self.provisional(100)]
        if method == "OPTIONS":
            return [(self._respond(request, 200, Allow=ALLOW, Accept="application/sdp").serialise(), source)]
        if method == "NOTIFY":
            self._notify(request)
            return [(self._respond(request, 200).serialise(), source)]
        if method == "INFO":
            self._info(request)
            return [(self._respond(request, 200).serialise(), source)]
        return [(self._respond(request, 501, Allow=ALLOW).serialise(), source)]

    def _cancel(self, request: SipMessage, source: Address, now: float) -> list[Datagram]:
        if request.branch != self.invite.branch:
            return [(self._respond(request, 481).serialise(), source)]
        out = [(self._respond(request, 200).serialise(), source)]
        if not self.answered and self.state == "early":
            out.append(self.final(487, now))
            self.events.append(Ended("caller_hangup", cancelled=True))
        return out

    def _notify(self, request: SipMessage) -> None:
        """REFER progress (RFC 3515): a sipfrag body with the transfer target's status line."""
        if self._refer_cseq is None or not request.get("Event").lower().startswith("refer"):
            return
        status_line = request.body.decode("utf-8", "replace").strip().splitlines()[:1]
        parts = status_line[0].split() if status_line else []
        if len(parts) >= 2 and parts[1].isdigit():
            code = int(parts[1])
            if code >= 200:
                self._refer_cseq = None
                self.events.append(ReferOutcome(code < 300, " ".join(parts[1:])))

    def _info(self, request: SipMessage) -> None:
        if "dtmf-relay" not in request.get("Content-Type").lower():
            return
        for line in request.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip().upper() in INFO_DIGITS:
                self.events.append(InfoDigit(value.strip().upper()))

    # -- our requests -----------------------------------------------------------------------------

    def _request(self, method: str, now: float, **extra: str) -> Datagram:
        self.local_cseq += 1
        out = SipMessage(method=method, uri=self.remote_target)
        out.add("Via", f"SIP/2.0/UDP {self.via_host};branch={new_branch()};rport")
        out.add("Max-Forwards", "70")
        for route in self.route_set:
            out.add("Route", route)
        out.add("From", self.local_header)
        out.add("To", self.remote_header)
        out.add("Call-ID", self.call_id)
        out.add("CSeq", f"{self.local_cseq} {method}")
        out.add("Contact", f"<{self.contact}>")
        for name, value in extra.items():
            out.add(name.replace("_", "-"), value)
        data = (out.serialise(), self.peer)
        self.retransmit.add(("request", self.local_cseq), *data, now)
        return data

    def bye(self, now: float) -> list[Datagram]:
        """Hang up. Strictly (§15) a UAS waits for the ACK first; we hang up at once, and peers accept it."""
        if self.state == "terminated":
            return []
        self.state = "terminated"
        self.retransmit.cancel(("invite", self.invite.cseq[0]))
        self.events.append(Ended("hung_up"))
        return [self._request("BYE", now, User_Agent=SERVER)]

    def refer(self, refer_to: str, now: float) -> list[Datagram]:
        if self.state != "confirmed":
            return []
        data = self._request("REFER", now, Refer_To=f"<{refer_to}>", Referred_By=f"<{self.contact}>")
        self._refer_cseq = self.local_cseq
        return [data]

    def receive_response(self, message: SipMessage, now: float) -> list[Datagram]:
        number, method = message.cseq
        if message.status < 200:
            return []
        self.retransmit.cancel(("request", number))
        if method == "REFER" and number == self._refer_cseq and message.status >= 300:
            self._refer_cseq = None
            self.events.append(ReferOutcome(False, f"{message.status} {message.reason}"))
        return []

    def due(self, now: float) -> list[Datagram]:
        resend, expired = self.retransmit.due(now)
        for kind, number in expired:  # type: ignore[misc]
            if kind == "invite" and self.answered and self.state == "early":
                self.state = "terminated"
                self.events.append(Ended("no_ack"))
            elif kind == "request" and number == self._refer_cseq:
                self._refer_cseq = None
                self.events.append(ReferOutcome(False, "no answer to the REFER"))
        return resend
