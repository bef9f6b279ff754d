"""The checks every JSON carrier dialect shares (bridge.carrier.json_message)."""

from __future__ import annotations

import gc
import sys

import pytest

from bridge.carrier.events import CarrierProtocolError
from bridge.carrier.json_message import decode_event


def _recurse(n: int) -> int:
    return 0 if n == 0 else 1 + _recurse(n - 1)


class _Finalizable:
    """Garbage with a finalizer that needs some stack, like a socket closing itself."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes
        self.cycle = self  # only the collector can free it

    def __del__(self) -> None:
        try:
            _recurse(100)
            self.outcomes.append("finalized")
        except RecursionError:
            self.outcomes.append("no stack left")


def _stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_a_message_nested_past_the_stack_is_refused_and_finalizers_keep_their_stack() -> None:
    outcomes: list[str] = []
    message = '{"event":' * 5 * sys.getrecursionlimit() + "1" + "}" * 5 * sys.getrecursionlimit()
    refused = pytest.raises(CarrierProtocolError, match="not JSON")
    threshold = gc.get_threshold()
    try:
        gc.collect()
        _Finalizable(outcomes)
        # The decoder allocates a dict per level on the way down, so the next collection starts at
        # the level this names: a few frames short of the recursion limit.
        gc.set_threshold(sys.getrecursionlimit() - _stack_depth() - 40)
        with refused:
            decode_event(message)
    finally:
        gc.set_threshold(*threshold)
    gc.collect()
    assert outcomes == ["finalized"]
