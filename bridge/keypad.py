"""Keypad digits as the caller means them: one entry (an account number, a menu choice), not a
message per key. An entry ends with `#` or when the caller stops typing for a moment."""

from __future__ import annotations

DTMF_QUIET_MS = 1500.0  # digits typed within this of each other are one entry


class KeypadEntry:
    def __init__(self) -> None:
        self._digits: list[str] = []
        self._last_at = 0.0

    def press(self, digit: str, now: float) -> str | None:
        """A key was pressed; returns the entry if this key ended it (`#`)."""
        self._digits.append(digit)
        self._last_at = now
        return self._take() if digit == "#" else None

    def due(self, now: float) -> str | None:
        """The entry, once the caller has stopped typing; None while they may still be."""
        if self._digits and now - self._last_at >= DTMF_QUIET_MS:
            return self._take()
        return None

    def _take(self) -> str:
        digits, self._digits = "".join(self._digits), []
        return digits
