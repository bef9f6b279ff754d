import audioop

import pytest

from bridge.sim.playout import MarkStatus, Playout

TONE = bytes(range(0, 256, 2)) * 5  # 640 µ-law bytes = 80 ms of non-silence


def ulaw(ms: int, value: int = 0x10) -> bytes:
    return bytes([value]) * (ms * 8)


def names(marks) -> list[str]:
    return [mark.name for mark in marks]


def test_mark_echoes_exactly_when_its_audio_finishes() -> None:
    p = Playout(0.0)
    p.on_media(0.0, ulaw(40))
    p.on_mark(0.0, "a")
    p.on_media(1.0, ulaw(20))
    p.on_mark(1.0, "b")
    assert p.next_due_ms() == 40.0

    p.advance(39.9)
    assert p.take_echoes() == []
    p.advance(100.0)
    echoes = p.take_echoes()
    assert names(echoes) == ["a", "b"]
    assert [m.echoed_at_ms for m in echoes] == [40.0, 60.0]
    assert all(m.status is MarkStatus.PLAYED for m in echoes)
    assert [m.bytes_ahead for m in echoes] == [320, 160 + 320 - 8]  # 1 ms of "a" had played when b arrived
    assert p.played_ms_total == 60.0


def test_mark_on_empty_buffer_echoes_immediately() -> None:
    p = Playout(0.0)
    mark = p.on_mark(5.0, "idle")
    assert mark.echoed_at_ms == 5.0 and mark.status is MarkStatus.PLAYED and mark.bytes_ahead == 0
    assert p.take_echoes() == [mark]

    p.on_media(10.0, ulaw(20))
    p.advance(30.0)
    late = p.on_mark(50.0, "after")
    assert late.echoed_at_ms == 50.0
    assert names(p.take_echoes()) == ["after"]


def test_clear_drops_unplayed_audio_and_echoes_pending_marks() -> None:
    p = Playout(0.0)
    p.on_media(0.0, ulaw(100))
    p.on_mark(0.0, "m1")
    p.on_media(0.0, ulaw(100))
    p.on_mark(0.0, "m2")
    p.advance(30.0)
    assert p.take_echoes() == []

    record = p.on_clear(30.0)
    assert record.received_at_ms == 30.0
    assert record.dropped_bytes == (200 - 30) * 8
    assert record.marks_echoed == ["m1", "m2"]
    echoes = p.take_echoes()
    assert [(m.status, m.echoed_at_ms) for m in echoes] == [(MarkStatus.CLEARED, 30.0)] * 2
    assert p.buffered_bytes == 0 and not p.is_playing()

    p.advance(500.0)
    assert p.played_ms_total == 30.0
    assert p.played_ms_since(30.0) == 0.0


def test_clear_after_played_marks_only_echoes_pending_ones() -> None:
    p = Playout(0.0)
    p.on_media(0.0, ulaw(20))
    p.on_mark(0.0, "done")
    p.on_media(0.0, ulaw(20))
    p.on_mark(0.0, "cut")
    record = p.on_clear(25.0)
    echoes = p.take_echoes()
    assert [(m.name, m.status, m.echoed_at_ms) for m in echoes] == [
        ("done", MarkStatus.PLAYED, 20.0),
        ("cut", MarkStatus.CLEARED, 25.0),
    ]
    assert record.dropped_bytes == 15 * 8


def test_empty_clear_is_recorded() -> None:
    p = Playout(0.0)
    record = p.on_clear(3.0)
    assert record.dropped_bytes == 0 and record.marks_echoed == []
    assert p.clears == [record]


def test_playout_delay_applies_only_when_buffer_was_empty() -> None:
    p = Playout(0.0, playout_delay_ms=60.0)
    p.on_media(0.0, ulaw(40))
    p.on_mark(0.0, "first")
    p.advance(59.0)
    assert p.played_ms_total == 0.0
    p.on_media(20.0, ulaw(40))  # buffer not empty: appended, no extra delay
    p.on_mark(20.0, "second")
    p.advance(200.0)
    assert [(m.name, m.echoed_at_ms) for m in p.take_echoes()] == [("first", 100.0), ("second", 140.0)]
    assert [(s.start_ms, s.end_ms) for s in p.slices] == [(60.0, 140.0)]

    p.on_media(300.0, ulaw(20))  # idle again: the jitter buffer delays it once more
    p.advance(400.0)
    assert [(s.start_ms, s.end_ms) for s in p.slices] == [(60.0, 140.0), (360.0, 380.0)]


