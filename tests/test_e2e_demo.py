"""Demo mode (no API key: the built-in emulator answers) shows what a real call shows: both sides of
the conversation in the call log, and an operator's words said when they ask for them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bridge.config import load_settings
from bridge.server import BRIDGE_KEY, create_app
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.emulator_audio import murmur_pcm24k
from tests.e2e import eventually, serving, tone

pytestmark = pytest.mark.e2e

TOKEN = "demo-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def post(base_url: str, path: str, body: dict) -> dict:
    async with aiohttp.ClientSession() as http, http.post(base_url + path, json=body, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_demo_mode_shows_both_sides_and_says_an_operators_words(tmp_path: Path) -> None:
    settings = load_settings(
        {"CALL_LOG_URL": f"sqlite+aiosqlite:///{tmp_path}/calls.db", "ADMIN_TOKEN": TOKEN}
    )
    assert settings.demo_mode and settings.transcription_model  # both sides, by default
    app = create_app(settings)
    bridge = app[BRIDGE_KEY]
    async with serving(app) as base_url:
        media_url = base_url.replace("http://", "ws://") + "/twilio/media"
        async with TwilioCallerEmulator(media_url) as caller:
            await caller.wait_heard(min_ms=1000, timeout_s=10)  # the demo greets
            speech = caller.say(tone(900, 300))  # talks over the greeting
            await caller.wait_said(speech, timeout_s=10)
            await caller.wait_heard(min_ms=200, timeout_s=15, since_ms=caller.clock())  # the echo
            await caller.wait_quiet(quiet_ms=500, timeout_s=20)

            async def heard_saying(action: str, body: dict) -> float:
                """How much the caller heard of the assistant's answer to this operator action."""
                since = caller.clock()
                await post(base_url, f"/api/calls/{caller.call_sid}/{action}", body)
                await caller.wait_heard(min_ms=500, timeout_s=10, since_ms=since)
                await caller.wait_quiet(quiet_ms=500, timeout_s=20)
                return caller.playout.played_ms_since(since)

            words = "Please hold, an agent is coming."
            heard_say = await heard_saying("say", {"text": words})
            note = "A VIP caller."
            heard_note = await heard_saying("inject", {"text": note, "respond": True})
        await eventually(lambda: not bridge.active_calls, timeout_s=10)
        await bridge.call_log.flush()  # type: ignore[attr-defined]
        assert bridge.store is not None
        logged = await bridge.store.get_call(caller.call_sid)

    assert logged is not None
    lines = [(e["kind"], e["data"].get("text")) for e in logged["events"] if e["kind"].endswith("transcript")]
    # The caller's turn is there, saying honestly that the emulator heard no words.
    caller_lines = [text for kind, text in lines if kind == "caller_transcript"]
    assert (
        caller_lines
        and "no speech recognition" in caller_lines[0]
        and "The caller spoke for" in caller_lines[0]
    )
    # The operator's words are what the assistant said, and they were heard: a hum as long as saying them.
    said = [text for kind, text in lines if kind == "assistant_transcript"]
    assert words in said and note in said
    for text, heard in ((words, heard_say), (note, heard_note)):
        expected_ms = murmur_pcm24k(text).size / 24
        assert abs(heard - expected_ms) < 400, (text, heard, expected_ms)
    # The emulator's summary says whose it is.
    assert logged["summary"] and "summarised by the emulator" in logged["summary"]
    assert logged["intent"] == "trying the bridge demo" and logged["disposition"] == "resolved"
