"""The Live call's clocks without a clock: the input clock, the speech gate and the output pacer, driven
by explicit arrival schedules."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bridge.audio import L16_24K, PCMU_8K, pcm16_to_ulaw
from bridge.live.input_clock import FILL_AFTER_MS, MAX_OWED_MS, InputClock
from bridge.live.output_pacer import OutputPacer, PacedFrame
from bridge.live.speech_gate import END_AFTER_MS, CallerVoice, SpeechGate, TurnEnded, TurnStarted

FRAME = 20


def ulaw_tone(ms: int, dbfs: float = -20.0, hz: float = 440.0) -> bytes:
    t = np.arange(ms * 8) / 8000
    pcm = (np.sin(2 * np.pi * hz * t) * 32767 * 10 ** (dbfs / 20)).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)


SILENT = PCMU_8K.silence(160)
LOUD = ulaw_tone(20)


# -- the input clock ---------------------------------------------------------------------------------


def test_caller_audio_before_the_session_started_is_dropped_not_held() -> None:
    clock = InputClock()
    assert [clock.caller(FRAME, t) for t in (0, 20, 40)] == [False, False, False]
    assert clock.dropped_before_start_ms == 60
    clock.start(50)
    assert clock.caller(FRAME, 60) is True
    assert clock.session_ms == FRAME  # only what came after the start: nothing was queued


def test_a_jittery_carrier_is_passed_through_untouched() -> None:
    clock = InputClock()
    clock.start(0)
    rng = random.Random(1)
    sent = 0
    t = 0.0
    for k in range(1, 500):
        # Each frame leaves the phone at 20 k and arrives 40 ms +- 30 ms later, never overtaking.
        t = max(t, 20 * k + 40 + rng.uniform(-30, 30))
        assert clock.fill(t) == 0
        sent += clock.caller(FRAME, t)
    assert sent == 499
    assert clock.filled_ms == clock.dropped_late_ms == 0


def test_silence_stands_in_while_the_caller_sends_nothing() -> None:
    clock = InputClock()
    clock.start(0)
    for k in range(1, 11):
        clock.caller(FRAME, 20 * k)
    assert clock.fill(200 + FILL_AFTER_MS - 1) == 0  # not yet: it may be jitter
    due = clock.next_due()
    assert due is not None and due > 200 + FILL_AFTER_MS
    frames = clock.fill(due)
    assert frames == int((due - 200) // FRAME)  # everything the wall clock is owed, at once
    # From then on one frame per frame of wall time: the model hears silence at its own pace.
    t = due
    for _ in range(50):
        t += FRAME
        assert clock.fill(t) == 1
    assert clock.session_ms == pytest.approx(t, abs=FRAME)


def test_late_audio_after_the_silence_is_dropped_up_to_what_the_silence_replaced() -> None:
    clock = InputClock()
    clock.start(0)
    for k in range(1, 11):
        clock.caller(FRAME, 20 * k)
    # A 400 ms stall, then everything it held at once.
    t = 200.0
    filled = 0
    while t < 600:
        t += 10
        filled += clock.fill(t) * FRAME
    burst = [clock.caller(FRAME, 600) for _ in range(20)]
    dropped = burst.count(False) * FRAME
    assert dropped == min(filled, MAX_OWED_MS)
    assert burst[0] is True  # the first frame after a pause may be fresh speech
    ahead = clock.session_ms - 600
    assert ahead <= 20 * FRAME - MAX_OWED_MS + FRAME  # what is left of the burst runs ahead, no more


def test_speech_after_a_pause_is_fresh_audio_not_late_audio() -> None:
    """A SIP phone with silence suppression sends nothing while its user is quiet, then speech again at
    its own 20 ms pace: none of that is dropped for having been replaced by silence."""
    clock = InputClock()
    clock.start(0)
    for k in range(1, 11):
        clock.caller(FRAME, 20 * k)
    t = 200.0
    while t < 1000:
        t += 10
        clock.fill(t)
    rng = random.Random(3)
    resumed = [clock.caller(FRAME, 1000 + 20 * k + rng.uniform(-8, 8)) for k in range(50)]
    assert all(resumed) and clock.dropped_late_ms == 0


def test_session_time_maps_back_to_when_it_was_sent() -> None:
    clock = InputClock()
    clock.start(1000)
    for k in range(1, 6):
        clock.caller(FRAME, 1000 + 20 * k + 3)
    assert clock.sent_at(20) == 1023
    assert clock.sent_at(50) == 1063  # in the frame that reached 60 ms
    assert clock.sent_at(200) is None  # not sent yet


# -- the speech gate ---------------------------------------------------------------------------------


def test_the_gate_cuts_the_stream_into_turns() -> None:
    gate = SpeechGate(PCMU_8K)
    events = [gate.feed(f) for f in [SILENT] * 3 + [LOUD] * 5 + [SILENT] * 5 + [LOUD] * 2]
    assert events[3] == TurnStarted("turn_1")
    assert [e for e in events if e is not None] == [TurnStarted("turn_1")]  # a 100 ms pause is not an end
    ends = [gate.feed(SILENT) for _ in range(END_AFTER_MS // FRAME)]
    assert ends[-1] == TurnEnded("turn_1", speech_ms=(5 + 5 + 2) * FRAME)
    assert all(e is None for e in ends[:-1])
    assert gate.feed(LOUD) == TurnStarted("turn_2")


def test_the_gate_hears_pcm_too_and_ignores_near_silence() -> None:
    gate = SpeechGate(L16_24K)
    hiss = (np.random.default_rng(0).standard_normal(480) * 10).astype("<i2").tobytes()  # about -70 dBFS
    assert gate.feed(hiss) is None and not gate.loud
    voice = (np.sin(np.arange(480) / 5) * 3000).astype("<i2").tobytes()
    assert gate.feed(voice) == TurnStarted("turn_1")


def test_caller_voice_needs_two_loud_frames_and_ends_after_a_pause() -> None:
    voice = CallerVoice(PCMU_8K)
    assert voice.feed(LOUD, 0) is None  # a click
    assert voice.feed(SILENT, 20) is None
    assert voice.feed(LOUD, 40) is None
    assert voice.feed(LOUD, 60) is True and voice.began_at == 40
    assert voice.talking_over(since=50, now=150, recent_ms=100)  # they began before 50
    assert not voice.talking_over(since=30, now=150, recent_ms=100)  # they began after 30
    assert not voice.talking_over(since=50, now=200, recent_ms=100)  # and stopped 140 ms ago
    assert voice.feed(SILENT, 200) is None
    assert voice.feed(SILENT, 360) is False and voice.last_loud_at == 60


# -- the output pacer --------------------------------------------------------------------------------


class IdealCarrier:
    """Plays what it is sent in order, in real time, from when it arrives (no network): the gaps it plays
    are the underruns a caller would hear."""

    def __init__(self) -> None:
        self.free_at: float | None = None  # when what it holds has played
        self.gaps: list[float] = []

    def take(self, frames: list[PacedFrame], now: float) -> None:
        for _ in frames:
            if self.free_at is not None and now > self.free_at:
                self.gaps.append(now - self.free_at)
            start = now if self.free_at is None or now > self.free_at else self.free_at
            self.free_at = start + FRAME


def paced(lead_ms: float, arrivals: list[float]) -> tuple[OutputPacer, IdealCarrier, float]:
    """One turn whose frame k arrives at `arrivals[k]`; the pacer is pulled on every arrival and
    whenever it says so. Returns the pacer, the carrier, and when the first frame was sent."""
    pacer, carrier = OutputPacer(lead_ms), IdealCarrier()
    first_sent = None
    pending = list(enumerate(arrivals))
    now = 0.0
    while pending or not pacer.idle:
        due = pacer.next_due(now)
        if pending and (due is None or pending[0][1] <= due):
            k, now = pending.pop(0)
            pacer.push(PacedFrame(LOUD, "turn_1", True, k * FRAME), now)
        elif due is not None:
            now = max(now, due)
        else:
            break
        sent = pacer.pull(now)
        if sent and first_sent is None:
            first_sent = now
        carrier.take(sent, now)
        if not pending:
            pacer.end_turn()
    assert first_sent is not None
    return pacer, carrier, first_sent


@pytest.mark.parametrize("lead", [40, 80, 120])
def test_jitter_within_the_lead_never_underruns(lead: int) -> None:
    rng = random.Random(lead)
    arrivals = [FRAME * k + rng.uniform(0, lead) for k in range(300)]
    arrivals = [max(arrivals[: k + 1]) for k in range(len(arrivals))]  # in order, like a TCP stream
    pacer, carrier, first_sent = paced(lead, arrivals)
    assert carrier.gaps == [] and pacer.underruns == 0
    assert first_sent - arrivals[0] <= lead  # the lead is all the turn waits for


def test_one_frame_later_than_the_lead_is_one_underrun_heard_as_one_gap() -> None:
    lead = 80
    arrivals = [float(FRAME * k) for k in range(100)]
    for k in range(50, 100):
        arrivals[k] += lead + 30  # the network stalls once, for longer than the lead
    pacer, carrier, _ = paced(lead, arrivals)
    assert pacer.underruns == 1
    assert carrier.gaps == [pytest.approx(30)]  # what it was late by beyond the lead


def test_a_burst_waits_here_and_the_carrier_never_holds_more_than_the_lead() -> None:
    lead = 60
    pacer = OutputPacer(lead)
    for k in range(50):  # two seconds... no: one second of audio at once
        pacer.push(PacedFrame(LOUD, "turn_1", True, k * FRAME), 0.0)
    first = pacer.pull(0.0)
    assert len(first) * FRAME == lead + FRAME
    assert pacer.carrier_ms(0.0) <= lead + FRAME
    for t in range(10, 2000, 10):
        pacer.pull(float(t))
        assert pacer.carrier_ms(float(t)) <= lead + FRAME
    assert pacer.idle or pacer.waiting_ms == 0


def test_a_backlog_sheds_silence_never_speech() -> None:
    pacer = OutputPacer(40)
    words = [True] * 10 + [False] * 15 + [True] * 10  # two phrases and a 300 ms pause, at once
    for k, loud in enumerate(words):
        pacer.push(PacedFrame(LOUD if loud else SILENT, "turn_1", loud, k * FRAME), 0.0)
    sent: list[PacedFrame] = []
    t = 0.0
    while not pacer.idle and t < 2000:
        sent += pacer.pull(t)
        if not pacer.waiting_ms:
            pacer.end_turn()
        t += 5
    assert sum(f.loud for f in sent) == 20  # all the speech
    assert pacer.dropped_silence_ms > 0 and len(sent) < len(words)


def test_a_turn_shorter_than_the_lead_goes_out_when_the_lead_has_passed() -> None:
    pacer = OutputPacer(100)
    pacer.push(PacedFrame(LOUD, "turn_1", True, 0), 0.0)
    assert pacer.pull(50.0) == []
    assert pacer.next_due(50.0) == 100.0
    assert len(pacer.pull(100.0)) == 1


def test_clear_forgets_everything_and_the_next_turn_gathers_again() -> None:
    pacer = OutputPacer(40)
    for k in range(10):
        pacer.push(PacedFrame(LOUD, "turn_1", True, k * FRAME), 0.0)
    pacer.pull(0.0)
    assert len(pacer.clear()) == 10 - 3
    assert pacer.idle and pacer.carrier_ms(0.0) == 0
    pacer.push(PacedFrame(LOUD, "turn_2", True, 400), 10.0)
    assert pacer.pull(10.0) == []  # gathering its own lead
