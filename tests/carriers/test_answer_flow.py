"""The answer flow every carrier shares, through each carrier's own routes on a real socket: one busy
message and fallback, one limit on a webhook's size, one stream token check, and the registry that the
settings and the server read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.carrier.answer_flow import BUSY_MESSAGE, MAX_WEBHOOK_BYTES
from bridge.carrier.registry import CARRIERS
from bridge.config import ConfigError, Settings, load_settings
from bridge.server import create_app
from tests.e2e import RunningBridge, running_bridge, running_emulator

pytestmark = pytest.mark.e2e

FALLBACK = "+15550002222"
# How each carrier asks for its answer: method, path, and the call's details in its own spelling.
TWIML_FORM = {"CallSid": "CA" + "1" * 32, "From": "+14155550123", "To": "+18005551212"}
WEBHOOKS: dict[str, tuple[str, str, dict[str, str]]] = {
    "twilio": ("POST", "/twilio/voice", TWIML_FORM),
    "signalwire": ("POST", "/signalwire/voice", TWIML_FORM),
    "telnyx": ("POST", "/telnyx/texml", TWIML_FORM),
    "plivo": ("POST", "/plivo/answer", {"CallUUID": "6f3a6c6e-0000-4000-8000-000000000001", "From": "1415"}),
    "vonage": ("GET", "/vonage/answer", {"uuid": "aaaaaaaa-0000-4000-8000-000000000001", "from": "4477"}),
}


async def ask(bridge: RunningBridge, carrier: str, body: bytes | None = None) -> tuple[int, str]:
    method, path, params = WEBHOOKS[carrier]
    request: dict[str, Any] = {"params": params} if method == "GET" else {"data": params}
    if body is not None:
        request = {"data": body, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    async with aiohttp.ClientSession() as http, http.request(method, bridge.base_url + path, **request) as r:
        return r.status, await r.text()


def test_every_registered_carrier_has_a_webhook_here() -> None:
    assert set(WEBHOOKS) == set(CARRIERS)


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_a_draining_bridge_turns_every_carrier_away_with_one_message_and_the_fallback(
    carrier: str,
) -> None:
    async with (
        running_emulator() as (_, url),
        running_bridge(url, CARRIERS=carrier, FALLBACK_NUMBER=FALLBACK) as bridge,
    ):
        bridge.bridge.draining = True
        status, document = await ask(bridge, carrier)
        assert status == 200
        assert BUSY_MESSAGE in document
        assert FALLBACK.removeprefix("+") in document  # Plivo and Vonage write numbers without the '+'
        assert "media" not in document  # no stream is offered
        assert len(bridge.bridge.prepared) == 0  # and no upstream session opened for it


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_a_webhook_larger_than_any_carrier_sends_is_refused_before_it_is_read(carrier: str) -> None:
    async with running_emulator() as (_, url), running_bridge(url, CARRIERS=carrier) as bridge:
        status, _ = await ask(bridge, carrier, body=b"CallSid=CA1&Pad=" + b"x" * MAX_WEBHOOK_BYTES)
        assert status == 413
        assert len(bridge.bridge.prepared) == 0
        # A well-formed webhook still gets its answer, naming this carrier's media socket.
        status, document = await ask(bridge, carrier)
        assert status == 200 and f"/{carrier}/media" in document
        assert len(bridge.bridge.prepared) == 1


async def test_a_form_body_that_is_not_utf8_is_a_clear_400() -> None:
    async with running_emulator() as (_, url), running_bridge(url) as bridge:
        status, text = await ask(bridge, "twilio", body=b"CallSid=\xff\xfe")
        assert status == 400 and "UTF-8" in text


def carrier_paths(app: web.Application) -> set[str]:
    return {
        route.resource.canonical
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.split("/")[1] in CARRIERS
    }


def app_for(carriers: str, workdir: Path) -> web.Application:
    env = {
        "CARRIERS": carriers,
        "ADMIN_TOKEN": "t",
        "CALL_LOG_URL": f"sqlite+aiosqlite:///{workdir}/calls.db",
    }
    return create_app(load_settings(env))


def test_the_server_mounts_exactly_the_carriers_configured_from_the_registry(tmp_path: Path) -> None:
    everything = carrier_paths(app_for(",".join(CARRIERS), tmp_path))
    for name in CARRIERS:
        mounted = carrier_paths(app_for(name, tmp_path))
        assert mounted and all(path.startswith(f"/{name}/") for path in mounted)
        assert f"/{name}/media" in mounted
        assert mounted <= everything


def test_each_registry_entry_names_a_real_setting_and_a_codec_of_its_own_name() -> None:
    for name, carrier in CARRIERS.items():
        assert carrier.codec().carrier == name
        assert carrier.signing_key in Settings.model_fields
    with pytest.raises(ConfigError, match="unknown carrier skype; known: twilio, signalwire"):
        load_settings({"CARRIERS": "twilio,skype"})


def test_production_asks_for_every_configured_carriers_signing_key() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"CARRIERS": ",".join(CARRIERS), "BRIDGE_ENV": "production", "ADMIN_TOKEN": "t"})
    for carrier in CARRIERS.values():
        assert carrier.signing_key.upper() in str(refused.value)
