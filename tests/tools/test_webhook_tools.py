"""Webhook tools: loading TOOLS_FILE strictly, and calling a real tool server over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.tools.webhook import (
    ToolsFileError,
    WebhookTool,
    call_webhook_tool,
    load_tools_file,
    verify_signature,
)

SECRET = "s3cret"
PARAMS = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}


def tool_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "lookup_order",
        "description": "Look up an order by id.",
        "parameters": PARAMS,
        "url": "https://crm.example.com/tools/order",
        "headers": {"Authorization": "Bearer ${CRM_TOKEN}", "X-Static": "yes"},
    }
    base.update(overrides)
    return base


def write_json(tmp_path: Path, data: Any, name: str = "tools.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ToolsFileError) as info:
        load_tools_file(path, env if env is not None else {"CRM_TOKEN": "tok"})
    return str(info.value)


# --- loading ---------------------------------------------------------------------------------------


def test_load_json_expands_headers_and_defaults_timeout(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"tools": [tool_dict(), tool_dict(name="hang-up", timeout_s=2)]})
    tools = load_tools_file(path, {"CRM_TOKEN": "tok"})
    assert [t.name for t in tools] == ["lookup_order", "hang-up"]
    first = tools[0]
    assert first.headers == {"Authorization": "Bearer tok", "X-Static": "yes"}
    assert first.timeout_s == 5.0
    assert tools[1].timeout_s == 2.0
    assert first.realtime_definition() == {
        "type": "function",
        "name": "lookup_order",
        "description": "Look up an order by id.",
        "parameters": PARAMS,
    }


def test_load_yaml_top_level_list(tmp_path: Path) -> None:
    path = tmp_path / "tools.yml"
    path.write_text(
        """
- name: lookup_order
  description: Look up an order by id.
  url: http://127.0.0.1:8080/order
  timeout_s: 1.5
  parameters:
    type: object
    properties:
      order_id: {type: string}
  headers:
    Authorization: "Bearer ${CRM_TOKEN}"
