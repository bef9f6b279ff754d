"""The calls this process is serving, by call id: where operators, drain and shutdown find them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.pump import CallPump


class CallRegistry(dict[str, "CallPump"]):
    """Calls in progress by call id, awaitable until empty (drain, shutdown)."""

    def __init__(self) -> None:
        super().__init__()
        self._empty = asyncio.Event()
        self._empty.set()
        self.on_change: Callable[[int], None] | None = None  # told the count after each add and remove

    def add(self, call_id: str, pump: CallPump) -> bool:
        """False when a stream for this call is already live: a replayed or forged second stream."""
        if call_id in self:
            return False
        self[call_id] = pump
        self._empty.clear()
        if self.on_change is not None:
            self.on_change(len(self))
        return True

    def remove(self, call_id: str, pump: CallPump) -> None:
        if self.get(call_id) is pump:
            del self[call_id]
            if self.on_change is not None:
                self.on_change(len(self))
        if not self:
            self._empty.set()

    async def wait_empty(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        return not self
