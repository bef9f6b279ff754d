"""The call log end to end: a real call through the bridge is found through the API, and a call in
progress when the process is killed is marked interrupted after a restart, while a sibling replica's
live call on the same database is left alone."""

from __future__ import annotations

import asyncio
import json
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


REPLY_TRANSCRIPT = (
    "Thanks for waiting. Your order shipped on Monday from our Denver warehouse and should reach you "
    "by Thursday; the tracking number is in the email we sent this morning."
)


@pytest.mark.parametrize(
    ("heard_ms", "transcript_complete"),
    [
        # 8 s of reply, generated at 4 times real time: in about 2 s.
        pytest.param(800, False, id="while-the-model-still-speaks"),
        pytest.param(3000, True, id="after-its-transcript-was-complete"),
    ],
)
async def test_a_reply_cut_by_the_callers_hang_up_keeps_what_was_heard(
    heard_ms: float, transcript_complete: bool
) -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, GREETING="Answer.") as bridge:
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(8000, 500, rate=24000), transcript=REPLY_TRANSCRIPT)
        )
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            await caller.wait_heard(min_ms=heard_ms, timeout_s=10)
        heard_by_caller = caller.playout.played_ms_total  # up to the moment the hang-up left

        call = await bridge.logged_call(caller.call_sid)
        assert call is not None and call["end_reason"] == "caller_hangup"
        [line] = [e["data"] for e in call["events"] if e["kind"] == "assistant_transcript"]
        assert line["interrupted"] is True and line["cut_by"] == "caller_hangup"
        # What the ledger says was heard is what the caller heard, and the line is cut to it.
        assert abs(line["heard_ms"] - heard_by_caller) <= 40
        assert REPLY_TRANSCRIPT.startswith(line["full_text"])
        assert line["text"] and line["full_text"].startswith(line["text"])
        assert len(line["text"]) < len(line["full_text"])
        assert (line["full_text"] == REPLY_TRANSCRIPT) is transcript_complete


async def test_a_call_killed_mid_way_is_marked_interrupted_after_restart(tmp_path: Path) -> None:
    # The same replica comes back (a container restarted in its pod): REPLICA_ID names it both times.
    async with running_emulator() as (_, url):
        async with bridge_process(tmp_path, url, GREETING="Hello.", REPLICA_ID="bridge-a") as server:
            caller = TwilioCallerEmulator(server.media_url)
            await caller.connect()
            await caller.wait_heard(min_ms=500, timeout_s=10)
            await eventually(lambda: server_has_logged_greeting(tmp_path), timeout_s=5)
            server.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.process.wait, 5)
            await eventually(lambda: caller.ended, timeout_s=5)
            await caller.hangup()
        async with bridge_process(tmp_path, url, REPLICA_ID="bridge-a") as restarted:
            detail = await get_json(restarted.base_url, f"/api/calls/{caller.call_sid}")
    assert detail["status"] == "ended"
    assert detail["end_reason"] == "interrupted"
    assert any(e["kind"] == "greeting_latency" for e in detail["events"])
    why = detail["events"][-1]
    assert why["kind"] == "interrupted"
    assert why["data"] == {"reason": "owner_restarted", "owner": "bridge-a", "swept_by": "bridge-a"}


async def test_restarting_one_replica_leaves_a_siblings_live_call_alone(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/calls.db"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_emulator() as (_, url),
        bridge_process(tmp_path / "a", url, CALL_LOG_URL=db, REPLICA_ID="bridge-a") as a,
        TwilioCallerEmulator(a.media_url) as on_a,
    ):
        replica_b = {"CALL_LOG_URL": db, "REPLICA_ID": "bridge-b", "GREETING": "Hello."}
        async with bridge_process(tmp_path / "b", url, **replica_b) as b:
            on_b = TwilioCallerEmulator(b.media_url)
            await on_b.connect()
            await on_b.wait_heard(min_ms=300, timeout_s=10)
            b.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(b.process.wait, 5)
            await on_b.hangup()
        async with bridge_process(tmp_path / "b", url, CALL_LOG_URL=db, REPLICA_ID="bridge-b") as b:
            killed = await get_json(b.base_url, f"/api/calls/{on_b.call_sid}")
            live = await get_json(b.base_url, f"/api/calls/{on_a.call_sid}")
        assert (killed["status"], killed["end_reason"]) == ("ended", "interrupted")
        assert (live["status"], live["owner_id"]) == ("in_progress", "bridge-a")
        assert not on_a.ended
        await on_a.hangup()
        for _ in range(100):  # its own end, as it happened, once its recorder wrote it
            call = await get_json(a.base_url, f"/api/calls/{on_a.call_sid}")
            if call["status"] == "ended":
                break
            await asyncio.sleep(0.05)
        assert (call["status"], call["end_reason"]) == ("ended", "caller_hangup")


