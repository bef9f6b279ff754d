"""E.164, as settings, tools and the control API accept phone numbers."""

from __future__ import annotations

import pytest

from bridge.phone_numbers import valid_e164


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("+15551234567", True),
        ("+442071838750", True),
        ("+1234567", True),  # 7 digits: the shortest accepted
        ("+123456789012345", True),  # 15 digits: E.164's maximum
        ("+123456", False),
        ("+1234567890123456", False),
        ("+05551234567", False),
        ("15551234567", False),
        ("+1 555 123 4567", False),
        ("+1555123456a", False),
        ("+15551234567\n", False),
        ("", False),
    ],
)
def test_valid_e164(number: str, ok: bool) -> None:
    assert valid_e164(number) is ok
