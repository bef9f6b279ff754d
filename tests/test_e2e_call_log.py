"""The call log end to end: a real call through the bridge is found through the API, and a call in
progress when the process is killed is marked interrupted after a restart."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import ADMIN_TOKEN, bridge_process, eventually, running_bridge, running_emulator, tone

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def get_json(base_url: str, path: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(base_url + path, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_call_with_a_barge_in_is_found_with_its_transcript(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/calls.db"
    async with (
        running_emulator() as (emulator, url),
        running_bridge(
            url, CALL_LOG_URL=db, GREETING="Announce.", INPUT_TRANSCRIPTION_MODEL="gpt-4o-mini-transcribe"
        ) as bridge,
    ):
        emulator.script_reply(
            ScriptedReply(
                audio_pcm24k=tone(6000, 500, rate=24000), transcript="Welcome to the long announcement"
            )
        )
        caller = TwilioCallerEmulator(
            bridge.media_url, custom_parameters={"from": "+14155550123", "to": "+18005551212"}
        )
        async with caller:
            await caller.wait_heard(min_ms=1200, timeout_s=10)
            utterance = caller.say(tone(700, 1200))
            await caller.wait_said(utterance, timeout_s=5)
            await caller.wait_until(lambda: bool(caller.playout.clears), timeout_s=5)
            await caller.wait_heard(
                min_ms=500, timeout_s=10, since_ms=caller.playout.clears[0].received_at_ms
            )
            await caller.wait_quiet(quiet_ms=500, timeout_s=10)
        await eventually(lambda: not bridge.bridge.active_calls)
        await bridge.bridge.call_log.flush()  # type: ignore[attr-defined]

        listing = await get_json(bridge.base_url, "/api/calls?number=0123")
        [call] = listing["calls"]
        assert call["call_id"] == caller.call_sid
        assert call["end_reason"] == "caller_hangup"
        assert "0123" in call["from_number"] and "555" not in call["from_number"]  # masked
        detail = await get_json(bridge.base_url, f"/api/calls/{caller.call_sid}")
        kinds = [e["kind"] for e in detail["events"]]
        assert "barge_in" in kinds and "greeting_latency" in kinds
        barge = next(e for e in detail["events"] if e["kind"] == "barge_in")
        assert 0 < barge["data"]["heard_ms"] < barge["data"]["sent_ms"]
        assistant = [e["data"] for e in detail["events"] if e["kind"] == "assistant_transcript"]
        assert assistant[0]["interrupted"] is True
        assert (
            "Welcome".startswith(assistant[0]["text"][:7])
            and assistant[0]["text"] != assistant[0]["full_text"]
        )
        assert any(e["kind"] == "caller_transcript" for e in detail["events"])

        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{bridge.base_url}/api/calls/{caller.call_sid}/transcript", headers=AUTH
            ) as r:
                transcript = await r.text()
            async with http.get(f"{bridge.base_url}/api/calls") as r:
                assert r.status == 401
        assert "Assistant:" in transcript and "Caller:" in transcript


async def test_a_call_killed_mid_way_is_marked_interrupted_after_restart(tmp_path: Path) -> None:
    async with running_emulator() as (_, url):
        async with bridge_process(tmp_path, url, GREETING="Hello.") as server:
            caller = TwilioCallerEmulator(server.media_url)
            await caller.connect()
            await caller.wait_heard(min_ms=500, timeout_s=10)
            await eventually(lambda: server_has_logged_greeting(tmp_path), timeout_s=5)
            server.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.process.wait, 5)
            await eventually(lambda: caller.ended, timeout_s=5)
            await caller.hangup()
        async with bridge_process(tmp_path, url) as restarted:
            detail = await get_json(restarted.base_url, f"/api/calls/{caller.call_sid}")
    assert detail["status"] == "ended"
    assert detail["end_reason"] == "interrupted"
    assert any(e["kind"] == "greeting_latency" for e in detail["events"])


def server_has_logged_greeting(workdir: Path) -> bool:
    """The greeting's latency record was queued; the recorder writes within a few ms."""
    return b'"greeting latency"' in (workdir / "server.log").read_bytes()
