"""Barge-in, proven end to end on real lines: the carrier emulator plays in real time and says what
the caller actually heard; the Realtime emulator validates every truncate like the real service."""

from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.sim.carrier_emulator import LineConditions, TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatedSession, EmulatorConfig, RealtimeEmulator, ScriptedReply
from tests.e2e import running_bridge, running_emulator, samples, tone

pytestmark = pytest.mark.e2e

REPLY_HZ = 500.0  # the assistant's voice in these tests
CALLER_HZ = 1200.0  # the caller's


def reply_audio(seconds: float) -> bytes:
    """An assistant reply at 24 kHz: a 500 Hz tone, loud enough to hear, quiet enough not to clip."""
    return tone(seconds * 1000, REPLY_HZ, rate=24000, dbfs=-12)


@dataclass
class BargeIn:
    reaction_ms: float  # speech_started leaving the emulator -> clear reaching the carrier
    audio_end_ms: int  # what the bridge told the model the caller heard
    played_ms: float  # what the carrier emulator actually played of that item

    @property
    def error_ms(self) -> float:
        return self.audio_end_ms - self.played_ms


def speech_started_times(session: EmulatedSession) -> list[float]:
    return [at for at, event in session.sent_log if event == "input_audio_buffer.speech_started"]


def band_energy(pcm16: bytes, hz: float, rate: int = 8000) -> float:
    x = samples(pcm16)
    if len(x) < 64:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) < 40].sum())


async def interrupt_after(caller: TwilioCallerEmulator, heard_ms: float, since_ms: float) -> float:
    """Wait until the caller heard `heard_ms` of the reply, then talk over it; returns when they did."""
    await caller.wait_heard(min_ms=heard_ms, timeout_s=20, since_ms=since_ms)
    utterance = caller.say(tone(400, CALLER_HZ))
    await caller.wait_said(utterance, timeout_s=5)
    return caller.clock()


def measure(caller: TwilioCallerEmulator, session: EmulatedSession, index: int, since_ms: float) -> BargeIn:
    clear = caller.playout.clears[index]
    truncate = session.truncations[index]
    started = speech_started_times(session)[index]
    return BargeIn(
        reaction_ms=clear.received_at_ms - started,
        audio_end_ms=truncate["audio_end_ms"],
        played_ms=caller.playout.played_ms_between(since_ms, clear.received_at_ms),
    )


async def one_barge_in(
    *,
    line: LineConditions,
    emulator_config: EmulatorConfig | None = None,
    interrupt_at_ms: float = 1500,
    reply_s: float = 8.0,
    env: dict[str, str] | None = None,
) -> tuple[BargeIn, EmulatedSession]:
    async with (
        running_emulator(emulator_config) as (emulator, url),
        running_bridge(url, GREETING="Read the long announcement.", **(env or {})) as bridge,
    ):
        emulator.script_reply(ScriptedReply(audio_pcm24k=reply_audio(reply_s), transcript="announcement"))
        caller = TwilioCallerEmulator(bridge.media_url, line=line)
        async with caller:
            session = await emulator.wait_for_session()
            await interrupt_after(caller, interrupt_at_ms, since_ms=caller.started_ms or 0)
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 1, timeout_s=5)
            await asyncio.sleep(0.3)  # anything the bridge wrongly lets through would arrive now
            result = measure(caller, session, 0, since_ms=caller.started_ms or 0)
            after_clear = caller.playout.heard_pcm(
                include_silence=False, from_ms=caller.playout.clears[0].received_at_ms
            )
        assert caller.protocol_errors == []
        assert session.rejected == [], "the Realtime emulator rejected a client event"
        # Nothing of the interrupted reply played after the clear (the caller's own echo may have).
        assert band_energy(after_clear, REPLY_HZ) < 1e-3 * max(band_energy(after_clear, CALLER_HZ), 1.0)
        return result, session


IDEAL = LineConditions()
MOBILE = LineConditions(uplink_delay_ms=40, downlink_delay_ms=40, jitter_ms=15, playout_delay_ms=60, seed=7)


