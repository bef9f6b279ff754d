"""Loopback stand-in for the slice of Telnyx's Call Control API the bridge uses: transferring a call
(`POST /v2/calls/{call_control_id}/actions/transfer`). It answers the way Telnyx documents (Bearer auth,
JSON `{"data": {"result": "ok"}}`, errors as `{"errors": [{"code", "title", "detail"}]}`) and records
every request so tests can check exactly what the bridge sent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.sim.loopback_api import LoopbackApi


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    call_control_id: str
    body: Any  # the JSON body, or None if it was not JSON
    bearer: str | None  # the Bearer token presented, None if the header was missing or not Bearer


@dataclass
class TelnyxApiStandIn(LoopbackApi):
    api_key: str
    # When set, calls outside it answer 422 "Call has already ended", as Telnyx does for a gone call.
    known_calls: Collection[str] | None = None
    requests: list[RecordedRequest] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/calls/{call_control_id}/actions/transfer", self._transfer)
        return app

    async def _transfer(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        bearer = token if scheme == "Bearer" and token else None
        try:
            body = await request.json()
        except ValueError:
            body = None
        call_control_id = request.match_info["call_control_id"]
        self.requests.append(RecordedRequest(request.path, call_control_id, body, bearer))
        if bearer != self.api_key:
            return _error(401, "10009", "Authentication failed")
        if not isinstance(body, dict) or not isinstance(body.get("to"), str) or not body["to"]:
            return _error(422, "10015", "Invalid parameter: to")
        if self.known_calls is not None and call_control_id not in self.known_calls:
            return _error(422, "90018", "Call has already ended")
        return web.json_response({"data": {"result": "ok"}})


def _error(status: int, code: str, title: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "title": title, "detail": title}]}, status=status)
