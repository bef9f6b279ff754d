"""The recording model and its rendering, compared sample for sample with where audio must land."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bridge.audio import L16_16K, PCMU_8K
from bridge.recording import RecordingFailed, render
from bridge.recording.finish import BLOCK_S
from tests.recording.helpers import (
    STARTED_AT,
    T0,
    expected_channel,
    feed_caller,
    new_recording,
    noise,
    pcm,
    read_wav,
    rendered,
)

FRAME = 160  # 20 ms of µ-law at 8 kHz


def test_caller_frames_are_contiguous_and_jitter_moves_nothing(tmp_path: Path) -> None:
    recording = new_recording()
    frames = [noise(FRAME, seed) for seed in range(100)]
    # Frame k ends at 20 (k + 1) ms on the line; the network delays each by 30 ms plus up to 45 ms of
    # jitter, and frames 40-44 arrive together after a 90 ms stall (a burst longer than the gap rule).
    for k, frame in enumerate(frames):
        jitter = (k * 37) % 46
        if 40 <= k <= 44:
            jitter = 90 + (44 - k) * 20
        recording.caller(frame, T0 + 20 * (k + 1) + 30 + (0 if k == 7 else jitter))
    recording.finish(T0 + 2500)
    result, wav = rendered(recording, tmp_path)

    # Frame 7 arrived with no jitter: it fixes the run at 30 ms (240 samples) after its true place.
    caller = expected_channel(20000, [(240, pcm(PCMU_8K, b"".join(frames)))])
    assert result.samples == 20000 and result.rate == 8000 and result.started_at == STARTED_AT
    np.testing.assert_array_equal(wav[:, 0], caller)
    assert not wav[:, 1].any()


def test_a_late_first_frame_does_not_delay_the_caller_channel(tmp_path: Path) -> None:
    recording = new_recording()
    frames = [noise(FRAME, seed) for seed in range(10)]
    recording.caller(frames[0], T0 + 20 + 50)  # the stream's first frame waited for the handshake
    for k in range(1, 10):
        recording.caller(frames[k], T0 + 20 * (k + 1))
    recording.finish(T0 + 300)
    _, wav = rendered(recording, tmp_path)
    np.testing.assert_array_equal(wav[:, 0], expected_channel(2400, [(0, pcm(PCMU_8K, b"".join(frames)))]))


def test_a_pause_in_the_caller_stream_is_silence_of_its_length(tmp_path: Path) -> None:
    recording = new_recording()
    before = [noise(FRAME, seed) for seed in range(5)]
    after = [noise(FRAME, 100 + seed) for seed in range(5)]
    for k, frame in enumerate(before):
        recording.caller(frame, T0 + 20 * (k + 1))
    for k, frame in enumerate(after):  # the carrier sent nothing for 500 ms (a hold)
        recording.caller(frame, T0 + 100 + 500 + 20 * (k + 1))
    recording.finish(T0 + 1000)
    _, wav = rendered(recording, tmp_path)
    caller = expected_channel(
        8000, [(0, pcm(PCMU_8K, b"".join(before))), (800 + 4000, pcm(PCMU_8K, b"".join(after)))]
    )
    np.testing.assert_array_equal(wav[:, 0], caller)


def test_assistant_audio_queues_behind_itself_and_a_stall_is_silence(tmp_path: Path) -> None:
    recording = new_recording()
    first = [noise(800, seed) for seed in range(3)]  # 100 ms pieces, sent faster than real time
    for k, piece in enumerate(first):
        recording.assistant(piece, T0 + 200 + 5 * k)  # each could play at once, but the queue is ahead
    late = noise(480, 9)  # the model stalled: this reached the carrier 700 ms after the queue ran dry
    recording.assistant(late, T0 + 200 + 300 + 700)
    recording.finish(T0 + 2000)
    _, wav = rendered(recording, tmp_path)
    assistant = expected_channel(
        16000, [(1600, pcm(PCMU_8K, b"".join(first))), (1600 + 2400 + 5600, pcm(PCMU_8K, late))]
    )
    np.testing.assert_array_equal(wav[:, 1], assistant)
    assert not wav[:, 0].any()


@pytest.mark.parametrize("spooled_in_between", [False, True], ids=["cut-in-memory", "cut-after-spooling"])
def test_a_clear_keeps_exactly_what_was_heard(tmp_path: Path, spooled_in_between: bool) -> None:
    recording = new_recording()
    pieces = [noise(800, seed) for seed in range(4)]  # 400 ms queued
    spooled = b""
    for k, piece in enumerate(pieces):
        recording.assistant(piece, T0 + 100)
        if spooled_in_between and k == 2:
            spooled = recording.take_spool()  # 300 ms already in the spool file when the clear comes
    # The caller barged in after hearing 130 ms: 270 ms (2160 bytes) of what was sent never played.
    recording.cleared(4 * 800 - 1040)
    after = noise(400, 50)
    recording.assistant(after, T0 + 900)  # the answer to the barge-in
    recording.finish(T0 + 1500)
    _, wav = rendered(recording, tmp_path, spooled)
    heard = pcm(PCMU_8K, b"".join(pieces))[:1040]
    np.testing.assert_array_equal(
        wav[:, 1], expected_channel(12000, [(800, heard), (7200, pcm(PCMU_8K, after))])
    )


def test_a_clear_of_more_than_the_run_holds_cuts_only_that_run(tmp_path: Path) -> None:
    recording = new_recording()
    first, second = noise(800, 1), noise(800, 2)
    recording.assistant(first, T0)
    recording.assistant(second, T0 + 500)  # after a stall: its own run
    recording.cleared(5000)  # the tap's count ran past this run's start: the earlier run had played
    recording.finish(T0 + 1000)
    _, wav = rendered(recording, tmp_path)
    np.testing.assert_array_equal(wav[:, 1], expected_channel(8000, [(0, pcm(PCMU_8K, first))]))


def test_both_channels_across_blocks_with_spooling_every_second(tmp_path: Path) -> None:
    """A 25 s call crossing the writer's 10 s blocks, spooled in pieces the way the edge takes them."""
    assert BLOCK_S == 10
    recording = new_recording()
    spooled = bytearray()
    caller_audio = noise(FRAME * 1250, 7)
    assistant_audio = noise(8000 * 8, 8)  # 8 s of speech, played from 6.52 s (frames 325-724)
    for k in range(1250):
        at = T0 + 20 * (k + 1)
        recording.caller(caller_audio[k * FRAME : (k + 1) * FRAME], at)
        if 325 <= k < 725:
            recording.assistant(assistant_audio[(k - 325) * FRAME : (k - 324) * FRAME], at)
        if k % 50 == 0:
            spooled += recording.take_spool()
    recording.finish(T0 + 25000)
    result, wav = rendered(recording, tmp_path, bytes(spooled))
    assert result.samples == 200000 and result.duration_s == 25.0
    np.testing.assert_array_equal(wav[:, 0], expected_channel(200000, [(0, pcm(PCMU_8K, caller_audio))]))
    np.testing.assert_array_equal(
        wav[:, 1], expected_channel(200000, [(326 * FRAME, pcm(PCMU_8K, assistant_audio))])
    )


