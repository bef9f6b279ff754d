"""The call page's recording player in real headless Chromium: a recorded call with a caller line, an
assistant line the caller cut short and the barge-in, each at a known place in the audio. The player
loads the audio, draws both channels' waveforms where the sound is, marks the lines, and clicking a line
moves the audio to that line's time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.audio import PCMU_8K
from bridge.calllog import CallRecorder
from tests.calllog.cdp import Page, browser_page
from tests.calllog.sample_calls import start
from tests.e2e import ADMIN_TOKEN, RunningBridge, running_bridge
from tests.recording.helpers import T0, noise

pytestmark = pytest.mark.browser

NO_UPSTREAM = "ws://127.0.0.1:9/v1/realtime"
STARTED_AT = datetime.now(UTC).replace(microsecond=250_000) - timedelta(minutes=5)
CALLER_SPEAKS = (1.0, 2.0)  # seconds into the recording
ASSISTANT_SPEAKS = (2.5, 4.0)  # then the caller cut in
LENGTH_S = 5.0


async def recorded_call(app: RunningBridge, call_id: str) -> None:
    """A call as the tap records it, with its lines logged where they are in the audio."""
    recordings, log = app.bridge.recordings, app.bridge.call_log
    assert recordings is not None and isinstance(log, CallRecorder)
    start(log, call_id, STARTED_AT)
    recording = recordings.begin(call_id, PCMU_8K, T0, STARTED_AT)
    first, last = (round(s * 1000) for s in CALLER_SPEAKS)
    audio = noise(8 * (last - first), 1)
    for k in range(len(audio) // 160):
        recording.caller(audio[k * 160 : (k + 1) * 160], T0 + first + 20 * (k + 1))
    begin, end = (round(s * 1000) for s in ASSISTANT_SPEAKS)
    recording.assistant(noise(8 * (end - begin), 2), T0 + begin)

    def at(seconds: float) -> datetime:
        return STARTED_AT + timedelta(seconds=seconds)

    log.event(
        call_id, "caller_transcript", {"item_id": "u1", "text": "Where is my order?"}, at(CALLER_SPEAKS[0])
    )
    said = {
        "item_id": "a1",
        "text": "Let me look that",
        "full_text": "Let me look that up.",
        "interrupted": True,
    }
    log.event(call_id, "assistant_transcript", said, at(ASSISTANT_SPEAKS[0]))
    barge = {"item_id": "a1", "sent_ms": 3000, "heard_ms": 1500, "reaction_ms": 12.0, "items_truncated": 1}
    log.event(call_id, "barge_in", barge, at(ASSISTANT_SPEAKS[1]))
    log.call_ended(call_id, "caller_hangup", at=at(LENGTH_S))
    recordings.end(recording, T0 + LENGTH_S * 1000)
    await recordings.idle()
    await log.flush()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[str]:
    env = {"RECORDING": "all", "RECORDING_DIR": str(tmp_path / "recordings")}
    async with running_bridge(NO_UPSTREAM, **env) as app:
        await recorded_call(app, "CA-player")
        yield app.base_url


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    # A click dispatched by a script is no user gesture: let the page start sound anyway.
    async with browser_page(tmp_path / "chromium", ["--autoplay-policy=no-user-gesture-required"]) as page:
        yield page


async def signed_in(page: Page, url: str) -> None:
    await page.goto(url)
    await page.wait_for("document.querySelector('#token') !== null")
    await page.evaluate(f"document.querySelector('#token').value = {json.dumps(ADMIN_TOKEN)}")
    await page.evaluate("document.querySelector('.login-card form').submit()")
    await page.wait_for("location.pathname.startsWith('/calls/') && document.readyState === 'complete'")


# Which canvas columns hold waveform, per lane (caller above, assistant below), as fractions of the
# width: pixels in the colour of audio not yet played, in the lane's middle rows (away from the marks
# drawn at its top; the playhead and the barge-in marks have colours of their own).
DRAWN_COLUMNS = """
(() => {
  const c = document.querySelector('#recording canvas.wave');
  const ctx = c.getContext('2d');
  const lanes = {};
  for (const [name, from, to] of [['caller', 0.15, 0.35], ['assistant', 0.65, 0.85]]) {
    const y0 = Math.floor(c.height * from), rows = Math.floor(c.height * (to - from));
    const data = ctx.getImageData(0, y0, c.width, rows).data;
    const drawn = [];
    for (let x = 0; x < c.width; x++) {
      let any = false;
      for (let y = 0; y < rows && !any; y++) {
        const i = (y * c.width + x) * 4;
        any = data[i] === 195 && data[i + 1] === 205 && data[i + 2] === 216 && data[i + 3] === 255;
      }
      if (any) drawn.push(x / c.width);
    }
    lanes[name] = drawn;
  }
  return lanes;
})()
"""


async def test_the_player_draws_both_channels_and_a_line_click_seeks(site: str, page: Page) -> None:
    await signed_in(page, f"{site}/calls/CA-player")
    await page.wait_for("document.querySelector('#recording audio') !== null")
    assert await page.evaluate("document.querySelector('#recording').hidden") is False
    # The audio loads (FLAC, from the API with the page's session) and lasts as long as the recording.
    await page.wait_for("document.querySelector('#recording audio').readyState >= 1")
    duration = await page.evaluate("document.querySelector('#recording audio').duration")
    assert abs(duration - LENGTH_S) < 0.05
    assert "flac" in await page.evaluate("document.querySelector('#recording audio').currentSrc")

    # The waveform is drawn from the peaks, each channel where it has sound and nowhere else.
    await page.wait_for("document.querySelector('#recording canvas.wave').width > 100")
    await page.wait_for(f"({DRAWN_COLUMNS}).caller.length > 3")
    lanes = await page.evaluate(DRAWN_COLUMNS)
    for name, (begin, end) in (("caller", CALLER_SPEAKS), ("assistant", ASSISTANT_SPEAKS)):
        drawn = lanes[name]
        assert begin / LENGTH_S - 0.01 <= min(drawn) <= begin / LENGTH_S + 0.01, name
        assert end / LENGTH_S - 0.01 <= max(drawn) <= end / LENGTH_S + 0.01, name
        assert (max(drawn) - min(drawn)) * LENGTH_S == pytest.approx(end - begin, abs=0.05)

    # Clicking a line plays the recording from that line.
    lines = "document.querySelectorAll('#timeline [data-recording-at]')"
    await page.wait_for(f"{lines}.length === 2")  # the barge-in shows in the cut line
    for index, expected in ((0, CALLER_SPEAKS[0]), (1, ASSISTANT_SPEAKS[0]), (0, CALLER_SPEAKS[0])):
        await page.evaluate(f"{lines}[{index}].querySelector('.said, time').click()")
        await page.wait_for(
            f"Math.abs(document.querySelector('#recording audio').currentTime - {expected}) < 0.3"
        )
        await page.wait_for(f"{lines}[{index}].classList.contains('now-playing')")
    # And it plays on from there, the lines following it: the caller's line, then the assistant's.
    audio = "document.querySelector('#recording audio')"
    await page.wait_for(f"!{audio}.paused && {audio}.currentTime > {ASSISTANT_SPEAKS[0] + 0.1}", within=10)
    await page.wait_for(f"{lines}[1].classList.contains('now-playing')")
    assert not await page.evaluate(f"{lines}[0].classList.contains('now-playing')")
    await page.screenshot(Path("/tmp/bridge-screenshots/call-recording.png"))
