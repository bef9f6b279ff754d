"""The model's audio on its way to the caller: pieces, marks, the ledger's entries, reply latency."""

from __future__ import annotations

import numpy as np

from bridge.audio import L16_24K, PCMU_8K
from bridge.carrier.events import CarrierCommand, Mark, PlayAudio
from bridge.ledger import PlaybackLedger
from bridge.log_records import RecordKind
from bridge.outbound_audio import OutboundAudio

FRAME_BYTES = 160


def tone_24k(ms: int) -> bytes:
    t = np.arange(ms * 24) / 24000
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def outbound(play_chunk_ms: int = 1000) -> tuple[OutboundAudio, PlaybackLedger]:
    ledger = PlaybackLedger()
    return OutboundAudio(L16_24K, PCMU_8K, ledger, play_chunk_ms), ledger


def shape(commands: list[CarrierCommand]) -> list[int | str]:
    return [
        len(c.payload) if isinstance(c, PlayAudio) else "mark"
        for c in commands
        if isinstance(c, PlayAudio | Mark)
    ]


def test_the_first_frame_after_silence_goes_alone_with_its_mark_then_pieces_end_at_marks() -> None:
    audio, ledger = outbound()
    out: list[CarrierCommand] = []
    audio.play("i1", 0, tone_24k(300), 0, out)
    assert shape(out) == [FRAME_BYTES, "mark", 800, "mark", 800, "mark", 640]
    assert ledger.sent_ms("i1") == 300 and audio.frames_out == 15


def test_an_item_ends_with_its_tail_and_a_mark_and_the_next_item_starts_clean() -> None:
    audio, ledger = outbound()
    out: list[CarrierCommand] = []
    audio.play("i1", 0, tone_24k(110), 0, out)
    assert shape(out) == [FRAME_BYTES, "mark", 640]  # 10 ms wait for a whole frame
    del out[:]
    audio.play("i2", 0, tone_24k(40), 5, out)  # a new item: the first one's rest goes out first
    tail = 80 + round(audio.output_lag_ms * 2) * 8  # the 10 ms and the resampler's tail
    assert shape(out) == [tail, "mark", 320] and ledger.sent_ms("i1") == (800 + tail) // 8
    assert audio.item == "i2"
    assert audio.item_done("i1", 6, out) is None and audio.item == "i2"  # not the item going out
    before = len(out)
    audio.item_done("i2", 7, out)
    assert audio.item is None and isinstance(out[-1], Mark) and len(out) > before


def test_drop_discards_what_is_pending_and_says_which_item_was_going_out() -> None:
    audio, ledger = outbound()
    out: list[CarrierCommand] = []
    audio.play("i1", 0, tone_24k(30), 0, out)  # 30 ms: one frame out, the rest pending
    assert audio.drop() == "i1"
    assert audio.item is None and audio.item_done("i1", 1, out) is None
    assert ledger.sent_ms("i1") == 20  # the pending 10 ms never went out
    assert audio.drop() is None


def test_a_single_frame_carrier_gets_one_frame_per_message() -> None:
    audio, _ = outbound(play_chunk_ms=20)
    out: list[CarrierCommand] = []
    audio.play("i1", 0, tone_24k(200), 0, out)
    assert {size for size in shape(out) if size != "mark"} == {FRAME_BYTES}


def test_latency_of_the_greeting_then_of_each_reply() -> None:
    audio, _ = outbound()
    out: list[CarrierCommand] = []
    audio.await_greeting(1000)
    audio.await_reply(1100)  # the caller spoke before the greeting came: it is still the greeting
    greeting = audio.play("i1", 0, tone_24k(100), 1300, out)
    assert greeting is not None and (greeting.kind, greeting.data) == (
        RecordKind.GREETING_LATENCY,
        {"ms": 300.0},
    )
    assert audio.play("i1", 0, tone_24k(100), 1400, out) is None  # only the first audio counts
    audio.await_reply(5000)
    reply = audio.play("i2", 0, tone_24k(100), 5400, out)
    assert reply is not None and (reply.kind, reply.data) == (RecordKind.TURN_LATENCY, {"ms": 400.0})


def test_a_greeting_talked_over_is_not_timed_as_the_greeting() -> None:
    audio, _ = outbound()
    out: list[CarrierCommand] = []
    audio.await_greeting(0)
    audio.greeting_interrupted()
    assert audio.play("i1", 0, tone_24k(100), 500, out) is None
    audio.await_reply(600)
    audio.greeting_interrupted()  # a reply's wait is not the greeting's: it stays
    reply = audio.play("i2", 0, tone_24k(100), 800, out)
    assert reply is not None and reply.kind is RecordKind.TURN_LATENCY


def test_what_the_model_sent_is_entered_in_the_ledger_for_the_truncate() -> None:
    audio, ledger = outbound()
    out: list[CarrierCommand] = []
    audio.play("i1", 0, tone_24k(100), 0, out)
    audio.play("i1", 0, tone_24k(60), 0, out)
    audio.item_done("i1", 0, out)
    for command in out:
        if isinstance(command, Mark):
            ledger.acked(command.name, 10_000)
    # The caller heard all that was sent (the resampler's tail too), more than the model sent.
    [p] = ledger.clear(10_000, unfinished=["i1"])
    assert p.heard_ms > 160 and p.audio_end_ms == 160
