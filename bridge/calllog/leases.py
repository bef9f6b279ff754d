"""Who carries each live call, and the leases that say its carrier is still alive.

Every bridge process (a worker, or a replica of one process) has a `ReplicaIdentity`: a replica id
that stays the same when the same process slot starts again (hostname:PORT, a worker's /w<index>, or
REPLICA_ID), an incarnation that is new on every start, and the internal URL its siblings reach it
at. A call records its owner's identity with its start (the recorder writes it into the call's row).

Each process holds a lease: one row in `replica_leases`, renewed every LEASE_RENEW_SECONDS, lapsing
LEASE_SECONDS after the last renewal. A call in progress is *orphaned* when no live lease matches its
owner, that is when:

- `lease_lapsed`: the owner stopped renewing (killed, hung, cut off from the database);
- `owner_restarted`: the owner's replica id was claimed by a newer incarnation (it started again);
- `owner_gone`: the owner's lease row is gone (it stopped, or a sweep cleared its lapsed lease);
- `no_owner`: the call was recorded before calls had owners; it counts as orphaned only once
  nothing has been recorded for it for `UNOWNED_QUIET_S`.

Every process sweeps for orphans when it starts (which closes its own previous incarnation's calls at
once) and after every renewal, and ends them "interrupted" with an `interrupted` event saying why and
who noticed. A recording of such a call will never be stored: it is marked failed. At start-up the
sweep also gives up on recordings of ended calls that no living process will store (their owner is
gone, or the call ended more than RECORDING_FINISH_LIMIT ago): a scan of the table, so only then.

Each call is ended by one conditional UPDATE that re-checks the orphan condition, so sweepers racing
each other (replicas, workers) end each call exactly once; on PostgreSQL a sweeper also skips calls
another sweeper holds locked instead of queueing behind it.

Lease times on PostgreSQL come from the database's clock, so replicas on hosts whose clocks disagree
still agree on whose lease lapsed. A SQLite file is shared only by processes on one host, which read
one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Interval, and_, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from bridge.calllog.ops import EventOp
from bridge.calllog.schema import UTCDateTime, call_events, calls, replica_leases
from bridge.calllog.store import (
    RECORDING_FINISH_LIMIT,
    CallStore,
    duration_between,
    event_row,
    insert_ignoring_duplicates,
)

log = structlog.get_logger(__name__)

# A call recorded before calls had owners (a rolling upgrade's old replicas) is left alone until it
# has been quiet this long: its process may still be carrying it, and nothing says otherwise.
UNOWNED_QUIET_S = 600.0

INTERRUPTED_EVENT = "interrupted"
RECORDING_ABANDONED = "the bridge stopped before the recording was stored"


@dataclass(frozen=True, slots=True)
class ReplicaIdentity:
    replica_id: str
    internal_url: str
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class SweptCall:
    call_id: str
    owner_id: str | None
    reason: str  # lease_lapsed | owner_restarted | owner_gone | no_owner


class ReplicaLeases:
    """The lease table and the sweep, over a call store's engine."""

    def __init__(self, store: CallStore) -> None:
        self.engine = store.engine
        self._dialect = store.engine.dialect.name

    # ---- clock --------------------------------------------------------------------------------

    def _now(self) -> ColumnElement[datetime]:
        return database_now(self._dialect)

    def _after(self, seconds: float) -> ColumnElement[datetime]:
        if self._dialect == "postgresql":
            return func.now() + literal(timedelta(seconds=seconds), Interval())
        return literal(datetime.now(UTC) + timedelta(seconds=seconds), UTCDateTime())

    # ---- the lease ----------------------------------------------------------------------------

    async def claim(self, identity: ReplicaIdentity, lease_s: float) -> str | None:
        """Take the lease for `identity` (replacing an earlier incarnation's). Returns the incarnation
        it replaced when that one's lease was still live, else None."""
        lease = replica_leases
        now = self._now()
        values = {
            "replica_id": identity.replica_id,
            "incarnation": identity.incarnation,
            "internal_url": identity.internal_url,
            "started_at": now,
            "renewed_at": now,
            "expires_at": self._after(lease_s),
        }
        insert = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(lease).values(values)
        upsert = insert.on_conflict_do_update(
            index_elements=["replica_id"],
            set_={name: insert.excluded[name] for name in values if name != "replica_id"},
        )
        async with self.engine.begin() as conn:
            held = select(lease.c.incarnation).where(
                lease.c.replica_id == identity.replica_id,
                lease.c.incarnation != identity.incarnation,
                lease.c.expires_at >= now,
            )
            replaced = (await conn.execute(held)).scalar_one_or_none()
            await conn.execute(upsert)
        return replaced

    async def renew(self, identity: ReplicaIdentity, lease_s: float) -> bool:
        """Extend the lease; False when it is no longer ours (another incarnation claimed the id, or
        a sweep cleared it after it lapsed)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(replica_leases)
                .where(
                    replica_leases.c.replica_id == identity.replica_id,
                    replica_leases.c.incarnation == identity.incarnation,
                )
                .values(renewed_at=self._now(), expires_at=self._after(lease_s))
            )
        return result.rowcount == 1

    async def release(self, identity: ReplicaIdentity) -> None:
        """Give the lease up on a clean stop: a call still in progress is then an orphan at once."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(replica_leases).where(
                    replica_leases.c.replica_id == identity.replica_id,
                    replica_leases.c.incarnation == identity.incarnation,
                )
            )

    # ---- the sweep ----------------------------------------------------------------------------

    async def sweep(
        self, swept_by: str, *, unowned_quiet_s: float = UNOWNED_QUIET_S, at_start: bool = False
    ) -> list[SweptCall]:
        """End every orphaned call as "interrupted" (see the module docstring); returns those this
        sweep ended. Lapsed leases are cleared on the way. `at_start`: also give up on every recording
        no living process will store."""
        lease = replica_leases
        now = self._now()
        swept_at = datetime.now(UTC)
        held = lease.alias("held")  # the subquery's own lease rows, apart from the outer join's
        live_lease = (
            exists()
            .where(
                held.c.replica_id == calls.c.owner_id,
                held.c.incarnation == calls.c.owner_incarnation,
                held.c.expires_at >= now,
            )
            .correlate(calls)
        )
        orphaned = and_(calls.c.status == "in_progress", ~live_lease)
        candidates = (
            select(
                calls.c.call_id,
                calls.c.started_at,
                calls.c.owner_id,
                calls.c.owner_incarnation,
                lease.c.incarnation.label("lease_incarnation"),
            )
            .select_from(calls.outerjoin(lease, lease.c.replica_id == calls.c.owner_id))
            .where(orphaned)
        )
        if self._dialect == "postgresql":
            candidates = candidates.with_for_update(of=calls, skip_locked=True)
        swept: list[SweptCall] = []
        async with self.engine.begin() as conn:
            rows = (await conn.execute(candidates)).all()
            last = await self._last_events(conn, [row.call_id for row in rows])
            events: list[dict[str, Any]] = []
            for row in rows:
                last_at, last_seq = last.get(row.call_id, (None, 0))
                ended_at = last_at or row.started_at  # the last sign of life we have
                reason = _orphan_reason(row.owner_id, row.owner_incarnation, row.lease_incarnation)
                if reason == "no_owner" and swept_at - ended_at < timedelta(seconds=unowned_quiet_s):
                    continue
                result = await conn.execute(
                    update(calls)
                    .where(calls.c.call_id == row.call_id, orphaned)
                    .values(
                        status="ended",
                        ended_at=ended_at,
                        end_reason="interrupted",
                        duration_s=duration_between(row.started_at, ended_at),
                    )
                )
                if result.rowcount != 1:
                    continue  # another sweeper ended it first, or its owner turned out alive
                swept.append(SweptCall(row.call_id, row.owner_id, reason))
                data = {"reason": reason, "owner": row.owner_id, "swept_by": swept_by}
                event = EventOp(row.call_id, last_seq + 1, swept_at, INTERRUPTED_EVENT, data)
                events.append(event_row(event))
            if events:
                insert_events = insert_ignoring_duplicates(self._dialect, call_events, ["call_id", "seq"])
                await conn.execute(insert_events, events)
            stranded = calls.c.call_id.in_([call.call_id for call in swept])
            if at_start:
                owner_gone = and_(calls.c.status == "ended", calls.c.owner_id.is_not(None), ~live_lease)
                ended_long_ago = calls.c.ended_at < swept_at - RECORDING_FINISH_LIMIT
                stranded = or_(stranded, owner_gone, ended_long_ago)
            await conn.execute(
                update(calls)
                .where(calls.c.recording_status == "recording", stranded)
                .values(recording_status="failed", recording_error=RECORDING_ABANDONED)
            )
            await conn.execute(delete(lease).where(lease.c.expires_at < now))
        return swept

    @staticmethod
    async def _last_events(conn: Any, call_ids: list[str]) -> dict[str, tuple[datetime | None, int]]:
        if not call_ids:
            return {}
        query = (
            select(call_events.c.call_id, func.max(call_events.c.at), func.max(call_events.c.seq))
            .where(call_events.c.call_id.in_(call_ids))
            .group_by(call_events.c.call_id)
        )
        return {call_id: (at, seq) for call_id, at, seq in (await conn.execute(query)).all()}