def test_mark_waits_for_delayed_audio() -> None:
    p = Playout(0.0, playout_delay_ms=60.0)
    p.on_media(0.0, ulaw(20))
    mark = p.on_mark(1.0, "m")
    assert mark.status is MarkStatus.PENDING and p.next_due_ms() == 80.0
    p.advance(79.0)
    assert p.take_echoes() == []
    p.advance(80.0)
    assert p.take_echoes() == [mark] and mark.echoed_at_ms == 80.0


def test_timeline_sums_and_queries() -> None:
    p = Playout(0.0)
    p.on_media(10.0, ulaw(30))
    for t in range(10, 60, 3):  # advancing in small steps gives one contiguous slice
        p.advance(float(t))
    p.on_media(100.0, ulaw(50))
    p.advance(1000.0)
    assert [(s.start_ms, s.end_ms, s.nbytes) for s in p.slices] == [(10.0, 40.0, 240), (100.0, 150.0, 400)]
    assert p.played_ms_total == 80.0 == sum(s.end_ms - s.start_ms for s in p.slices)
    assert p.played_ms_between(20.0, 120.0) == 20.0 + 20.0
    assert p.played_ms_since(140.0) == 10.0
    assert p.first_heard_ms() == 10.0
    assert p.first_heard_ms(after_ms=50.0) == 100.0
    assert p.first_heard_ms(after_ms=120.0) == 120.0
    assert p.last_played_ms() == 150.0


def test_audio_received_after_clear_and_arrival_times() -> None:
    p = Playout(0.0)
    p.on_media(0.0, ulaw(100))
    p.on_media(10.0, ulaw(100))
    p.on_clear(50.0)
    assert p.audio_received_after_clear(0) == 0
    p.on_media(80.0, ulaw(20))
    p.advance(200.0)
    assert p.audio_received_after_clear(0) == 160
    assert [(a.received_at_ms, a.nbytes, a.started_ms) for a in p.arrivals] == [
        (0.0, 800, 0.0),
        (10.0, 800, None),  # dropped whole by the clear
        (80.0, 160, 80.0),
    ]


def test_heard_pcm_keeps_real_time_silence() -> None:
    p = Playout(0.0)
    p.on_media(10.0, TONE)
    p.advance(200.0)
    with_gaps = p.heard_pcm(include_silence=True)
    assert len(with_gaps) == 200 * 8 * 2
    assert with_gaps[: 10 * 16] == audioop.ulaw2lin(b"\xff" * 80, 2)
    assert with_gaps[10 * 16 : 90 * 16] == audioop.ulaw2lin(TONE, 2)
    assert p.heard_pcm(include_silence=False) == audioop.ulaw2lin(TONE, 2)
    assert len(p.heard_pcm(include_silence=True, from_ms=50.0, to_ms=60.0)) == 10 * 16


def test_fractional_clock_never_loses_bytes() -> None:
    p = Playout(0.3, playout_delay_ms=0.0)
    p.on_media(0.3, ulaw(1000))
    p.on_mark(0.3, "end")
    t = 0.3
    while t < 1100.0:
        t += 0.77
        p.advance(t)
    assert p.played_bytes == 8000
    (mark,) = p.take_echoes()
    assert mark.echoed_at_ms == pytest.approx(1000.3)
    assert len(p.slices) == 1


def test_clock_never_goes_backwards() -> None:
    p = Playout(0.0)
    p.advance(50.0)
    p.on_media(40.0, ulaw(10))
    assert p.arrivals[0].received_at_ms == 50.0
    p.advance(100.0)
    assert p.slices[0].start_ms == 50.0
