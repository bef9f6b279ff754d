"""An operator's request for a live call, carried out by the process that carries the call.

The request (`/api/calls/{id}/inject|say|hangup|transfer`) reaches whichever process the load
balancer, or the kernel for workers on one host, picked. `CallLocator.find` gives the control API
the call when it is here. Otherwise it looks the call's owner up in the shared call log
(bridge.calllog.owners) and forwards the request, as it came, to the owner's internal listener,
signed (bridge.cluster_auth); the owner carries it out as if it had come to it first, and its answer
goes back to the operator unchanged (with `X-Bridge-Call-Owner` naming the owner). Forwarding works
the same between workers of one host (SQLite), replicas in docker compose and pods in Kubernetes: all
it needs is the owner's address in the call log and a route to it.

The internal listener (bridge.server.internal_app, behind `cluster_signature_check`) accepts nothing
but signed forwards meant for this very process, and looks calls up here only: a forwarded request is
never forwarded again.

What the operator gets when the owner cannot help:

- 404 "no call in progress": the call log has no call in progress with that id, or its owner's lease
  has lapsed (the process is dead: its calls end as `interrupted` within LEASE_SECONDS +
  LEASE_RENEW_SECONDS), or the owner started again since (its previous run's calls are gone), or it
  says the call is not there (it ended meanwhile). The call is live nowhere.
- 503 "owner unreachable" (Retry-After): the owner's lease is live but it cannot be reached: it is
  stopping at this instant (its calls end within the second), or it is cut off from this process
  while it still reaches the database. The call may still be live, so not 404; retrying settles it.
- 503 the call log cannot be read (the owner cannot be found), or the owner refused the signature
  (the processes do not share CLUSTER_SECRET or ADMIN_TOKEN: an error in this process's log too).
- 504: the owner took the request but did not answer within FORWARD_TIMEOUT_S; it may or may not
  have carried it out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from yarl import URL

from bridge.call_registry import CallRegistry
from bridge.calllog.owners import CallOwner, CallOwners
from bridge.cluster_auth import MISDIRECTED, OPERATOR_HEADER, REFUSED_HEADER, ClusterSigner, Target
from bridge.http_guard import Handler
from bridge.logs import get_logger
from bridge.metrics import BridgeMetrics

if TYPE_CHECKING:
    from bridge.pump import CallPump

log = get_logger("bridge.forwarding")

OWNER_HEADER = "X-Bridge-Call-Owner"
LOCATE_TIMEOUT_S = 5.0  # the call log's answer to "who carries this call"
CONNECT_TIMEOUT_S = 2.0  # to the owner, inside the cluster: longer means it is not there
FORWARD_TIMEOUT_S = 15.0  # a transfer waits for the carrier's REST API (10 s at most) within this
RETRY_AFTER_S = "2"
SIGNED_KEY: web.RequestKey[bool] = web.RequestKey("cluster_signed", bool)
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _json_error(exc: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return exc(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


class OwnerAnswered(web.HTTPException):
    """The owner's answer to a forwarded request, relayed to the operator as it is."""

    def __init__(self, status: int, body: bytes, content_type: str, charset: str | None, owner: str) -> None:
        self.status_code = status
        super().__init__(headers={OWNER_HEADER: owner})
        self.body = body
        self.content_type = content_type
        self.charset = charset


