"""Loopback stand-in for the slice of Plivo's Call API the bridge uses: transferring a live call
(`POST /v1/Account/{auth_id}/Call/{call_uuid}/` with `legs`, `aleg_url`, `aleg_method`).

It answers the way Plivo does (HTTP Basic auth with the Auth ID and Auth Token, 202 "call
transferred", JSON `{"api_id", "error"}` on failure), and then does what Plivo does next: fetches the
`aleg_url`, signed with signature V3 like any Plivo callback, and keeps the XML it got, so a test can
follow the whole transfer. Every request is recorded.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.carrier.plivo.signature import NONCE_HEADER, SIGNATURE_HEADER, signature_v3
from bridge.sim.loopback_api import LoopbackApi, basic_auth


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: dict[str, Any]
    auth_user: str | None  # the Basic auth user name; None if the header was missing or malformed


@dataclass(frozen=True)
class FetchedDocument:
    url: str
    status: int
    xml: str


@dataclass
class PlivoApiStandIn(LoopbackApi):
    auth_id: str
    auth_token: str
    known_calls: Collection[str] | None = None  # when set, other calls answer 404 like Plivo
    fail_status: int | None = None  # when set, authenticated requests answer this status
    requests: list[RecordedRequest] = field(default_factory=list)
    documents: list[FetchedDocument] = field(default_factory=list)  # what aleg_url answered

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/Account/{auth_id}/Call/{call_uuid}/", self._transfer)
        return app

    async def _transfer(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        user, password = basic_auth(request)
        self.requests.append(RecordedRequest(request.method, request.path, body, user))
        if (
            user != self.auth_id
            or not secrets.compare_digest(password or "", self.auth_token)
            or request.match_info["auth_id"] != self.auth_id
        ):
            return _error(401, "authentication failed")
        if self.fail_status is not None:
            return _error(self.fail_status, "internal server error")
        call_uuid = request.match_info["call_uuid"]
        if self.known_calls is not None and call_uuid not in self.known_calls:
            return _error(404, "call not found")
        legs, aleg_url = body.get("legs", ""), body.get("aleg_url", "")
        if legs not in ("aleg", "both") or not isinstance(aleg_url, str) or not aleg_url:
            return _error(400, "aleg_url is required when legs is aleg or both")
        await self._fetch(aleg_url, str(body.get("aleg_method", "POST")).upper(), call_uuid)
        return web.json_response({"message": "call transferred", "api_id": str(uuid.uuid4())}, status=202)

    async def _fetch(self, url: str, method: str, call_uuid: str) -> None:
        """Plivo runs the new XML on the call: it asks `url` for it, signed like every callback."""
        params = {"CallUUID": call_uuid, "CallStatus": "in-progress", "Direction": "inbound"}
        nonce = secrets.token_hex(10)
        headers = {
            SIGNATURE_HEADER: signature_v3(self.auth_token, method, url, params, nonce),
            NONCE_HEADER: nonce,
        }
        get = method == "GET"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.request(
                method, url, params=params if get else None, data=None if get else params, headers=headers
            ) as response,
        ):
            self.documents.append(FetchedDocument(url, response.status, await response.text()))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"api_id": str(uuid.uuid4()), "error": message}, status=status)
