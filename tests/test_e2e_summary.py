"""The post-call summary reaches the call log after the caller hung up, without holding the line."""

from __future__ import annotations

import json

import pytest

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import ScriptedReply
from tests.e2e import eventually, running_bridge, running_emulator, tone

pytestmark = pytest.mark.e2e


async def test_the_summary_lands_in_the_call_log() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet.") as bridge,
    ):
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=tone(600, 500, rate=24000), transcript="Hello there.")
        )
        answer = {"summary": "The caller said hello.", "intent": "a greeting", "disposition": "resolved"}
        emulator.script_reply(ScriptedReply(transcript=json.dumps(answer)))
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            await caller.wait_heard(min_ms=500, timeout_s=10)
            await caller.wait_quiet(quiet_ms=300, timeout_s=10)
        session = emulator.sessions[0]
        await eventually(lambda: not bridge.bridge.active_calls, timeout_s=10)
        summary_request = next(
            e for e in session.client_events if (e.get("response") or {}).get("conversation") == "none"
        )
        assert summary_request["response"]["metadata"] == {"purpose": "post_call_summary"}
        await bridge.bridge.call_log.flush()  # type: ignore[attr-defined]
        call = await bridge.bridge.store.get_call(caller.call_sid)  # type: ignore[union-attr]
    assert call is not None and call["end_reason"] == "caller_hangup"
    assert call["summary"].startswith("The caller said hello.") and call["disposition"] == "resolved"


async def test_an_answer_cut_off_by_the_callers_hang_up_is_cancelled_before_the_summary() -> None:
    """Nobody will hear the rest of it, and it is paid for: the bridge cancels it, then asks for the
    summary, and the summary is the summary (not the cancelled answer's words)."""
    transcribed = {"INPUT_TRANSCRIPTION_MODEL": "gpt-4o-mini-transcribe"}  # what the caller said is known
    async with running_emulator() as (emulator, url), running_bridge(url, **transcribed) as bridge:
        answer = ScriptedReply(
            audio_pcm24k=tone(6000, 500, rate=24000), transcript="Our hours are nine to five."
        )
        emulator.script_reply(answer)
        summary = {"summary": "The caller asked for the hours.", "intent": "hours", "disposition": "resolved"}
        emulator.script_reply(ScriptedReply(transcript=json.dumps(summary)))
        async with TwilioCallerEmulator(bridge.media_url) as caller:
            session = await emulator.wait_for_session()
            caller.say(tone(500, 400))
            await caller.wait_heard(min_ms=300, timeout_s=10)  # the answer is still being generated
            assert session.responses[0].status == "in_progress"
        call = await bridge.logged_call(caller.call_sid)
        assert call is not None and call["summary"].startswith("The caller asked for the hours.")
        cut_off = session.responses[0]
        assert (cut_off.status, cut_off.cancel_reason) == ("cancelled", "client_cancelled")
        kinds = [
            (e["type"], e.get("response_id") or (e.get("response") or {}).get("conversation"))
            for e in session.client_events
            if e["type"] in ("response.cancel", "response.create")
        ]
        assert kinds == [("response.cancel", cut_off.id), ("response.create", "none")]
        assert session.rejected == []
