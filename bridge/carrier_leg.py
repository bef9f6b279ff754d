"""The caller's side of one call as the pump sees it, whatever carries it (a carrier's media-stream
websocket, a SIP dialog with its RTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from bridge.carrier.events import CallStarted, CarrierCommand, CarrierEvent

Transfer = Callable[[CallStarted, str], Awaitable[None]]  # raises TransferFailed


class CarrierLeg(Protocol):
    """The caller's side of one call, whatever carries it: a media-stream websocket, a SIP dialog."""

    carrier: str
    log: Any  # rebound with the call's ids once it started
    started: CallStarted | None
    play_chunk_ms: int  # the most audio one PlayAudio may carry

    @property
    def closed(self) -> bool: ...
    async def wait_for_start(self) -> CallStarted | None: ...
    def events(self) -> AsyncIterator[tuple[CarrierEvent, float]]: ...
    async def send(self, command: CarrierCommand) -> None: ...
    async def close(self, reason: str, code: int = 1000) -> None: ...
    async def apologise(self, audio: bytes) -> None: ...
    async def transfer(self, number: str) -> None: ...  # raises TransferFailed
    def stats(self) -> dict[str, int]: ...
