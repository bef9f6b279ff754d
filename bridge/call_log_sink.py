"""Where a call's record goes as it happens: the interface the pump writes to, and a sink that drops it.

`bridge.calllog.CallRecorder` is the real one (SQLite or PostgreSQL); tests and tools may pass `NoCallLog`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from bridge.log_records import RecordKind


class CallLogSink(Protocol):
    def call_started(self, **fields: Any) -> None: ...
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
    def call_started(self, **fields: Any) -> None:
        pass

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
