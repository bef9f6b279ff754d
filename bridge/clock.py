"""The one clock every part of a call is stamped with: monotonic milliseconds.

The pump, the SIP leg and the simulators all read it, so their times compare directly (a test can set
the carrier emulator's records beside the bridge's).
"""

from __future__ import annotations

import time


def now_ms() -> float:
    return time.monotonic() * 1000.0
