"""Upstream sessions opened while the voice webhook is answered, claimed when the media stream starts.

Twilio takes a few hundred ms between our TwiML answer and the stream's `start`; opening the
Realtime session (and configuring it) in that gap saves the stream that time. Whether its greeting is
asked for then too is `Bridge.open_prepared`'s call (PREFETCH_GREETING).

With several processes behind one address, the stream often starts on another process than the
webhook's. That process admits it and writes the call's row naming itself (bridge.calllog.owners);
this pool looks for such rows every `check_every_s` while it holds sessions, and closes the ones no
stream will claim at once, instead of letting them idle until their expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from bridge.logs import get_logger
from bridge.upstream import UpstreamRefused, UpstreamSession

log = get_logger("bridge.pool")

Opener = Callable[[], Awaitable[UpstreamSession]]
# Which of these call ids had their stream admitted by another process.
ClaimedElsewhere = Callable[[list[str]], Awaitable[set[str]]]


class PreparedSessions:
    def __init__(
        self,
        ttl_s: float = 30.0,
        limit: int = 100,
        *,
        claimed_elsewhere: ClaimedElsewhere | None = None,
        check_every_s: float = 0.5,
    ) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.claimed_elsewhere = claimed_elsewhere
        self.check_every_s = check_every_s
        self._tasks: dict[str, asyncio.Task[UpstreamSession]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._watcher: asyncio.Task[None] | None = None

    def prepare(self, call_sid: str, opener: Opener) -> None:
        if call_sid in self._tasks or len(self._tasks) >= self.limit:
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(opener(), name=f"prepare-{call_sid}")
        task.add_done_callback(_silence)
        self._tasks[call_sid] = task
        self._expiry[call_sid] = loop.call_later(self.ttl_s, self._drop, call_sid, "unclaimed")
        if self.claimed_elsewhere is not None and self._watcher is None:
            self._watcher = loop.create_task(self._watch(self.claimed_elsewhere), name="prepared-watch")

    async def claim(self, call_sid: str) -> UpstreamSession | None:
        """The prepared session for this call, or None (none prepared, or it failed after opening).
        A session the service refused raises `UpstreamRefused`: it was tried for the whole budget
        already, since the caller began waiting, or refused for good."""
        task = self._tasks.pop(call_sid, None)
        handle = self._expiry.pop(call_sid, None)
        if handle is not None:
            handle.cancel()
        if task is None:
            return None
        try:
            return await task
        except UpstreamRefused:
            raise
        except Exception as exc:
            log.warning("prepared upstream session failed, opening a new one", error=str(exc))
            return None

    def _drop(self, call_sid: str, why: str) -> None:
        """Close the session prepared for this call: `why` no stream will claim it here."""
        if (handle := self._expiry.pop(call_sid, None)) is not None:
            handle.cancel()
        task = self._tasks.pop(call_sid, None)
        if task is not None:
            log.info("prepared upstream session not used here, closing it", call_sid=call_sid, why=why)
            asyncio.get_running_loop().create_task(_discard(task))

    async def _watch(self, claimed_elsewhere: ClaimedElsewhere) -> None:
        try:
            while self._tasks:
                await asyncio.sleep(self.check_every_s)
                try:
                    elsewhere = await claimed_elsewhere(list(self._tasks))
                except Exception as exc:  # the database is away: the expiry still closes them
                    log.debug("prepared sessions not checked", error=repr(exc))
                    continue
                for call_sid in elsewhere:
                    self._drop(call_sid, "its stream started on another process")
        finally:
            self._watcher = None

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for handle in self._expiry.values():
            handle.cancel()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._expiry.clear()
        await asyncio.gather(*(_discard(t) for t in tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, call_sid: object) -> bool:
        return call_sid in self._tasks


def _silence(task: asyncio.Task[UpstreamSession]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here so a failure nobody claims is not reported as unhandled


async def _discard(task: asyncio.Task[UpstreamSession]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        session = await task
        await session.socket.close()
