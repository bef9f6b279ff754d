"""Calls we placed, in the call log: admitted under the outbound limits, then followed as the carrier
reports them.

A placed call's row is written when it is placed (status `in_progress`, outbound_status `queued`, no
owner: no process carries it while it rings), and every process can follow it from there, because
the carrier's callbacks reach whichever replica its load balancer picks:

- `admit` writes the row, in one transaction with the count of placed calls in progress and of calls
  placed in the last minute, so the limits hold across replicas (PostgreSQL serialises placements
  with an advisory lock, SQLite with its write lock, taken before counting).
- `bind_answer` ties the row to the carrier's call id once, when the carrier fetches the answer; a
  token presented for another call of the carrier is refused.
- `progress` records what a callback says: the status only ever moves forward, who answered is kept
  (a later "human" does not undo a machine), and a call that ends before its stream ever started (busy,
  no answer, failed) is ended here with that reason. The stream's owner ends every other call.
- Each of these writes a `call_progress` event. It is recorded by whichever process got the
  callback, while the call's owner records its own events, each process numbering its own: so these
  take the negative sequence numbers (-1, -2, ...), and neither ever overwrites the other's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import false, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.calllog.ops import EventOp
from bridge.calllog.schema import call_events, calls
from bridge.calllog.store import CallStore, duration_between, event_row
from bridge.log_records import RecordKind

# Every placement on one PostgreSQL database takes this transaction-scoped lock: two replicas counting
# at the same moment would both see room for the last call.
_PG_PLACEMENT_LOCK = 0x6F7574626F756E64  # "outbound"

# How far each status is along a call's life; a callback arriving late never moves a call back.
STATUS_ORDER = {
    "queued": 0,
    "ringing": 1,
    "answered": 2,
    "completed": 3,
    "busy": 3,
    "no_answer": 3,
    "failed": 3,
    "canceled": 3,
}
FINAL_STATUSES = frozenset(status for status, rank in STATUS_ORDER.items() if rank == 3)
_MACHINES = ("machine", "fax")


class LimitReached(Exception):
    """Placing one more call would break OUTBOUND_MAX_CONCURRENT or OUTBOUND_CALLS_PER_MINUTE."""

    def __init__(self, limit: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit  # "concurrent" | "per_minute"
        self.retry_after_s = retry_after_s


class PlacedCallStore:
    """The call log's placed calls, over a call store's engine."""

    def __init__(self, store: CallStore) -> None:
        self.engine = store.engine
        self._dialect = store.engine.dialect.name
        self._placing = asyncio.Lock()  # this process's placements one at a time (SQLite has no lock)

    async def admit(
        self, row: dict[str, Any], *, max_concurrent: int, per_minute: int, now: datetime | None = None
    ) -> None:
        """Write the placed call's row (`call_id`, `carrier`, `from_number`, `to_number`, `model`,
        `voice`, `metadata`, `outbound_request`) if the limits allow one more; LimitReached if not."""
        now = now or datetime.now(UTC)
        placed = calls.c.outbound_status.is_not(None)
        async with self._placing, self.engine.begin() as conn:
            if self._dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_PLACEMENT_LOCK})
            else:
                # A write statement takes SQLite's write lock even when it changes nothing: from here
                # on no other process can count (another worker's placement waits its turn).
                await conn.execute(update(calls).where(false()).values(status=calls.c.status))
            live = await conn.scalar(
                select(func.count()).select_from(calls).where(placed, calls.c.status == "in_progress")
            )
            if live >= max_concurrent:
                raise LimitReached(
                    "concurrent",
                    f"{live} placed calls are in progress; OUTBOUND_MAX_CONCURRENT is {max_concurrent}",
                    retry_after_s=10,
                )
            minute_ago = now - timedelta(minutes=1)
            recent = (
                (
                    await conn.execute(
                        select(calls.c.started_at)
                        .where(placed, calls.c.started_at > minute_ago)
                        .order_by(calls.c.started_at)
                    )
                )
                .scalars()
                .all()
            )
            if len(recent) >= per_minute:
                # The window slides: room comes back when the oldest call in it turns a minute old.
                wait = (recent[0] - minute_ago).total_seconds()
                raise LimitReached(
                    "per_minute",
                    f"{len(recent)} calls were placed in the last minute; OUTBOUND_CALLS_PER_MINUTE is "
                    f"{per_minute}",
                    retry_after_s=max(1, int(wait) + 1),
                )
            await conn.execute(
                insert(calls).values(
                    **row,
                    call_sid="",
                    stream_sid="",
                    direction="outbound",
                    started_at=now,
                    status="in_progress",
                    outbound_status="queued",
                )
            )
            await self._event(conn, row["call_id"], {"status": "queued"}, now)

    async def record_placed(self, call_id: str, carrier_call_id: str) -> None:
        """The carrier accepted the call and named it (unless it already did, answering it)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(calls)
                .where(calls.c.call_id == call_id, calls.c.call_sid == "")
                .values(call_sid=carrier_call_id)
            )

    async def bind_answer(self, call_id: str, carrier_call_id: str) -> dict[str, Any] | None:
        """The carrier fetched the answer for this placed call as `carrier_call_id`: the row, if the
        call is ours, still in progress and not bound to another of the carrier's calls; else None."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(calls)
                .where(
                    calls.c.call_id == call_id,
                    calls.c.outbound_status.is_not(None),
                    calls.c.status == "in_progress",
                    (calls.c.call_sid == "") | (calls.c.call_sid == carrier_call_id),
                )
                .values(call_sid=carrier_call_id)
            )
            if result.rowcount != 1:
                return None
            row = (await conn.execute(select(calls).where(calls.c.call_id == call_id))).mappings().first()
        return dict(row) if row is not None else None

    async def get(self, call_id: str) -> dict[str, Any] | None:
        """The placed call's row; None if there is none (or the call was not placed by us)."""
        query = select(calls).where(calls.c.call_id == call_id, calls.c.outbound_status.is_not(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row is not None else None

    async def verdict(self, call_id: str) -> tuple[str | None, str | None]:
        """(answered_by, message_end) as the carrier last said them; (None, None) before it has."""
        query = select(calls.c.answered_by, calls.c.message_end).where(calls.c.call_id == call_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (row.answered_by, row.message_end) if row is not None else (None, None)

    async def progress(
        self,
        call_id: str,
        event: dict[str, Any],
        *,
        status: str | None = None,
        answered_by: str | None = None,
        message_end: str | None = None,
        end_reason: str | None = None,
        at: datetime | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Record a carrier's report on a placed call: `event` goes to its timeline; `status`,
        `answered_by` and `message_end` update the call as the module docstring says; `end_reason`
        ends it if its stream never started. Returns the row as it now stands and what the report
        changed in it (None: no such call)."""
        at = at or datetime.now(UTC)
        async with self.engine.begin() as conn:
            query = select(calls).where(calls.c.call_id == call_id, calls.c.outbound_status.is_not(None))
            if self._dialect == "postgresql":
                query = query.with_for_update()  # one callback at a time per call: no lost update
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return None
            values: dict[str, Any] = {}
            if status is not None and STATUS_ORDER[status] > STATUS_ORDER[row["outbound_status"]]:
                values["outbound_status"] = status
            if answered_by is not None and (answered_by in _MACHINES or row["answered_by"] not in _MACHINES):
                values["answered_by"] = answered_by
            if message_end:
                values["message_end"] = message_end
            if end_reason is not None and row["status"] == "in_progress" and not row["stream_sid"]:
                values.update(
                    status="ended",
                    ended_at=at,
                    end_reason=end_reason,
                    duration_s=duration_between(row["started_at"], at),
                )
            if values:
                await conn.execute(update(calls).where(calls.c.call_id == call_id).values(**values))
            await self._event(conn, call_id, event, at)
        return {**row, **values}, values

    async def _event(self, conn: AsyncConnection, call_id: str, data: dict[str, Any], at: datetime) -> None:
        lowest = await conn.scalar(
            select(func.min(call_events.c.seq)).where(call_events.c.call_id == call_id, call_events.c.seq < 0)
        )
        event = EventOp(call_id, (lowest or 0) - 1, at, RecordKind.CALL_PROGRESS, data)
        await conn.execute(insert(call_events).values(event_row(event)))
