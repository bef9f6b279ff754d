"""The playback ledger against a hand-computed carrier timeline (docs/protocols.md §T5)."""

from __future__ import annotations

from bridge.ledger import PlaybackLedger

FRAME = 160  # 20 ms of µ-law


def send(ledger: PlaybackLedger, item: str, ms: int, at: float, mark_every: int = 5) -> list[str]:
    """Send `ms` of audio for `item` at time `at` in 20 ms frames; return the mark names in order."""
    marks = []
    for i in range(ms // 20):
        ledger.sent(item, 0, FRAME, at)
        if (i + 1) % mark_every == 0 and (name := ledger.mark()):
            marks.append(name)
    if name := ledger.mark():
        marks.append(name)
    return marks


def measure_rtt(ledger: PlaybackLedger, at: float, rtt: float) -> None:
    name = ledger.probe(at)
    assert name is not None
    ledger.acked(name, at + rtt)


def test_no_delay_heard_is_last_ack_plus_elapsed() -> None:
    ledger = PlaybackLedger()
    marks = send(ledger, "A", 1000, at=0)
    for i, name in enumerate(marks[:3]):  # played 100, 200, 300 ms
        assert ledger.acked(name, 100.0 * (i + 1))
    [p] = ledger.clear(350)
    assert (p.item_id, p.sent_ms, p.heard_ms, p.started) == ("A", 1000, 350, True)


def test_network_delay_counts_audio_played_while_the_clear_travels() -> None:
    ledger = PlaybackLedger()
    measure_rtt(ledger, 0, 60)
    assert ledger.rtt_ms == 60
    marks = send(ledger, "A", 1000, at=100)
    # The carrier gets it at 130 and plays 130..1130; echoes take 30 ms back.
    ledger.acked(marks[0], 130 + 100 + 30)
    ledger.acked(marks[1], 130 + 200 + 30)
    [p] = ledger.clear(400)  # arrives at 430: 300 ms played
    assert p.heard_ms == 300


def test_silence_during_a_model_stall_is_not_heard() -> None:
    ledger = PlaybackLedger()
    first = send(ledger, "A", 200, at=0)
    for i, name in enumerate(first):
        ledger.acked(name, 100.0 * (i + 1))
    send(ledger, "A", 200, at=1000)  # the model stalled for 800 ms
    [p] = ledger.clear(1100)
    assert p.heard_ms == 300  # 200 before the stall, 100 after: not 1100


def test_heard_never_exceeds_what_was_sent() -> None:
    ledger = PlaybackLedger()
    marks = send(ledger, "A", 1000, at=0)
    for i, name in enumerate(marks[:-1]):  # every echo but the last came back
        ledger.acked(name, 100.0 * (i + 1))
    [p] = ledger.clear(60_000)  # long after the audio ran out
    assert p.heard_ms == p.sent_ms == 1000


def test_confirmed_audio_is_a_floor_even_when_the_clock_disagrees() -> None:
    ledger = PlaybackLedger()
    marks = send(ledger, "A", 1000, at=0)
    for i, name in enumerate(marks[:4]):
        ledger.acked(name, 100.0 * (i + 1))
    [p] = ledger.clear(390)  # a clear computed "early" still counts the 400 ms confirmed
    assert p.heard_ms >= 400 - 20


def test_echoes_after_a_clear_mean_discarded() -> None:
    ledger = PlaybackLedger()
    marks = send(ledger, "A", 1000, at=0)
    ledger.acked(marks[0], 100)
    ledger.clear(150)
    assert [ledger.acked(name, 151) for name in marks[1:]] == [False] * (len(marks) - 1)
    assert not ledger.pending()


def test_items_queued_but_never_started_are_heard_zero() -> None:
    ledger = PlaybackLedger()
    send(ledger, "A", 200, at=0)
    send(ledger, "B", 300, at=0)
    result = {p.item_id: p for p in ledger.clear(100)}
    assert (result["A"].heard_ms, result["A"].started) == (100, True)
    assert (result["B"].heard_ms, result["B"].started, result["B"].sent_ms) == (0, False, 300)


def test_second_item_partly_heard() -> None:
    ledger = PlaybackLedger()
    first = send(ledger, "A", 200, at=0)
    send(ledger, "B", 300, at=0)
    for i, name in enumerate(first):
        ledger.acked(name, 100.0 * (i + 1))
    [p] = ledger.clear(300)  # A was confirmed played whole, so only B is in question
    assert (p.item_id, p.heard_ms) == ("B", 100)


def test_carrier_start_up_buffering_is_learned_and_not_counted() -> None:
    ledger = PlaybackLedger()
    measure_rtt(ledger, 0, 40)
    marks = send(ledger, "A", 1000, at=100)
    # Arrives 120, the carrier buffers 60 ms, plays 180..1180; first echo back at 280 + 20.
    ledger.acked(marks[0], 180 + 100 + 20)
    assert abs(ledger.playout_delay_ms - 60) < 1e-6
    [p] = ledger.clear(330)  # arrives 350 -> 170 ms played
    assert p.heard_ms == 170
    # The next burst, cleared before any echo, is predicted with the learned buffering.
    send(ledger, "B", 1000, at=1000)
    [p] = ledger.clear(1200)  # arrives 1220; play started at 1020 + 60 = 1080 -> 140 ms
    assert p.heard_ms == 140


def test_clear_before_anything_played() -> None:
    ledger = PlaybackLedger()
    measure_rtt(ledger, 0, 100)
    send(ledger, "A", 1000, at=10)
    [p] = ledger.clear(20)  # the audio reaches the carrier at 60, the clear at 70: 10 ms heard
    assert p.heard_ms == 10
    send(ledger, "B", 1000, at=100)
    [p] = ledger.clear(100)
    assert (p.heard_ms, p.started) == (0, False)


def test_probe_only_when_idle() -> None:
    ledger = PlaybackLedger()
    send(ledger, "A", 100, at=0)
    assert ledger.probe(1) is None
    ledger.clear(2)
    assert ledger.probe(3) is not None
    assert ledger.probe(4) is None  # one probe in flight at a time


def test_a_mark_not_yet_echoed_caps_what_can_have_been_heard() -> None:
    ledger = PlaybackLedger()
    measure_rtt(ledger, 0, 10)
    # One frame with its own mark, then more audio; the carrier buffers 300 ms we know nothing of.
    ledger.sent("A", 0, FRAME, 100)
    ledger.mark()
    send(ledger, "A", 1000, at=100)
    # 80 ms later the clock model would say ~75 ms played, but the first echo has not come back.
    [p] = ledger.clear(180)
    assert p.heard_ms <= 20 + 10


def test_round_trip_is_the_smallest_recent_probe() -> None:
    ledger = PlaybackLedger()
    for at, rtt in [(0, 90), (100, 62), (200, 75)]:  # jitter only ever lengthens a sample
        measure_rtt(ledger, at, rtt)
    assert ledger.rtt_ms == 62


def test_a_probe_inflated_by_a_busy_moment_is_corrected_by_the_first_echo() -> None:
    ledger = PlaybackLedger()
    measure_rtt(ledger, 0, 100)  # the true round trip is 10 ms; the process was busy
    ledger.sent("A", 0, FRAME, 200)
    name = ledger.mark()
    assert name is not None
    ledger.acked(name, 200 + 20 + 10)  # the first frame's echo: 20 ms of audio + 10 ms round trip
    assert ledger.rtt_ms == 10


def test_an_echo_a_little_early_never_moves_the_clear_into_the_past() -> None:
    """SIP: the bridge's own clock reports each mark as its frames finish, on a timer that may fire a
    fraction of a ms early; a negative first-echo bound must not put the clear's arrival before now."""
    ledger = PlaybackLedger()
    measure_rtt(ledger, 0, 0)
    marks = send(ledger, "A", 1000, at=0)
    for i, name in enumerate(marks[:3]):  # played to 100, 200, 300 ms; the first reported 2 ms early
        ledger.acked(name, 100.0 * (i + 1) - (2 if i == 0 else 0))
    [p] = ledger.clear(350)
    assert p.heard_ms == 350


def test_audio_end_is_what_was_heard_on_the_models_clock_never_past_what_the_model_sent() -> None:
    """The truncate's figure: heard audio moved back by the resampler's lag, clamped to the audio the
    service holds for the item (a truncate past it is refused)."""
    ledger = PlaybackLedger(output_lag_ms=2.5)
    ledger.received("A", 1000.0)
    marks = send(ledger, "A", 1000, at=0)
    for i, name in enumerate(marks[:3]):
        ledger.acked(name, 100.0 * (i + 1))
    [p] = ledger.clear(350)
    assert (p.heard_ms, p.audio_end_ms) == (350, round(350 - 2.5))

    short = PlaybackLedger()
    short.received("B", 180.0)  # the line got a little more than the model sent (the resampler's tail)
    for name in send(short, "B", 200, at=0):
        short.acked(name, 200)
    send(short, "B", 100, at=200)
    [p] = short.clear(250)
    assert p.heard_ms == 250 and p.audio_end_ms == 180

    nothing = PlaybackLedger()
    nothing.received("C", 500.0)
    send(nothing, "C", 200, at=1000)  # the carrier has not started playing it when the clear is sent
    [p] = nothing.clear(1000)
    assert (p.started, p.audio_end_ms) == (False, 0)


def test_an_item_still_being_spoken_is_settled_even_with_nothing_pending() -> None:
    """Everything sent of "A" was confirmed played, but the model had more to say; "B" had not sent a
    whole frame yet. Both are settled by the clear, so both are truncated."""
    ledger = PlaybackLedger()
    ledger.received("A", 200.0)
    ledger.received("B", 10.0)
    for name in send(ledger, "A", 200, at=0):
        ledger.acked(name, 200)
    assert not ledger.pending()
    settled = {p.item_id: p for p in ledger.clear(300, unfinished=["A", "B"])}
    assert (settled["A"].sent_ms, settled["A"].heard_ms, settled["A"].audio_end_ms) == (200, 200, 200)
    assert (settled["B"].sent_ms, settled["B"].started, settled["B"].audio_end_ms) == (0, False, 0)
