"""End-to-end harness: the real bridge app on a loopback port, relaying to the Realtime emulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from bridge.calllog import CallStore
from bridge.config import load_settings
from bridge.http_guard import HTTP_LIMITS_KEY, start_server
from bridge.replica import replica_identity
from bridge.server import BRIDGE_KEY, INTERNAL_APP_KEY, Bridge, create_app
from bridge.sim.carrier_emulator import CallerEmulator
from bridge.sim.realtime_emulator import EmulatedSession, EmulatorConfig, RealtimeEmulator, greeting_pcm24k
from bridge.tools.toolbox import Toolbox
from bridge.wavfile import read_wav_mono, write_wav
from bridge.workers import bound_socket

ADMIN_TOKEN = "test-admin-token"


@dataclass
class RunningBridge:
    base_url: str  # http://127.0.0.1:PORT
    app: web.Application

    @property
    def media_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/twilio/media"

    @property
    def bridge(self) -> Bridge:
        return self.app[BRIDGE_KEY]

    async def logged_call(self, call_sid: str) -> dict[str, Any] | None:
        """The call's row in the call log, once no call is live any more and the log is written."""
        await eventually(lambda: not self.bridge.active_calls)
        await self.bridge.call_log.flush()  # type: ignore[attr-defined]
        return await self.bridge.store.get_call(call_sid)  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Serve `app` on a loopback port (`port`, else a free one), as `bridge serve` does when it is the
    bridge's app (with its HTTP limits); yields its base URL (http://127.0.0.1:PORT)."""
    if HTTP_LIMITS_KEY in app:
        runner = await start_server(app, "127.0.0.1", port, access_log=None)
    else:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_bridge(
    realtime_url: str, *, port: int = 0, toolbox: Toolbox | None = None, **env: str
) -> AsyncIterator[RunningBridge]:
    # A file, as in production: in-memory SQLite is one connection shared by every transaction, so
    # the retention purge at start-up could interleave with the writer's first batch.
    workdir = tempfile.mkdtemp(prefix="bridge-e2e-")
    env = {"CALL_LOG_URL": f"sqlite+aiosqlite:///{workdir}/calls.db", "ADMIN_TOKEN": ADMIN_TOKEN, **env}
    settings = load_settings({"REALTIME_URL": realtime_url, "OPENAI_API_KEY": "sk-test", **env})
    app = create_app(settings, toolbox=toolbox)
    try:
        async with serving(app, port) as base_url:
            yield RunningBridge(base_url, app)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_replica(
    realtime_url: str, call_log_url: str, replica_id: str, **env: str
) -> AsyncIterator[RunningBridge]:
    """One of several bridge processes sharing the call log `call_log_url`, run in this process: its
    app on a loopback port, and its internal listener (where its siblings forward requests for its
    calls) on another, as `bridge serve` runs them."""
    env = {"CALL_LOG_URL": call_log_url, "ADMIN_TOKEN": ADMIN_TOKEN, "REPLICA_ID": replica_id, **env}
    settings = load_settings(
        {"REALTIME_URL": realtime_url, "OPENAI_API_KEY": "sk-test", "HOST": "127.0.0.1", **env}
    )
    internal = bound_socket("127.0.0.1", 0)
    identity = replica_identity(settings, port=0, internal_port=internal.getsockname()[1])
    app = create_app(settings, identity=identity)
    internal_runner = await start_server(app[INTERNAL_APP_KEY], sockets=[internal], access_log=None)
    try:
        async with serving(app) as base_url:
            yield RunningBridge(base_url, app)
    finally:
        await internal_runner.cleanup()


@dataclass
class ServerProcess:
    """`bridge serve` in a process of its own: for signals, kills and restarts."""

    process: subprocess.Popen[bytes]
    base_url: str
    call_log_url: str

    @property
    def media_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/twilio/media"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def bridge_process(workdir: Path, realtime_url: str, **env: str) -> AsyncIterator[ServerProcess]:
    """Start `python -m bridge serve` and wait until healthy; its call log lives in `workdir` unless
    CALL_LOG_URL is given, so entering again with the same `workdir` is a restart."""
    port = free_port()
    settings = {
        "REALTIME_URL": realtime_url,
        "OPENAI_API_KEY": "sk-test",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "CALL_LOG_URL": f"sqlite+aiosqlite:///{workdir}/calls.db",
        **env,
    }
    full_env = {**os.environ, **settings, "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "info"}
    process = _spawn_server(full_env, workdir / "server.log")
    server = ServerProcess(process, f"http://127.0.0.1:{port}", settings["CALL_LOG_URL"])
    try:
        await _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait, 5)


