"""Fixtures of the softphone suite: headless Chromium with a fake microphone, and the bridge behind /phone.

Needs Debian's `chromium` (`bash .ci/chromium.sh` installs it); BRIDGE_SKIP_BROWSER=1 skips the browser tests.
"""

from __future__ import annotations

import contextlib
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bridge.audio import StreamingResampler
from bridge.calllog.auth import COOKIE_NAME, OperatorAuth
from bridge.config import load_settings
from bridge.server import BRIDGE_KEY, create_app
from bridge.sim.realtime_emulator import RealtimeEmulator
from tests.calllog.cdp import Page, browser_page

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "softphone-test-token-0123456789"
AUTH = OperatorAuth(ADMIN_TOKEN)
MIC_RATE = 48000


def session_cookie() -> str:
    """The call log's sign-in cookie for ADMIN_TOKEN, as its login form would set it."""
    response = web.Response()
    AUTH.set_session(make_mocked_request("POST", "/calls/login"), response, "admin")
    return response.cookies[COOKIE_NAME].value


def write_microphone_wav(path: Path, *, lead_in_s: float, tail_s: float) -> Path:
    """The caller's recorded speech at 48 kHz between silences; Chromium loops it as the microphone."""
    with wave.open(str(REPO / "bridge/sim/assets/caller.wav"), "rb") as source:
        speech = source.readframes(source.getnframes())
        rate = source.getframerate()
    resampler = StreamingResampler(rate, MIC_RATE)
    pcm = resampler.process(speech) + resampler.flush()
    pad = np.zeros(int(lead_in_s * MIC_RATE), dtype="<i2").tobytes()
    tail = np.zeros(int(tail_s * MIC_RATE), dtype="<i2").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(pad + pcm + tail)
    return path


@pytest.fixture
def microphone_wav(tmp_path: Path) -> Path:
    # Silence first, so the greeting plays a while before the caller talks over it.
    return write_microphone_wav(tmp_path / "microphone.wav", lead_in_s=2.5, tail_s=1.5)


@pytest.fixture
async def page(tmp_path: Path, microphone_wav: Path) -> AsyncIterator[Page]:
    """Chromium as the call-log tests launch it, plus a fake microphone playing `microphone_wav`."""
    flags = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav}",
        "--autoplay-policy=no-user-gesture-required",
    )
    async with browser_page(tmp_path / "chromium", flags) as page:
        yield page


async def open_phone(page: Page, base_url: str) -> None:
    """Signed in (the call log's cookie), on /phone, ready to call."""
    await page.send("Network.setCookie", name=COOKIE_NAME, value=session_cookie(), url=base_url)
    await page.goto(f"{base_url}/phone")
    await page.wait_for("window.softphone !== undefined && window.softphone.state === 'idle'")


async def softphone_state(page: Page) -> dict[str, Any]:
    return await page.evaluate("({...window.softphone})")


@dataclass
class RecordingCallLog:
    """A call-log sink that keeps what the bridge told it."""

    started: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)

    async def claim_call(self, **fields: Any) -> bool:
        self.started.append(fields)
        return True

    def event(self, call_id: str, kind: str, data: dict[str, Any], at: datetime | None = None) -> None:
        self.events.append((call_id, kind, data))

    def usage(self, call_id: str, usage: dict[str, Any]) -> None:
        pass

    def call_ended(self, call_id: str, reason: str) -> None:
        self.ended.append((call_id, reason))


@dataclass
class SoftphoneBridge:
    base_url: str
    emulator: RealtimeEmulator
    call_log: RecordingCallLog
    app: web.Application


@contextlib.asynccontextmanager
async def running_softphone_bridge(**env: str) -> AsyncIterator[SoftphoneBridge]:
    """The real bridge app (softphone routes included), relaying to the Realtime emulator."""
    emulator = RealtimeEmulator()
    realtime_url = await emulator.start("127.0.0.1", 0)
    base = {"REALTIME_URL": realtime_url, "OPENAI_API_KEY": "sk-test", "ADMIN_TOKEN": ADMIN_TOKEN}
    settings = load_settings({**base, **env})
    call_log = RecordingCallLog()
    app = create_app(settings, call_log=call_log)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield SoftphoneBridge(f"http://{host}:{port}", emulator, call_log, app)
    finally:
        # A call left open by a failed test would hold the runner's shutdown for its full timeout.
        for pump in list(app[BRIDGE_KEY].active_calls.values()):
            pump.end("shutdown")
        await runner.cleanup()
        await emulator.stop()
