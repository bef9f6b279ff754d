"""Telnyx's Call Control REST API, the one command the bridge needs: transfer a live call.

`POST {TELNYX_API_BASE}/v2/calls/{call_control_id}/actions/transfer` with `{"to": number}`, with the
API key (TELNYX_API_KEY) as a Bearer token. That a TeXML-driven call accepts this Call Control
command is unverified.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.carrier.transfer import TransferFailed

DEFAULT_API_BASE = "https://api.telnyx.com"
TRANSFER_TIMEOUT_S = 10.0


class TelnyxCallControl:
    """The one Call Control command the bridge needs: transfer a live call to a number."""

    def __init__(self, api_key: str, api_base: str = "", timeout_s: float = TRANSFER_TIMEOUT_S) -> None:
        self._api_key = api_key
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.timeout_s = timeout_s

    async def transfer(self, call_control_id: str, number: str) -> None:
        """TransferFailed says why Telnyx did not (status and its error code/title, never the key)."""
        url = f"{self.api_base}/v2/calls/{quote(call_control_id, safe='')}/actions/transfer"
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as http,
                http.post(url, json={"to": number}, headers=headers) as response,
            ):
                if 200 <= response.status < 300:
                    return
                summary = _error_summary(await response.text())
                raise TransferFailed(f"Telnyx transfer failed: HTTP {response.status}{summary}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransferFailed(f"Telnyx transfer failed: {type(exc).__name__}") from None


def _error_summary(body: str) -> str:
    # Telnyx errors: {"errors": [{"code": "90018", "title": "Call has already ended", "detail": ...}]}
    try:
        errors = json.loads(body).get("errors") or []
        first: dict[str, Any] = errors[0] if isinstance(errors[0], dict) else {}
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f" (code {str(first.get('code', ''))[:16]}: {str(first.get('title', ''))[:80]})"
