"""Upstream sessions opened while the voice webhook is answered, claimed when the media stream starts.

Twilio takes a few hundred ms between our TwiML answer and the stream's `start`; opening the
Realtime session (and asking for the greeting) in that gap means the greeting's first audio is
usually waiting for the caller the moment the stream starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from bridge.logs import get_logger
from bridge.upstream import UpstreamRefused, UpstreamSession

log = get_logger("bridge.pool")

Opener = Callable[[], Awaitable[UpstreamSession]]


class PreparedSessions:
    def __init__(self, ttl_s: float = 30.0, limit: int = 100) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._tasks: dict[str, asyncio.Task[UpstreamSession]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def prepare(self, call_sid: str, opener: Opener) -> None:
        if call_sid in self._tasks or len(self._tasks) >= self.limit:
            return
        task = asyncio.get_running_loop().create_task(opener(), name=f"prepare-{call_sid}")
        task.add_done_callback(_silence)
        self._tasks[call_sid] = task
        self._expiry[call_sid] = asyncio.get_running_loop().call_later(self.ttl_s, self._expire, call_sid)

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

    def _expire(self, call_sid: str) -> None:
        self._expiry.pop(call_sid, None)
        task = self._tasks.pop(call_sid, None)
        if task is not None:
            log.info("prepared upstream session unclaimed, closing it", call_sid=call_sid)
            asyncio.get_running_loop().create_task(_discard(task))

    async def close(self) -> None:
        for handle in self._expiry.values():
            handle.cancel()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._expiry.clear()
        await asyncio.gather(*(_discard(t) for t in tasks))

    def __len__(self) -> int:
        return len(self._tasks)


def _silence(task: asyncio.Task[UpstreamSession]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here so a failure nobody claims is not reported as unhandled


async def _discard(task: asyncio.Task[UpstreamSession]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        session = await task
        await session.socket.close()
