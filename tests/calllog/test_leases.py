"""Replica leases and the sweep of orphaned calls, on real SQLite and PostgreSQL (bridge.calllog.leases).

Lease lengths here are fractions of a second so a lapse is waited for, not faked: the sweep compares
against the database's clock (PostgreSQL) or the host's (SQLite), as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text
from structlog.testing import capture_logs

from bridge.calllog import CallRecorder, CallStore
from bridge.calllog.leases import LeaseKeeper, ReplicaIdentity, ReplicaLeases
from bridge.calllog.migrate import MIGRATIONS_DIR
from bridge.calllog.schema import replica_leases
from tests.calllog.helpers import database_outage
from tests.calllog.sample_calls import start

SHORT = 0.3  # a lease that lapses while the test waits for it


def identity(replica_id: str) -> ReplicaIdentity:
    return ReplicaIdentity(replica_id, f"http://10.0.0.1:8080/{replica_id}")


@pytest.fixture
async def leases(store: CallStore) -> ReplicaLeases:
    return ReplicaLeases(store)


@pytest.fixture
async def owned(store: CallStore) -> AsyncIterator[dict[str, CallRecorder]]:
    """A recorder per replica id, on the same database: what each replica's server writes."""
    recorders: dict[str, CallRecorder] = {}
    yield recorders
    for recorder in recorders.values():
        await recorder.stop()


async def record_live_call(
    recorders: dict[str, CallRecorder], store: CallStore, owner: ReplicaIdentity | None, call_id: str
) -> None:
    key = f"{owner.replica_id}/{owner.incarnation}" if owner else "-"
    if key not in recorders:
        recorders[key] = CallRecorder(store, owner=owner, linger_s=0)
        await recorders[key].start()
    recorder = recorders[key]
    at = datetime.now(UTC) - timedelta(seconds=3)
    start(recorder, call_id, at)
    recorder.event(
        call_id, "caller_transcript", {"item_id": "u1", "text": "hello"}, at + timedelta(seconds=1)
    )
    await recorder.flush()


async def status(store: CallStore, call_id: str) -> tuple[str, str | None]:
    call = await store.get_call(call_id)
    assert call is not None
    return call["status"], call["end_reason"]


