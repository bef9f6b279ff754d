"""A call's recording in the call log, on SQLite and PostgreSQL: written, superseded, given up on,
and found by retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.calllog import CallRecorder, CallStore
from bridge.calllog.ops import RecordingOp
from bridge.calllog.store import RECORDING_FINISH_LIMIT
from tests.calllog.helpers import record_simple_call
from tests.calllog.sample_calls import start

T0 = datetime(2025, 11, 20, 12, 0, tzinfo=UTC)


async def test_the_last_recording_state_wins_and_a_replayed_batch_changes_nothing(
    store: CallStore, recorder: CallRecorder
) -> None:
    start(recorder, "CA1", T0)
    await recorder.flush()
    batch = [
        RecordingOp("CA1", "recording", started_at=T0),
        RecordingOp(
            "CA1",
            "ready",
            started_at=T0,
            location="s3://b/p/2025/11/20/CA1",
            formats=("wav", "flac"),
            duration_s=42.5,
        ),
    ]
    await store.write_batch(batch)
    await store.write_batch(batch)
    assert await store.get_recording("CA1") == {
        "recording_status": "ready",
        "recording_started_at": T0,
        "recording_duration_s": 42.5,
        "recording_location": "s3://b/p/2025/11/20/CA1",
        "recording_formats": "wav,flac",
        "recording_error": None,
    }
    assert await store.get_recording("CA-none") is None


async def test_recordings_no_process_will_store_are_marked_failed(
    store: CallStore, recorder: CallRecorder
) -> None:
    now = datetime.now(UTC)
    start(recorder, "CA-crashed", now - timedelta(minutes=5))  # in progress when its process died
    start(recorder, "CA-stuck", now - RECORDING_FINISH_LIMIT * 2)  # ended long ago, never stored
    recorder.call_ended("CA-stuck", "caller_hangup", at=now - RECORDING_FINISH_LIMIT - timedelta(minutes=1))
    start(recorder, "CA-finishing", now - timedelta(minutes=3))  # ended a moment ago: being stored
    recorder.call_ended("CA-finishing", "caller_hangup", at=now - timedelta(seconds=5))
    for call_id in ("CA-crashed", "CA-stuck", "CA-finishing"):
        recorder.recording(call_id, "recording", started_at=now)
    await recorder.flush()

    assert await store.mark_interrupted() == 1
    for call_id, status in (("CA-crashed", "failed"), ("CA-stuck", "failed"), ("CA-finishing", "recording")):
        recording = await store.get_recording(call_id)
        assert recording is not None and recording["recording_status"] == status, call_id
    crashed = await store.get_recording("CA-crashed")
    assert crashed["recording_error"] == "the bridge stopped before the recording was stored"  # type: ignore[index]


async def test_retention_finds_stored_recordings_and_spares_the_kept(
    store: CallStore, recorder: CallRecorder
) -> None:
    now = datetime.now(UTC)
    for call_id in ("CA-a", "CA-b", "CA-unrecorded"):
        record_simple_call(recorder, call_id, now - timedelta(days=40))
    record_simple_call(recorder, "CA-young", now - timedelta(days=2))
    for call_id in ("CA-a", "CA-b", "CA-young"):
        recorder.recording(call_id, "ready", location=f"file:///r/{call_id}", formats=("wav", "flac"))
    await recorder.flush()

    found = sorted(await store.recordings_older_than(30, now=now))
    assert found == [("CA-a", "file:///r/CA-a", ("wav", "flac")), ("CA-b", "file:///r/CA-b", ("wav", "flac"))]
    assert await store.purge_older_than(30, now=now, keep={"CA-b"}) == 2
    assert await store.get_call("CA-a") is None and await store.get_call("CA-unrecorded") is None
    assert await store.get_call("CA-b") is not None and await store.get_call("CA-young") is not None
