"""Calls we placed in the call log, on real SQLite and PostgreSQL (bridge.calllog.placed_calls)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.calllog import CallRecorder, CallStore
from bridge.calllog.leases import ReplicaIdentity, ReplicaLeases
from bridge.calllog.placed_calls import LimitReached, PlacedCallStore


def placed_row(call_id: str) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "carrier": "twilio",
        "from_number": "+15550100999",
        "to_number": "+15550100",
        "model": "gpt-realtime-2.1",
        "voice": "marin",
        "metadata": {"booking": "B-17"},
        "outbound_request": {"machine_detection": "leave_message"},
    }


@pytest.fixture
def placed(store: CallStore) -> PlacedCallStore:
    return PlacedCallStore(store)


async def test_a_placed_call_is_queued_with_its_request_and_metadata(
    placed: PlacedCallStore, store: CallStore
) -> None:
    await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
    call = await store.get_call("out_1")
    assert call is not None
    assert (call["status"], call["outbound_status"], call["direction"]) == (
        "in_progress",
        "queued",
        "outbound",
    )
    assert call["metadata"] == {"booking": "B-17"} and call["owner_id"] is None
    assert call["outbound_request"] == {"machine_detection": "leave_message"}
    assert [(e["seq"], e["kind"], e["data"]) for e in call["events"]] == [
        (-1, "call_progress", {"status": "queued"})
    ]


async def test_concurrent_placed_calls_are_limited(placed: PlacedCallStore) -> None:
    await placed.admit(placed_row("out_1"), max_concurrent=2, per_minute=100)
    await placed.admit(placed_row("out_2"), max_concurrent=2, per_minute=100)
    with pytest.raises(LimitReached) as refused:
        await placed.admit(placed_row("out_3"), max_concurrent=2, per_minute=100)
    assert refused.value.limit == "concurrent" and "OUTBOUND_MAX_CONCURRENT is 2" in str(refused.value)
    # One that ends makes room.
    await placed.progress("out_1", {"status": "busy"}, status="busy", end_reason="busy")
    await placed.admit(placed_row("out_3"), max_concurrent=2, per_minute=100)


async def test_placements_per_minute_slide(placed: PlacedCallStore) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=50)
    await placed.admit(placed_row("out_1"), max_concurrent=10, per_minute=2, now=t0)
    await placed.admit(placed_row("out_2"), max_concurrent=10, per_minute=2, now=t0 + timedelta(seconds=20))
    with pytest.raises(LimitReached) as refused:
        await placed.admit(
            placed_row("out_3"), max_concurrent=10, per_minute=2, now=t0 + timedelta(seconds=50)
        )
    assert refused.value.limit == "per_minute"
    assert refused.value.retry_after_s == 11  # out_1 leaves the window 10 s later
    await placed.admit(placed_row("out_3"), max_concurrent=10, per_minute=2, now=t0 + timedelta(seconds=61))


async def test_calls_that_reached_us_count_toward_no_outbound_limit(
    placed: PlacedCallStore, recorder: CallRecorder
) -> None:
    from tests.calllog.sample_calls import start

    start(recorder, "CA-inbound", datetime.now(UTC))
    await recorder.flush()
    await placed.admit(placed_row("out_1"), max_concurrent=1, per_minute=1)


async def test_racing_placements_never_pass_the_limit(placed: PlacedCallStore, store: CallStore) -> None:
    other = PlacedCallStore(store)  # another replica's, on the same database
    results = await asyncio.gather(
        *(
            (placed if i % 2 else other).admit(placed_row(f"out_{i}"), max_concurrent=3, per_minute=100)
            for i in range(8)
        ),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 3
    assert all(isinstance(r, LimitReached) for r in results if r is not None)


async def test_the_answer_binds_one_carrier_call_once(placed: PlacedCallStore) -> None:
    await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
    await placed.record_placed("out_1", "CA1")
    assert await placed.bind_answer("out_1", "CA2") is None  # a token replayed for another call
    row = await placed.bind_answer("out_1", "CA1")
    assert row is not None and row["call_sid"] == "CA1"
    assert await placed.bind_answer("out_1", "CA1") is not None  # the carrier asking again
    assert await placed.bind_answer("out_unknown", "CA1") is None


async def test_an_answer_before_the_create_returned_still_binds(placed: PlacedCallStore) -> None:
    await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
    assert await placed.bind_answer("out_1", "CA1") is not None
    await placed.record_placed("out_1", "CA1")
    assert (await placed.get("out_1"))["call_sid"] == "CA1"  # type: ignore[index]


async def test_progress_only_moves_forward_and_keeps_a_machine(placed: PlacedCallStore) -> None:
    await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
    await placed.progress("out_1", {"status": "answered"}, status="answered")
    late = await placed.progress("out_1", {"status": "ringing"}, status="ringing")  # arrived late
    assert late is not None and late[0]["outbound_status"] == "answered" and late[1] == {}
    await placed.progress("out_1", {"answered_by": "machine"}, answered_by="machine")
    await placed.progress("out_1", {"answered_by": "unknown"}, answered_by="unknown")
    assert await placed.verdict("out_1") == ("machine", None)
    await placed.progress("out_1", {"answered_by": "machine"}, answered_by="machine", message_end="beep")
    assert await placed.verdict("out_1") == ("machine", "beep")


async def test_a_call_that_never_connected_ends_with_the_carriers_reason(
    placed: PlacedCallStore, store: CallStore
) -> None:
    await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
    await placed.progress("out_1", {"status": "ringing"}, status="ringing")
    await placed.progress("out_1", {"status": "no_answer"}, status="no_answer", end_reason="no_answer")
    call = await store.get_call("out_1")
    assert call is not None
    assert (call["status"], call["end_reason"], call["outbound_status"]) == (
        "ended",
        "no_answer",
        "no_answer",
    )
    assert [e["data"]["status"] for e in call["events"]] == ["queued", "ringing", "no_answer"]
    assert [e["seq"] for e in call["events"]] == [-1, -2, -3]
    assert call["duration_s"] is not None


async def test_the_streams_owner_records_beside_the_callbacks_and_ends_the_call(
    placed: PlacedCallStore, store: CallStore
) -> None:
    owner = ReplicaIdentity("replica-a", "http://10.0.0.1:8080")
    recorder = CallRecorder(store, owner=owner, linger_s=0)
    await recorder.start()
    try:
        await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
        await placed.bind_answer("out_1", "CA1")
        recorder.call_started(
            call_id="out_1",
            call_sid="CA1",
            stream_sid="MZ1",
            from_number="+15550100999",
            to_number="+15550100",
            direction="outbound",
            model="gpt-realtime-2.1",
            voice="cedar",
            placed=True,
        )
        recorder.event("out_1", "answering", {"action": "converse"})
        await recorder.flush()
        await placed.progress("out_1", {"answered_by": "human"}, answered_by="human")  # another replica
        recorder.event(
            "out_1", "assistant_transcript", {"item_id": "i1", "text": "Hi Ann.", "interrupted": False}
        )
        recorder.call_ended("out_1", "assistant_ended")
        await recorder.flush()
        # Twilio's completed comes after our hang-up: it ends nothing, the stream's owner did.
        await placed.progress(
            "out_1", {"status": "completed"}, status="completed", end_reason="caller_hangup"
        )
    finally:
        await recorder.stop()
    call = await store.get_call("out_1")
    assert call is not None
    assert (call["owner_id"], call["stream_sid"], call["voice"]) == ("replica-a", "MZ1", "cedar")
    assert (call["metadata"], call["outbound_status"]) == ({"booking": "B-17"}, "completed")
    assert (call["end_reason"], call["answered_by"]) == ("assistant_ended", "human")
    kinds = [(e["seq"], e["kind"]) for e in call["events"]]
    assert sorted(kinds) == sorted(
        [
            (-1, "call_progress"),
            (1, "answering"),
            (-2, "call_progress"),
            (2, "assistant_transcript"),
            (-3, "call_progress"),
        ]
    )
    assert [e["kind"] for e in call["events"]][-1] == "call_progress"  # in the order they happened


async def test_a_ringing_placed_call_is_no_orphan(placed: PlacedCallStore, store: CallStore) -> None:
    """No process carries a call while it rings: the sweep leaves it to the carrier's callbacks."""
    await placed.admit(placed_row("out_1"), max_concurrent=5, per_minute=5)
    assert await ReplicaLeases(store).sweep("replica-b") == []
    assert (await placed.get("out_1"))["status"] == "in_progress"  # type: ignore[index]
