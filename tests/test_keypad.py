"""Keypad digits into entries."""

from __future__ import annotations

from bridge.keypad import DTMF_QUIET_MS, KeypadEntry


def test_digits_typed_together_are_one_entry_ended_by_a_pause_or_a_hash() -> None:
    keypad = KeypadEntry()
    assert keypad.due(0) is None
    for i, digit in enumerate("1234"):
        assert keypad.press(digit, 100.0 * i) is None
    assert keypad.due(300 + DTMF_QUIET_MS - 1) is None  # may still be typing
    assert keypad.due(300 + DTMF_QUIET_MS) == "1234"
    assert keypad.due(10**6) is None
    keypad.press("9", 5000)
    assert keypad.press("#", 5100) == "9#"
