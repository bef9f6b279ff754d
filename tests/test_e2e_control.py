"""Operators act on live calls: inject context (text, an image) where it belongs, speak, hang up."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest
from structlog.testing import capture_logs

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatorConfig
from tests.e2e import ADMIN_TOKEN, eventually, running_bridge, running_emulator, tone

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


OPERATORS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}


def operator(label: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATORS[label]}"}


async def post(base_url: str, path: str, body: dict | None = None, auth: bool = True, as_: str = "") -> int:
    return (await answer(base_url, path, body, auth=auth, as_=as_))[0]


async def answer(
    base_url: str, path: str, body: dict | None = None, auth: bool = True, as_: str = ""
) -> tuple[int, dict]:
    headers = operator(as_) if as_ else AUTH if auth else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(base_url + path, json=body or {}, headers=headers) as response,
    ):
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


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
        assert await post(bridge.base_url, path, {"image": "data:image/gif;base64,R0lGOD"}) == 400
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
        assert not caller.ended
        assert await post(bridge.base_url, f"/api/calls/{caller.call_sid}/hangup") == 200
        await caller.wait_closed(timeout_s=5)
        assert session.rejected == []


async def test_every_operator_action_is_on_record_with_who_what_when_and_how_it_went() -> None:
    tokens = ",".join(f"{label}:{token}" for label, token in OPERATORS.items())
    with capture_logs() as logs:
        async with (
            running_emulator() as (_, url),
            running_bridge(url, OPERATOR_TOKENS=tokens) as bridge,
            TwilioCallerEmulator(bridge.media_url) as caller,
        ):
            calls = bridge.bridge.active_calls
            await eventually(lambda: getattr(calls.get(caller.call_sid), "call", None) is not None)
            base, call = bridge.base_url, f"/api/calls/{caller.call_sid}"
            before = datetime.now(UTC)

            # Who is asking: no token, or one nobody has, is answered like /api/calls.
            assert await answer(base, f"{call}/say", {"text": "x"}, auth=False) == (
                401,
                {"error": "unauthorized"},
            )
            status, body = await answer(base, "/api/calls/CA0000/hangup", as_="alice")
            assert (status, body) == (404, {"error": "no call in progress with that id"})

            status, body = await answer(base, f"{call}/inject", {"text": "VIP customer"}, as_="alice")
            assert status == 200
            assert body["operator"] == "alice" and body["action"] == "inject" and body["outcome"] == "done"
            assert body["text"] == "VIP customer" and body["respond"] is False and body["image"] is False
            assert before <= datetime.fromisoformat(body["at"]) <= datetime.now(UTC)

            status, body = await answer(base, f"{call}/say", {"text": "  Please hold.  "}, as_="bob")
            assert (status, body["operator"], body["action"], body["text"]) == (
                200,
                "bob",
                "say",
                "Please hold.",
            )

            # A request that makes no sense is refused before anything happens, saying why.
            assert await answer(base, f"{call}/transfer", {"number": "555-1234"}, as_="alice") == (
                400,
                {"error": "number must be E.164, like +14155550123"},
            )
            assert (await answer(base, f"{call}/say", {}, as_="alice"))[0] == 400
            # A transfer the configuration rules out: a 4xx that names the setting, and on record.
            status, body = await answer(base, f"{call}/transfer", {"number": "+15550001111"}, as_="alice")
            assert status == 409
            assert body["missing_setting"] == "TWILIO_AUTH_TOKEN" and "TWILIO_AUTH_TOKEN" in body["error"]
            assert not caller.ended  # a transfer that did not happen leaves the call as it was

            status, body = await answer(base, f"{call}/hangup", as_="bob")
            assert (status, body["operator"], body["action"], body["outcome"]) == (
                200,
                "bob",
                "hangup",
                "done",
            )
            await caller.wait_closed(timeout_s=5)
            after = datetime.now(UTC)
            logged = await bridge.logged_call(caller.call_sid)
            assert (await answer(base, f"{call}/hangup", as_="bob"))[0] == 404  # it is over

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}{call}", headers=operator("bob")) as response:
                    shown = await response.json()
                async with http.get(f"{base}{call}?reveal=1", headers=operator("bob")) as response:
                    revealed = await response.json()

    assert logged is not None and logged["end_reason"] == "operator_ended"
    actions = [e for e in shown["events"] if e["kind"] == "operator_action"]
    assert [(e["data"]["operator"], e["data"]["action"], e["data"]["outcome"]) for e in actions] == [
        ("alice", "inject", "done"),
        ("bob", "say", "done"),
        ("alice", "transfer", "refused"),
        ("bob", "hangup", "done"),
    ]
    assert all(before <= datetime.fromisoformat(e["at"]) <= after for e in actions)
    assert [e["at"] for e in actions] == sorted(e["at"] for e in actions)
    assert actions[0]["data"]["text"] == "VIP customer" and actions[1]["data"]["text"] == "Please hold."
    refused = actions[2]["data"]
    assert "TWILIO_AUTH_TOKEN" in refused["error"] and refused["number"] == "+*******1111"  # masked
    assert [e for e in revealed["events"] if e["kind"] == "operator_action"][2]["data"][
        "number"
    ] == "+15550001111"

    # The process log has a line for each, by label, without the words, numbers or tokens.
    lines = [entry for entry in logs if entry["event"] in ("operator action", "operator action refused")]
    done = [(e["operator"], e["action"], e.get("outcome") or e["status"]) for e in lines]
    assert done == [
        ("alice", "hangup", 404),
        ("alice", "inject", "done"),
        ("bob", "say", "done"),
        ("alice", "transfer", 400),
        ("alice", "say", 400),
        ("alice", "transfer", "refused"),
        ("bob", "hangup", "done"),
        ("bob", "hangup", 404),
    ]
    assert lines[1]["chars"] == len("VIP customer") and lines[5]["to"] == "+*******1111"
    flat = repr(logs)
    for secret in (*OPERATORS.values(), "VIP customer", "Please hold", "+15550001111"):
        assert secret not in flat


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


async def test_a_hang_up_while_the_model_is_still_being_reached_ends_the_call_once_it_is() -> None:
    # The service refuses the first two attempts: the call is live (its stream admitted) for a while
    # before it has a session. An operator's hang-up then is taken, and carried out once it has one.
    async with (
        running_emulator(EmulatorConfig(refuse_status=503, refuse_times=2)) as (emulator, url),
        running_bridge(url) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        await eventually(lambda: caller.call_sid in bridge.bridge.active_calls)
        assert bridge.bridge.active_calls.get(caller.call_sid).call is None  # still connecting
        status, body = await answer(bridge.base_url, f"/api/calls/{caller.call_sid}/hangup")
        assert (status, body["action"], body["outcome"]) == (200, "hangup", "done")
        await caller.wait_closed(timeout_s=10)
        logged = await bridge.logged_call(caller.call_sid)
    assert logged is not None and logged["end_reason"] == "operator_ended"
    assert len(emulator.sessions) == 1  # it did connect, and was hung up then
