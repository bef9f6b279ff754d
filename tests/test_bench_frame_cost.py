"""bench/frame_cost.py --floor: the floor relay is fed the same messages as the bridge and does the
same relaying with them, so the two figures are for the same work."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

FRAME_COST = Path(__file__).resolve().parent.parent / "bench" / "frame_cost.py"


@pytest.fixture(scope="module")
def frame_cost() -> Any:
    spec = importlib.util.spec_from_file_location("bench_frame_cost", FRAME_COST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_frame_cost"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("passthrough", [True, False])
def test_the_floor_relays_the_caller_audio_the_bridge_does(frame_cost: Any, passthrough: bool) -> None:
    bench = frame_cost.Bench(passthrough=passthrough)
    floor = frame_cost.FloorBench(passthrough)
    for text in bench.messages("caller", 6):
        bench.call.carrier_event(bench.twilio.decode(text), bench.now)
        _, to_upstream, _ = bench.call.drain()
        assert [bench.realtime.encode(event) for event in to_upstream] == [floor.relay.from_carrier(text)[1]]


@pytest.mark.parametrize("passthrough", [True, False])
def test_the_floor_plays_the_model_audio_the_bridge_does(frame_cost: Any, passthrough: bool) -> None:
    bench = frame_cost.Bench(passthrough=passthrough)
    floor = frame_cost.FloorBench(passthrough)
    played_by_bridge, played_by_floor = b"", b""
    for text in bench.messages("delta", 4):
        bench.call.model_event(bench.realtime.decode(text), bench.now)
        bench.now += 1.0
        to_carrier, _, _ = bench.call.drain()
        played_by_bridge += b"".join(getattr(command, "payload", b"") for command in to_carrier)
        for message in floor.relay.from_model(text.encode()):
            media = frame_cost.floor_relay._carrier_decoder.decode(message).media
            played_by_floor += media.payload if media is not None else b""
    # The bridge's resampler may hold a few samples back until the item ends; all else is the same audio.
    assert played_by_floor.startswith(played_by_bridge) or played_by_bridge.startswith(played_by_floor)
    assert abs(len(played_by_bridge) - len(played_by_floor)) < 100
    assert len(played_by_bridge) >= 4 * frame_cost.DELTA_MS * 8 - 100


def test_the_floor_leaves_the_environment_as_it_found_it(frame_cost: Any) -> None:
    before = os.environ.get("AUDIO_PASSTHROUGH")
    frame_cost.FloorBench(True)
    assert os.environ.get("AUDIO_PASSTHROUGH") == before