def test_wideband_leg_is_recorded_at_its_own_rate(tmp_path: Path) -> None:
    recording = new_recording(L16_16K)
    caller = [noise(640, seed) for seed in range(5)]  # 20 ms of PCM16 at 16 kHz
    for k, frame in enumerate(caller):
        recording.caller(frame, T0 + 20 * (k + 1))
    reply = noise(3200, 99)
    recording.assistant(reply, T0 + 50)
    recording.finish(T0 + 200)
    result, wav = rendered(recording, tmp_path)
    assert result.rate == 16000 and wav.shape == (3200, 2)
    np.testing.assert_array_equal(wav[:, 0], expected_channel(3200, [(0, pcm(L16_16K, b"".join(caller)))]))
    np.testing.assert_array_equal(wav[:, 1], expected_channel(3200, [(800, pcm(L16_16K, reply))]))
    with wave.open(str(result.files["wav"])) as check:
        assert check.getframerate() == 16000


def test_flac_copy_is_lossless_and_the_recording_lasts_until_the_call_ended(tmp_path: Path) -> None:
    recording = new_recording()
    feed_caller(recording, noise(FRAME * 50, 4))
    recording.assistant(noise(4000, 77), T0 + 300)
    recording.finish(T0 + 3000)  # two silent seconds after the last audio: the caller stayed on
    result, wav = rendered(recording, tmp_path)
    assert wav.shape == (24000, 2)
    flac, rate = soundfile.read(result.files["flac"], dtype="int16")
    assert rate == 8000
    np.testing.assert_array_equal(flac, wav)


def test_a_spool_cut_short_by_a_crash_renders_its_whole_records(tmp_path: Path) -> None:
    recording = new_recording()
    first = noise(FRAME * 10, 1)
    feed_caller(recording, first)
    spooled = recording.take_spool()
    recording.caller(noise(FRAME, 2), T0 + 220)
    partial = recording.take_spool()
    spool = tmp_path / "crashed.spool"
    spool.write_bytes(spooled + partial[:-40])  # the process died in the middle of a write
    result = render(spool, tmp_path, "crashed")
    np.testing.assert_array_equal(read_wav(result.files["wav"])[:, 0], pcm(PCMU_8K, first))


def test_a_recording_that_cannot_be_written_fails_with_the_reason_and_leaves_nothing(tmp_path: Path) -> None:
    recording = new_recording()
    recording.caller(noise(FRAME, 1), T0 + 20)
    recording.finish(T0 + 100)
    spool = tmp_path / "call.spool"
    spool.write_bytes(recording.take_spool())
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(RecordingFailed, match="Not a directory"):
        render(spool, blocker / "out", "call")
    with pytest.raises(RecordingFailed, match="not a recording spool"):
        render(blocker, tmp_path, "junk")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call.spool", "not-a-directory"]


def test_after_stop_or_finish_audio_is_ignored() -> None:
    recording = new_recording()
    recording.caller(noise(FRAME, 1), T0 + 20)
    assert recording.pending_bytes == FRAME
    recording.stop()
    recording.caller(noise(FRAME, 2), T0 + 40)
    recording.assistant(noise(FRAME, 3), T0 + 40)
    recording.cleared(100)
    assert recording.pending_bytes == 0 and recording.take_spool() == b""