"""
    )
    (tool,) = load_tools_file(path, {"CRM_TOKEN": "abc"})
    assert tool.url == "http://127.0.0.1:8080/order"
    assert tool.timeout_s == 1.5
    assert tool.headers == {"Authorization": "Bearer abc"}
    assert tool.parameters["properties"] == {"order_id": {"type": "string"}}


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([tool_dict(name="bad name!")], "tool 'bad name!': name must match"),
        ([tool_dict(), tool_dict()], "tool 'lookup_order': duplicate name"),
        ([{k: v for k, v in tool_dict().items() if k != "url"}], "tool 'lookup_order': url is missing"),
        ([tool_dict(url="ftp://x.example/a")], "tool 'lookup_order': url must be http(s)"),
        (
            [tool_dict(parameters=["order_id"])],
            "tool 'lookup_order': parameters must be a JSON-schema object",
        ),
        ([tool_dict(parameters={"type": "string"})], "tool 'lookup_order': parameters must be"),
        ([tool_dict(timeout_s=0)], "tool 'lookup_order': timeout_s must be a number > 0 and <= 30"),
        ([tool_dict(timeout_s=31)], "tool 'lookup_order': timeout_s must be"),
        ([tool_dict(timeout_s="5")], "tool 'lookup_order': timeout_s must be"),
        ([tool_dict(timeout="5")], "tool 'lookup_order': unknown key 'timeout'"),
        ([tool_dict(headers={"X-Bridge-Signature": "x"})], "cannot be overridden"),
        (
            [tool_dict(headers={"X-Token": "${MISSING_TOKEN}"})],
            "tool 'lookup_order': header 'X-Token' uses ${MISSING_TOKEN}",
        ),
        ({"tool": []}, "expected a list of tools"),
        ([tool_dict(), {"description": "no name"}], "tool #2: name must match"),
    ],
)
def test_invalid_tools_name_file_and_tool(tmp_path: Path, tools: Any, expected: str) -> None:
    path = write_json(tmp_path, tools)
    message = load_error(path)
    assert expected in message
    assert all(line.startswith(f"{path}: ") for line in message.splitlines())


def test_unset_env_var_names_tool_and_variable(tmp_path: Path) -> None:
    message = load_error(write_json(tmp_path, [tool_dict()]), env={})
    where = f"{tmp_path / 'tools.json'}: tool 'lookup_order'"
    assert message == f"{where}: header 'Authorization' uses ${{CRM_TOKEN}}, which is not set"


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    path = write_json(tmp_path, [tool_dict(url="nope", timeout_s=-1), tool_dict(name="x y")])
    lines = load_error(path).splitlines()
    assert len(lines) == 3
    assert "url must be http(s)" in lines[0]
    assert "timeout_s" in lines[1]
    assert "tool 'x y': name must match" in lines[2]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("tools.json", '{"tools": [', "cannot parse JSON"),
        ("tools.yaml", "- name: [unclosed\n", "cannot parse YAML"),
        ("tools.toml", "", "unsupported extension '.toml'"),
    ],
)
def test_unparsable_file(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert len(message.splitlines()) == 1


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read" in load_error(tmp_path / "absent.yaml")


# --- calling ---------------------------------------------------------------------------------------


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class ToolServer:
    url: str
    received: list[Received] = field(default_factory=list)
    reply: web.Response | None = None
    delay_s: float = 0.0


@pytest.fixture
async def server() -> AsyncIterator[ToolServer]:
    state = ToolServer(url="")

    async def handle(request: web.Request) -> web.Response:
        state.received.append(Received(await request.read(), dict(request.headers)))
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        return state.reply or web.json_response({"status": "shipped"})

    app = web.Application()
    app.router.add_post("/tool", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/tool"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_tool(url: str, timeout_s: float = 5.0) -> WebhookTool:
    return WebhookTool(
        name="lookup_order",
        description="Look up an order.",
        parameters=PARAMS,
        url=url,
        timeout_s=timeout_s,
        headers={"Authorization": "Bearer tok"},
    )


CONTEXT = {"call_id": "CA123", "caller": "+1555***0199"}


async def test_round_trip_signed(server: ToolServer, http: aiohttp.ClientSession) -> None:
    server.reply = web.Response(
        text='{ "status": "shipped", "eta": "tomorrow" }', content_type="application/json"
    )
    result = await call_webhook_tool(http, make_tool(server.url), '{"order_id": "A-17"}', CONTEXT, SECRET)

    assert result.ok
    assert json.loads(result.output) == {"status": "shipped", "eta": "tomorrow"}
    assert result.output == '{"status":"shipped","eta":"tomorrow"}'
    assert result.duration_ms > 0

    (got,) = server.received
    assert json.loads(got.body) == {
        "tool": "lookup_order",
        "arguments": {"order_id": "A-17"},
        "call": CONTEXT,
    }
    assert got.headers["Authorization"] == "Bearer tok"
    assert got.headers["Content-Type"] == "application/json"
    timestamp = got.headers["X-Bridge-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    signature = got.headers["X-Bridge-Signature"]
    assert signature.startswith("v1=")
    assert verify_signature(SECRET, timestamp, got.body, signature, now=time.time())
    assert not verify_signature(
        SECRET, timestamp, got.body.replace(b"A-17", b"A-18"), signature, now=time.time()
    )
    assert not verify_signature("other", timestamp, got.body, signature, now=time.time())
    assert not verify_signature(SECRET, timestamp, got.body, signature, now=time.time() + 301)
    assert not verify_signature(SECRET, "soon", got.body, signature, now=time.time())


async def test_no_signature_without_secret(server: ToolServer, http: aiohttp.ClientSession) -> None:
    result = await call_webhook_tool(http, make_tool(server.url), "{}", CONTEXT, "")
    assert result.ok
    (got,) = server.received
    assert "X-Bridge-Signature" not in got.headers
    assert "X-Bridge-Timestamp" in got.headers


async def test_slow_tool_times_out(server: ToolServer, http: aiohttp.ClientSession) -> None:
    server.delay_s = 1.5
    started = time.perf_counter()
    result = await call_webhook_tool(http, make_tool(server.url, timeout_s=0.3), "{}", CONTEXT, SECRET)
    assert time.perf_counter() - started < 1.5
    assert not result.ok
    assert json.loads(result.output) == {"error": "the tool did not answer in time"}


async def test_http_error_status(server: ToolServer, http: aiohttp.ClientSession) -> None:
    server.reply = web.Response(status=500, text="boom")
    result = await call_webhook_tool(http, make_tool(server.url), "{}", CONTEXT, SECRET)
    assert not result.ok
    assert json.loads(result.output) == {"error": "the tool failed (HTTP 500)"}


@pytest.mark.parametrize("arguments", ['{"order_id": ', "[1, 2]"])
async def test_invalid_arguments_make_no_request(
    server: ToolServer, http: aiohttp.ClientSession, arguments: str
) -> None:
    result = await call_webhook_tool(http, make_tool(server.url), arguments, CONTEXT, SECRET)
    assert not result.ok
    assert "arguments" in json.loads(result.output)["error"]
    assert server.received == []


async def test_non_json_body_is_wrapped_and_truncated(
    server: ToolServer, http: aiohttp.ClientSession
) -> None:
    server.reply = web.Response(text="Order A-17 shipped. " + "x" * 5000)
    result = await call_webhook_tool(http, make_tool(server.url), '{"order_id": "A-17"}', CONTEXT, SECRET)
    assert result.ok
    wrapped = json.loads(result.output)["result"]
    assert wrapped.startswith("Order A-17 shipped.")
    assert len(wrapped) == 4000


async def test_oversized_body_is_an_error(server: ToolServer, http: aiohttp.ClientSession) -> None:
    server.reply = web.Response(text="y" * (65 * 1024))
    result = await call_webhook_tool(http, make_tool(server.url), "{}", CONTEXT, SECRET)
    assert not result.ok
    assert "too large" in json.loads(result.output)["error"]


async def test_unreachable_tool(http: aiohttp.ClientSession) -> None:
    # Bind and release a port so nothing is listening on it.
    sock_server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = sock_server.sockets[0].getsockname()[1]
    sock_server.close()
    await sock_server.wait_closed()
    result = await call_webhook_tool(http, make_tool(f"http://127.0.0.1:{port}/tool"), "{}", CONTEXT, SECRET)
    assert not result.ok
    assert json.loads(result.output) == {"error": "the tool could not be reached"}
