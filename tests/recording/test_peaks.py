"""The waveform a call page draws: each channel's loudest sample per 20 ms, whatever the block sizes."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from bridge.recording.finish import Peaks


@pytest.mark.parametrize(("rate", "blocks"), [(8000, [80000, 80000, 1234]), (11025, [110250, 7, 3000])])
def test_peaks_are_the_loudest_sample_of_every_20_ms(rate: int, blocks: list[int]) -> None:
    rng = np.random.default_rng(rate)
    audio = rng.integers(-32768, 32768, (sum(blocks), 2), dtype=np.int64).astype("<i2")
    audio[:50] = -32768  # the one magnitude an int16 cannot hold
    peaks = Peaks(rate)
    at = 0
    for size in blocks:
        peaks.add(audio[at : at + size])
        at += size
    document = peaks.document()
    bucket = rate * 20 // 1000
    assert (document["rate"], document["bucket_ms"], document["samples"]) == (rate, 20, sum(blocks))
    for index, name in enumerate(("caller", "assistant")):
        got = np.frombuffer(base64.b64decode(str(document[name])), dtype=np.uint8)
        magnitude = np.abs(audio[:, index].astype(np.int32))
        loudest = [magnitude[i : i + bucket].max() for i in range(0, len(magnitude), bucket)]
        assert got.tolist() == np.ceil(np.array(loudest) * 255 / 32768).astype(np.uint8).tolist()
        assert got[0] == 255


def test_silence_is_zero_and_a_whisper_still_shows() -> None:
    peaks = Peaks(8000)
    block = np.zeros((320, 2), dtype="<i2")
    block[200, 1] = 1
    peaks.add(block)
    document = peaks.document()
    assert base64.b64decode(str(document["caller"])) == b"\x00\x00"
    assert base64.b64decode(str(document["assistant"])) == b"\x00\x01"