def _spawn_server(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def _wait_healthy(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert server.process.poll() is None, "the server exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(server.base_url + "/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise TimeoutError("server did not become healthy")


async def stored_call(call_log_url: str, call_id: str) -> dict[str, Any] | None:
    """The call as the call log holds it, read straight from the database."""
    store = await CallStore.open(call_log_url)
    try:
        return await store.get_call(call_id)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None,
) -> AsyncIterator[tuple[RealtimeEmulator, str]]:
    emulator = RealtimeEmulator(config)
    url = await emulator.start("127.0.0.1", 0)
    try:
        yield emulator, url
    finally:
        await emulator.stop()


def message_texts(session: EmulatedSession) -> list[str]:
    """The text of every message item the bridge created in the session (DTMF entries, injections)."""
    return [
        part.get("text", "")
        for e in session.client_events
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "message"
        for part in e["item"]["content"]
    ]


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll until `predicate()` holds, for state that changes after a call has ended."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"condition not met within {timeout_s} s")


def tone(ms: float, freq: float, rate: int = 8000, dbfs: float = -10.0) -> bytes:
    t = np.arange(int(ms * rate / 1000)) / rate
    amplitude = 32767 * 10 ** (dbfs / 20)
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def voice_like(ms: float, rate: int = 8000, seed: int = 0, dbfs: float = -16.0) -> bytes:
    """Noise shaped like speech's spectrum (falling above 500 Hz, nothing above 3.8 kHz): unlike a
    tone it never repeats, so a stretch of it can be found in a recording at exactly one place."""
    rng = np.random.default_rng(seed)
    n = int(ms * rate / 1000)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= 1 / np.sqrt(1 + (freqs / 500) ** 2)
    spectrum[freqs > 3800] = 0
    pcm = np.fft.irfft(spectrum, n)
    pcm *= 32767 * 10 ** (dbfs / 20) / np.sqrt(np.mean(pcm**2))
    return np.clip(np.rint(pcm), -32768, 32767).astype("<i2").tobytes()


def silence(ms: float, rate: int = 8000) -> bytes:
    return b"\x00\x00" * int(ms * rate / 1000)


def samples(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def similarity(a_pcm16: bytes, b_pcm16: bytes) -> float:
    """Peak normalised cross-correlation of two waveforms (1.0 = same sound at some lag)."""
    a, b = samples(a_pcm16), samples(b_pcm16)
    n = len(a) + len(b)
    spectrum = np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n))
    xcorr = np.fft.irfft(spectrum, n)
    return float(np.max(np.abs(xcorr)) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def dominant_hz(pcm16: bytes, rate: int = 8000) -> float:
    x = samples(pcm16)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def read_wav_mono_bytes_24k_to_8k(pcm24k: bytes) -> bytes:
    """Reference downsampling for comparisons: the wavfile path, independent of the call's resampler state."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.wav"
        write_wav(path, pcm24k, 24000)
        return read_wav_mono(path, 8000)


async def hear_the_greeting(caller: CallerEmulator) -> None:
    """Wait until the caller heard a second of the emulator's greeting, and check it was that."""
    await caller.wait_heard(min_ms=1000, timeout_s=10)
    heard = caller.playout.heard_pcm(include_silence=False)
    greeting_8k = read_wav_mono_bytes_24k_to_8k(greeting_pcm24k())
    assert similarity(heard, greeting_8k[: len(heard)]) > 0.9


async def talk_and_key(caller: CallerEmulator, session: EmulatedSession, digits: str) -> None:
    """The caller says a 300 Hz tone and keys `digits` (ending in #), which reach the model as text."""
    caller.say(tone(600, 300))
    for digit in digits:
        caller.press(digit)
    await eventually(lambda: any(digits in text for text in message_texts(session)), timeout_s=5)
    await caller.wait_until(lambda: caller.sent_frames >= 120, timeout_s=10)


def assert_every_frame_reached_the_model(caller: CallerEmulator, session: EmulatedSession, hz: float) -> None:
    # Every 20 ms frame at 8 kHz became exactly 480 samples of PCM16 at 24 kHz, the tone in them.
    assert len(session.appended_pcm) == caller.sent_frames * 480 * 2
    assert abs(dominant_hz(bytes(session.appended_pcm), rate=24000) - hz) < 5
