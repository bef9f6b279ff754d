"""What a client may do to the HTTP server before anyone is authenticated: connect and say nothing, send
half a request or a body a byte at a time, hold many connections open, send requests that are not
HTTP. Issue #16: 1,000 idle TCP connections were held for good (aiohttp's keep-alive timeout is
3,630 s, and it has no header-read timeout), and every request line or header over 8,190 bytes wrote
aiohttp's ERROR with a traceback into the log.

Each test runs the bridge's real app on a loopback port as `bridge serve` does (raw sockets, real
timers), with short limits so they take about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from yarl import URL

from bridge.http_guard import HTTP_LIMITS_KEY, MalformedRequests
from bridge.metrics import BridgeMetrics
from bridge.sim.carrier_emulator import TwilioCallerEmulator
from tests.e2e import ADMIN_TOKEN, bridge_process, eventually, running_bridge, running_emulator, tone
from tests.test_e2e_metrics import scrape

pytestmark = pytest.mark.e2e

TIMEOUT_S = 0.5


@contextlib.asynccontextmanager
async def connection(base_url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def closed_after(reader: asyncio.StreamReader, limit_s: float = 10.0) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and what it said before."""
    began = time.monotonic()
    async with asyncio.timeout(limit_s):
        said = await reader.read()
    return time.monotonic() - began, said


async def is_open(reader: asyncio.StreamReader) -> bool:
    """Still open (nothing to read, no end of stream) after a moment."""
    try:
        async with asyncio.timeout(0.05):
            return await reader.read(1) != b""
    except TimeoutError:
        return True


async def test_a_connection_that_says_nothing_is_closed_after_the_request_timeout() -> None:
    async with (
        running_emulator() as (_e, url),
        running_bridge(url, HTTP_REQUEST_TIMEOUT=str(TIMEOUT_S)) as bridge,
    ):
        async with connection(bridge.base_url) as (reader, _writer):
            seconds, said = await closed_after(reader)
        assert TIMEOUT_S * 0.9 <= seconds < TIMEOUT_S + 2.0
        assert said == b""  # nothing was asked: nothing to answer
        closed = await scrape(bridge.base_url)
    assert closed[("bridge_http_connections_closed_total", (("reason", "request_timeout"),))] == 1


@pytest.mark.parametrize(
    "parts",
    [
        [b"GET /heal"],  # half a request line
        [b"GET /healthz HTTP/1.1\r\nHost: x\r\n"],  # the headers never end
        # Headers dripped a line at a time: the deadline is for the whole request, not per read.
        [b"GET /healthz HTTP/1.1\r\n", *[f"X-{i}: {i}\r\n".encode() for i in range(8)]],
        # A body that never arrives in full.
        [b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nCallSid=CA1"],
    ],
    ids=["half-line", "unfinished-headers", "dripped-headers", "short-body"],
)
async def test_a_request_caught_half_way_is_answered_408_and_closed(
    parts: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        running_emulator() as (_e, url),
        running_bridge(url, HTTP_REQUEST_TIMEOUT=str(TIMEOUT_S)) as bridge,
        connection(bridge.base_url) as (reader, writer),
    ):
        began = time.monotonic()
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(TIMEOUT_S / len(parts) / 2)
        _, said = await closed_after(reader)
        seconds = time.monotonic() - began
    assert said.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), said[:80]
    assert TIMEOUT_S * 0.9 <= seconds < TIMEOUT_S + 2.0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiohttp")] == []


async def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline() -> None:
    async with (
        running_emulator() as (_e, url),
        running_bridge(url, HTTP_REQUEST_TIMEOUT=str(TIMEOUT_S)) as bridge,
        connection(bridge.base_url) as (reader, writer),
    ):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        await asyncio.sleep(TIMEOUT_S * 1.5)  # idle longer than a request may take: that is allowed
        writer.write(b"GET /heal")
        seconds, said = await closed_after(reader)
    assert said.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert TIMEOUT_S * 0.9 <= seconds < TIMEOUT_S + 2.0


