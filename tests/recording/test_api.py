"""GET /api/calls/{id}/recording on the real app over loopback, from a directory and from a real
S3-compatible server: the admin token, byte ranges a browser seeks with, both formats."""

from __future__ import annotations

import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.audio import PCMU_8K
from bridge.calllog import CallRecorder
from bridge.recording import RecordingArchive, Recordings
from tests.calllog.sample_calls import start
from tests.e2e import ADMIN_TOKEN, RunningBridge, running_bridge
from tests.recording.helpers import STARTED_AT, T0, expected_channel, feed_caller, noise, pcm

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NO_UPSTREAM = "ws://127.0.0.1:9/v1/realtime"  # nothing connects to it: no call reaches a model here


@dataclass
class RecordedApp:
    app: RunningBridge
    http: aiohttp.ClientSession
    caller: bytes
    assistant: bytes

    def url(self, call_id: str, query: str = "") -> str:
        return f"{self.app.base_url}/api/calls/{call_id}/recording{query}"

    @property
    def archive(self) -> RecordingArchive:
        recordings = self.app.bridge.recordings
        assert recordings is not None
        return recordings.archive

    def stored_bytes(self, location: str, fmt: str) -> bytes:
        return b"".join(self.archive.read(location, fmt, 0, 1 << 30))


async def record_call(
    recordings: Recordings, log: CallRecorder, call_id: str, started_at: datetime = STARTED_AT
) -> tuple[bytes, bytes]:
    """What phase 2's tap will do on a call: begin, feed, end; then wait until it is stored."""
    start(log, call_id, started_at)
    recording = recordings.begin(call_id, PCMU_8K, T0, started_at)
    caller, assistant = noise(160 * 100, 11), noise(8000, 12)
    feed_caller(recording, caller)
    recording.assistant(assistant, T0 + 500)
    log.call_ended(call_id, "caller_hangup")
    recordings.end(recording, T0 + 3000)
    await recordings.idle()
    await log.flush()
    return caller, assistant


@pytest.fixture(params=["directory", "s3"])
async def recorded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordedApp]:
    env = {"RECORDING": "all", "RECORDING_DIR": str(tmp_path / "recordings")}
    if request.param == "s3":
        endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("bucket")
        env |= {"RECORDING_URL": f"s3://{bucket}/rec", "RECORDING_ENDPOINT_URL": endpoint}
    async with running_bridge(NO_UPSTREAM, **env) as app, aiohttp.ClientSession() as http:
        recordings, log = app.bridge.recordings, app.bridge.call_log
        assert recordings is not None and isinstance(log, CallRecorder)
        caller, assistant = await record_call(recordings, log, "CA-rec")
        yield RecordedApp(app, http, caller, assistant)


