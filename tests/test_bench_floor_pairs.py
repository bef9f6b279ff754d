"""bench/load.py --pairs: the floor ratio of each floor-then-bridge pair, and the median it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

LOAD_PY = Path(__file__).resolve().parent.parent / "bench" / "load.py"


@pytest.fixture(scope="module")
def load() -> object:
    spec = importlib.util.spec_from_file_location("bench_load", LOAD_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_each_count_reports_the_median_of_its_pairs(load: object, capsys: pytest.CaptureFixture[str]) -> None:
    Row = load.Row  # type: ignore[attr-defined]
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

    load.print_floor_pairs(rows)  # type: ignore[attr-defined]

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "  x floor at 50 calls: median 1.42 of 3 pairs (1.61, 1.30, 1.42)",
        "  x floor at 100 calls: median 1.55 of 2 pairs (1.20, 1.90)",
    ]


def test_a_single_pair_prints_no_median(load: object, capsys: pytest.CaptureFixture[str]) -> None:
    Row = load.Row  # type: ignore[attr-defined]
    bridge = Row(50)
    bridge.floor_ratio = 1.4
    load.print_floor_pairs([Row(50), bridge])  # type: ignore[attr-defined]
    assert capsys.readouterr().out == ""


def test_pairs_repeat_the_floor_and_the_bridge_in_turn(load: object) -> None:
    runs = load.level_runs  # type: ignore[attr-defined]
    parse = load.parse_args  # type: ignore[attr-defined]
    floor, bridge, recorded = (True, False), (False, False), (False, True)
    assert runs(parse(["--floor", "--pairs", "3"])) == [floor, bridge] * 3
    assert runs(parse(["--floor"])) == [floor, bridge]
    assert runs(parse(["--floor", "--recording", "--pairs", "2"])) == [floor, bridge, recorded] * 2
    assert runs(parse([])) == [bridge]
