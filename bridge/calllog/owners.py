"""Who carries each live call, as every process of the service sees it in the shared call log.

A call's row is written, naming its owner, the moment its stream is admitted (`CallStore.claim_call`,
through `CallRecorder.claim_call`), so from then on any process can ask:

- `locate`: which process carries this call, and is that process alive (its lease, bridge.calllog
  .leases)? An operator's request for the call is forwarded there (bridge.call_forwarding).
- `claimed_elsewhere`: which of the calls this process prepared an upstream session for have had
  their stream admitted by another process? Those sessions will never be used (bridge.session_pool).
- `others_alive`: does any other process share this call log? While none does, every stream reaches
  the process that answered its webhook, and its greeting may be asked for in advance.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select

from bridge.calllog.leases import ReplicaIdentity, database_now
from bridge.calllog.schema import calls, replica_leases
from bridge.calllog.store import CallStore


@dataclass(frozen=True, slots=True)
class CallOwner:
    """The process that carries a call in progress."""

    replica_id: str
    incarnation: str
    url: str
    alive: bool  # its lease is live: it renewed within LEASE_SECONDS and has not started again since


class CallOwners:
    def __init__(self, store: CallStore, me: ReplicaIdentity) -> None:
        self.engine = store.engine
        self.me = me
        self._dialect = store.engine.dialect.name

    def is_me(self, owner: CallOwner) -> bool:
        return (owner.replica_id, owner.incarnation) == (self.me.replica_id, self.me.incarnation)

    async def locate(self, call_id: str) -> CallOwner | None:
        """The owner of the call if it is in progress (as far as the call log knows), else None."""
        lease = replica_leases
        live = and_(
            lease.c.incarnation == calls.c.owner_incarnation,
            lease.c.expires_at >= database_now(self._dialect),
        )
        query = (
            select(calls.c.owner_id, calls.c.owner_incarnation, calls.c.owner_url, live.label("alive"))
            .select_from(calls.outerjoin(lease, lease.c.replica_id == calls.c.owner_id))
            .where(calls.c.call_id == call_id, calls.c.status == "in_progress")
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.owner_id is None or not row.owner_url:
            return None  # ended, never seen, or recorded before calls had owners
        return CallOwner(row.owner_id, row.owner_incarnation or "", row.owner_url, bool(row.alive))

    async def claimed_elsewhere(self, call_ids: list[str]) -> set[str]:
        """Those of `call_ids` whose stream another process (or another run of this one) admitted."""
        if not call_ids:
            return set()
        not_me = or_(
            calls.c.owner_id.is_(None),
            calls.c.owner_id != self.me.replica_id,
            calls.c.owner_incarnation != self.me.incarnation,
        )
        query = select(calls.c.call_id).where(calls.c.call_id.in_(call_ids), not_me)
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def others_alive(self) -> int:
        """How many other processes hold a live lease on this call log."""
        lease = replica_leases
        query = select(func.count()).where(
            lease.c.replica_id != self.me.replica_id, lease.c.expires_at >= database_now(self._dialect)
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