async def test_a_call_records_its_owner(
    store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    owner = identity("host-a:8080")
    await record_live_call(owned, store, owner, "CA-owned")
    call = await store.get_call("CA-owned")
    assert call is not None
    assert (call["owner_id"], call["owner_incarnation"], call["owner_url"]) == (
        "host-a:8080",
        owner.incarnation,
        owner.internal_url,
    )


async def test_live_owners_keep_their_calls_and_a_lapsed_ones_are_closed(
    store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    alive, dead = identity("alive"), identity("dead")
    await leases.claim(alive, lease_s=60)
    await leases.claim(dead, lease_s=SHORT)
    await record_live_call(owned, store, alive, "CA-alive")
    await record_live_call(owned, store, dead, "CA-dead")
    finished = identity("finished")
    await leases.claim(finished, lease_s=SHORT)
    await record_live_call(owned, store, finished, "CA-finished")
    owned[f"finished/{finished.incarnation}"].call_ended("CA-finished", "caller_hangup")
    await owned[f"finished/{finished.incarnation}"].flush()

    assert await leases.sweep("alive") == []  # nothing lapsed yet
    await asyncio.sleep(SHORT + 0.2)
    assert await leases.renew(alive, lease_s=60)
    swept = await leases.sweep("alive")

    assert [(c.call_id, c.owner_id, c.reason) for c in swept] == [("CA-dead", "dead", "lease_lapsed")]
    assert await status(store, "CA-alive") == ("in_progress", None)
    assert await status(store, "CA-finished") == ("ended", "caller_hangup")
    call = await store.get_call("CA-dead")
    assert call is not None and (call["status"], call["end_reason"]) == ("ended", "interrupted")
    # Ended at its last sign of life (the transcript a second after the start), not at the sweep.
    assert call["ended_at"] == call["started_at"] + timedelta(seconds=1) and call["duration_s"] == 1.0
    last = call["events"][-1]
    assert last["kind"] == "interrupted"
    assert last["data"] == {"reason": "lease_lapsed", "owner": "dead", "swept_by": "alive"}
    # The lapsed leases are cleared; the dead replica's renewal now fails.
    async with store.engine.connect() as conn:
        held = set((await conn.execute(select(replica_leases.c.replica_id))).scalars())
    assert held == {"alive"}
    assert not await leases.renew(dead, lease_s=60)
    assert await leases.sweep("alive") == []


async def test_a_restarted_replica_closes_its_previous_runs_calls_at_once(
    store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    before = identity("host-b:8080/w1")
    sibling = identity("host-b:8080/w0")
    await leases.claim(before, lease_s=60)
    await leases.claim(sibling, lease_s=60)
    await record_live_call(owned, store, before, "CA-before")
    await record_live_call(owned, store, sibling, "CA-sibling")

    # The same slot starts again (killed with -9 a moment ago: its lease is still live).
    after = ReplicaIdentity(before.replica_id, before.internal_url)
    assert await leases.claim(after, lease_s=60) == before.incarnation
    swept = await leases.sweep(after.replica_id)

    assert [(c.call_id, c.reason) for c in swept] == [("CA-before", "owner_restarted")]
    assert await status(store, "CA-sibling") == ("in_progress", None)
    assert not await leases.renew(before, lease_s=60)  # the old run lost its lease for good
    assert await leases.renew(after, lease_s=60)


async def test_a_released_lease_leaves_unfinished_calls_to_be_closed(
    store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    stopping, other = identity("stopping"), identity("other")
    await leases.claim(stopping, lease_s=60)
    await leases.claim(other, lease_s=60)
    await record_live_call(owned, store, stopping, "CA-left-open")
    await leases.release(stopping)
    swept = await leases.sweep("other")
    assert [(c.call_id, c.reason) for c in swept] == [("CA-left-open", "owner_gone")]


async def test_calls_without_an_owner_are_closed_only_once_quiet(
    store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    # Recorded by a bridge from before calls had owners (a rolling upgrade): it may still be live.
    await record_live_call(owned, store, None, "CA-legacy")
    assert await leases.sweep("new", unowned_quiet_s=600) == []
    assert await status(store, "CA-legacy") == ("in_progress", None)
    swept = await leases.sweep("new", unowned_quiet_s=1)  # its last event was 2 s ago
    assert [(c.call_id, c.owner_id, c.reason) for c in swept] == [("CA-legacy", None, "no_owner")]


async def test_racing_sweepers_end_each_orphan_once(
    db_url: str, store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    dead = identity("dead")
    await leases.claim(dead, lease_s=SHORT)
    call_ids = [f"CA-orphan-{n}" for n in range(12)]
    for call_id in call_ids:
        await record_live_call(owned, store, dead, call_id)
    await asyncio.sleep(SHORT + 0.2)
    # Four replicas, each with its own engine (its own connections), sweep at the same moment.
    sweepers = [await CallStore.open(db_url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(ReplicaLeases(s).sweep(f"sweeper-{n}") for n, s in enumerate(sweepers))
        )
    finally:
        for s in sweepers:
            await s.close()
    ended = sorted(call.call_id for result in results for call in result)
    assert ended == sorted(call_ids)  # every orphan once, none twice
    for call_id in call_ids:
        call = await store.get_call(call_id)
        assert call is not None and call["end_reason"] == "interrupted"
        assert [e["kind"] for e in call["events"]].count("interrupted") == 1


async def test_the_keeper_holds_the_lease_while_it_runs_and_releases_it(
    store: CallStore, owned: dict[str, CallRecorder], leases: ReplicaLeases
) -> None:
    me = identity("keeper")
    old = ReplicaIdentity(me.replica_id, me.internal_url)  # this replica's previous run
    await leases.claim(old, lease_s=60)
    await record_live_call(owned, store, old, "CA-previous-run")

    keeper = LeaseKeeper(leases, me, lease_s=SHORT, renew_s=SHORT / 3)
    swept = await keeper.start()
    try:
        assert [(c.call_id, c.reason) for c in swept] == [("CA-previous-run", "owner_restarted")]
        await record_live_call(owned, store, me, "CA-mine")
        await asyncio.sleep(SHORT * 3)  # three lease lengths: only renewals keep it
        assert await leases.sweep("someone-else") == []
        assert await status(store, "CA-mine") == ("in_progress", None)
    finally:
        await keeper.stop()
    # Stopped with a call still open (its end never got written): the next sweep closes it.
    swept = await leases.sweep("someone-else")
    assert [(c.call_id, c.reason) for c in swept] == [("CA-mine", "owner_gone")]


async def test_the_keeper_rides_out_a_short_database_outage(
    request: pytest.FixtureRequest, db_url: str, owned: dict[str, CallRecorder]
) -> None:
    # SQLite's busy wait is cut short so a locked database fails an attempt quickly, as an outage.
    store = await CallStore.open(db_url + "?timeout=0.1" if db_url.startswith("sqlite") else db_url)
    leases = ReplicaLeases(store)
    me = identity("through-outage")
    keeper = LeaseKeeper(leases, me, lease_s=3.0, renew_s=0.2)
    try:
        await keeper.start()
        await record_live_call(owned, store, me, "CA-through")
        with capture_logs() as logs:
            async with database_outage(request, db_url):
                await asyncio.sleep(0.8)  # several renewals fail, the lease has not lapsed yet
            await asyncio.sleep(0.6)  # renewed again
        events = [entry["event"] for entry in logs]
        assert (
            events.count(
                "replica lease not renewed; if that lasts LEASE_SECONDS, siblings that reach "
                "the database close this replica's calls"
            )
            == 1
        )
        assert "replica lease renewed again" in events
        assert await leases.sweep("someone-else") == []
        assert await status(store, "CA-through") == ("in_progress", None)
    finally:
        await keeper.stop()
        for recorder in owned.values():
            await recorder.stop()
        owned.clear()
        await store.close()


async def test_calls_recorded_before_the_upgrade_have_no_owner(db_url: str) -> None:
    # The database as the bridge left it before calls had owners, with a call in progress.
    store = CallStore.connect(db_url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0001")
            started = datetime.now(UTC) - timedelta(hours=1)
            await conn.execute(
                text(
                    "INSERT INTO calls (call_id, carrier, from_number, to_number, direction, started_at, "
                    "status, model, voice) VALUES ('CA-old', 'twilio', '+1', '+2', 'inbound', :at, "
                    "'in_progress', 'gpt-realtime', 'marin')"
                ),
                {"at": started.replace(tzinfo=None) if db_url.startswith("sqlite") else started},
            )
        await store.migrate()
        call = await store.get_call("CA-old")
        assert call is not None and call["owner_id"] is None and call["status"] == "in_progress"
        swept = await ReplicaLeases(store).sweep("new")  # quiet for an hour: closed
        assert [(c.call_id, c.reason) for c in swept] == [("CA-old", "no_owner")]
    finally:
        await store.close()


def _upgrade_to(connection: Any, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
