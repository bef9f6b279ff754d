"""RESPONSE_MODE=manual: a hook sees each caller turn and adds context before the model answers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from tests.e2e import running_bridge, running_emulator, serving, tone

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def hook_server(context: str) -> AsyncIterator[tuple[str, list[dict]]]:
    seen: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(json.loads(await request.read()))
        return web.json_response({"context": context})

    app = web.Application()
    app.router.add_post("/before", hook)
    async with serving(app) as base_url:
        yield f"{base_url}/before", seen


async def test_the_hook_sees_the_turn_and_its_context_comes_before_the_answer() -> None:
    async with (
        hook_server("The caller is a VIP.") as (url, seen),
        running_emulator() as (emulator, realtime_url),
        running_bridge(
            realtime_url,
            RESPONSE_MODE="manual",
            BEFORE_RESPONSE_URL=url,
            INPUT_TRANSCRIPTION_MODEL="gpt-4o-mini-transcribe",
        ) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        session = await emulator.wait_for_session()
        caller.say(tone(600, 400))
        await caller.wait_heard(min_ms=300, timeout_s=10)  # answered, after the hook
        [call] = seen
        assert call["arguments"]["transcript"]  # the caller's words, as transcribed
        order = [i for i in session.conversation if i.get("type") == "message"]
        roles_texts = [(i["role"], (i.get("content") or [{}])[0].get("text")) for i in order]
        caller_at = next(n for n, (role, _) in enumerate(roles_texts) if role == "user")
        assert roles_texts[caller_at + 1] == ("user", "The caller is a VIP.")
        assert roles_texts[caller_at + 2][0] == "assistant"
        update = next(e for e in session.client_events if e["type"] == "session.update")
        assert update["session"]["audio"]["input"]["turn_detection"]["create_response"] is False


async def test_a_broken_hook_still_gets_the_caller_an_answer() -> None:
    async with (
        running_emulator() as (_, realtime_url),
        running_bridge(
            realtime_url, RESPONSE_MODE="manual", BEFORE_RESPONSE_URL="http://127.0.0.1:9/"
        ) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
    ):
        caller.say(tone(600, 400))
        await caller.wait_heard(min_ms=300, timeout_s=10)  # raises if the caller is never answered
