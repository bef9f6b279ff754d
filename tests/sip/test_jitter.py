from __future__ import annotations

import random

from bridge.sip.jitter import MAX_MS, MIN_MS, JitterBuffer

SILENCE = b"\x7e" * 160


def frame(n: int) -> bytes:
    return (n & 0xFFFF).to_bytes(2, "big") * 80


def played(out: list[bytes | None]) -> list[int | str]:
    return ["-" if f is None else ("s" if f == SILENCE else int.from_bytes(f[:2], "big")) for f in out]


def until(out: list, last: int) -> list:
    """What played up to frame `last`: the end of a stream is followed by a little concealment."""
    audio = [x for x in out if x != "-"]
    return audio[: audio.index(last) + 1]


def run(
    arrivals: list[tuple[float, int]], ticks: int, buffer: JitterBuffer | None = None
) -> tuple[JitterBuffer, list]:
    """Packets (arrival ms, sequence) into a buffer ticked every 20 ms; timestamps follow sequence."""
    jb = buffer or JitterBuffer(SILENCE)
    pending = sorted(arrivals, key=lambda a: a[0])
    out = []
    for tick in range(ticks):
        now = tick * 20.0
        while pending and pending[0][0] <= now:
            at, seq = pending.pop(0)
            jb.push(seq & 0xFFFF, seq * 160, frame(seq), at)
        out.append(jb.pop())
    return jb, played(out)


def test_reordered_packets_play_in_order() -> None:
    arrivals = [(0, 0), (20, 2), (20, 1), (40, 3), (60, 5), (60, 4), (80, 6)]
    _, out = run(arrivals, 10)
    assert until(out, 6) == [0, 1, 2, 3, 4, 5, 6]


def test_a_lost_frame_is_concealed_and_playout_goes_on() -> None:
    arrivals = [(20.0 * n, n) for n in range(10) if n != 4]
    jb, out = run(arrivals, 14)
    audio = until(out, 9)
    assert [x for x in audio if isinstance(x, int) and x != 3] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert audio[4] == 3  # the frame before the loss repeated in its place
    assert "-" not in out[: out.index(9)]  # no stall between the first frame and the last
    assert jb.stats.concealed >= 1


def test_two_lost_frames_repeat_once_then_silence() -> None:
    arrivals = [(20.0 * n, n) for n in range(8) if n not in (3, 4)]
    _, out = run(arrivals, 12)
    audio = until(out, 7)
    assert audio[:5] == [0, 1, 2, 2, "s"] and audio[-3:] == [5, 6, 7]


def test_late_and_duplicate_packets_are_dropped() -> None:
    arrivals = [(20.0 * n, n) for n in range(6)] + [(60.0, 2), (140.0, 1)]
    jb, out = run(arrivals, 10)
    assert until(out, 5) == [0, 1, 2, 3, 4, 5]
    assert jb.stats.duplicates + jb.stats.late == 2


def test_sequence_wrap_is_in_order() -> None:
    arrivals = [(20.0 * i, 65534 + i) for i in range(5)]
    _, out = run(arrivals, 8)
    assert until(out, 2) == [65534, 65535, 0, 1, 2]


def test_depth_adapts_to_jitter_between_the_bounds() -> None:
    steady = JitterBuffer(SILENCE)
    run([(20.0 * n, n) for n in range(100)], 110, steady)
    assert steady.target_ms == MIN_MS

    rng = random.Random(7)
    jittery = JitterBuffer(SILENCE)
    run([(20.0 * n + rng.uniform(0, 60), n) for n in range(200)], 220, jittery)
    assert MIN_MS < jittery.target_ms <= MAX_MS

    bursty = JitterBuffer(SILENCE)  # five frames at once every 100 ms
    run([(100.0 * (n // 5) + 100, n) for n in range(200)], 220, bursty)
    assert bursty.target_ms == MAX_MS


def test_bursty_arrival_loses_nothing_once_adapted() -> None:
    jb = JitterBuffer(SILENCE)
    jb, out = run([(100.0 * (n // 5) + 100, n) for n in range(300)], 320, jb)
    audio = until(out[100:], 299)  # after the first two seconds, with the depth grown
    assert jb.stats.late == 0
    assert audio == list(range(audio[0], audio[0] + len(audio)))  # no gaps, no concealment


def test_a_grown_buffer_sheds_back_to_its_target() -> None:
    jb = JitterBuffer(SILENCE)
    for n in range(10):  # a burst of 200 ms at once on a clean line
        jb.push(n, n * 160, frame(n), 0.0)
    out = [jb.pop() for _ in range(10)]
    assert jb.stats.shed > 0
    assert jb.depth <= jb.target_frames + 2
    audio = until(played(out), 9)
    assert audio == sorted(audio)  # in order, and later ones caught up
