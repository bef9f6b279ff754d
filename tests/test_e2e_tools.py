"""The assistant acts: webhook tools run off the audio path, and keypad digits reach the model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from bridge.config import load_settings
from bridge.server import create_app
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from bridge.sim.realtime_emulator import EmulatedSession, ScriptedReply
from bridge.sim.twilio_api import TwilioApiStandIn
from bridge.tools.toolbox import Toolbox
from bridge.tools.webhook import verify_signature
from tests.e2e import (
    ADMIN_TOKEN,
    RunningBridge,
    eventually,
    message_texts,
    running_bridge,
    running_emulator,
    serving,
    tone,
)

pytestmark = pytest.mark.e2e
SECRET = "tool-signing-secret"


@contextlib.asynccontextmanager
async def tool_server(delay_s: float = 0.0) -> AsyncIterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    async def lookup(request: web.Request) -> web.Response:
        body = await request.read()
        signed = verify_signature(
            SECRET,
            request.headers["X-Bridge-Timestamp"],
            body,
            request.headers["X-Bridge-Signature"],
            time.time(),
        )
        received.append(
            {"body": json.loads(body), "signed": signed, "auth": request.headers.get("Authorization")}
        )
        await asyncio.sleep(delay_s)
        return web.json_response({"order": "A-1042", "status": "shipped"})

    app = web.Application()
    app.router.add_post("/lookup", lookup)
    async with serving(app) as base_url:
        yield f"{base_url}/lookup", received


@contextlib.asynccontextmanager
async def bridge_with_tools(realtime_url: str, tools_file: Path) -> AsyncIterator[RunningBridge]:
    settings = load_settings(
        {
            "REALTIME_URL": realtime_url,
            "OPENAI_API_KEY": "sk-test",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "CALL_LOG_URL": f"sqlite+aiosqlite:///{tools_file.parent}/calls.db",
        }
    )
    toolbox = Toolbox.from_file(tools_file, {"CRM_TOKEN": "crm-secret"}, SECRET)
    app = create_app(settings, toolbox=toolbox)
    async with serving(app) as base_url:
        yield RunningBridge(base_url, app)


def write_tools(path: Path, url: str, timeout_s: float = 5) -> Path:
    tools = [
        {
            "name": "lookup_order",
            "description": "Look up the caller's order.",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
            "url": url,
            "timeout_s": timeout_s,
            "headers": {"Authorization": "Bearer ${CRM_TOKEN}"},
        }
    ]
    path.write_text(json.dumps(tools))
    return path


def outputs(session: EmulatedSession) -> list[dict]:
    return [
        e["item"]
        for e in session.client_events
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]


async def test_a_webhook_tool_round_trip(tmp_path: Path) -> None:
    async with (
        tool_server() as (url, received),
        running_emulator() as (emulator, realtime_url),
        bridge_with_tools(realtime_url, write_tools(tmp_path / "tools.json", url)) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        await eventually(lambda: any(e["type"] == "session.update" for e in session.client_events))
        update = next(e for e in session.client_events if e["type"] == "session.update")
        assert [t["name"] for t in update["session"]["tools"]] == ["end_call", "lookup_order"]
        emulator.script_reply(ScriptedReply(tool_call=("lookup_order", {"id": "A-1042"})))
        caller.say(tone(500, 400))
        await eventually(lambda: bool(outputs(session)), timeout_s=10)
        [output] = outputs(session)
        assert json.loads(output["output"]) == {"order": "A-1042", "status": "shipped"}

        # The model is asked to go on once the tool's answer is in (audio appends interleave freely).
        def asked_to_go_on() -> bool:
            kinds = [e["type"] for e in session.client_events if e["type"] != "input_audio_buffer.append"]
            return "response.create" in kinds[kinds.index("conversation.item.create") :]

        await eventually(asked_to_go_on, timeout_s=5)
    [request] = received
    assert request["body"]["tool"] == "lookup_order" and request["body"]["arguments"] == {"id": "A-1042"}
    assert request["signed"] and request["auth"] == "Bearer crm-secret"


async def test_a_slow_tool_does_not_stop_the_conversation(tmp_path: Path) -> None:
    async with (
        tool_server(delay_s=2.0) as (url, received),
        running_emulator() as (emulator, realtime_url),
        bridge_with_tools(realtime_url, write_tools(tmp_path / "tools.json", url)) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        emulator.script_reply(ScriptedReply(tool_call=("lookup_order", {"id": "A-1042"})))
        caller.say(tone(500, 400))
        await eventually(lambda: bool(received), timeout_s=10)  # the tool is running (for 2 s)
        # While it runs, the caller talks and is answered (the echo agent).
        heard_before = caller.playout.played_ms_total
        caller.say(tone(600, 700))
        await caller.wait_heard(min_ms=300, timeout_s=5, since_ms=caller.clock())
        assert caller.playout.played_ms_total > heard_before
        assert outputs(session) == []  # the tool is still running
        await eventually(lambda: bool(outputs(session)), timeout_s=5)


async def test_a_tool_past_its_timeout_is_reported_as_failed(tmp_path: Path) -> None:
    async with (
        tool_server(delay_s=3.0) as (url, _),
        running_emulator() as (emulator, realtime_url),
        bridge_with_tools(realtime_url, write_tools(tmp_path / "tools.json", url, timeout_s=0.5)) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        emulator.script_reply(ScriptedReply(tool_call=("lookup_order", {"id": "A-1042"})))
        caller.say(tone(500, 400))
        await eventually(lambda: bool(outputs(session)), timeout_s=10)
        assert "error" in json.loads(outputs(session)[0]["output"])


async def test_keypad_digits_reach_the_model(tmp_path: Path) -> None:
    async with (
        running_emulator() as (emulator, realtime_url),
        bridge_with_tools(
            realtime_url, write_tools(tmp_path / "tools.json", "http://127.0.0.1:9/")
        ) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        for digit in "42#":
            caller.press(digit)
        await eventually(lambda: any("42#" in text for text in message_texts(session)), timeout_s=5)
        assert session.rejected == []


async def test_end_call_ends_only_after_the_goodbye_was_heard() -> None:
    async with (
        running_emulator() as (emulator, realtime_url),
        running_bridge(realtime_url) as bridge,
    ):
        emulator.script_reply(ScriptedReply(tool_call=("end_call", {"reason": "caller said bye"})))
        emulator.script_reply(ScriptedReply(audio_pcm24k=tone(1500, 700, rate=24000), transcript="Goodbye!"))
        caller = TwilioCallerEmulator(bridge.media_url)
        await caller.connect()
        try:
            caller.say(tone(500, 400))
            await caller.wait_closed(timeout_s=15)
        finally:
            await caller.hangup()
        assert caller.closed_by_server
        assert caller.playout.played_ms_total >= 1500 - 20  # the whole goodbye, then the line closed
        call = await bridge.logged_call(caller.call_sid)
        assert call is not None and call["end_reason"] == "assistant_ended"


async def test_transfer_call_redirects_with_dial_after_the_preamble() -> None:
    caller = TwilioCallerEmulator("ws://unused")  # its sids are needed before the bridge starts
    twilio = TwilioApiStandIn(caller.account_sid, "auth-token-for-tests")
    api_base = await twilio.start()
    try:
        async with (
            running_emulator() as (emulator, realtime_url),
            running_bridge(
                realtime_url,
                TRANSFER_NUMBER="+15550001111",
                TWILIO_AUTH_TOKEN="auth-token-for-tests",
                TWILIO_API_BASE=api_base,
            ) as bridge,
        ):
            preamble = tone(800, 700, rate=24000)
            emulator.script_reply(ScriptedReply(audio_pcm24k=preamble, transcript="Transferring you now."))
            emulator.script_reply(ScriptedReply(tool_call=("transfer_call", {"reason": "wants a human"})))
            # With an Auth Token set the bridge checks everything Twilio presents: a signed webhook
            # first (it issues the stream token), then a signed upgrade carrying that token.
            form = {"CallSid": caller.call_sid, "AccountSid": caller.account_sid}
            sdk = RequestValidator("auth-token-for-tests")
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    bridge.base_url + "/twilio/voice",
                    data=form,
                    headers={
                        "X-Twilio-Signature": sdk.compute_signature(bridge.base_url + "/twilio/voice", form)
                    },
                ) as response,
            ):
                twiml = await response.text()
            token = re.search(r'name="stream_token" value="([^"]+)"', twiml)
            assert token is not None
            caller = TwilioCallerEmulator(
                bridge.media_url,
                call_sid=caller.call_sid,
                account_sid=caller.account_sid,
                custom_parameters={"stream_token": token.group(1)},
                headers={"X-Twilio-Signature": sdk.compute_signature(bridge.media_url, {})},
            )
            await caller.connect()
            try:
                caller.say(tone(500, 400))  # "I want a human" -> the preamble
                await caller.wait_heard(min_ms=600, timeout_s=10)
                caller.say(tone(500, 400))  # the next turn: the model calls transfer_call
                await eventually(lambda: bool(twilio.requests), timeout_s=15)
                await caller.wait_closed(timeout_s=10)
            finally:
                await caller.hangup()
            [request] = twilio.requests
            assert request.path.endswith(f"/Calls/{caller.call_sid}.json")
            assert (
                "<Dial" in request.form["Twiml"] and "<Number>+15550001111</Number>" in request.form["Twiml"]
            )
            call = await bridge.logged_call(caller.call_sid)
            assert call is not None and call["end_reason"] == "transferred"
    finally:
        await twilio.stop()
