"""Operators act on live calls: inject context (text, an image) where it belongs, speak, hang up."""

from __future__ import annotations

import aiohttp
import pytest

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from tests.e2e import ADMIN_TOKEN, eventually, running_bridge, running_emulator, tone

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def post(base_url: str, path: str, body: dict | None = None, auth: bool = True) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + path, json=body or {}, headers=AUTH if auth else {}) as response,
    ):
        return response.status


async def test_injected_context_lands_after_the_callers_words_then_the_model_answers() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        caller.say(tone(500, 400))
        await caller.wait_heard(min_ms=300, timeout_s=10)  # the caller's turn is in the conversation
        caller_item = next(i["id"] for i in session.conversation if i.get("role") == "user")
        path = f"/api/calls/{caller.call_sid}/inject"
        assert await post(bridge.base_url, path, {"text": "VIP customer"}, auth=False) == 401
        assert await post(bridge.base_url, "/api/calls/CA0000/inject", {"text": "x"}) == 404
        assert await post(bridge.base_url, path, {"image": "data:image/gif;base64,R0lGOD"}) == 400
        assert await post(bridge.base_url, path, {}) == 400
        assert (
            await post(bridge.base_url, path, {"text": "VIP customer", "image": PNG, "respond": True}) == 200
        )

        def injected() -> list[dict]:
            return [
                i
                for i in session.conversation
                if i.get("role") == "user"
                and any(c.get("type") == "input_image" for c in i.get("content", []))
            ]

        await eventually(lambda: bool(injected()), timeout_s=5)
        order = [i["id"] for i in session.conversation]
        assert order.index(injected()[0]["id"]) == order.index(caller_item) + 1
        kinds = [e["type"] for e in session.client_events if e["type"] != "input_audio_buffer.append"]
        assert kinds[kinds.index("conversation.item.create") + 1] == "response.create"

        assert (
            await post(bridge.base_url, f"/api/calls/{caller.call_sid}/say", {"text": "Please hold."}) == 200
        )
        await eventually(
            lambda: any(
                "Please hold." in (e.get("response") or {}).get("instructions", "")
                for e in session.client_events
                if e["type"] == "response.create"
            ),
            timeout_s=10,
        )
        transfer = f"/api/calls/{caller.call_sid}/transfer"
        assert await post(bridge.base_url, transfer, {"number": "555-1234"}) == 400
        assert (
            await post(bridge.base_url, transfer, {"number": "+15550001111"}) == 502
        )  # no Twilio credentials
        assert not caller.ended  # a failed transfer leaves the call as it was
        assert await post(bridge.base_url, f"/api/calls/{caller.call_sid}/hangup") == 200
        await caller.wait_closed(timeout_s=5)
        assert session.rejected == []


async def test_an_inject_landing_while_a_clear_is_being_sent_reaches_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator's inject that lands while the pump is still sending a barge-in's clear to the
    carrier is sent to the model like any other, not swallowed by the clear's bookkeeping."""
    from bridge.carrier.events import ClearPlayback
    from bridge.websocket_leg import WebSocketLeg
    from tests.e2e import message_texts

    send = WebSocketLeg.send
    landed: list[str] = []

    async def send_while_an_inject_lands(leg: WebSocketLeg, command: object) -> None:
        await send(leg, command)  # type: ignore[arg-type]
        if isinstance(command, ClearPlayback) and not landed:
            # The pump's send has not returned yet: the operator's request is handled in this moment,
            # exactly as the /inject route does it.
            call_sid = next(iter(bridge.bridge.active_calls))
            landed.append(call_sid)
            bridge.bridge.active_calls[call_sid].control(lambda call: call.inject("VIP customer"))

    monkeypatch.setattr(WebSocketLeg, "send", send_while_an_inject_lands)
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, GREETING="Greet the caller.") as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        await caller.wait_heard(min_ms=300, timeout_s=10)
        caller.say(tone(600, 400))  # talks over the greeting: the bridge clears the caller's playback
        await caller.wait_until(lambda: bool(caller.playout.clears), timeout_s=10, what="a clear")
        assert landed == [caller.call_sid]
        await eventually(lambda: "VIP customer" in message_texts(session), timeout_s=3)