def database_now(dialect: str) -> ColumnElement[datetime]:
    """Now, as leases are compared with it: PostgreSQL's clock (the transaction's start, one instant per
    statement group), or this host's for SQLite, which only processes of one host share."""
    if dialect == "postgresql":
        return func.now(type_=UTCDateTime())
    return literal(datetime.now(UTC), UTCDateTime())


def _orphan_reason(owner_id: str | None, owner_incarnation: str | None, lease_incarnation: str | None) -> str:
    if owner_id is None:
        return "no_owner"
    if lease_incarnation is None:
        return "owner_gone"
    if lease_incarnation != owner_incarnation:
        return "owner_restarted"
    return "lease_lapsed"


class LeaseKeeper:
    """Holds this process's lease while it runs and sweeps for orphans: `start()` claims and sweeps
    once (before the process takes calls), `stop()` releases (after its calls' ends were written)."""

    def __init__(
        self, leases: ReplicaLeases, identity: ReplicaIdentity, *, lease_s: float, renew_s: float
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.lease_s = lease_s
        self.renew_s = renew_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[SweptCall]:
        replaced = await self.leases.claim(self.identity, self.lease_s)
        if replaced is not None:
            log.warning(
                "replica id was held by a live lease: this replica's previous run (killed moments ago) "
                "or another process with the same REPLICA_ID; its calls are closed now",
                replica_id=self.identity.replica_id,
                replaced_incarnation=replaced,
            )
        swept = await self._sweep(at_start=True)
        self._task = asyncio.create_task(self._run(), name="replica-lease")
        return swept

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.leases.release(self.identity)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # It lapses by itself; the siblings then close whatever this process left open.
            log.warning("replica lease not released", error=repr(exc))

    async def _run(self) -> None:
        lost_since: datetime | None = None
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                if not await self.leases.renew(self.identity, self.lease_s):
                    log.error(
                        "replica lease lost: another process claimed this REPLICA_ID, or the lease lapsed "
                        "and this replica's calls were closed by a sibling; claiming it again",
                        replica_id=self.identity.replica_id,
                    )
                    await self.leases.claim(self.identity, self.lease_s)
                if lost_since is not None:
                    down_s = (datetime.now(UTC) - lost_since).total_seconds()
                    log.info("replica lease renewed again", down_s=round(down_s, 1))
                    lost_since = None
                await self._sweep()
            except Exception as exc:  # the loop must outlive anything: its lease is its calls' life
                if lost_since is None:
                    lost_since = datetime.now(UTC)
                    log.warning(
                        "replica lease not renewed; if that lasts LEASE_SECONDS, siblings that reach "
                        "the database close this replica's calls",
                        error=repr(exc),
                        exc_info=not isinstance(exc, SQLAlchemyError | OSError | TimeoutError),
                    )

    async def _sweep(self, *, at_start: bool = False) -> list[SweptCall]:
        swept = await self.leases.sweep(self.identity.replica_id, at_start=at_start)
        for (owner, reason), count in Counter((call.owner_id, call.reason) for call in swept).items():
            log.warning("calls of a gone process marked interrupted", owner=owner, reason=reason, count=count)
        return swept
