"""The token on every URL we give a carrier for one placed call (its answer, its callbacks): our call
id and a MAC over it, so a request naming a placed call proves we named it. Keyed from a secret every
replica shares, so whichever replica a callback reaches can check it. What a token may do once checked
(answer a call once, only move its progress forward) the call log decides."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_TOKEN = re.compile(r"(?P<call_id>out_[0-9a-f]{24})\.(?P<mac>[A-Za-z0-9_-]{27})")


class PlacedCallTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key  # derived for this purpose alone (Bridge.shared_key)

    def issue(self, call_id: str) -> str:
        return f"{call_id}.{self._mac(call_id)}"

    def call_id(self, token: str | None) -> str | None:
        """The placed call this token names, or None for anything we did not issue."""
        match = _TOKEN.fullmatch(token or "")
        if match is None or not hmac.compare_digest(match["mac"], self._mac(match["call_id"])):
            return None
        return match["call_id"]

    def _mac(self, call_id: str) -> str:
        digest = hmac.new(self._key, call_id.encode(), hashlib.sha256).digest()[:20]
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
