from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import pytest

from bridge.carrier.transfer import TransferFailed
from bridge.carrier.twilio.rest import TwilioCalls
from bridge.sim.twilio_api import TwilioApiStandIn

ACCOUNT = "AC" + "1" * 32
TOKEN = "s3cr3t-auth-token-value"
CALL = "CA" + "a" * 32
NUMBER = "+15551234567"
CALL_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"


@pytest.fixture
async def api() -> AsyncIterator[TwilioApiStandIn]:
    stand_in = TwilioApiStandIn(ACCOUNT, TOKEN, known_calls={CALL})
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def _base(api: TwilioApiStandIn) -> str:
    assert api.base_url is not None
    return api.base_url


@pytest.fixture
async def calls(api: TwilioApiStandIn) -> AsyncIterator[TwilioCalls]:
    async with TwilioCalls(ACCOUNT, TOKEN, api_base=_base(api), timeout=5) as client:
        yield client


async def test_transfer_posts_dial_twiml_with_basic_auth(api: TwilioApiStandIn, calls: TwilioCalls) -> None:
    await calls.transfer(CALL, "+15551234567", caller_id="+15550001111")

    [request] = api.requests
    assert request.method == "POST"
    assert request.path == CALL_PATH
    assert request.auth_user == ACCOUNT
    assert set(request.form) == {"Twiml"}
    root = ET.fromstring(request.form["Twiml"])
    assert root.tag == "Response"
    [dial] = list(root)
    assert dial.tag == "Dial"
    assert dial.attrib == {"callerId": "+15550001111"}
    [number] = list(dial)
    assert (number.tag, number.text) == ("Number", "+15551234567")


async def test_transfer_without_caller_id(api: TwilioApiStandIn, calls: TwilioCalls) -> None:
    await calls.transfer(CALL, "+442071838750")

    dial = ET.fromstring(api.requests[0].form["Twiml"]).find("Dial")
    assert dial is not None and dial.attrib == {}


async def test_transfer_rejects_bad_numbers_before_any_request(
    api: TwilioApiStandIn, calls: TwilioCalls
) -> None:
    with pytest.raises(TransferFailed):
        await calls.transfer(CALL, "5551234567")
    with pytest.raises(TransferFailed):
        await calls.transfer(CALL, "+15551234567", caller_id="<Hangup/>")
    assert api.requests == []


async def test_wrong_token_fails_once_without_leaking_it(api: TwilioApiStandIn) -> None:
    async with TwilioCalls(ACCOUNT, "wrong-token-xyz", api_base=_base(api), timeout=5) as client:
        with pytest.raises(TransferFailed) as caught:
            await client.transfer(CALL, NUMBER)

    assert "HTTP 401 code 20003" in str(caught.value)
    assert "wrong-token-xyz" not in str(caught.value)
    assert len(api.requests) == 1  # not retried


async def test_server_error_raises(api: TwilioApiStandIn, calls: TwilioCalls) -> None:
    api.fail_status = 500
    with pytest.raises(TransferFailed) as caught:
        await calls.transfer(CALL, NUMBER)

    assert "HTTP 500 " in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(api.requests) == 1


async def test_unknown_call_is_404(api: TwilioApiStandIn, calls: TwilioCalls) -> None:
    with pytest.raises(TransferFailed) as caught:
        await calls.transfer("CA" + "f" * 32, NUMBER)

    assert "HTTP 404 code 20404" in str(caught.value)


async def test_unreachable_api_raises() -> None:
    stand_in = TwilioApiStandIn(ACCOUNT, TOKEN)
    base = await stand_in.start()
    await stand_in.stop()  # nothing listens on that port any more

    async with TwilioCalls(ACCOUNT, TOKEN, api_base=base, timeout=5) as client:
        with pytest.raises(TransferFailed):
            await client.transfer(CALL, NUMBER)


async def test_slow_api_times_out(api: TwilioApiStandIn) -> None:
    api.delay_s = 1.0
    async with TwilioCalls(ACCOUNT, TOKEN, api_base=_base(api), timeout=0.2) as client:
        with pytest.raises(TransferFailed, match="timed out"):
            await client.transfer(CALL, NUMBER)


async def test_request_does_not_block_the_event_loop(api: TwilioApiStandIn, calls: TwilioCalls) -> None:
    api.delay_s = 0.3
    ticks = 0
    longest_gap = 0.0

    async def ticker() -> None:
        nonlocal ticks, longest_gap
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            longest_gap = max(longest_gap, now - last)
            last = now
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await calls.transfer(CALL, NUMBER)
    elapsed = time.monotonic() - started
    task.cancel()

    assert elapsed >= 0.3
    assert ticks >= 15
    assert longest_gap < 0.1
