"""Calls whose webhook we answered, waiting for their media stream.

A stream that never arrives (the carrier could not reach our socket, a proxy dropped the upgrade, the
stream token was refused) would leave no trace at all: the call log only hears of a call when its
stream starts. So each answered webhook is awaited for as long as its prepared session lives; one whose
stream has not started by then, or whose carrier asks what next (the after-stream request) while no
stream of it started here, is reported as never connected. The report is safe to repeat and to be
wrong about a sibling's call: the call log keeps the first record of a call, and a stream that does
start replaces a never-connected record (`bridge.calllog.store`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from bridge.carrier.webhook import IncomingCall

STARTED_REMEMBERED = 1000


@dataclass(frozen=True, slots=True)
class UnconnectedCall:
    call: IncomingCall
    carrier: str
    answered_at: datetime  # when its webhook was answered (or, not answered here, when we heard of it)
    noticed_at: datetime  # when we concluded its stream would not come


class AwaitedStreams:
    def __init__(
        self, never_connected: Callable[[UnconnectedCall], None], ttl_s: float = 30.0, limit: int = 10_000
    ) -> None:
        """`never_connected` hears of each call whose stream did not come; `ttl_s`: how long a stream
        may take; `limit`: calls awaited at once (beyond it, the oldest is given up on, unreported)."""
        self.never_connected = never_connected
        self.ttl_s = ttl_s
        self.limit = limit
        self._awaited: OrderedDict[str, tuple[UnconnectedCall, asyncio.TimerHandle]] = OrderedDict()
        self._started: OrderedDict[str, None] = OrderedDict()

    def answered(self, call: IncomingCall, carrier: str) -> None:
        """We answered this call's webhook with our media socket: its stream should start soon."""
        if not call.call_id or call.call_id in self._awaited:
            return
        now = datetime.now(UTC)
        handle = asyncio.get_running_loop().call_later(self.ttl_s, self._expired, call.call_id)
        self._awaited[call.call_id] = (UnconnectedCall(call, carrier, now, now), handle)
        while len(self._awaited) > self.limit:
            _, (_, oldest) = self._awaited.popitem(last=False)
            oldest.cancel()

    def started(self, call_id: str) -> None:
        """The call's stream started here."""
        if (awaited := self._awaited.pop(call_id, None)) is not None:
            awaited[1].cancel()
        self._started[call_id] = None
        while len(self._started) > STARTED_REMEMBERED:
            self._started.popitem(last=False)

    def after_stream(self, call: IncomingCall, carrier: str) -> None:
        """The carrier asks what next, once the call's stream is over (or could not be opened): if no
        stream of it started here, it never connected (or connected to a sibling, whose record wins)."""
        if not call.call_id or call.call_id in self._started:
            return
        now = datetime.now(UTC)
        awaited = self._awaited.pop(call.call_id, None)
        if awaited is not None:
            awaited[1].cancel()
        answered_at = awaited[0].answered_at if awaited is not None else now
        self.never_connected(UnconnectedCall(call, carrier, answered_at, now))

    def close(self) -> None:
        for _, handle in self._awaited.values():
            handle.cancel()
        self._awaited.clear()

    def __len__(self) -> int:
        return len(self._awaited)

    def _expired(self, call_id: str) -> None:
        awaited = self._awaited.pop(call_id, None)
        if awaited is not None:
            waited = awaited[0]
            self.never_connected(replace(waited, noticed_at=datetime.now(UTC)))
