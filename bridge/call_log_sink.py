"""Where a call's record goes as it happens: the interface the pump writes to, and a sink that drops it.

`bridge.calllog.CallRecorder` is the real one (SQLite or PostgreSQL); tests and tools may pass `NoCallLog`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from bridge.log_records import RecordKind


class CallLogSink(Protocol):
    async def claim_call(self, **fields: Any) -> bool:
        """Record the call's start, naming this process its owner; False when its stream was
        admitted before (here or by another process sharing the log): the stream must be refused."""
        ...

    def event(
        self, call_id: str, kind: RecordKind, data: dict[str, Any], at: datetime | None = None
    ) -> None: ...
    def usage(self, call_id: str, usage: dict[str, Any]) -> None: ...
    def call_ended(self, call_id: str, reason: str) -> None: ...
    def call_never_connected(self, **fields: Any) -> None: ...
    def summary(
        self, call_id: str, summary: str, disposition: str | None, intent: str | None = None
    ) -> None: ...


class NoCallLog:
    async def claim_call(self, **fields: Any) -> bool:
        return True

    def event(self, call_id: str, kind: RecordKind, data: dict[str, Any], at: datetime | None = None) -> None:
        pass

    def usage(self, call_id: str, usage: dict[str, Any]) -> None:
        pass

    def call_ended(self, call_id: str, reason: str) -> None:
        pass

    def call_never_connected(self, **fields: Any) -> None:
        pass

    def summary(self, call_id: str, summary: str, disposition: str | None, intent: str | None = None) -> None:
        pass
