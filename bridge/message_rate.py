"""A carrier stream's message rate, to tell a flood from a carrier doing its job."""

from __future__ import annotations

MAX_MESSAGES_PER_S = 250  # Twilio sends ~50 media messages a second plus mark echoes and DTMF


class MessageRate:
    """Messages per one-second window; a stream far above a carrier's rate is a flood."""

    def __init__(self, limit: int = MAX_MESSAGES_PER_S) -> None:
        self.limit = limit
        self._window = 0.0
        self._count = 0

    def exceeded(self, now_ms: float) -> bool:
        if now_ms - self._window >= 1000:
            self._window, self._count = now_ms, 0
        self._count += 1
        return self._count > self.limit
