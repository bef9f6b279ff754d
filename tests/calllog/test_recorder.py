from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from bridge.calllog import CallRecorder, CallStore
from tests.calllog.helpers import database_outage, record_simple_call, wait_until
from tests.calllog.sample_calls import USAGE, USAGE_COST, record_refund_call, start

T0 = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)


async def test_a_recorded_call_reads_back_in_order_with_totals(
    store: CallStore, recorder: CallRecorder
) -> None:
    record_refund_call(recorder, "CA-r", T0)
    await recorder.flush()

    call = await store.get_call("CA-r")
    assert call is not None
    kinds = [e["kind"] for e in call["events"]]
    assert kinds == [
        "greeting_latency",
        "assistant_transcript",
        "caller_transcript",
        "turn_latency",
        "tool_call",
        "tool_result",
        "assistant_transcript",
        "operator_action",
        "barge_in",
        "caller_transcript",
        "turn_latency",
        "assistant_transcript",
        "dtmf",
        "turn_latency",
        "assistant_transcript",
        "caller_transcript",
    ]
    assert [e["seq"] for e in call["events"]] == list(range(1, 17))
    barge_in = {"item_id": "a2", "reaction_ms": 180, "sent_ms": 4100, "heard_ms": 2300}
    assert call["events"][8]["data"] == barge_in
    assert (call["status"], call["end_reason"], call["duration_s"]) == ("ended", "caller_hangup", 63.5)
    # Three identical usage objects, summed by kind.
    assert call["input_text_tokens"] == 600 and call["input_audio_tokens"] == 3000
    assert call["input_cached_tokens"] == 1800
    assert call["output_text_tokens"] == 240 and call["output_audio_tokens"] == 960
    assert call["cost_usd"] == pytest.approx(3 * USAGE_COST)
    # Latencies 820, 610, 1450: the median is 820, the slowest 1450.
    assert (call["turn_latency_p50_ms"], call["turn_latency_max_ms"]) == (820, 1450)
    assert (call["barge_in_count"], call["error_count"]) == (1, 0)
    assert recorder.backlog == 0 and recorder.dropped == 0 and recorder.write_failures == 0


async def test_unknown_models_have_no_cost_and_late_events_still_land(
    store: CallStore, recorder: CallRecorder
) -> None:
    recorder.call_started(
        call_id="CA-x",
        call_sid="CA-x",
        stream_sid="MZ",
        from_number="+1",
        to_number="+2",
        direction="browser",
        model="someone-elses-model",
        voice="alloy",
        carrier="browser",
    )
    recorder.usage("CA-x", USAGE)
    recorder.call_ended("CA-x", "caller_hangup")
    # A transcript that completes after the hang-up, and the last response's usage.
    recorder.event("CA-x", "caller_transcript", {"item_id": "u9", "text": "bye"})
    recorder.usage("CA-x", USAGE)
    await recorder.flush()
    call = await store.get_call("CA-x")
    assert call is not None
    assert call["cost_usd"] is None and call["input_audio_tokens"] == 2000
    assert [e["seq"] for e in call["events"]] == [1]
    assert call["end_reason"] == "caller_hangup" and call["carrier"] == "browser"


async def test_recording_never_raises_and_never_waits(store: CallStore, recorder: CallRecorder) -> None:
    start(recorder, "CA-1", T0)
    recorder.event("CA-1", "note", None)  # type: ignore[arg-type]
    recorder.usage("CA-1", None)  # type: ignore[arg-type]
    began = time.perf_counter()
    for i in range(2000):
        recorder.event("CA-1", "note", {"text": f"n{i}"})
    assert time.perf_counter() - began < 0.5  # queueing only: no I/O on the caller's path
    recorder.call_ended("CA-1", "shutdown")
    await recorder.flush()
    call = await store.get_call("CA-1")
    assert call is not None and len(call["events"]) == 2000


async def test_an_orphan_event_is_dropped_without_blocking_the_rest(
    store: CallStore, recorder: CallRecorder
) -> None:
    record_simple_call(recorder, "CA-ok", T0, reason=None)
    recorder.event("CA-never-started", "note", {"text": "orphan"})  # the database refuses this one
    recorder.event("CA-ok", "note", {"text": "after"})
    recorder.call_ended("CA-ok", "caller_hangup")
    await recorder.flush()
    call = await store.get_call("CA-ok")
    assert call is not None
    assert [e["kind"] for e in call["events"]] == ["caller_transcript", "note"]
    assert call["status"] == "ended"
    assert recorder.dropped == 1 and recorder.backlog == 0


