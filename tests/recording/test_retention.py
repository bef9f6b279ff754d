"""Retention takes a call's recording with it: from a directory and from a real S3-compatible server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.calllog import CallRecorder, CallStore, run_retention
from bridge.calllog.retention import purge_once
from bridge.recording import RecordingArchive, Recordings
from tests.calllog.helpers import wait_until
from tests.recording.conftest import s3_keys
from tests.recording.test_api import record_call

OLD = datetime.now(UTC) - timedelta(days=100)
RECENT = datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
async def log(tmp_path: Path) -> CallRecorder:
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    recorder = CallRecorder(store, linger_s=0)
    await recorder.start()
    try:
        yield recorder  # type: ignore[misc]
    finally:
        await recorder.stop()
        await store.close()


def stored_files(archive: RecordingArchive, location: str) -> list[str]:
    return [fmt for fmt in ("wav", "flac") if archive.stat(location, fmt) is not None]


@pytest.fixture(params=["directory", "s3"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> RecordingArchive:
    if request.param == "directory":
        return RecordingArchive(tmp_path / "recordings")
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket")
    return RecordingArchive(tmp_path / "unused", f"s3://{bucket}/rec", endpoint)


async def test_retention_deletes_the_recording_with_its_call(
    tmp_path: Path, log: CallRecorder, archive: RecordingArchive
) -> None:
    recordings = Recordings(archive, tmp_path / "spool", log, interval_s=0.05)
    await recordings.start()
    try:
        await record_call(recordings, log, "CA-old", OLD)
        await record_call(recordings, log, "CA-recent", RECENT)
    finally:
        await recordings.stop()
    store = log.store
    old = (await store.get_recording("CA-old"))["recording_location"]  # type: ignore[index]
    recent = (await store.get_recording("CA-recent"))["recording_location"]  # type: ignore[index]
    assert stored_files(archive, old) == ["wav", "flac"] == stored_files(archive, recent)

    task = asyncio.create_task(run_retention(store, 30, interval_s=0.05, recordings=archive))
    try:
        await wait_until(lambda: not stored_files(archive, old), within=10, what="the old recording to go")
        for _ in range(100):
            if await store.get_call("CA-old") is None:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await store.get_call("CA-old") is None
    assert await store.get_call("CA-recent") is not None
    assert stored_files(archive, recent) == ["wav", "flac"]
    if archive.s3_url:
        bucket = archive.s3_url.removeprefix("s3://").split("/")[0]
        assert all("CA-old" not in key for key in s3_keys(archive.s3_endpoint_url, bucket))


async def test_a_recording_that_cannot_be_deleted_keeps_its_call_until_it_can(
    tmp_path: Path, log: CallRecorder, s3_endpoint: str, bucket: str
) -> None:
    archive = RecordingArchive(tmp_path / "unused", f"s3://{bucket}/rec", s3_endpoint)
    recordings = Recordings(archive, tmp_path / "spool", log, interval_s=0.05)
    await recordings.start()
    try:
        await record_call(recordings, log, "CA-old", OLD)
    finally:
        await recordings.stop()
    location = (await log.store.get_recording("CA-old"))["recording_location"]  # type: ignore[index]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    unreachable = RecordingArchive(tmp_path / "unused", f"s3://{bucket}/rec", f"http://127.0.0.1:{closed}")
    assert await purge_once(log.store, 30, unreachable) == (0, 1)
    assert await log.store.get_call("CA-old") is not None  # the call stays while its recording does
    assert stored_files(archive, location) == ["wav", "flac"]

    assert await purge_once(log.store, 30, archive) == (1, 0)  # the storage is back: both go
    assert await log.store.get_call("CA-old") is None
    assert stored_files(archive, location) == []
