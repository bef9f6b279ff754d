"""The softphone's HTTP surface: who may open the page and the media socket, and what is public."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.calllog.auth import COOKIE_NAME
from bridge.softphone import setup_softphone_routes
from tests.softphone.conftest import ADMIN_TOKEN, AUTH, session_cookie

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async def media_handler(request: web.Request) -> web.StreamResponse:
        # Stands in for the carrier media handler: proves the socket was handed over, upgraded.
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("handled")
        await ws.close()
        return ws

    app = web.Application()
    setup_softphone_routes(app, media_handler=media_handler, is_authorized=AUTH.authenticated)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_the_page_needs_the_sign_in(client: TestClient) -> None:
    response = await client.get("/phone")
    assert response.status == 401
    body = await response.text()
    assert "Sign in" in body and 'href="/calls/login?next=/phone"' in body
    assert 'id="call"' not in body  # no softphone for strangers

    wrong = await client.get("/phone", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401


@pytest.mark.parametrize("how", ["bearer", "cookie"])
async def test_signed_in_the_page_is_served_with_a_strict_policy(client: TestClient, how: str) -> None:
    if how == "bearer":
        response = await client.get("/phone", headers=BEARER)
    else:
        response = await client.get("/phone", cookies={COOKIE_NAME: session_cookie()})
    assert response.status == 200
    assert response.content_type == "text/html"
    body = await response.text()
    assert 'id="call"' in body and 'id="hangup"' in body and 'id="mute"' in body
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Permissions-Policy"] == "microphone=(self)"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("phone.js", "text/javascript"),
        ("dsp.js", "text/javascript"),
        ("capture-worklet.js", "text/javascript"),
        ("playback-worklet.js", "text/javascript"),
        ("phone.css", "text/css"),
    ],
)
async def test_assets_are_public(client: TestClient, name: str, content_type: str) -> None:
    response = await client.get(f"/phone/static/{name}")
    assert response.status == 200
    assert response.content_type == content_type  # module scripts are refused under any other type
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["phone.html", "nothing.js", "..", "%2e%2e%2froutes.py", "__init__.py"])
async def test_only_the_assets_are_served_from_static(client: TestClient, name: str) -> None:
    response = await client.get(f"/phone/static/{name}")
    assert response.status == 404


async def test_the_media_socket_needs_the_sign_in(client: TestClient) -> None:
    response = await client.get("/phone/media")
    assert response.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/phone/media")
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await client.ws_connect("/phone/media", headers={"Authorization": "Bearer nope"})
    assert wrong.value.status == 401


@pytest.mark.parametrize("how", ["bearer", "cookie"])
async def test_signed_in_the_socket_goes_to_the_media_handler(client: TestClient, how: str) -> None:
    if how == "bearer":
        ws = await client.ws_connect("/phone/media", headers=BEARER)
    else:
        origin = str(client.make_url("")).rstrip("/")
        headers = {"Cookie": f"{COOKIE_NAME}={session_cookie()}", "Origin": origin}
        ws = await client.ws_connect("/phone/media", headers=headers)
    assert (await ws.receive_str()) == "handled"
    await ws.close()


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"])
async def test_another_site_cannot_open_a_call_on_the_cookie(client: TestClient, origin: str) -> None:
    headers = {"Cookie": f"{COOKIE_NAME}={session_cookie()}", "Origin": origin}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/phone/media", headers=headers)
    assert refused.value.status == 403


async def test_behind_a_proxy_the_forwarded_host_is_the_origin(client: TestClient) -> None:
    headers = {
        "Cookie": f"{COOKIE_NAME}={session_cookie()}",
        "Origin": "https://bridge.example.com",
        "X-Forwarded-Host": "bridge.example.com",
    }
    ws = await client.ws_connect("/phone/media", headers=headers)
    assert (await ws.receive_str()) == "handled"
    await ws.close()