async def test_a_kept_alive_connection_gets_the_keepalive_timeout_between_requests() -> None:
    async with (
        running_emulator() as (_e, url),
        running_bridge(url, HTTP_REQUEST_TIMEOUT="5", HTTP_KEEPALIVE_TIMEOUT=str(TIMEOUT_S)) as bridge,
        connection(bridge.base_url) as (reader, writer),
    ):
        for _ in range(2):  # the connection is reused, then left idle
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        seconds, said = await closed_after(reader)
    assert said == b""
    assert TIMEOUT_S * 0.9 <= seconds < TIMEOUT_S + 2.0


async def test_beyond_the_waiting_limit_the_longest_waiting_connection_is_closed() -> None:
    limit = 5
    env = {"HTTP_REQUEST_TIMEOUT": "30", "HTTP_MAX_WAITING_CONNECTIONS": str(limit)}
    async with (
        running_emulator() as (_e, url),
        running_bridge(url, **env) as bridge,
        contextlib.AsyncExitStack() as stack,
    ):
        idle = [await stack.enter_async_context(connection(bridge.base_url)) for _ in range(limit)]
        await asyncio.sleep(0.1)
        assert [await is_open(reader) for reader, _ in idle] == [True] * limit
        # One more: the first one goes, at once and without a word.
        extra = await stack.enter_async_context(connection(bridge.base_url))
        _, said = await closed_after(idle[0][0], limit_s=2.0)
        assert said == b""
        assert [await is_open(reader) for reader, _ in (*idle[1:], extra)] == [True] * limit
        # Holding connections open locks nobody out: a real request still gets its answer.
        async with aiohttp.ClientSession() as http, http.get(bridge.base_url + "/healthz") as response:
            assert response.status == 200
        metrics = await scrape(bridge.base_url)
    # The request above pushed out the next longest-waiting one; the scrape came in as it closed.
    assert metrics[("bridge_http_connections_closed_total", (("reason", "too_many_waiting"),))] == 2
    # Four idle ones left; the scrape's own connection is in its handler, not waiting.
    assert metrics[("bridge_http_connections_waiting", ())] == limit - 1


async def test_the_campaign_many_idle_connections_are_bounded_and_closed_while_a_call_talks() -> None:
    """Issue #16's campaign, scaled down: hundreds of connections that never send a request, while a
    call is in progress. At most HTTP_MAX_WAITING_CONNECTIONS are ever held, every one is gone once
    the request timeout has passed, and the call (a connection in its handler) is never touched."""
    limit, opened = 50, 300
    env = {"HTTP_REQUEST_TIMEOUT": "2", "HTTP_MAX_WAITING_CONNECTIONS": str(limit)}
    async with (
        running_emulator() as (_e, url),
        running_bridge(url, **env) as bridge,
        TwilioCallerEmulator(bridge.media_url) as caller,
        contextlib.AsyncExitStack() as stack,
    ):
        idle = [await stack.enter_async_context(connection(bridge.base_url)) for _ in range(opened)]
        await asyncio.sleep(0.2)
        assert sum(await asyncio.gather(*(is_open(reader) for reader, _ in idle))) == limit
        closed = await asyncio.gather(*(closed_after(reader, limit_s=5.0) for reader, _ in idle))
        assert all(said == b"" for _, said in closed)
        utterance = caller.say(tone(600, 440))
        await caller.wait_said(utterance, timeout_s=10)
        await caller.wait_heard(min_ms=400, timeout_s=10)
        assert not caller.ended
        metrics = await scrape(bridge.base_url)
        await caller.hangup()
        # Every connection forgotten once closed, the call's too (the guard steps aside while a
        # handler runs, and back in after it).
        limits = bridge.app[HTTP_LIMITS_KEY]
        await eventually(lambda: not limits._by_transport and not limits._waiting)
    by_reason = {
        reason: metrics[("bridge_http_connections_closed_total", (("reason", reason),))]
        for reason in ("too_many_waiting", "request_timeout")
    }
    # Each connection closed once, for one reason.
    assert by_reason["too_many_waiting"] + by_reason["request_timeout"] == opened
    assert by_reason["too_many_waiting"] == opened - limit