async def test_interrupting_an_8s_reply_at_1_5s_on_an_ideal_line() -> None:
    result, session = await one_barge_in(line=IDEAL)
    assert result.reaction_ms <= 20
    assert abs(result.error_ms) <= 40
    response = session.responses[0]
    assert response.status == "cancelled" and response.cancel_reason == "turn_detected"


async def test_interrupting_on_a_delayed_jittery_line_with_carrier_buffering() -> None:
    result, _ = await one_barge_in(line=MOBILE)
    # The clear cannot beat the downlink; the bridge itself must add no more than 20 ms.
    assert result.reaction_ms <= 20 + MOBILE.downlink_delay_ms + MOBILE.jitter_ms
    assert abs(result.error_ms) <= 40


async def test_silence_during_a_model_stall_is_not_counted_as_heard() -> None:
    stall = EmulatorConfig(stall_after_ms=800, stall_ms=1500, speed=4.0)
    result, _ = await one_barge_in(line=MOBILE, emulator_config=stall, interrupt_at_ms=1500)
    assert abs(result.error_ms) <= 40
    # The caller sat through the stall: wall time since the reply began far exceeds what they heard.
    assert result.played_ms < 1700


async def test_barge_in_after_the_model_finished_generating() -> None:
    # At 4x real time an 8 s reply is fully generated in 2 s; interrupting at 5 s hits only the buffer.
    result, session = await one_barge_in(line=MOBILE, interrupt_at_ms=5000)
    assert session.responses[0].status == "completed"
    assert abs(result.error_ms) <= 40


async def test_barge_in_with_interrupt_response_off_cancels_the_response() -> None:
    slow = EmulatorConfig(speed=1.2)  # still generating when the caller talks
    result, session = await one_barge_in(
        line=IDEAL, emulator_config=slow, env={"VAD_INTERRUPT_RESPONSE": "false"}
    )
    assert abs(result.error_ms) <= 40
    cancels = [e for e in session.client_events if e["type"] == "response.cancel"]
    assert len(cancels) == 1
    assert session.responses[0].cancel_reason == "client_cancelled"


async def test_barge_in_before_any_audio_was_heard() -> None:
    # The carrier buffers 300 ms before playing audio that reaches an idle line. The bridge learns
    # that from the greeting's echoes; the caller then talks over the next reply the moment its
    # audio reaches the carrier, before a sample of it was played.
    line = LineConditions(playout_delay_ms=300)
    async with (
        running_emulator(EmulatorConfig(first_delta_delay_ms=0)) as (emulator, url),
        running_bridge(url, GREETING="Read the long announcement.") as bridge,
    ):
        for _ in range(2):
            emulator.script_reply(ScriptedReply(audio_pcm24k=reply_audio(8), transcript="announcement"))
        caller = TwilioCallerEmulator(bridge.media_url, line=line)
        async with caller:
            session = await emulator.wait_for_session()
            await interrupt_after(caller, 1000, since_ms=caller.started_ms or 0)
            # The clear and the truncate leave together but travel different sockets: wait for both.
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 1, timeout_s=5)
            first_clear = caller.playout.clears[0]
            await caller.wait_until(lambda: caller.playout.buffered_bytes > 0, timeout_s=10)
            caller.say(tone(400, CALLER_HZ))
            await caller.wait_until(lambda: len(caller.playout.clears) >= 2, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 2, timeout_s=5)
            second_clear = caller.playout.clears[1].received_at_ms
            heard = caller.playout.played_ms_between(first_clear.received_at_ms, second_clear)
        assert heard == 0
        assert session.truncations[1]["audio_end_ms"] == 0
        assert session.rejected == []