async def test_without_the_admin_token_nothing_is_served(recorded: RecordedApp) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "bridge_calllog_session=forged"}):
        async with recorded.http.get(recorded.url("CA-rec"), headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert await response.json() == {"error": "unauthorized"}


async def test_the_call_shows_its_recording(recorded: RecordedApp) -> None:
    async with recorded.http.get(f"{recorded.app.base_url}/api/calls/CA-rec", headers=AUTH) as response:
        call = await response.json()
    recording = call["recording"]
    assert recording["status"] == "ready" and recording["error"] is None
    assert recording["formats"] == ["wav", "flac", "peaks"] and recording["duration_s"] == 3.0
    assert recording["channels"] == {"left": "caller", "right": "assistant"}
    assert datetime.fromisoformat(recording["started_at"]) == STARTED_AT
    assert recording["url"] == "/api/calls/CA-rec/recording"
    assert recording["location"].endswith("/2025/11/23/CA-rec")
    assert not any(key.startswith("recording_") for key in call)


async def test_whole_files_in_both_formats_hold_the_call(recorded: RecordedApp) -> None:
    async with recorded.http.get(recorded.url("CA-rec", "?format=wav"), headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/wav"
        assert response.headers["Accept-Ranges"] == "bytes"
        wav_bytes = await response.read()
        assert int(response.headers["Content-Length"]) == len(wav_bytes)
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    np.testing.assert_array_equal(
        samples[:, 0], expected_channel(24000, [(0, pcm(PCMU_8K, recorded.caller))])
    )
    np.testing.assert_array_equal(
        samples[:, 1], expected_channel(24000, [(4000, pcm(PCMU_8K, recorded.assistant))])
    )
    async with recorded.http.get(recorded.url("CA-rec"), headers=AUTH) as response:  # FLAC by default
        assert response.status == 200 and response.headers["Content-Type"] == "audio/flac"
        flac_bytes = await response.read()
    assert flac_bytes[:4] == b"fLaC" and len(flac_bytes) < len(wav_bytes)


async def test_the_waveform_is_served_as_peaks(recorded: RecordedApp) -> None:
    async with recorded.http.get(recorded.url("CA-rec", "?format=peaks"), headers=AUTH) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        peaks = json.loads(await response.read())
    assert peaks["rate"] == 8000 and peaks["bucket_ms"] == 20 and peaks["samples"] == 24000
    assert peaks["channels"] == ["caller", "assistant"]
    # The loudest sample of each 20 ms, one byte: the caller talked for the first two seconds, the
    # assistant for a second from 0.5 s (record_call).
    for name, samples, at in (("caller", recorded.caller, 0), ("assistant", recorded.assistant, 4000)):
        channel = expected_channel(24000, [(at, pcm(PCMU_8K, samples))])
        loudest = np.abs(channel.astype(np.int32)).reshape(-1, 160).max(axis=1)
        expected = np.ceil(loudest * 255 / 32768).astype(np.uint8)
        assert np.frombuffer(base64.b64decode(peaks[name]), dtype=np.uint8).tolist() == expected.tolist()


async def test_byte_ranges_seek_like_a_browser(recorded: RecordedApp) -> None:
    location = (await recorded.app.bridge.store.get_recording("CA-rec"))["recording_location"]  # type: ignore[union-attr,index]
    whole = recorded.stored_bytes(location, "flac")
    size = len(whole)
    url = recorded.url("CA-rec", "?format=flac")

    async def get(headers: dict[str, str], method: str = "GET") -> tuple[int, Any, bytes]:
        async with recorded.http.request(method, url, headers={**AUTH, **headers}) as response:
            return response.status, response.headers, await response.read()

    status, headers, body = await get({"Range": "bytes=100-1099"})
    assert status == 206 and body == whole[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{size}" and headers["Content-Length"] == "1000"
    etag = headers["ETag"]

    status, headers, body = await get({"Range": f"bytes={size - 10}-"})  # from a point to the end
    assert status == 206 and body == whole[-10:]
    status, headers, body = await get({"Range": "bytes=-300"})  # the last 300 bytes
    assert status == 206 and body == whole[-300:]
    assert headers["Content-Range"] == f"bytes {size - 300}-{size - 1}/{size}"
    status, headers, body = await get({"Range": f"bytes=0-{size + 5000}"})  # past the end: clipped
    assert status == 206 and body == whole

    status, headers, body = await get({"Range": f"bytes={size}-"})  # starts past the end
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"

    status, _, body = await get({"Range": "bytes=0-9", "If-Range": etag})  # unchanged: the range
    assert status == 206 and body == whole[:10]
    status, _, body = await get({"Range": "bytes=0-9", "If-Range": '"an-older-version"'})  # changed: all
    assert status == 200 and body == whole
    status, _, body = await get({"Range": "bytes=0-1,5-9"})  # several ranges: the whole file instead
    assert status == 200 and body == whole

    status, headers, body = await get({"Range": "bytes=10-19"}, method="HEAD")
    assert status == 206 and body == b"" and headers["Content-Length"] == "10"


async def test_what_cannot_be_served_says_why(recorded: RecordedApp, tmp_path: Path) -> None:
    async with recorded.http.get(recorded.url("CA-rec", "?format=mp3"), headers=AUTH) as response:
        assert response.status == 400
        assert "format must be one of wav, flac, peaks" in (await response.json())["error"]
    async with recorded.http.get(recorded.url("CA-nobody"), headers=AUTH) as response:
        assert response.status == 404 and (await response.json())["error"] == "no such call"

    log = recorded.app.bridge.call_log
    assert isinstance(log, CallRecorder)
    for call_id in ("CA-plain", "CA-failed"):
        start(log, call_id, STARTED_AT)
    log.recording("CA-failed", "failed", started_at=STARTED_AT, error="could not write the spool: disk full")
    await log.flush()
    async with recorded.http.get(recorded.url("CA-plain"), headers=AUTH) as response:
        assert response.status == 404
        assert await response.json() == {"error": "this call was not recorded", "recording_status": None}
    log.recording("CA-plain", "recording", started_at=STARTED_AT)  # its call is still going on
    await log.flush()
    async with recorded.http.get(recorded.url("CA-plain"), headers=AUTH) as response:
        assert response.status == 404
        assert await response.json() == {
            "error": "the recording is not ready yet",
            "recording_status": "recording",
        }
    async with recorded.http.get(recorded.url("CA-failed"), headers=AUTH) as response:
        assert response.status == 404
        assert await response.json() == {
            "error": "the recording failed (the call's recording.error says why)",
            "recording_status": "failed",
        }
    async with recorded.http.get(f"{recorded.app.base_url}/api/calls/CA-failed", headers=AUTH) as response:
        failed = (await response.json())["recording"]
    assert failed["status"] == "failed" and failed["url"] is None
    assert failed["error"] == "could not write the spool: disk full"

    # The file went missing behind the log's back (an operator cleaned the disk, a bucket rule).
    location = (await recorded.app.bridge.store.get_recording("CA-rec"))["recording_location"]  # type: ignore[union-attr,index]
    recorded.archive.delete(location, ("wav",))
    async with recorded.http.get(recorded.url("CA-rec", "?format=wav"), headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "the recording's file is missing"
