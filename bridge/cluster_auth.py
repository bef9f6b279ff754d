"""The signature on a request one bridge process forwards to another (bridge.call_forwarding).

An operator's request for a call reaches whichever process the load balancer picks; the call's owner
carries it out. The process that received it forwards it to the owner's internal listener, signed
with the key every process of the service shares (CLUSTER_SECRET, else one derived from ADMIN_TOKEN,
which every replica must share anyway for operators to sign in on any of them):

    X-Bridge-Cluster-Timestamp: unix seconds
    X-Bridge-Cluster-Target:    the owner's replica id and incarnation, "replica/w1 3f0c…"
    X-Bridge-Cluster-Signature: v1=hex(HMAC-SHA256(key, timestamp \\n method \\n path \\n target \\n
                                       hex(SHA-256(body)) [\\n name: value for each signed header]))

The owner accepts it only when the signature holds, the timestamp is within `MAX_AGE_S` of its own
clock, the target names this very process (a restarted owner is another incarnation: its
predecessor's calls are not its own), and the signature was not seen before (no replays). Nothing
else is accepted on the internal listener, and the public listener never accepts these headers, so
an outside caller can neither forge nor replay a forwarded request. Sans-IO: no sockets here.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TIMESTAMP_HEADER = "X-Bridge-Cluster-Timestamp"
TARGET_HEADER = "X-Bridge-Cluster-Target"
SIGNATURE_HEADER = "X-Bridge-Cluster-Signature"
REFUSED_HEADER = "X-Bridge-Cluster-Refused"  # on the internal listener's refusal: why
MISDIRECTED = "meant for another process"  # a refusal that means: the process it was for is gone
OPERATOR_HEADER = "X-Bridge-Operator"  # the label of the operator the receiving process signed in
# Request headers the owner needs besides the body; they are signed with it: the owner records the
# action as the operator's, who signed in on the process that forwarded it.
SIGNED_HEADERS = ("Content-Type", OPERATOR_HEADER)
# Clocks of hosts kept by NTP agree to well within this; a request this old is refused.
MAX_AGE_S = 30.0
_DERIVATION = b"bridge cluster key v1"


def cluster_key(cluster_secret: str, admin_token: str) -> bytes:
    """The key forwarded requests are signed with: derived, so the secret itself never signs anything
    and a key learnt from one use says nothing about the other (ADMIN_TOKEN signs in operators)."""
    secret = cluster_secret or admin_token
    return hmac.new(secret.encode(), _DERIVATION, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Target:
    """The process a forwarded request is meant for."""

    replica_id: str
    incarnation: str

    def header(self) -> str:
        return f"{self.replica_id} {self.incarnation}"


class ClusterSigner:
    """Signs forwarded requests (`sign`) and checks them (`refusal`), with one shared key."""

    def __init__(
        self, key: bytes, *, clock: Callable[[], float] = time.time, max_remembered: int = 100_000
    ) -> None:
        self._key = key
        self._clock = clock
        self.max_remembered = max_remembered
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> when it stops being valid

    def sign(
        self, method: str, path: str, body: bytes, target: Target, headers: Mapping[str, str]
    ) -> dict[str, str]:
        """The headers to send along with the request (the signed headers among them)."""
        timestamp = str(int(self._clock()))
        signed = {name: headers[name] for name in SIGNED_HEADERS if name in headers}
        mac = self._mac(timestamp, method, path, target.header(), body, signed)
        return {
            **signed,
            TIMESTAMP_HEADER: timestamp,
            TARGET_HEADER: target.header(),
            SIGNATURE_HEADER: f"v1={mac}",
        }

    def refusal(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], me: Target
    ) -> str | None:
        """Why this request must not be carried out here, or None when it is a valid forward meant
        for `me` (and it is then remembered, so the same request is refused if it comes again)."""
        timestamp, target = headers.get(TIMESTAMP_HEADER, ""), headers.get(TARGET_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not (timestamp and target and signature):
            return "not signed"
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > MAX_AGE_S:
            return "timestamp outside the accepted window (are the hosts' clocks synchronised?)"
        signed = {name: headers[name] for name in SIGNED_HEADERS if name in headers}
        expected = "v1=" + self._mac(timestamp, method, path, target, body, signed)
        if not hmac.compare_digest(signature, expected):
            return "bad signature (do all processes share CLUSTER_SECRET, or ADMIN_TOKEN?)"
        if target != me.header():
            return MISDIRECTED
        return self._remember(signature, int(timestamp) + MAX_AGE_S)

    def _remember(self, signature: str, valid_until: float) -> str | None:
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if signature in self._seen:
            return "replayed"
        if len(self._seen) >= self.max_remembered:
            self._seen.popitem(last=False)
        self._seen[signature] = valid_until
        return None

    def _mac(
        self, timestamp: str, method: str, path: str, target: str, body: bytes, signed: Mapping[str, str]
    ) -> str:
        lines = [timestamp, method.upper(), path, target, hashlib.sha256(body).hexdigest()]
        lines += [f"{name.lower()}: {value}" for name, value in signed.items()]
        return hmac.new(self._key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()
