"""Phone numbers as the bridge takes them in settings, tool calls and the control API: E.164."""

from __future__ import annotations

import re

# '+', a country code that does not start with 0, then up to 15 digits in all (ITU-T E.164).
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def valid_e164(number: str) -> bool:
    return _E164.fullmatch(number) is not None
