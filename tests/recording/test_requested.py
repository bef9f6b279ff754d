"""RECORDING=requested end to end with Twilio's signatures on: the operator asks for a recording with
`record=1` on the voice webhook's URL (a number's webhook, or an outbound call's); the TwiML hands it to
the stream beside the one-time token, which vouches for it, so a stream that adds or drops it is not
a call at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.dial import asking_to_record
from bridge.sim.carrier_emulator import TwilioCallerEmulator, random_sid
from bridge.sim.twilio_voice import answer_call, stream_headers
from tests.e2e import RunningBridge, running_bridge, running_emulator

pytestmark = pytest.mark.e2e

AUTH_TOKEN = "twilio-auth-token-for-the-recording-tests"


async def answered(bridge: RunningBridge, call_sid: str, *, record: bool) -> tuple[str, dict[str, str]]:
    """The voice webhook as Twilio asks it (signed, the record query part of the signed URL)."""
    url = bridge.base_url + "/twilio/voice"
    form = {"CallSid": call_sid, "From": "+15550100001", "To": "+15550100002", "Direction": "outbound-api"}
    async with aiohttp.ClientSession() as http:
        return await answer_call(http, asking_to_record(url) if record else url, form, AUTH_TOKEN)


async def stream(bridge: RunningBridge, call_sid: str, media_url: str, parameters: dict[str, str]) -> Any:
    caller = TwilioCallerEmulator(
        media_url,
        call_sid=call_sid,
        custom_parameters=parameters,
        headers=stream_headers(media_url, AUTH_TOKEN),
    )
    async with caller:
        await caller.wait_until(lambda: caller.sent_frames >= 20 or caller.ended, timeout_s=5)
    return caller, await bridge.logged_call(call_sid)


async def test_a_call_is_recorded_when_its_webhook_asks_and_its_token_holds_the_request(
    tmp_path: Path,
) -> None:
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RECORDING": "requested", "RECORDING_DIR": str(tmp_path)}
    async with running_emulator() as (_, url), running_bridge(url, **env) as bridge:
        asked, plain, added, dropped = (random_sid("CA") for _ in range(4))

        media_url, parameters = await answered(bridge, asked, record=True)
        assert parameters["record"] == "1" and parameters["stream_token"]
        _, row = await stream(bridge, asked, media_url, parameters)
        assert row is not None and row["recording_status"] in ("recording", "ready")

        media_url, parameters = await answered(bridge, plain, record=False)
        assert "record" not in parameters
        _, row = await stream(bridge, plain, media_url, parameters)
        assert row is not None and row["recording_status"] is None

        # Whoever holds a stream's URL and token cannot switch its recording on, nor off.
        media_url, parameters = await answered(bridge, added, record=False)
        caller, row = await stream(bridge, added, media_url, {**parameters, "record": "1"})
        assert caller.close_code == 1008 and row is None
        media_url, parameters = await answered(bridge, dropped, record=True)
        del parameters["record"]
        caller, row = await stream(bridge, dropped, media_url, parameters)
        assert caller.close_code == 1008 and row is None
