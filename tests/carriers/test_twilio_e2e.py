"""Only Twilio gets in: signed webhooks and upgrades, and a one-time token binding each stream to the
webhook that answered it. Signatures here are computed by the twilio SDK, not by our own code."""

from __future__ import annotations

import re

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bridge.sim.carrier_emulator import TwilioCallerEmulator
from tests.e2e import RunningBridge, eventually, running_bridge, running_emulator

pytestmark = pytest.mark.e2e

AUTH_TOKEN = "twilio-auth-token-for-tests"
SDK = RequestValidator(AUTH_TOKEN)


async def post_voice(
    bridge: RunningBridge, form: dict[str, str], signature: str | None
) -> aiohttp.ClientResponse:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with aiohttp.ClientSession() as http:
        response = await http.post(bridge.base_url + "/twilio/voice", data=form, headers=headers)
        await response.read()
        return response


def signed_caller(
    bridge: RunningBridge, call_sid: str, token: str | None, signature: str | None
) -> TwilioCallerEmulator:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    params = {"stream_token": token} if token is not None else {}
    return TwilioCallerEmulator(
        bridge.media_url, call_sid=call_sid, custom_parameters=params, headers=headers
    )


async def test_only_signed_webhooks_and_streams_with_their_token_get_a_call() -> None:
    async with (
        running_emulator() as (emulator, url),
        running_bridge(url, TWILIO_AUTH_TOKEN=AUTH_TOKEN, GREETING="Greet.") as bridge,
    ):
        call_sid = "CA" + "1" * 32
        form = {"CallSid": call_sid, "From": "+14155550123", "To": "+18005551212"}
        webhook_url = bridge.base_url + "/twilio/voice"

        assert (await post_voice(bridge, form, None)).status == 403  # missing
        assert (await post_voice(bridge, form, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")).status == 403  # forged
        wrong_url = SDK.compute_signature("https://evil.example/twilio/voice", form)
        assert (await post_voice(bridge, form, wrong_url)).status == 403
        assert emulator.sessions == []  # nothing was paid for on behalf of a forged request

        response = await post_voice(bridge, form, SDK.compute_signature(webhook_url, form))
        assert response.status == 200
        twiml = await response.text()
        token = re.search(r'name="stream_token" value="([^"]+)"', twiml)
        assert token is not None

        ws_signature = SDK.compute_signature(bridge.media_url, {})
        # An unsigned or forged upgrade never becomes a websocket.
        for bad in (None, SDK.compute_signature(bridge.media_url.replace("media", "other"), {})):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await signed_caller(bridge, call_sid, token.group(1), bad).connect()
            assert refused.value.status == 403

        # Signed upgrade but no token (a stream this server's webhook did not answer): closed.
        stranger = signed_caller(bridge, "CA" + "2" * 32, None, ws_signature)
        await stranger.connect()
        await stranger.wait_closed(timeout_s=5)
        assert stranger.close_code == 1008
        await stranger.hangup()

        # The real one gets its call, once.
        async with signed_caller(bridge, call_sid, token.group(1), ws_signature) as caller:
            await caller.wait_heard(min_ms=300, timeout_s=10)
        await eventually(lambda: not bridge.bridge.active_calls)
        replay = signed_caller(bridge, call_sid, token.group(1), ws_signature)
        await replay.connect()
        await replay.wait_closed(timeout_s=5)
        assert replay.close_code == 1008  # a captured stream cannot be replayed
        await replay.hangup()
