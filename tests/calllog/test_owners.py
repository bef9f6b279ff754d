"""Who carries each call, as every process sees it (bridge.calllog.owners), and the claim that admits a
call's stream once across all of them (CallRecorder.claim_call), on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from bridge.calllog import CallRecorder, CallStore
from bridge.calllog.leases import ReplicaIdentity, ReplicaLeases
from bridge.calllog.owners import CallOwners
from bridge.calllog.schema import replica_leases
from tests.calllog.helpers import database_outage

LEASE_S = 30.0


def call_fields(call_id: str) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "call_sid": call_id,
        "stream_sid": "MZ1",
        "from_number": "+15550001111",
        "to_number": "+15550002222",
        "direction": "inbound",
        "model": "gpt-realtime",
        "voice": "marin",
    }


@pytest.fixture
async def replicas(store: CallStore) -> AsyncIterator[dict[str, CallRecorder]]:
    """Two processes sharing the call log, each with its lease and its recorder."""
    recorders = {}
    leases = ReplicaLeases(store)
    for name in ("a", "b"):
        me = ReplicaIdentity(f"host-{name}:8080", f"http://10.0.0.{ord(name)}:8081")
        await leases.claim(me, LEASE_S)
        recorders[name] = CallRecorder(store, owner=me, retry_initial_s=0.05, retry_max_s=0.2)
        await recorders[name].start()
    yield recorders
    for recorder in recorders.values():
        await recorder.stop()


def owners_of(store: CallStore, recorder: CallRecorder) -> CallOwners:
    assert recorder.owner is not None
    return CallOwners(store, recorder.owner)


async def test_a_claimed_call_is_seen_at_once_by_every_process_and_claimed_only_once(
    store: CallStore, replicas: dict[str, CallRecorder]
) -> None:
    a, b = replicas["a"], replicas["b"]
    assert await a.claim_call(**call_fields("CA-1"))
    # Written now, not with the next batch: the other process finds the owner without any flush.
    owner = await owners_of(store, b).locate("CA-1")
    assert owner is not None and a.owner is not None
    assert (owner.replica_id, owner.incarnation, owner.url, owner.alive) == (
        a.owner.replica_id,
        a.owner.incarnation,
        a.owner.internal_url,
        True,
    )
    assert owners_of(store, a).is_me(owner) and not owners_of(store, b).is_me(owner)

    # A second stream for the call, on either process: refused, the row left as it was.
    assert not await b.claim_call(**call_fields("CA-1"))
    assert not await a.claim_call(**call_fields("CA-1"))
    # Two streams racing on two processes: exactly one is admitted.
    results = await asyncio.gather(a.claim_call(**call_fields("CA-2")), b.claim_call(**call_fields("CA-2")))
    assert sorted(results) == [False, True]

    # The owner's events follow its claim in the log; an ended call has no owner to forward to, and
    # its stream cannot be admitted again (a replayed start).
    a.event("CA-1", "note", {"text": "hi"})
    a.call_ended("CA-1", "caller_hangup")
    await a.flush()
    call = await store.get_call("CA-1")
    assert call is not None and call["status"] == "ended" and len(call["events"]) == 1
    assert await owners_of(store, b).locate("CA-1") is None
    assert not await b.claim_call(**call_fields("CA-1"))
    assert await owners_of(store, b).locate("CA-unknown") is None


async def test_an_owner_whose_lease_lapsed_or_who_restarted_is_not_alive(
    store: CallStore, replicas: dict[str, CallRecorder]
) -> None:
    a, b = replicas["a"], replicas["b"]
    assert a.owner is not None
    assert await a.claim_call(**call_fields("CA-3"))
    async with store.engine.begin() as conn:
        await conn.execute(
            update(replica_leases)
            .where(replica_leases.c.replica_id == a.owner.replica_id)
            .values(expires_at=replica_leases.c.started_at)
        )
    owner = await owners_of(store, b).locate("CA-3")
    assert owner is not None and not owner.alive
    # The same replica id started again: a new incarnation holds the lease, the call's owner is gone.
    again = ReplicaIdentity(a.owner.replica_id, a.owner.internal_url)
    await ReplicaLeases(store).claim(again, LEASE_S)
    owner = await owners_of(store, b).locate("CA-3")
    assert owner is not None and not owner.alive


async def test_prepared_calls_claimed_elsewhere_and_the_count_of_other_processes(
    store: CallStore, replicas: dict[str, CallRecorder]
) -> None:
    a, b = replicas["a"], replicas["b"]
    assert await a.claim_call(**call_fields("CA-here"))
    assert await b.claim_call(**call_fields("CA-there"))
    seen_by_a = owners_of(store, a)
    assert await seen_by_a.claimed_elsewhere(["CA-here", "CA-there", "CA-not-yet"]) == {"CA-there"}
    assert await seen_by_a.claimed_elsewhere([]) == set()
    assert await seen_by_a.others_alive() == 1
    await ReplicaLeases(store).release(b.owner)  # type: ignore[arg-type]
    assert await seen_by_a.others_alive() == 0


async def test_while_the_database_is_away_a_stream_is_admitted_and_its_start_written_later(
    request: pytest.FixtureRequest, db_url: str
) -> None:
    store = await CallStore.open(db_url + "?timeout=0.2" if db_url.startswith("sqlite") else db_url)
    recorder = CallRecorder(store, owner=ReplicaIdentity("host-a:8080", "http://10.0.0.1:8081"))
    await recorder.start()
    try:
        with capture_logs() as logs:
            async with database_outage(request, db_url):
                assert await recorder.claim_call(**call_fields("CA-out"))
                recorder.event("CA-out", "note", {"text": "during"})
            await asyncio.wait_for(recorder.flush(), 30)
        assert any(entry["event"] == "calllog.claim_unchecked" for entry in logs)
        call = await store.get_call("CA-out")
        assert call is not None and call["owner_id"] == "host-a:8080"
        assert [e["data"]["text"] for e in call["events"]] == ["during"]
    finally:
        await recorder.stop()
        await store.close()