async def test_second_barge_in_right_after_the_first() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, GREETING="Announce.") as bridge:
        for _ in range(3):
            emulator.script_reply(ScriptedReply(audio_pcm24k=reply_audio(6), transcript="announcement"))
        caller = TwilioCallerEmulator(bridge.media_url, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            start = caller.started_ms or 0
            await interrupt_after(caller, 1000, since_ms=start)
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            first_clear = caller.playout.clears[0].received_at_ms
            # The reply to the first interruption starts; the caller cuts it off almost at once.
            await interrupt_after(caller, 200, since_ms=first_clear)
            await caller.wait_until(lambda: len(session.truncations) >= 2, timeout_s=10)
            second = measure(caller, session, 1, since_ms=first_clear)
        assert abs(second.error_ms) <= 40
        assert session.rejected == []


async def test_interrupting_a_response_with_several_audio_items() -> None:
    async with running_emulator() as (emulator, url), running_bridge(url, GREETING="Two parts.") as bridge:
        emulator.script_reply(
            ScriptedReply(audio_pcm24k=reply_audio(1.0), transcript="one", more_audio=(reply_audio(4.0),))
        )
        caller = TwilioCallerEmulator(bridge.media_url, line=MOBILE)
        async with caller:
            session = await emulator.wait_for_session()
            start = caller.started_ms or 0
            await interrupt_after(caller, 1500, since_ms=start)
            await caller.wait_until(lambda: len(caller.playout.clears) >= 1, timeout_s=5)
            await caller.wait_until(lambda: len(session.truncations) >= 1, timeout_s=5)
            await asyncio.sleep(0.2)  # a wrong second truncate would arrive now
            played = caller.playout.played_ms_between(start, caller.playout.clears[0].received_at_ms)
        items = session.responses[0].items
        assert len(items) == 2
        # The first item was heard whole: no truncate for it (that would make the model repeat it).
        assert [t["item_id"] for t in session.truncations] == [items[1].item_id]
        assert abs(session.truncations[0]["audio_end_ms"] - (played - items[0].audio_ms)) <= 40
        assert session.rejected == []


@pytest.mark.parametrize("seed", [1])
async def test_accuracy_over_twenty_random_interruptions(
    seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twenty interruptions at random points, four calls at once on a mobile-like line."""
    rng = random.Random(seed)
    results: list[BargeIn] = []

    async def call(emulator: RealtimeEmulator, media_url: str, n: int, line: LineConditions, k: int) -> None:
        caller = TwilioCallerEmulator(media_url, line=line)
        async with caller:
            since = caller.started_ms or 0.0
            session = await emulator.wait_for_session(k)
            for i in range(n):
                await interrupt_after(caller, rng.uniform(300, 3000), since_ms=since)
                await caller.wait_until(lambda i=i: len(caller.playout.clears) > i, timeout_s=5)
                await caller.wait_until(lambda i=i: len(session.truncations) > i, timeout_s=5)
                results.append(measure(caller, session, i, since_ms=since))
                since = caller.playout.clears[i].received_at_ms
            assert session.rejected == []
            assert caller.protocol_errors == []

    async with running_emulator() as (emulator, url), running_bridge(url, GREETING="Talk.") as bridge:
        for _ in range(40):
            emulator.script_reply(ScriptedReply(audio_pcm24k=reply_audio(8), transcript="announcement"))
        lines = [LineConditions(40, 40, 15, 60, seed=s) for s in range(3)] + [IDEAL]
        tasks = []
        for k, line in enumerate(lines, start=1):
            tasks.append(asyncio.create_task(call(emulator, bridge.media_url, 5, line, k)))
            await emulator.wait_for_session(k)  # one at a time, so session k is this call's
        await asyncio.gather(*tasks)

    errors = sorted(abs(r.error_ms) for r in results)
    reactions = sorted(r.reaction_ms for r in results)
    with capsys.disabled():
        print(
            f"\nbarge-in over {len(results)} interruptions: "
            f"|error| median {statistics.median(errors):.1f} ms, worst {errors[-1]:.1f} ms; "
            f"reaction (incl. downlink) median {statistics.median(reactions):.1f} ms, "
            f"worst {reactions[-1]:.1f} ms; signed errors {sorted(round(r.error_ms) for r in results)}"
        )
    assert len(results) == 20
    assert errors[-1] <= 40
