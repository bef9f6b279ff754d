"""How a stop spends its one budget (bridge/stop_budget.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, load_settings
from bridge.stop_budget import FINAL_S, StopClock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_drain_then_the_goodbyes_then_the_final_phase_fit_the_budget() -> None:
    clock = Clock()
    stop = StopClock(budget_s=45, drain_s=30, clock=clock)
    assert (stop.drain_left(), stop.goodbye_left(), stop.left()) == (30, 45 - FINAL_S, 45)
    clock.now += 30
    assert stop.drain_left() == 0 and stop.goodbye_left() == 10
    clock.now += 12
    assert stop.goodbye_left() == 0 and stop.left() == 3 and stop.left(keep_s=1) == 2
    clock.now += 10
    assert stop.left() == 0  # never negative: a wait of what is left is a wait of nothing


def test_a_drain_longer_than_the_budget_allows_is_cut_to_leave_the_final_phase() -> None:
    clock = Clock()
    stop = StopClock(budget_s=20, drain_s=30, clock=clock)
    assert stop.drain_left() == 20 - FINAL_S and stop.goodbye_left() == 20 - FINAL_S


def test_hurrying_skips_the_drain_and_the_goodbyes_and_never_extends_the_deadline() -> None:
    clock = Clock()
    stop = StopClock(budget_s=45, drain_s=30, clock=clock)
    clock.now += 3
    stop.hurry()
    assert (stop.drain_left(), stop.goodbye_left(), stop.left()) == (0, 0, FINAL_S)
    clock.now += 44
    stop.hurry()  # a third signal late in the stop: the deadline stays where it was
    assert stop.left() == 0


def test_the_budget_defaults_to_the_drain_plus_fifteen_and_must_leave_room() -> None:
    assert load_settings({}).shutdown_budget == 45
    assert load_settings({"DRAIN_SECONDS": "600"}).shutdown_budget == 615
    assert load_settings({"DRAIN_SECONDS": "1", "SHUTDOWN_BUDGET_SECONDS": "11"}).shutdown_budget == 11
    with pytest.raises(ConfigError, match="SHUTDOWN_BUDGET_SECONDS must be at least DRAIN_SECONDS \\+ 10"):
        load_settings({"SHUTDOWN_BUDGET_SECONDS": "39"})
