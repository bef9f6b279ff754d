"""Loopback stand-in for the slice of Twilio's REST API the bridge uses: updating a call
(docs/protocols.md §T8). It answers the way Twilio does (Basic auth, JSON errors with a Twilio code)
and records every request so tests and the demo can check exactly what the bridge sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from bridge.sim.loopback_api import LoopbackApi, basic_auth

API_VERSION = "2010-04-01"
_ERROR_DOCS = "https://www.twilio.com/docs/errors/"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    auth_user: str | None  # the Basic auth user name; None if the header was missing or malformed


@dataclass
class TwilioApiStandIn(LoopbackApi):
    account_sid: str
    auth_token: str
    # When set, calls outside it answer 404 like Twilio's "resource not found".
    known_calls: Collection[str] | None = None
    # When set, every authenticated request answers this status with a Twilio-style error body.
    fail_status: int | None = None
    # Held before answering, so tests can see whether the client blocks the event loop.
    delay_s: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account}}/Calls/{{call_file}}", self._update_call)
        return app

    async def _update_call(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        user, password = basic_auth(request)
        self.requests.append(RecordedRequest(request.method, request.path, form, user))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

        account = request.match_info["account"]
        if user != self.account_sid or password != self.auth_token or account != self.account_sid:
            # Twilio answers a wrong token and a foreign account in the path alike: 401, code 20003.
            return _error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if self.fail_status is not None:
            return _error(self.fail_status, 20500, "An internal server error has occurred")
        call_file = request.match_info["call_file"]
        if not call_file.endswith(".json"):
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        call_sid = call_file.removesuffix(".json")
        if self.known_calls is not None and call_sid not in self.known_calls:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if form.get("Twiml") and form.get("Url"):
            return _error(400, 21220, "Twiml and Url are mutually exclusive")
        return web.json_response(self._call_json(call_sid, form))

    def _call_json(self, call_sid: str, form: dict[str, str]) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call_sid}.json"
        # An update that does not end the call leaves it in progress with the new TwiML running.
        status = form.get("Status", "in-progress")
        return {
            "sid": call_sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "status": status,
            "direction": "inbound",
            "from": "+15550001111",
            "to": "+15550002222",
            "date_created": now,
            "date_updated": now,
            "start_time": now,
            "end_time": now if status in ("completed", "canceled") else None,
            "duration": "0" if status in ("completed", "canceled") else None,
            "price": None,
            "price_unit": "USD",
            "parent_call_sid": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
        }


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"code": code, "message": message, "more_info": f"{_ERROR_DOCS}{code}", "status": status}
    return web.json_response(body, status=status, headers=headers)