def server_has_logged_greeting(workdir: Path) -> bool:
    """The greeting's latency record was queued; the recorder writes within a few ms."""
    return b'"greeting latency"' in (workdir / "server.log").read_bytes()


async def test_a_webhook_whose_stream_never_connected_leaves_a_call_in_the_log() -> None:
    async with running_emulator() as (_, url), running_bridge(url) as bridge:
        bridge.bridge.awaited.ttl_s = 0.5  # the prepared session's life, shortened for the test

        async def twilio(path: str, call_sid: str) -> str:
            form = {"CallSid": call_sid, "From": "+14155550100", "To": "+18005551212", "Direction": "inbound"}
            async with aiohttp.ClientSession() as http, http.post(bridge.base_url + path, data=form) as r:
                assert r.status == 200
                return await r.text()

        # Twilio fetched the TwiML, then never opened the stream (a firewall, a proxy, a bad URL) ...
        assert "<Stream" in await twilio("/twilio/voice", "CAnever-timed-out")
        # ... or gave up on it at once and asked what next.
        await twilio("/twilio/voice", "CAnever-asked")
        assert "<Hangup" in await twilio("/twilio/connect-done", "CAnever-asked")
        # A call whose stream did connect, asked about afterwards, keeps its own record.
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            await eventually(lambda: caller.call_sid in bridge.bridge.active_calls)
        await twilio("/twilio/connect-done", caller.call_sid)

        await eventually(lambda: not bridge.bridge.awaited, timeout_s=5)
        await eventually(lambda: not bridge.bridge.active_calls)
        await bridge.bridge.call_log.flush()  # type: ignore[attr-defined]
        listing = await get_json(bridge.base_url, "/api/calls?end_reason=stream_never_connected")
        found = {call["call_id"]: call for call in listing["calls"]}
        assert set(found) == {"CAnever-timed-out", "CAnever-asked"}
        for call in found.values():
            assert (call["status"], call["from_number"], call["direction"]) == (
                "ended",
                "+*******0100",
                "inbound",
            )
        connected = await get_json(bridge.base_url, f"/api/calls/{caller.call_sid}")
        assert connected["end_reason"] == "caller_hangup"


async def test_the_start_up_log_names_the_pages_and_the_address_alone_leads_to_them(tmp_path: Path) -> None:
    async with running_emulator() as (_, url), bridge_process(tmp_path, url) as server:
        port = server.base_url.rsplit(":", 1)[1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.base_url + "/", allow_redirects=False) as r,
        ):
            assert (r.status, r.headers["Location"]) == (302, "/calls")
        log = (tmp_path / "server.log").read_text()
    pages = next(json.loads(line) for line in log.splitlines() if '"event": "pages"' in line)
    assert pages["call_log"] == f"http://127.0.0.1:{port}/calls"
    assert pages["live_board"] == f"http://127.0.0.1:{port}/calls/live"
    assert pages["softphone"] == f"http://127.0.0.1:{port}/phone"


async def test_without_transcription_the_log_says_how_long_the_caller_spoke() -> None:
    async with running_emulator() as (_, url), running_bridge(url, INPUT_TRANSCRIPTION_MODEL="off") as bridge:
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            utterance = caller.say(tone(1500, 400), at_ms=1000)  # after a second of silence
            await caller.wait_said(utterance, timeout_s=5)
            await caller.wait_heard(min_ms=1000, timeout_s=10)  # the echo: the turn is over
        call = await bridge.logged_call(caller.call_sid)
    assert call is not None
    [turn] = [e for e in call["events"] if e["kind"] in ("caller_spoke", "caller_transcript")]
    assert turn["kind"] == "caller_spoke" and turn["data"]["words"] == "off"
    assert abs(turn["data"]["spoken_ms"] - 1500) <= 150, turn["data"]
