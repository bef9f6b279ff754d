"""The last word: asked once, the line closes when it was heard, or at its deadline."""

from __future__ import annotations

from bridge.goodbye import GOODBYE_LIMIT_MS, GOODBYES, Goodbye, GoodbyeState


def test_no_goodbye_ends_nothing() -> None:
    goodbye = Goodbye()
    assert goodbye.ends_call(10**9, playing=False) is None and goodbye.instructions == ""


def test_a_goodbye_is_begun_once_and_ends_the_call_once_spoken_and_heard() -> None:
    goodbye = Goodbye()
    assert goodbye.begin("timeout", 1000)
    assert not goodbye.begin("shutdown", 1001)  # the first reason stands
    assert goodbye.instructions == GOODBYES["timeout"]
    assert goodbye.ends_call(1500, playing=False) is None  # asked, not spoken yet
    goodbye.spoken()
    assert goodbye.state is GoodbyeState.SPOKEN
    assert goodbye.ends_call(1600, playing=True) is None  # the caller is still hearing it
    assert goodbye.ends_call(1700, playing=False) == "timeout"


def test_a_goodbye_never_heard_ends_the_call_at_its_deadline() -> None:
    goodbye = Goodbye()
    goodbye.begin("shutdown", 0)
    assert goodbye.ends_call(GOODBYE_LIMIT_MS - 1, playing=True) is None
    assert goodbye.ends_call(GOODBYE_LIMIT_MS, playing=True) == "shutdown"
