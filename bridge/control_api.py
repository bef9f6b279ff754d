"""Live control of calls in progress, for operators and back-office systems (admin token).

A request reaching a process that does not carry the call is forwarded to the one that does
(`CallLocator`, bridge.call_forwarding), which answers it with these same handlers."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.call_forwarding import CallLocator
from bridge.carrier.transfer import TransferFailed
from bridge.phone_numbers import valid_e164
from bridge.pump import CallPump

MAX_IMAGE_BYTES = 1_500_000  # decoded; a phone photo scaled for a model, not a raw camera file
IMAGE_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}


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
    app: web.Application, calls: CallLocator, *, is_authorized: Callable[[web.Request], bool], dialect: str
) -> None:
    async def body_of(request: web.Request) -> tuple[CallPump, dict[str, Any]]:
        if not is_authorized(request):
            raise web.HTTPUnauthorized(text="sign in with the admin token")
        pump = await calls.find(request)  # raises the owner's own answer when another process has it
        if pump is None:
            raise web.HTTPNotFound(text="no call in progress with that id")
        try:
            body = await request.json() if request.body_exists else {}
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return pump, body

    async def inject(request: web.Request) -> web.Response:
        pump, body = await body_of(request)
        text, image = body.get("text") or "", body.get("image")
        if not isinstance(text, str) or (image is not None and not isinstance(image, str)):
            raise web.HTTPBadRequest(text="text and image must be strings")
        if not text and not image:
            raise web.HTTPBadRequest(text="give text, an image, or both")
        if image:
            if dialect != "ga":
                raise web.HTTPBadRequest(text="images need the GA Realtime dialect")
            if problem := _image_problem(image):
                raise web.HTTPBadRequest(text=problem)
        respond = bool(body.get("respond", False))
        pump.control(lambda call: call.inject(text, image or None, respond=respond))
        return web.json_response({"ok": True})

    async def say(request: web.Request) -> web.Response:
        pump, body = await body_of(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise web.HTTPBadRequest(text="give the text to say")
        pump.control(lambda call: call.say(text.strip()))
        return web.json_response({"ok": True})

    async def hangup(request: web.Request) -> web.Response:
        pump, _ = await body_of(request)
        pump.end("operator_ended")
        return web.json_response({"ok": True})

    async def transfer(request: web.Request) -> web.Response:
        pump, body = await body_of(request)
        number = body.get("number")
        if not isinstance(number, str) or not valid_e164(number):
            raise web.HTTPBadRequest(text="number must be E.164, like +14155550123")
        try:
            await pump.transfer_now(number)
        except TransferFailed as exc:
            raise web.HTTPBadGateway(text=f"the transfer failed: {exc}") from None
        return web.json_response({"ok": True})

    app.router.add_post("/api/calls/{call_id}/inject", inject)
    app.router.add_post("/api/calls/{call_id}/say", say)
    app.router.add_post("/api/calls/{call_id}/hangup", hangup)
    app.router.add_post("/api/calls/{call_id}/transfer", transfer)
