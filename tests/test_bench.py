"""The benchmarks' own logic: bench/load.py --pairs (the floor ratio of each floor-then-bridge pair,
and the median it reports) and bench/frame_cost.py --floor (the floor relay is fed the same messages as
the bridge and relays the same audio with them, so the two figures are for the same work)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def load() -> Any:
    return _load("load")


@pytest.fixture(scope="module")
def frame_cost() -> Any:
    return _load("frame_cost")


# -- bench/load.py --pairs ------------------------------------------------------------------------


def test_each_count_reports_the_median_of_its_pairs(load: Any, capsys: pytest.CaptureFixture[str]) -> None:
    Row = load.Row
    rows = []
    for calls, ratios in ((50, (1.61, 1.30, 1.42)), (100, (1.20, 1.90))):
        for ratio in ratios:
            rows.append(Row(calls))  # the floor's row: no ratio of its own
            bridge = Row(calls)
            bridge.floor_ratio = ratio
            rows.append(bridge)
    recorded = Row(50, recording=True)
    recorded.floor_ratio = 9.0  # a recorded run is not the bridge against the floor
    rows.append(recorded)

    load.print_floor_pairs(rows)

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "  x floor at 50 calls: median 1.42 of 3 pairs (1.61, 1.30, 1.42)",
        "  x floor at 100 calls: median 1.55 of 2 pairs (1.20, 1.90)",
    ]


def test_a_single_pair_prints_no_median(load: Any, capsys: pytest.CaptureFixture[str]) -> None:
    Row = load.Row
    bridge = Row(50)
    bridge.floor_ratio = 1.4
    load.print_floor_pairs([Row(50), bridge])
    assert capsys.readouterr().out == ""


def test_pairs_repeat_the_floor_and_the_bridge_in_turn(load: Any) -> None:
    runs = load.level_runs
    parse = load.parse_args
    floor, bridge, recorded = (True, False), (False, False), (False, True)
    assert runs(parse(["--floor", "--pairs", "3"])) == [floor, bridge] * 3
    assert runs(parse(["--floor"])) == [floor, bridge]
    assert runs(parse(["--floor", "--recording", "--pairs", "2"])) == [floor, bridge, recorded] * 2
    assert runs(parse([])) == [bridge]


# -- bench/frame_cost.py --floor ------------------------------------------------------------------


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
