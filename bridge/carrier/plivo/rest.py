"""Plivo's Call API, the one request the bridge makes: transfer a live call.

"Transfer a call" (`POST /v1/Account/{auth_id}/Call/{call_uuid}/`, `legs=aleg`, `aleg_url`, HTTP Basic
auth with the Auth ID and Auth Token): Plivo then fetches `aleg_url` (the bridge's /plivo/transfer,
which answers `<Dial>`), and the new document replaces the stream.
"""

from __future__ import annotations

import base64

import aiohttp

from bridge.carrier.transfer import TransferFailed

DEFAULT_API_BASE = "https://api.plivo.com"
API_TIMEOUT_S = 10.0


async def transfer_call(
    auth_id: str, auth_token: str, call_uuid: str, aleg_url: str, *, api_base: str = ""
) -> None:
    """Have Plivo fetch `aleg_url` and run its XML on the live call (this ends the audio stream);
    TransferFailed names the call and the HTTP status, never the credentials."""
    url = f"{(api_base or DEFAULT_API_BASE).rstrip('/')}/v1/Account/{auth_id}/Call/{call_uuid}/"
    body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
    auth = base64.b64encode(f"{auth_id}:{auth_token}".encode()).decode("ascii")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S)) as http,
            http.post(url, json=body, headers={"Authorization": f"Basic {auth}"}) as response,
        ):
            if 200 <= response.status < 300:
                return
            try:
                detail = (await response.json(content_type=None)).get("error", "")
            except (ValueError, AttributeError, aiohttp.ClientError):
                detail = ""
            raise TransferFailed(
                f"plivo transfer {call_uuid} failed: HTTP {response.status} {detail}".rstrip()
            )
    except TimeoutError:
        raise TransferFailed(f"plivo transfer {call_uuid} timed out after {API_TIMEOUT_S:g} s") from None
    except aiohttp.ClientError as exc:
        raise TransferFailed(f"plivo transfer {call_uuid} failed: {type(exc).__name__}") from None