async def test_a_multipart_body_is_refused_and_a_broken_body_is_a_quiet_400() -> None:
    async with (
        running_emulator() as (_e, url),
        running_bridge(url) as bridge,
        aiohttp.ClientSession() as http,
    ):
        form = aiohttp.FormData()
        form.add_field("CallSid", "CA1")
        form.add_field("file", b"x", filename="x.txt")
        async with http.post(bridge.base_url + "/twilio/voice", data=form) as response:
            assert response.status == 415
        async with connection(bridge.base_url) as (reader, writer):
            writer.write(
                b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\nCallSid=CA1\r\n"
            )
            _, said = await closed_after(reader)
        assert said.startswith((b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request")), said[:80]
        metrics = await scrape(bridge.base_url)
    assert metrics[("bridge_http_bad_requests_total", ())] == 1


MALFORMED = [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line over 8,190 bytes
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",  # one header
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # TLS sent to the plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    # A body that is not what it says: gzip that is not gzip, chunks that are not chunks.
    b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nzzzz",
    b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


async def test_malformed_requests_are_answered_400_and_the_log_stays_quiet(tmp_path: Path) -> None:
    """The real server process and its real log: 100 malformed requests, one warning line."""
    async with running_emulator() as (_e, url), bridge_process(tmp_path, url) as server:
        log_file = tmp_path / "server.log"
        before = log_file.read_text().splitlines()
        for i in range(100):
            async with connection(server.base_url) as (reader, writer):
                writer.write(MALFORMED[i % len(MALFORMED)])
                _, said = await closed_after(reader)
                assert said.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), (i, said[:60])
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.get(server.base_url + "/metrics", headers=headers) as response:
                exposition = await response.text()
        lines = log_file.read_text().splitlines()[len(before) :]
    assert "bridge_http_bad_requests_total 100.0" in exposition
    assert len(lines) == 1, lines[:12]
    assert '"malformed HTTP requests refused"' in lines[0] and '"level": "warning"' in lines[0]


def test_malformed_requests_are_told_once_a_minute_with_how_many() -> None:
    now = [0.0]
    metrics = BridgeMetrics(process_metrics=False)
    malformed = MalformedRequests(metrics, interval_s=60.0, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for t in (0.0, 1.0, 30.0, 59.9, 60.0, 61.0, 200.0):
            now[0] = t
            malformed.seen("203.0.113.9", ValueError("x"))
    assert [(e["count"], e["last_error"]) for e in logs] == [
        (1, "ValueError"),
        (4, "ValueError"),
        (2, "ValueError"),
    ]
    assert metrics.registry.get_sample_value("bridge_http_bad_requests_total") == 7


async def test_files_and_pages_are_served_through_the_guard_on_kept_alive_connections() -> None:
    """Static files go out with sendfile, which swaps the connection's protocol for a while: the
    guard must hand each request on and take the connection back after it, many times over."""
    static = Path(__file__).parents[2] / "bridge" / "calllog" / "web" / "static"
    async with (
        running_emulator() as (_e, url),
        running_bridge(url) as bridge,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
    ):
        for _ in range(3):
            for name in ("calls.js", "calllog.css"):
                async with http.get(f"{bridge.base_url}/calls/static/{name}") as response:
                    assert response.status == 200
                    assert await response.read() == (static / name).read_bytes()
            async with http.get(bridge.base_url + "/healthz") as response:
                assert response.status == 200
        metrics = await scrape(bridge.base_url)
    assert metrics[("bridge_http_connections_closed_total", (("reason", "too_many_waiting"),))] == 0
    assert metrics[("bridge_http_connections_closed_total", (("reason", "request_timeout"),))] == 0
