"""This process among the bridge's processes: its replica id, and the address its siblings reach it at.

The id names a process *slot*, not a run: it stays the same when the slot starts again, so a restarted
process recognises the calls its previous run left open (bridge.calllog.leases closes them at once).

- One process (WORKERS=1): REPLICA_ID, else `hostname:PORT`. The port is bound before the id is
  claimed, so no two live processes on a host share it; on Kubernetes the hostname is the pod name.
- A worker: the same, plus `/w<index>`.

The internal URL is where a request for one of this process's calls is forwarded (bridge
.call_forwarding): every process listens on an internal port of its own besides PORT (which, with
workers, reaches whichever worker the kernel picks), INTERNAL_PORT (+ index for a worker), or one the
OS chooses. Only signed forwards and health checks are served there: keep it inside the cluster.
The URL is INTERNAL_URL as given for one process (it must lead to INTERNAL_PORT); a worker takes its
scheme and host with its own port. Without INTERNAL_URL the host is POD_IP (Kubernetes' Downward
API), else HOST when it names one address, else the address this host routes outwards from.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from bridge.calllog.leases import ReplicaIdentity
from bridge.config import Settings
from bridge.sip.endpoint import local_address_towards

# TEST-NET-1 (RFC 5737): asking the routing table for a way there names the outward interface and
# sends nothing.
_OUTWARD_PROBE = "192.0.2.1"


def replica_identity(
    settings: Settings, *, port: int, internal_port: int, worker: int | None = None
) -> ReplicaIdentity:
    """`port`: the bound PORT (its real number when PORT=0); `internal_port`: the bound internal
    listener's. A worker passes its index."""
    base = settings.replica_id or f"{socket.gethostname()}:{port}"
    if worker is None:
        return ReplicaIdentity(
            base, settings.internal_url or _url("http", _internal_host(settings), internal_port)
        )
    scheme = urlsplit(settings.internal_url).scheme if settings.internal_url else "http"
    return ReplicaIdentity(f"{base}/w{worker}", _url(scheme, _internal_host(settings), internal_port))


def internal_listen_port(settings: Settings, worker: int | None) -> int:
    """The port to bind the internal listener on: INTERNAL_PORT (+ a worker's index), 0 for any."""
    if not settings.internal_port:
        return 0
    return settings.internal_port + (worker or 0)


def _internal_host(settings: Settings) -> str:
    if settings.internal_url:
        return urlsplit(settings.internal_url).hostname or ""
    if settings.pod_ip:
        return settings.pod_ip
    if settings.host not in ("", "0.0.0.0", "::"):
        return settings.host
    return local_address_towards(_OUTWARD_PROBE)


def _url(scheme: str, host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name
    return f"{scheme}://{host}:{port}"
