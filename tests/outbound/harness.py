"""A bridge placing calls through the Twilio REST stand-in, whose callees are scripted per test: all over
real loopback sockets, configured as in production (an account, PUBLIC_URL, signatures checked)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bridge.sim.callee import AnsweringMachine, Callee, Person, sample_speech
from bridge.sim.twilio_api import SimulatedCall, TwilioApiStandIn
from bridge.tools.toolbox import Toolbox
from tests.e2e import ADMIN_TOKEN, RunningBridge, eventually, free_port, running_bridge, tone

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests"
CALLER_ID = "+15550199"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SAMPLE_RATE = 8000


def quick_person(**overrides: Any) -> Person:
    """A person who picks up at once, says "hello" (half a second of a 300 Hz tone), then a second of
    it after the greeting, and hangs up a moment after the reply."""
    options: dict[str, Any] = {
        "ring_ms": 200,
        "speech": tone(1000, 300),
        "greeting_wait_s": 8,
        "quiet_ms": 700,
        "time_limit_s": 20,
    }
    return Person(**{**options, **overrides})


def quick_machine(**overrides: Any) -> AnsweringMachine:
    """A machine with a 1.5 s greeting (the shipped sample's start), then a 300 ms beep."""
    greeting = sample_speech()[: int(1.5 * SAMPLE_RATE) * 2]
    options: dict[str, Any] = {
        "ring_ms": 200,
        "greeting": greeting,
        "machine_after_ms": 800,
        "beep_ms": 300,
        "record_s": 20,
    }
    return AnsweringMachine(**{**options, **overrides})


@dataclass
class Outbound:
    bridge: RunningBridge
    twilio: TwilioApiStandIn

    async def place(self, **body: Any) -> aiohttp.ClientResponse:
        """POST /api/calls with `body`; the response, its body read."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.bridge.base_url + "/api/calls", json=body, headers=AUTH) as response,
        ):
            await response.read()
            return response

    async def placed(self, **body: Any) -> str:
        response = await self.place(**body)
        answer = await response.json()
        assert response.status == 201, answer
        return str(answer["call_id"])

    def simulated(self, number: str) -> SimulatedCall:
        [call] = [c for c in self.twilio.calls.values() if c.to == number]
        return call

    async def finished(self, call_id: str, number: str, timeout_s: float = 30) -> dict[str, Any]:
        """The call, once Twilio's side is over and the call log holds its end."""
        await asyncio.wait_for(self.simulated(number).done.wait(), timeout_s)
        store = self.bridge.bridge.store
        assert store is not None

        async def ended() -> dict[str, Any] | None:
            await self.bridge.bridge.call_log.flush()  # type: ignore[attr-defined]
            call = await store.get_call(call_id)
            return call if call is not None and call["status"] == "ended" else None

        for _ in range(int(timeout_s / 0.1)):
            if (call := await ended()) is not None:
                return call
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{call_id} did not end in the call log")


@contextlib.asynccontextmanager
async def outbound_bridge(
    realtime_url: str, callees: Mapping[str, Callee], *, toolbox: Toolbox | None = None, **env: str
) -> AsyncIterator[Outbound]:
    """A bridge whose Twilio account is the stand-in; `callees` answer the numbers they are keyed by.
    It greets (GREETING) unless `env` says otherwise."""
    twilio = TwilioApiStandIn(ACCOUNT_SID, AUTH_TOKEN, speech_end_threshold_ms=300)
    twilio.callees = lambda number: callees[number]
    await twilio.start()
    port = free_port()
    settings = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE": str(twilio.base_url),
        "TWILIO_FROM_NUMBER": CALLER_ID,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OUTBOUND_RING_TIMEOUT": "5",
        "GREETING": "Greet them.",
        **env,
    }
    try:
        async with running_bridge(realtime_url, port=port, toolbox=toolbox, **settings) as bridge:
            yield Outbound(bridge, twilio)
            # The calls' own ends first: the stand-in is stopped only once nothing is in progress.
            with contextlib.suppress(TimeoutError):
                await eventually(lambda: not bridge.bridge.active_calls, timeout_s=10)
    finally:
        await twilio.stop()
