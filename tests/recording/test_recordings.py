"""The recordings edge on real storage: a directory, a real S3-compatible server, a full disk, a bucket
that cannot be reached. The call log is a real SQLite store; the call's own record must always be whole."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from bridge.audio import PCMU_8K
from bridge.calllog import CallRecorder, CallStore
from bridge.recording import CallRecording, RecordingArchive, Recordings, recording_wanted
from tests.calllog.helpers import wait_until
from tests.calllog.sample_calls import start
from tests.recording.conftest import s3_client, s3_keys
from tests.recording.helpers import STARTED_AT, T0, expected_channel, feed_caller, noise, pcm, read_wav

FRAME = 160


@pytest.fixture
async def recorder(tmp_path: Path) -> AsyncIterator[CallRecorder]:
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    recorder = CallRecorder(store, linger_s=0)
    await recorder.start()
    try:
        yield recorder
    finally:
        await recorder.stop()
        await store.close()


@contextlib.asynccontextmanager
async def running(
    archive: RecordingArchive, spool_dir: Path, recorder: CallRecorder
) -> AsyncIterator[Recordings]:
    recordings = Recordings(archive, spool_dir, recorder, mode="all", interval_s=0.05)
    await recordings.start()
    try:
        yield recordings
    finally:
        await recordings.stop()


def start_call(recorder: CallRecorder, call_id: str) -> None:
    start(recorder, call_id, STARTED_AT)
    recorder.event(call_id, "caller_transcript", {"item_id": "u1", "text": "hello there"}, STARTED_AT)


def end_call(recorder: CallRecorder, call_id: str) -> None:
    recorder.call_ended(call_id, "caller_hangup", at=STARTED_AT + timedelta(seconds=2))


def talk(recording: CallRecording, frames: int = 50) -> tuple[bytes, bytes]:
    """A second of the caller, and 300 ms of the assistant starting at 400 ms."""
    caller = noise(FRAME * frames, 1)
    assistant = noise(2400, 2)
    feed_caller(recording, caller)
    recording.assistant(assistant, T0 + 400)
    return caller, assistant


async def logged(recorder: CallRecorder, call_id: str) -> dict:
    await recorder.flush()
    call = await recorder.store.get_call(call_id)
    assert call is not None
    return call


def assert_call_record_whole(call: dict) -> None:
    assert call["status"] == "ended" and call["end_reason"] == "caller_hangup"
    assert call["duration_s"] == 2.0
    assert [e["kind"] for e in call["events"]] == ["caller_transcript"]


def assert_recording_matches(wav: np.ndarray, caller: bytes, assistant: bytes) -> None:
    assert wav.shape == (16000, 2)  # the call ended 2 s in
    np.testing.assert_array_equal(wav[:, 0], expected_channel(16000, [(0, pcm(PCMU_8K, caller))]))
    np.testing.assert_array_equal(wav[:, 1], expected_channel(16000, [(3200, pcm(PCMU_8K, assistant))]))


def test_recording_wanted_follows_the_mode_and_the_request() -> None:
    assert recording_wanted("all", {}) is True
    assert recording_wanted("off", {"record": "true"}) is False
    assert recording_wanted("requested", {}) is False
    assert recording_wanted("requested", {"record": "0"}) is False
    assert all(recording_wanted("requested", {"record": yes}) for yes in ("1", "true", "Yes", " on "))


async def test_a_call_is_spooled_while_it_runs_and_stored_in_the_directory(
    tmp_path: Path, recorder: CallRecorder
) -> None:
    archive = RecordingArchive(tmp_path / "recordings")
    spool_dir = tmp_path / "recordings" / ".spool"
    async with running(archive, spool_dir, recorder) as recordings:
        start_call(recorder, "CA-dir")
        recording = recordings.begin("CA-dir", PCMU_8K, T0, STARTED_AT)
        assert (await logged(recorder, "CA-dir"))["recording_status"] == "recording"
        caller, assistant = talk(recording)
        # Within a spool interval the audio is on disk, written by the spool thread, not the loop.
        await wait_until(
            lambda: sum(p.stat().st_size for p in spool_dir.glob("*.spool")) > len(caller) + len(assistant),
            within=5,
            what="the spool file",
        )
        assert recording.pending_bytes == 0
        end_call(recorder, "CA-dir")
        recordings.end(recording, T0 + 2000)
        await recordings.idle()

    call = await logged(recorder, "CA-dir")
    assert_call_record_whole(call)
    assert call["recording_status"] == "ready" and call["recording_error"] is None
    assert call["recording_formats"] == "wav,flac,peaks" and call["recording_duration_s"] == 2.0
    assert call["recording_started_at"] == STARTED_AT
    stem = tmp_path / "recordings" / "2025" / "11" / "23" / "CA-dir"
    assert call["recording_location"] == stem.as_uri()
    assert_recording_matches(read_wav(stem.with_suffix(".wav")), caller, assistant)
    assert stem.with_suffix(".flac").stat().st_size > 0
    assert json.loads(stem.with_suffix(".peaks").read_text())["samples"] == 16000
    assert list(spool_dir.iterdir()) == []  # the spool goes once the recording is stored


async def test_a_call_is_stored_in_s3(
    tmp_path: Path, recorder: CallRecorder, s3_endpoint: str, bucket: str
) -> None:
    archive = RecordingArchive(tmp_path / "unused", f"s3://{bucket}/calls/", s3_endpoint)
    spool_dir = tmp_path / "spool"
    async with running(archive, spool_dir, recorder) as recordings:
        start_call(recorder, "CA-s3")
        recording = recordings.begin("CA-s3", PCMU_8K, T0, STARTED_AT)
        caller, assistant = talk(recording)
        end_call(recorder, "CA-s3")
        recordings.end(recording, T0 + 2000)
        await recordings.idle()

    call = await logged(recorder, "CA-s3")
    assert_call_record_whole(call)
    assert call["recording_status"] == "ready", call["recording_error"]
    assert call["recording_location"] == f"s3://{bucket}/calls/2025/11/23/CA-s3"
    stored = ["calls/2025/11/23/CA-s3.flac", "calls/2025/11/23/CA-s3.peaks", "calls/2025/11/23/CA-s3.wav"]
    assert s3_keys(s3_endpoint, bucket) == stored
    body = s3_client(s3_endpoint).get_object(Bucket=bucket, Key="calls/2025/11/23/CA-s3.wav")["Body"].read()
    (tmp_path / "downloaded.wav").write_bytes(body)
    assert_recording_matches(read_wav(tmp_path / "downloaded.wav"), caller, assistant)
    assert list(spool_dir.iterdir()) == []  # nothing left behind locally


async def test_an_unreachable_bucket_fails_the_recording_not_the_call(
    tmp_path: Path, recorder: CallRecorder, aws_environment: None
) -> None:
    port = _closed_port()
    archive = RecordingArchive(tmp_path / "unused", "s3://nowhere/calls", f"http://127.0.0.1:{port}")
    spool_dir = tmp_path / "spool"
    async with running(archive, spool_dir, recorder) as recordings:
        start_call(recorder, "CA-nobucket")
        recording = recordings.begin("CA-nobucket", PCMU_8K, T0, STARTED_AT)
        talk(recording)
        end_call(recorder, "CA-nobucket")
        recordings.end(recording, T0 + 2000)
        await recordings.idle()
        assert recordings.failures == 1

    call = await logged(recorder, "CA-nobucket")
    assert_call_record_whole(call)
    assert call["recording_status"] == "failed" and call["recording_location"] is None
    assert "s3://nowhere/calls/2025/11/23/CA-nobucket" in call["recording_error"]
    assert f"127.0.0.1:{port}" in call["recording_error"]  # botocore's EndpointConnectionError
    assert list(spool_dir.iterdir()) == []


async def test_an_unwritable_spool_fails_the_recording_at_once_and_the_call_goes_on(
    tmp_path: Path, recorder: CallRecorder
) -> None:
    not_a_directory = tmp_path / "recordings"
    not_a_directory.write_text("an operator's mistake: RECORDING_DIR is a file\n")
    archive = RecordingArchive(not_a_directory)
    async with running(archive, not_a_directory / ".spool", recorder) as recordings:
        start_call(recorder, "CA-nodir")
        recording = recordings.begin("CA-nodir", PCMU_8K, T0, STARTED_AT)
        talk(recording)
        await wait_until(lambda: not recording.active, within=5, what="the recording to give up")
        call = await logged(recorder, "CA-nodir")
        assert call["status"] == "in_progress"  # the call is still on: only its recording stopped
        assert call["recording_status"] == "failed"
        assert "Not a directory" in call["recording_error"]
        recording.caller(noise(FRAME, 3), T0 + 1100)  # the tap goes on feeding: ignored, no error
        assert recording.pending_bytes == 0
        end_call(recorder, "CA-nodir")
        recordings.end(recording, T0 + 2000)
        await recordings.idle()
        assert recordings.failures == 1

    call = await logged(recorder, "CA-nodir")
    assert_call_record_whole(call)
    assert call["recording_status"] == "failed"


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize(
    ("size", "failed_while"),
    [("16k", "could not write the spool"), ("128k", "could not write the recording files")],
    ids=["full-while-spooling", "full-while-finishing"],
)
async def test_a_full_disk_fails_the_recording_with_the_reason(
    tmp_path: Path, recorder: CallRecorder, size: str, failed_while: str
) -> None:
    # 8 s of a G.711 caller spool 64 KB: 16 KiB fills up during the call; 128 KiB holds the spool but
    # not the 256 KB stereo WAV made from it after the call.
    with tiny_tmpfs(tmp_path / "disk", size) as disk:
        archive = RecordingArchive(disk)
        async with running(archive, disk / ".spool", recorder) as recordings:
            start_call(recorder, "CA-full")
            recording = recordings.begin("CA-full", PCMU_8K, T0, STARTED_AT)
            for second in range(8):
                feed_caller(recording, noise(FRAME * 50, second), from_ms=1000 * second)
                await asyncio.sleep(0.06)
            end_call(recorder, "CA-full")
            recordings.end(recording, T0 + 8000)
            await recordings.idle()
            assert recordings.failures == 1
        call = await logged(recorder, "CA-full")
        assert call["status"] == "ended" and call["end_reason"] == "caller_hangup"
        assert call["recording_status"] == "failed"
        assert re.search(failed_while, call["recording_error"]), call["recording_error"]
        assert "No space left on device" in call["recording_error"]
        assert [p.name for p in disk.rglob("*") if p.is_file()] == []  # nothing half-written kept


async def test_a_spool_left_by_a_dead_process_is_stored_at_start_up(
    tmp_path: Path, recorder: CallRecorder
) -> None:
    start_call(recorder, "CA-crashed")
    spool_dir = tmp_path / "recordings" / ".spool"
    spool_dir.mkdir(parents=True)
    # What a process that died mid-call leaves: its spool, unlocked, never finished.
    orphan = CallRecording("CA-crashed", PCMU_8K, T0, STARTED_AT)
    caller = noise(FRAME * 25, 5)
    feed_caller(orphan, caller)
    (spool_dir / "4242-dead-CA-crashed.spool").write_bytes(orphan.take_spool())
    (spool_dir / "4242-junk.spool").write_bytes(b"not a spool")
    archive = RecordingArchive(tmp_path / "recordings")
    async with running(archive, spool_dir, recorder) as recordings:
        await recordings.idle()
    call = await logged(recorder, "CA-crashed")
    assert call["recording_status"] == "ready" and call["recording_duration_s"] == 0.5
    wav = read_wav(Path(urlsplit(call["recording_location"]).path + ".wav"))
    np.testing.assert_array_equal(wav[:, 0], pcm(PCMU_8K, caller))
    assert list(spool_dir.iterdir()) == []


async def test_a_spool_held_by_a_living_process_is_left_alone(tmp_path: Path, recorder: CallRecorder) -> None:
    spool_dir = tmp_path / "spool"
    archive = RecordingArchive(tmp_path / "recordings")
    async with running(archive, spool_dir, recorder) as first:
        recording = first.begin("CA-live", PCMU_8K, T0, STARTED_AT)
        talk(recording)
        await wait_until(lambda: any(spool_dir.glob("*.spool")), within=5, what="the spool file")
        second = Recordings(archive, spool_dir, recorder, interval_s=0.05)  # another worker starting
        await second.start()
        await second.idle()
        await second.stop()
        assert len(list(spool_dir.glob("*.spool"))) == 1
        first.end(recording, T0 + 2000)
        await first.idle()
    assert (tmp_path / "recordings" / "2025" / "11" / "23" / "CA-live.wav").is_file()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