async def test_overflow_drops_excess_events_but_keeps_starts_ends_and_totals(store: CallStore) -> None:
    recorder = CallRecorder(store, max_queue=5)
    start(recorder, "CA-o", T0)  # not started yet: nothing drains, the queue fills
    for i in range(10):
        recorder.event("CA-o", "note", {"text": f"n{i}"})
    recorder.usage("CA-o", USAGE)
    recorder.call_ended("CA-o", "caller_hangup", at=T0 + timedelta(seconds=9))
    assert recorder.dropped == 7  # 6 notes + 1 intermediate totals over the limit
    await recorder.start()
    try:
        await recorder.flush()
    finally:
        await recorder.stop()
    call = await store.get_call("CA-o")
    assert call is not None
    assert [e["data"]["text"] for e in call["events"]] == ["n0", "n1", "n2", "n3"]
    assert call["end_reason"] == "caller_hangup" and call["output_audio_tokens"] == 320


async def test_stop_writes_everything_still_queued(store: CallStore) -> None:
    recorder = CallRecorder(store)
    await recorder.start()
    record_refund_call(recorder, "CA-s", T0)
    await recorder.stop()
    call = await store.get_call("CA-s")
    assert call is not None and len(call["events"]) == 16 and call["status"] == "ended"


async def test_database_outage_mid_call_keeps_ops_and_writes_them_once_back(
    request: pytest.FixtureRequest, db_url: str
) -> None:
    # SQLite's default 5 s busy wait would make each failed attempt slow; 0.2 s keeps the test short.
    store = await CallStore.open(db_url + "?timeout=0.2" if db_url.startswith("sqlite") else db_url)
    recorder = CallRecorder(store, retry_initial_s=0.05, retry_max_s=0.3)
    await recorder.start()
    try:
        start(recorder, "CA-out", T0)
        recorder.event("CA-out", "caller_transcript", {"item_id": "u1", "text": "before"}, T0)
        await recorder.flush()

        with capture_logs() as logs:
            async with database_outage(request, db_url):
                for i in range(3):
                    said = {"item_id": f"u{i + 2}", "text": f"during {i}"}
                    recorder.event("CA-out", "caller_transcript", said)
                recorder.usage("CA-out", USAGE)
                recorder.call_ended("CA-out", "upstream_failure")
                await wait_until(lambda: recorder.write_failures >= 3, what="repeated write failures")
                assert recorder.backlog == 6  # 3 events + usage totals + final totals + end
                assert recorder.dropped == 0
            await asyncio.wait_for(recorder.flush(), 30)

        warnings = [entry for entry in logs if entry["event"] == "calllog.database_unavailable"]
        assert len(warnings) == 1  # once per outage, not once per retry
        assert any(entry["event"] == "calllog.database_back" for entry in logs)
        assert recorder.backlog == 0

        call = await store.get_call("CA-out")
        assert call is not None
        assert [e["data"]["text"] for e in call["events"]] == ["before", "during 0", "during 1", "during 2"]
        assert call["end_reason"] == "upstream_failure" and call["input_audio_tokens"] == 1000
    finally:
        await recorder.stop()
        await store.close()


async def test_stop_gives_up_after_its_timeout_while_the_database_is_down(
    request: pytest.FixtureRequest, db_url: str
) -> None:
    store = await CallStore.open(db_url + "?timeout=0.2" if db_url.startswith("sqlite") else db_url)
    recorder = CallRecorder(store, retry_initial_s=0.05, retry_max_s=0.2)
    await recorder.start()
    try:
        async with database_outage(request, db_url):
            start(recorder, "CA-lost", T0)
            await wait_until(lambda: recorder.write_failures >= 1, what="the first write failure")
            failures = recorder.write_failures
            began = time.monotonic()
            with capture_logs() as logs:
                async with asyncio.timeout(10):  # a writer that ignores its cancel would hang here
                    await recorder.stop(timeout=1.0)
            assert time.monotonic() - began < 5
            assert any(entry["event"] == "calllog.stop_timeout" for entry in logs)
            assert recorder.backlog == 1
            assert not [t for t in asyncio.all_tasks() if t.get_name() == "calllog-writer"]
            # Retries while stopping stay spaced by the initial backoff: one at once, then one per 50 ms.
            assert recorder.write_failures - failures <= 2 + 1.0 / 0.05
    finally:
        await store.close()


async def test_events_trickling_in_share_a_transaction(store: CallStore) -> None:
    # At 100 calls events arrive every few ms; one transaction each would cost the event loop 8 %.
    transactions = 0
    write_batch = store.write_batch

    async def counted(ops: list) -> None:  # type: ignore[type-arg]
        nonlocal transactions
        transactions += 1
        await write_batch(ops)

    store.write_batch = counted  # type: ignore[method-assign]
    recorder = CallRecorder(store)
    await recorder.start()
    try:
        start(recorder, "CA-t", T0)
        for n in range(20):
            recorder.event("CA-t", "caller_transcript", {"text": f"t{n}"})
            await asyncio.sleep(0.002)  # the writer could start a transaction between any two
        await recorder.flush()
    finally:
        await recorder.stop()
    call = await store.get_call("CA-t")
    assert call is not None and [e["data"]["text"] for e in call["events"]] == [f"t{n}" for n in range(20)]
    assert transactions <= 2
