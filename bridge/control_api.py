"""Live control of calls in progress, for operators and back-office systems (an operator's token).

Every action is on record: who (the operator's label, never their token), what, when and how it went
(done, refused, failed), in the call's log as an `operator_action` event (the call's timeline shows
it as the operator's), in the process log, and in the answer. Errors answer JSON like /api/calls,
`{"error": "..."}`; one the configuration causes names the setting (`missing_setting`).

A request reaching a process that does not carry the call is forwarded to the one that does
(`CallLocator`, bridge.call_forwarding), with the operator's label, and that process answers it with
these same handlers and records it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.call_forwarding import CallLocator
from bridge.carrier.transfer import TransferFailed, TransferUnavailable
from bridge.logs import get_logger
from bridge.phone_numbers import valid_e164
from bridge.pump import CallPump

log = get_logger("bridge.control")

MAX_IMAGE_BYTES = 1_500_000  # decoded; a phone photo scaled for a model, not a raw camera file
IMAGE_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
ENDING = "the call is not connected yet, or is ending already"
_NO_STORE = {"Cache-Control": "no-store"}

OperatorOf = Callable[[web.Request], str | None]  # the label of the operator a request is signed in as
Act = Callable[[str, CallPump, dict[str, Any]], Awaitable[web.Response]]


class Refused(Exception):
    """The action was not taken: answered `status` with `{"error": message, **details}`. `recorded`:
    the call's log has it already (and the process log)."""

    def __init__(self, status: int, message: str, *, recorded: bool = False, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.recorded = recorded
        self.details = details


def _image_problem(data_uri: str) -> str | None:
    """Why this is not an image we can hand to the model, or None."""
    header, _, payload = data_uri.partition(",")
    kind = header.removeprefix("data:").removesuffix(";base64")
    if not header.startswith("data:") or not header.endswith(";base64") or kind not in IMAGE_SIGNATURES:
        return "image must be a data:image/png;base64,… or data:image/jpeg;base64,… URI"
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        return f"image is larger than {MAX_IMAGE_BYTES} bytes"
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "image is not valid base64"
    if not raw.startswith(IMAGE_SIGNATURES[kind]):
        return f"image is not a {kind.split('/')[1].upper()}"
    return None


def setup_control_routes(
    app: web.Application, calls: CallLocator, *, operator_of: OperatorOf
) -> None:
    """POST /api/calls/{call_id}/inject, /say, /hangup and /transfer."""
    routes = ControlRoutes(calls, operator_of)
    for action, act in (
        ("inject", routes.inject),
        ("say", routes.say),
        ("hangup", routes.hangup),
        ("transfer", routes.transfer),
    ):
        app.router.add_post(f"/api/calls/{{call_id}}/{action}", routes.handler(action, act))


def error(status: int, message: str, **details: Any) -> web.Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="calls"'
    return web.json_response({"error": message, **details}, status=status, headers=headers)


class ControlRoutes:
    def __init__(self, calls: CallLocator, operator_of: OperatorOf) -> None:
        self.calls = calls
        self.operator_of = operator_of

    def handler(self, action: str, act: Act) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            operator = self.operator_of(request)
            if operator is None:
                return error(401, "unauthorized")
            call_id = request.match_info["call_id"]
            try:
                pump = await self.live_call(request, operator)
                return await act(operator, pump, await _body(request))
            except Refused as refused:
                if not refused.recorded:  # a request about no call, or one that made no sense
                    log.warning(
                        "operator action refused",
                        operator=operator,
                        action=action,
                        call_sid=call_id,
                        status=refused.status,
                        reason=refused.message,
                    )
                return error(refused.status, refused.message, **refused.details)

        return handle

    async def live_call(self, request: web.Request, operator: str) -> CallPump:
        """The call in progress with this id; Refused (404) if it is live nowhere. When another
        process carries it, raises that process's answer (bridge.call_forwarding)."""
        pump = await self.calls.find(request, operator)
        if pump is None:
            raise Refused(404, "no call in progress with that id")
        return pump

    async def inject(self, operator: str, pump: CallPump, body: dict[str, Any]) -> web.Response:
        text, image = body.get("text") or "", body.get("image")
        if not isinstance(text, str) or (image is not None and not isinstance(image, str)):
            raise Refused(400, "text and image must be strings")
        if not text and not image:
            raise Refused(400, "give text, an image, or both")
        if image:
            if pump.call is not None and (refused := pump.call.image_problem()):
                raise Refused(400, refused)
            if problem := _image_problem(image):
                raise Refused(400, problem)
        respond = bool(body.get("respond", False))
        details = {"text": text, "image": bool(image), "respond": respond}
        applied = pump.control(lambda call: call.inject(text, image or None, respond=respond))
        return _answer(pump, operator, "inject", applied, **details)

    async def say(self, operator: str, pump: CallPump, body: dict[str, Any]) -> web.Response:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Refused(400, "give the text to say")
        applied = pump.control(lambda call: call.say(text.strip()))
        return _answer(pump, operator, "say", applied, text=text.strip())

    async def hangup(self, operator: str, pump: CallPump, body: dict[str, Any]) -> web.Response:
        return _answer(pump, operator, "hangup", pump.end("operator_ended"))

    async def transfer(self, operator: str, pump: CallPump, body: dict[str, Any]) -> web.Response:
        number = body.get("number")
        if not isinstance(number, str) or not valid_e164(number):
            raise Refused(400, "number must be E.164, like +14155550123")
        try:
            await pump.transfer_now(number)
        except TransferUnavailable as exc:
            pump.operator_action(operator, "transfer", "refused", number=number, error=exc.reason)
            extra = {"missing_setting": exc.setting} if exc.setting else {}
            reason = f"transfers are not available: {exc.reason}"
            raise Refused(409, reason, recorded=True, **extra) from None
        except TransferFailed as exc:
            pump.operator_action(operator, "transfer", "failed", number=number, error=exc.reason)
            raise Refused(502, f"the transfer failed: {exc.reason}", recorded=True) from None
        return _done(pump.operator_action(operator, "transfer", "done", number=number))


def _answer(pump: CallPump, operator: str, action: str, applied: bool, **details: Any) -> web.Response:
    """The action's record and answer: done, or refused because the call is not live (409)."""
    if not applied:
        pump.operator_action(operator, action, "refused", error=ENDING, **details)
        raise Refused(409, ENDING, recorded=True)
    return _done(pump.operator_action(operator, action, "done", **details))


def _done(record: dict[str, Any]) -> web.Response:
    return web.json_response({"ok": True, **record, "at": record["at"].isoformat()}, headers=_NO_STORE)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.body_exists else {}
    except ValueError:
        raise Refused(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body
