"""Loopback stand-in for the slice of Twilio's REST API the bridge uses: updating a call (docs/protocols.md
§T8) and placing one (§T9). It answers the way Twilio does (Basic auth, JSON errors with a Twilio code)
and records every request so tests and the demo can check exactly what the bridge sent.

A call placed here is carried out the way Twilio carries it, against the package's own callees
(`bridge.sim.callee`): status callbacks (initiated, ringing, answered, completed, or busy / no-answer /
failed), the answer URL fetched when the callee picks up, the TwiML's media stream connected to a
caller emulator the callee speaks and listens through, and, with machine detection, the asynchronous
verdict (AnsweredBy) posted when Twilio's detection would conclude it. Every callback is signed
(X-Twilio-Signature) with the account's Auth Token.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator

from bridge.clock import now_ms
from bridge.logs import get_logger
from bridge.sim.callee import Callee, demo_callee
from bridge.sim.carrier_emulator import LineConditions, TwilioCallerEmulator
from bridge.sim.loopback_api import LoopbackApi, basic_auth
from bridge.sim.twilio_voice import SIGNATURE_HEADER, NotConnected, answer_call, stream_headers

log = get_logger("bridge.sim")

API_VERSION = "2010-04-01"
_ERROR_DOCS = "https://www.twilio.com/docs/errors/"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    auth_user: str | None  # the Basic auth user name; None if the header was missing or malformed


@dataclass(frozen=True)
class PostedCallback:
    """A request the stand-in made to the bridge as Twilio would (a status or detection callback)."""

    url: str
    form: dict[str, str]
    status: int | None  # the bridge's answer; None if it could not be reached
    at_ms: float


@dataclass(eq=False)
class SimulatedCall:
    """One call placed through the stand-in, and what happened on it (tests read all of it)."""

    sid: str
    to: str
    from_: str
    params: MultiDictProxy[str] = field(repr=False)  # the create request as sent
    callee: Callee
    status: str = "queued"
    caller: TwilioCallerEmulator | None = None  # the callee's side of the media stream, once answered
    answered_at_ms: float | None = None
    answered_by: str | None = None  # the verdict posted, if detection ran
    timeline: list[tuple[str, float]] = field(default_factory=list)  # (what happened, now_ms)
    callbacks: list[PostedCallback] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _sequence: int = 0

    def note(self, what: str) -> None:
        self.timeline.append((what, now_ms()))

    def when(self, what: str) -> float | None:
        return next((at for name, at in self.timeline if name == what), None)

    @property
    def detection(self) -> str:
        """The machine detection asked for: "Enable", "DetectMessageEnd", or "" (none, or not async)."""
        asynchronous = self.params.get("AsyncAmd", "").lower() == "true"
        return self.params.get("MachineDetection", "") if asynchronous else ""


class _Line:
    """A callee's line: the media stream, and Twilio's detection listening to it."""

    def __init__(self, stand_in: TwilioApiStandIn, call: SimulatedCall, caller: TwilioCallerEmulator) -> None:
        self.stand_in = stand_in
        self.call = call
        self.caller = caller

    def sounds_human(self) -> None:
        self.stand_in._detected(self.call, "human", after_ms=self.stand_in.speech_end_threshold_ms)

    def sounds_like_a_machine(self) -> None:
        if self.call.detection == "Enable":
            self.stand_in._detected(self.call, "machine_start")

    def message_ended(self) -> None:
        if self.call.detection == "DetectMessageEnd":
            self.stand_in._detected(self.call, "machine_end_beep")

    def note(self, what: str) -> None:
        self.call.note(what)


# The SIP response Twilio reports with each way a call can fail to connect.
_SIP_CODES = {"busy": "486", "no-answer": "487", "failed": "404"}


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
    # Who picks up each number called (bridge.sim.callee.demo_callee: the demo numbers).
    callees: Callable[[str], Callee] = demo_callee
    # Silence after a person's first words before detection says "human" (Twilio's default).
    speech_end_threshold_ms: float = 1200.0
    line: LineConditions | None = None  # the callee's phone line (delay, jitter, playout buffering)
    # Where status and detection callbacks really land: a load balancer sending them to another
    # replica than the one that placed the call (None: where the call asked).
    callbacks_via: Callable[[str], str] | None = None
    calls: dict[str, SimulatedCall] = field(default_factory=dict)
    _http: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account}}/Calls.json", self._create_call)
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account}}/Calls/{{call_file}}", self._update_call)
        return app

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
        await super().stop()

    async def _authorised(self, request: web.Request, form: dict[str, str]) -> web.Response | None:
        """None if the request may go on; else the error Twilio would answer."""
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
        return None

    # -- placing a call ---------------------------------------------------------------------------

    async def _create_call(self, request: web.Request) -> web.Response:
        params = await request.post()
        form = {key: str(value) for key, value in params.items()}
        if (refused := await self._authorised(request, form)) is not None:
            return refused
        to, from_, url = form.get("To", ""), form.get("From", ""), form.get("Url", "")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _error(400, 21603, "A 'From' phone number is required")
        if not url.startswith(("http://", "https://")):
            return _error(400, 21205, "Url is not a valid URL")
        sid = "CA" + secrets.token_hex(16)
        call = SimulatedCall(sid, to, from_, MultiDictProxy(params.copy()), self.callees(to))  # type: ignore[arg-type]
        call.note("queued")
        self.calls[sid] = call
        task = asyncio.get_running_loop().create_task(self._carry_out(call), name=f"twilio-call-{sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        body = self._call_json(sid, {"Status": "queued"}, direction="outbound-api", to=to, from_=from_)
        return web.json_response(body, status=201)

    async def _carry_out(self, call: SimulatedCall) -> None:
        try:
            await self._progress(call, "initiated", "initiated")
            await asyncio.sleep(0.05)
            await self._progress(call, "ringing", "ringing")
            callee = call.callee
            timeout_ms = float(call.params.get("Timeout", "60")) * 1000
            await asyncio.sleep(min(callee.ring_ms, timeout_ms) / 1000)
            if callee.ring_ms > timeout_ms or callee.outcome != "answer":
                outcome = callee.outcome if callee.ring_ms <= timeout_ms else "no-answer"
                await self._progress(call, "completed", outcome)
                return
            call.answered_at_ms = now_ms()
            await self._progress(call, "answered", "in-progress")
            await self._connect(call)
            await self._progress(call, "completed", "completed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a stand-in that breaks says so, and the call still ends
            log.exception("simulated call failed", call_sid=call.sid, error=str(exc))
            await self._progress(call, "completed", "failed")
        finally:
            call.done.set()

    async def _connect(self, call: SimulatedCall) -> None:
        """Fetch the answer, connect its stream, and let the callee take the call."""
        form = self._voice_form(call, "in-progress")
        if call.detection:
            # The verdict comes when detection concludes, or as "unknown" at its timeout.
            timeout_s = float(call.params.get("MachineDetectionTimeout", "30"))
            self._later(timeout_s * 1000, lambda: self._verdict(call, "unknown"))
        try:
            stream_url, parameters = await answer_call(
                self._client(), call.params["Url"], form, self.auth_token
            )
        except (NotConnected, aiohttp.ClientError) as exc:
            call.note(f"not connected: {exc}")
            return
        caller = TwilioCallerEmulator(
            stream_url,
            line=self.line,
            custom_parameters=parameters,
            headers=stream_headers(stream_url, self.auth_token),
            call_sid=call.sid,
            account_sid=self.account_sid,
        )
        await caller.connect()
        call.caller = caller
        call.note("connected")
        try:
            await call.callee.on_line(_Line(self, call, caller))
        except ConnectionError:
            pass  # the bridge hung up
        finally:
            if caller.closed_by_server:
                call.note("hung up by the bridge")
            await caller.hangup()

    # -- callbacks --------------------------------------------------------------------------------

    def _detected(self, call: SimulatedCall, answered_by: str, after_ms: float = 0.0) -> None:
        """What detection concludes from the line; posted (once) if the call asked for detection."""
        if call.detection:
            self._later(after_ms, lambda: self._verdict(call, answered_by))

    async def _verdict(self, call: SimulatedCall, answered_by: str) -> None:
        url = call.params.get("AsyncAmdStatusCallback", "")
        if call.answered_by is not None or not url or call.status != "in-progress":
            return
        call.answered_by = answered_by
        call.note(f"answered_by {answered_by}")
        took = round(now_ms() - (call.answered_at_ms or now_ms()))
        form = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(took),
        }
        await self._post(call, url, form)

    async def _progress(self, call: SimulatedCall, event: str, status: str) -> None:
        """The call's status is now `status`: posted if the call asked for `event` (Twilio sends
        `completed` alone when it asked for none, and every end as a `completed` event)."""
        call.status = status
        call.note(status)
        url = call.params.get("StatusCallback", "")
        events = call.params.getall("StatusCallbackEvent", []) or ["completed"]
        if not url or event not in events:
            return
        form = self._voice_form(call, status)
        call._sequence += 1
        form.update(
            CallbackSource="call-progress-events",
            SequenceNumber=str(call._sequence - 1),
            Timestamp=format_datetime(datetime.now(UTC), usegmt=True),
        )
        if status in _SIP_CODES:
            form["SipResponseCode"] = _SIP_CODES[status]
        if status == "completed" and call.answered_at_ms is not None:
            form["CallDuration"] = str(round((now_ms() - call.answered_at_ms) / 1000))
        await self._post(call, url, form)

    def _voice_form(self, call: SimulatedCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "Direction": "outbound-api",
            "CallStatus": status,
            "ApiVersion": API_VERSION,
        }

    async def _post(self, call: SimulatedCall, url: str, form: dict[str, str]) -> None:
        if self.callbacks_via is not None:
            url = self.callbacks_via(url)
        headers = {SIGNATURE_HEADER: RequestValidator(self.auth_token).compute_signature(url, form)}
        status = None
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self._client().post(url, data=form, headers=headers) as response:
                status = response.status
        call.callbacks.append(PostedCallback(url, form, status, now_ms()))

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    def _later(self, delay_ms: float, action: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay_ms / 1000)
            await action()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- updating a call --------------------------------------------------------------------------

    async def _update_call(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        if (refused := await self._authorised(request, form)) is not None:
            return refused
        call_file = request.match_info["call_file"]
        if not call_file.endswith(".json"):
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        call_sid = call_file.removesuffix(".json")
        if self.known_calls is not None and call_sid not in self.known_calls:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if form.get("Twiml") and form.get("Url"):
            return _error(400, 21220, "Twiml and Url are mutually exclusive")
        return web.json_response(self._call_json(call_sid, form))

    def _call_json(
        self,
        call_sid: str,
        form: dict[str, str],
        *,
        direction: str = "inbound",
        to: str = "+15550002222",
        from_: str = "+15550001111",
    ) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call_sid}.json"
        # An update that does not end the call leaves it in progress with the new TwiML running.
        status = form.get("Status", "in-progress")
        return {
            "sid": call_sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "status": status,
            "direction": direction,
            "from": from_,
            "to": to,
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