class CallForwarder:
    """Finds a call's owner in the call log and forwards requests to it."""

    def __init__(self, owners: CallOwners, signer: ClusterSigner, metrics: BridgeMetrics) -> None:
        self.owners = owners
        self.signer = signer
        self.metrics = metrics
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def owner_of(self, call_id: str) -> CallOwner | None:
        """The live owner of the call if it is another process; None when the call is live nowhere
        but (perhaps) here. 503 when the call log cannot say."""
        try:
            async with asyncio.timeout(LOCATE_TIMEOUT_S):
                owner = await self.owners.locate(call_id)
        except Exception as exc:
            log.warning("call owner not found: the call log cannot be read", call_id=call_id, error=repr(exc))
            raise _json_error(
                web.HTTPServiceUnavailable,
                "the call-log database is unavailable, so the call's owner cannot be found; "
                "try again shortly",
                **{"Retry-After": RETRY_AFTER_S},
            ) from None
        if owner is None or self.owners.is_me(owner):
            return None
        if not owner.alive:
            log.info(
                "control request for a call whose owner is gone", call_id=call_id, owner=owner.replica_id
            )
            return None
        return owner

    async def forward(
        self, owner: CallOwner, request: web.Request, operator: str
    ) -> web.HTTPException | None:
        """The owner's answer to `request` from `operator` (to raise), or what to answer when there is
        none; None when the owner turns out gone, and the call with it."""
        call_id = request.match_info.get("call_id", "")
        body = await request.read()
        path = request.raw_path
        target = Target(owner.replica_id, owner.incarnation)
        given = {**request.headers, OPERATOR_HEADER: operator}
        headers = self.signer.sign(request.method, path, body, target, given)
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        try:
            async with self._session().request(
                request.method,
                URL(owner.url + path, encoded=True),
                data=body or None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                answer = await response.read()
                refused = response.headers.get(REFUSED_HEADER)
                status, content_type, charset = response.status, response.content_type, response.charset
        except aiohttp.ConnectionTimeoutError as exc:  # no connection within CONNECT_TIMEOUT_S
            return await self._unreachable(owner, call_id, exc)
        except TimeoutError:  # connected, but no answer within FORWARD_TIMEOUT_S
            return self._timed_out(owner, call_id)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            return await self._unreachable(owner, call_id, exc)
        if refused == MISDIRECTED:
            # Another process answers at that address now: the owner is gone, and its calls with it.
            log.info("call's owner no longer at its address", call_id=call_id, owner=owner.replica_id)
            self.metrics.control_forwarded("owner_gone")
            return None
        if refused:
            self.metrics.control_forwarded("refused")
            log.error(
                "the call's owner refused a forwarded request: do all processes share CLUSTER_SECRET "
                "(or ADMIN_TOKEN)?",
                call_id=call_id,
                owner=owner.replica_id,
                why=refused,
            )
            return _json_error(
                web.HTTPServiceUnavailable,
                f"the call's owner ({owner.replica_id}) refused the forwarded request: {refused}",
            )
        log.debug("control request forwarded", call_id=call_id, owner=owner.replica_id, status=status)
        self.metrics.control_forwarded("answered")
        return OwnerAnswered(status, answer, content_type, charset, owner.replica_id)

    async def _unreachable(
        self, owner: CallOwner, call_id: str, exc: BaseException
    ) -> web.HTTPException | None:
        # Gone since we looked (a stop that just ended its calls, a kill)? Then the call is too.
        try:
            still = await self.owner_of(call_id)
        except web.HTTPException:
            still = owner
        if still is None or still.incarnation != owner.incarnation:
            self.metrics.control_forwarded("owner_gone")
            return None
        self.metrics.control_forwarded("unreachable")
        log.warning(
            "the call's owner cannot be reached", call_id=call_id, owner=owner.replica_id, error=repr(exc)
        )
        return _json_error(
            web.HTTPServiceUnavailable,
            f"the call's owner ({owner.replica_id}) is unreachable; try again shortly",
            **{"Retry-After": RETRY_AFTER_S},
        )

    def _timed_out(self, owner: CallOwner, call_id: str) -> web.HTTPException:
        self.metrics.control_forwarded("timed_out")
        log.warning("the call's owner did not answer in time", call_id=call_id, owner=owner.replica_id)
        return _json_error(
            web.HTTPGatewayTimeout,
            f"the call's owner ({owner.replica_id}) did not answer within {FORWARD_TIMEOUT_S:g} s; "
            "the action may or may not have been carried out",
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # No proxies from the environment: the owner is inside the cluster, reached directly.
            self._http = aiohttp.ClientSession(trust_env=False)
        return self._http


class CallLocator:
    """Where the control API finds a live call: here, else (with a forwarder) at its owner."""

    def __init__(self, calls: CallRegistry, forwarder: CallForwarder | None = None) -> None:
        self.calls = calls
        self.forwarder = forwarder

    async def find(self, request: web.Request, operator: str) -> CallPump | None:
        """The call's pump when it is live here; None when it is live nowhere. When another process
        carries it, raises that process's answer to `operator`'s request (or why there is none)."""
        call_id = request.match_info["call_id"]
        pump = self.calls.get(call_id)
        if pump is not None or self.forwarder is None:
            return pump
        owner = await self.forwarder.owner_of(call_id)
        answer = await self.forwarder.forward(owner, request, operator) if owner is not None else None
        if answer is not None:
            raise answer
        return None


def cluster_signature_check(signer: ClusterSigner, me: Target, open_paths: frozenset[str]) -> Middleware:
    """The internal listener's middleware: every request but `open_paths` (health checks) must be a
    signed forward meant for `me`; it is marked (SIGNED_KEY) for the handlers to see."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        body = await request.read()
        refusal = signer.refusal(request.method, request.raw_path, body, request.headers, me)
        if refusal is not None:
            log.warning("internal request refused", path=request.path, remote=request.remote, why=refusal)
            exc = web.HTTPMisdirectedRequest if refusal == MISDIRECTED else web.HTTPForbidden
            raise _json_error(exc, refusal, **{REFUSED_HEADER: refusal})
        request[SIGNED_KEY] = True
        return await handler(request)

    return check


def forwarded_operator(request: web.Request) -> str | None:
    """Who the control API acts for on the internal listener: the operator the forwarding process
    signed in, named in a header the middleware verified with the signature."""
    if not request.get(SIGNED_KEY, False):
        return None
    return request.headers.get(OPERATOR_HEADER) or None
