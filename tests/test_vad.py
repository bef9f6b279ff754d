from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sim.vad import EnergyVad, SpeechStarted, SpeechStopped, dbfs_to_amplitude


def tone(rate: int, seconds: float, dbfs: float = -10.0, hz: float = 300.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    # dBFS as RMS relative to full scale: a sine's peak is sqrt(2) times its RMS.
    return (dbfs_to_amplitude(dbfs) * np.sqrt(2) * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def silence(rate: int, seconds: float) -> np.ndarray:
    return np.zeros(round(rate * seconds), dtype=np.int16)


def feed_all(vad: EnergyVad, pcm: np.ndarray, chunk: int) -> list:
    events = []
    for i in range(0, pcm.size, chunk):
        events += vad.feed(pcm[i : i + chunk].tobytes())
    return events


@pytest.mark.parametrize("rate", [8000, 24000])
def test_utterance_gives_sample_accurate_start_and_stop(rate: int) -> None:
    pcm = np.concatenate([silence(rate, 0.503), tone(rate, 1.0), silence(rate, 1.0)])
    onset, end = round(rate * 0.503), round(rate * 0.503) + rate
    vad = EnergyVad(rate, threshold_dbfs=-40, silence_duration_ms=500)
    events = feed_all(vad, pcm, rate // 50)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert abs(started.sample - onset) <= 2
    assert abs(stopped.speech_end - end) <= 2
    assert stopped.sample == stopped.speech_end + rate // 2
    assert vad.samples_fed == pcm.size


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=40))
def test_events_do_not_depend_on_chunking(cuts: list[int]) -> None:
    rate = 8000
    pcm = np.concatenate(
        [silence(rate, 0.3), tone(rate, 0.4), silence(rate, 0.7), tone(rate, 0.3), silence(rate, 0.8)]
    )
    assert len(feed_all(EnergyVad(rate), pcm, pcm.size)) == 4
    reference = feed_all(EnergyVad(rate), pcm, pcm.size)
    vad, events, pos = EnergyVad(rate), [], 0
    for cut in cuts:
        events += vad.feed(pcm[pos : pos + cut].tobytes())
        pos += cut
    events += vad.feed(pcm[pos:].tobytes())
    assert events == reference


def test_gap_shorter_than_silence_duration_does_not_split_speech() -> None:
    rate = 24000
    pcm = np.concatenate(
        [silence(rate, 0.2), tone(rate, 0.4), silence(rate, 0.3), tone(rate, 0.4), silence(rate, 1)]
    )
    events = feed_all(EnergyVad(rate, silence_duration_ms=500), pcm, 480)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_blip_shorter_than_two_windows_is_not_speech() -> None:
    rate = 24000
    pcm = np.concatenate([silence(rate, 0.2), tone(rate, 0.005), silence(rate, 1)])
    assert feed_all(EnergyVad(rate), pcm, 480) == []


def test_threshold_decides_what_is_speech() -> None:
    rate = 8000
    pcm = np.concatenate([silence(rate, 0.2), tone(rate, 0.5, dbfs=-50), silence(rate, 1)])
    assert feed_all(EnergyVad(rate, threshold_dbfs=-40), pcm, 160) == []
    assert len(feed_all(EnergyVad(rate, threshold_dbfs=-60), pcm, 160)) == 2


def test_reset_forgets_speech_but_keeps_the_clock() -> None:
    rate = 8000
    vad = EnergyVad(rate)
    vad.feed(np.concatenate([silence(rate, 0.1), tone(rate, 0.2)]).tobytes())
    assert vad.speaking
    vad.reset()
    assert not vad.speaking
    assert vad.feed(silence(rate, 1).tobytes()) == []
    assert vad.samples_fed == round(rate * 1.3)


def test_configure_changes_silence_duration() -> None:
    rate = 8000
    vad = EnergyVad(rate, silence_duration_ms=500)
    vad.configure(silence_duration_ms=200)
    events = feed_all(vad, np.concatenate([tone(rate, 0.3), silence(rate, 0.3)]), 160)
    assert isinstance(events[-1], SpeechStopped)
    assert events[-1].sample - events[-1].speech_end == rate // 5


def test_rate_must_divide_into_windows() -> None:
    with pytest.raises(ValueError):
        EnergyVad(11025)
