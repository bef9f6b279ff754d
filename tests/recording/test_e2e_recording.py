"""Recorded calls end to end over real loopback sockets, on a line with delay, jitter and carrier
buffering: the recording, fetched as a browser would (GET /api/calls/{id}/recording?format=wav), holds
on its right channel the very samples the carrier emulator played to the caller, where it played them,
with the silence of a model stall and the cut of a barge-in; on its left channel the very samples the
caller sent, where they were spoken."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.sim.carrier_emulator import CallerEmulator, LineConditions, TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatorConfig, ScriptedReply
from bridge.wavfile import read_wav_mono, write_wav
from tests.carriers.test_vonage_e2e import answered_caller
from tests.e2e import ADMIN_TOKEN, running_bridge, running_emulator, similarity, voice_like
from tests.recording.helpers import Alignment, ReadBack, Stretch, assert_recorded_as_heard, pcm, read_back

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MOBILE = LineConditions(uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=15, playout_delay_ms=60, seed=7)
STALL = EmulatorConfig(stall_after_ms=800, stall_ms=1500, speed=4.0)  # 800 ms of audio, then 1.5 s of nothing


def recorded_as_heard(back: ReadBack, caller: CallerEmulator) -> Alignment:
    """The truth is what the carrier emulator played and what the caller emulator said."""
    assert back.rate == caller.line.rate
    heard = [Stretch(s.start_ms, pcm(caller.line, bytes(s.audio))) for s in caller.playout.slices]
    said = []
    for utterance in caller.utterances:
        assert utterance.spoken_start_ms is not None
        said.append(Stretch(utterance.spoken_start_ms, pcm(caller.line, utterance.audio)))
    return assert_recorded_as_heard(back, heard, said, clears=len(caller.playout.clears))


async def stall_then_barge_in(caller: CallerEmulator) -> None:
    """The greeting stalls after 800 ms; 1.5 s of it heard, the caller talks over it; the model's
    answer (its echo of the caller) is heard out; the caller hangs up."""
    start = caller.started_ms or 0.0
    await caller.wait_heard(min_ms=1500, timeout_s=20, since_ms=start)
    utterance = caller.say(voice_like(400, seed=2))
    await caller.wait_said(utterance, timeout_s=5)
    await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
    await caller.wait_heard(min_ms=300, timeout_s=10, since_ms=caller.playout.clears[0].received_at_ms)
    await caller.wait_quiet(500, timeout_s=10)


def announcement() -> ScriptedReply:
    return ScriptedReply(audio_pcm24k=voice_like(8000, rate=24000, seed=1), transcript="announcement")


async def test_a_twilio_call_is_recorded_as_the_caller_heard_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"RECORDING": "all", "RECORDING_DIR": str(tmp_path), "GREETING": "Read the long announcement."}
    async with running_emulator(STALL) as (emulator, url), running_bridge(url, **env) as bridge:
        emulator.script_reply(announcement())
        caller = TwilioCallerEmulator(bridge.media_url, line=MOBILE)
        async with caller:
            await stall_then_barge_in(caller)
        back = await read_back(bridge.base_url, caller.call_sid, AUTH)
    assert caller.protocol_errors == []
    # What the caller heard: the greeting until the stall, its rest until they cut in, the answer.
    assert len(caller.playout.slices) == 3 and len(caller.playout.clears) == 1
    alignment = recorded_as_heard(back, caller)
    with capsys.disabled():
        print("\n" + alignment.line("twilio, 8 kHz µ-law"))
    # The recording lasts until the line closed: the trailing silence is kept.
    assert back.call["recording"]["duration_s"] >= (caller.playout.now_ms - back.started_ms) / 1000 - 0.2


async def test_a_vonage_wideband_call_asked_to_be_recorded_is_recorded_at_16_khz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "CARRIERS": "vonage",
        "RECORDING": "requested",
        "RECORDING_DIR": str(tmp_path),
        "GREETING": "Read the long announcement.",
    }
    async with running_emulator(STALL) as (emulator, url), running_bridge(url, **env) as bridge:
        emulator.script_reply(announcement())
        uuid = "aaaaaaaa-0000-0000-0000-00000000ec01"
        caller = await answered_caller(bridge, uuid, line=MOBILE, record=True)
        async with caller:
            await stall_then_barge_in(caller)
        back = await read_back(bridge.base_url, uuid, AUTH)
    assert caller.protocol_errors == []
    assert back.rate == 16000
    alignment = recorded_as_heard(back, caller)
    with capsys.disabled():
        print("\n" + alignment.line("vonage, 16 kHz L16"))


async def test_under_requested_a_call_that_does_not_ask_is_not_recorded(tmp_path: Path) -> None:
    env = {"CARRIERS": "vonage", "RECORDING": "requested", "RECORDING_DIR": str(tmp_path)}
    async with running_emulator() as (_, url), running_bridge(url, **env) as bridge:
        uuid = "aaaaaaaa-0000-0000-0000-00000000ec02"
        caller = await answered_caller(bridge, uuid)
        async with caller:
            await caller.wait_until(lambda: caller.sent_frames >= 25, timeout_s=5)
        row = await bridge.logged_call(uuid)
        await asyncio.sleep(0.2)
    assert row is not None and row["recording_status"] is None
    assert not any(
        path.suffix == ".wav" for path in await asyncio.to_thread(lambda: list(tmp_path.rglob("*")))
    )


async def test_the_apology_is_recorded_after_what_was_heard_of_the_greeting(tmp_path: Path) -> None:
    env = {"RECORDING": "all", "RECORDING_DIR": str(tmp_path), "GREETING": "Greet."}
    async with running_emulator() as (emulator, url), running_bridge(url, **env) as bridge:
        caller = TwilioCallerEmulator(bridge.media_url)
        async with caller:
            await caller.wait_heard(min_ms=300, timeout_s=10)
            emulator.config.refuse_status = 503  # the session is lost for good: no replacement
            await emulator.sessions[0].close(1011)
            await caller.wait_closed(timeout_s=20)
        back = await read_back(bridge.base_url, caller.call_sid, AUTH)
    heard_after_clear = caller.playout.played_ms_since(caller.playout.clears[0].received_at_ms)
    assert heard_after_clear > 3000  # the apology, whole
    recorded_as_heard(back, caller)


async def test_the_notice_is_heard_whole_before_the_greeting_even_when_the_caller_talks_over_it(
    tmp_path: Path,
) -> None:
    notice = tmp_path / "notice.wav"
    write_wav(notice, voice_like(2000, rate=16000, seed=3), 16000)
    env = {
        "RECORDING": "all",
        "RECORDING_DIR": str(tmp_path / "recordings"),
        "RECORDING_NOTICE": str(notice),
        "GREETING": "Read the long announcement.",
    }
    async with running_emulator() as (emulator, url), running_bridge(url, **env) as bridge:
        emulator.script_reply(announcement())
        caller = TwilioCallerEmulator(bridge.media_url, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            await caller.wait_heard(min_ms=800, timeout_s=10)
            hello = caller.say(voice_like(400, seed=4))  # "hello?" over the notice
            await caller.wait_said(hello, timeout_s=5)
            # The notice plays on; then the model's answer to "hello?" (its greeting was never heard).
            await caller.wait_heard(min_ms=2300, timeout_s=15)
            await caller.wait_quiet(500, timeout_s=10)
        back = await read_back(bridge.base_url, caller.call_sid, AUTH)
        await bridge.bridge.call_log.flush()  # type: ignore[attr-defined]
        logged = await bridge.bridge.store.get_call(caller.call_sid)  # type: ignore[union-attr]
    assert caller.playout.clears == []  # nothing was cut
    # The model had its greeting ready behind the notice; it is told the caller heard none of it.
    assert [t["audio_end_ms"] for t in session.truncations] == [0] and session.rejected == []
    first = caller.playout.slices[0]
    expected = read_wav_mono(notice, 8000)  # what the notice is on a phone line
    heard = caller.playout.heard_pcm(include_silence=False, to_ms=first.start_ms + 2000)
    assert similarity(heard, expected) > 0.9  # the notice came first, whole
    recorded_as_heard(back, caller)
    assert logged is not None
    notes = [e["data"] for e in logged["events"] if e["data"].get("source") == "recording_notice"]
    assert notes == [{"text": "Recording notice played", "source": "recording_notice", "heard_whole": True}]
