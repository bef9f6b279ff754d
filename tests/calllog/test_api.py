from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import socket
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs
from yarl import URL

from bridge.calllog import CallRecorder, CallStore, setup_calllog_routes
from bridge.calllog.auth import COOKIE_NAME, OperatorAuth
from bridge.calllog.health import CallLogHealth
from bridge.calllog.leases import ReplicaIdentity
from bridge.calllog.store import encode_cursor
from tests.calllog.conftest import ADMIN_TOKEN
from tests.calllog.helpers import database_outage, record_simple_call, wait_until
from tests.calllog.sample_calls import DAY, record_day_of_calls, start
from tests.e2e import serving

REFUND = "CA0001refund"
PROTECTED = [
    "/api/calls",
    f"/api/calls/{REFUND}",
    f"/api/calls/{REFUND}/transcript",
    "/api/calls/export.jsonl",
    "/api/calls/export.csv",
    "/api/calls/live",
    "/calls",
    "/calls/live",
    f"/calls/{REFUND}",
]


@pytest.fixture
async def seeded(recorder: CallRecorder) -> None:
    record_day_of_calls(recorder)
    await recorder.flush()


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"headers": {"Authorization": "Bearer wrong-token"}},
        {"headers": {"Authorization": f"Basic {ADMIN_TOKEN}"}},
        {"headers": {"Authorization": "Bearer "}},
        {"headers": {"Cookie": f"{COOKIE_NAME}=forged"}},
        {"headers": {"Cookie": f"{COOKIE_NAME}={ADMIN_TOKEN}"}},  # the token itself is not the session
    ],
    ids=["none", "wrong-token", "basic-scheme", "empty-bearer", "forged-cookie", "token-as-cookie"],
)
async def test_every_route_refuses_without_valid_credentials(client: TestClient, credentials: dict) -> None:
    for path in PROTECTED:
        response = await client.get(path, allow_redirects=False, **credentials)
        assert response.status == 401, path
        body = await response.text()
        # Nothing of the calls leaks: no transcript, no number (the sign-in form echoes only the path).
        assert "Acme" not in body and "4321" not in body and "caller_hangup" not in body, path
        if path.startswith("/api/"):
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert json.loads(body) == {"error": "unauthorized"}
        else:
            assert 'name="token"' in body


@pytest.mark.usefixtures("seeded")
async def test_bearer_token_opens_every_route(client: TestClient, auth_headers: dict) -> None:
    for path in PROTECTED:
        response = await client.get(path, headers=auth_headers)
        assert response.status == 200, path
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.usefixtures("seeded")
async def test_login_form_sets_a_strict_httponly_cookie(client: TestClient) -> None:
    bad = await client.post("/calls/login", data={"token": "nope", "next": "/calls"}, allow_redirects=False)
    assert bad.status == 401
    assert "not right" in await bad.text()
    assert COOKIE_NAME not in bad.cookies

    good = await client.post(
        "/calls/login", data={"token": ADMIN_TOKEN, "next": f"/calls/{REFUND}"}, allow_redirects=False
    )
    assert good.status == 303 and good.headers["Location"] == f"/calls/{REFUND}"
    set_cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    assert ADMIN_TOKEN not in set_cookie

    # The client's jar now sends the cookie: pages and the API open without a bearer header.
    for path in PROTECTED:
        assert (await client.get(path)).status == 200, path

    out = await client.post("/calls/logout", allow_redirects=False)
    assert out.status == 303
    client.session.cookie_jar.clear()
    assert (await client.get("/api/calls")).status == 401


async def test_the_sign_in_form_on_its_own_returns_where_it_was_asked_from(client: TestClient) -> None:
    form = await client.get("/calls/login", params={"next": "/phone"}, allow_redirects=False)
    assert form.status == 200 and 'name="next" value="/phone"' in await form.text()
    signed_in = await client.post(
        "/calls/login", data={"token": ADMIN_TOKEN, "next": "/phone"}, allow_redirects=False
    )
    assert signed_in.headers["Location"] == "/phone"
    # Signed in already: straight there.
    again = await client.get("/calls/login", params={"next": "/calls/live"}, allow_redirects=False)
    assert again.status == 303 and again.headers["Location"] == "/calls/live"


async def test_the_pages_say_who_is_signed_in(store: CallStore) -> None:
    app = web.Application()
    setup_calllog_routes(app, store, OperatorAuth(ADMIN_TOKEN, {"alice": "alice-token-0123456789"}))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path in ("/calls", "/calls/live", f"/calls/{REFUND}"):
            page = await client.get(path, headers={"Authorization": "Bearer alice-token-0123456789"})
            assert '<span class="operator" title="Signed in as">alice</span>' in await page.text(), path


async def test_login_never_redirects_off_site(client: TestClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/elsewhere", "/calls\\@evil"):
        response = await client.post(
            "/calls/login", data={"token": ADMIN_TOKEN, "next": target}, allow_redirects=False
        )
        assert response.headers["Location"] == "/calls", target


async def test_static_assets_are_public_and_setup_needs_a_token(store: CallStore, client: TestClient) -> None:
    for asset in ("calllog.css", "common.js", "calls.js", "call.js"):
        assert (await client.get(f"/calls/static/{asset}")).status == 200
    with pytest.raises(ValueError):
        OperatorAuth("")


@pytest.mark.usefixtures("seeded")
async def test_list_masks_numbers_unless_revealed(client: TestClient, auth_headers: dict) -> None:
    response = await client.get("/api/calls", params={"q": "refund"}, headers=auth_headers)
    body = await response.json()
    assert [c["call_id"] for c in body["calls"]] == [REFUND]
    call = body["calls"][0]
    assert (call["from_number"], call["to_number"]) == ("+*******1234", "+*******4321")
    assert call["numbers_masked"] is True
    assert "5551231234" not in await response.text()

    revealed = await client.get("/api/calls", params={"q": "refund", "reveal": "1"}, headers=auth_headers)
    call = (await revealed.json())["calls"][0]
    assert (call["from_number"], call["numbers_masked"]) == ("+15551231234", False)

    detail = await client.get(f"/api/calls/{REFUND}", headers=auth_headers)
    assert (await detail.json())["from_number"] == "+*******1234"
    detail = await client.get(f"/api/calls/{REFUND}", params={"reveal": "1"}, headers=auth_headers)
    assert (await detail.json())["from_number"] == "+15551231234"


@pytest.mark.usefixtures("seeded")
async def test_a_search_says_where_it_found_each_call_with_a_snippet(
    client: TestClient, auth_headers: dict
) -> None:
    async def found(**params: str) -> dict:
        response = await client.get("/api/calls", params=params, headers=auth_headers)
        assert response.status == 200, await response.text()
        return {call["call_id"]: call["match"] for call in (await response.json())["calls"]}

    refund = (await found(q="seven business"))[REFUND]
    assert refund["field"] == "summary"  # the unheard rest is not what was said; the summary is
    assert (await found(q="order from last"))[REFUND][
        "text"
    ] == "Hi, I'd like a refund for my order from last week."
    long = (await found(q="work email"))[REFUND]
    assert long["text"].startswith("…") and long["text"].endswith("work email.") and len(long["text"]) <= 122
    assert await found(q="CA0003transfer") == {
        "CA0003transfer": {"field": "call_sid", "text": "CA0003transfer"}
    }
    assert await found(q="415 555 0187") == {"CA0002failed": {"field": "from_number", "text": "+*******0187"}}
    revealed = await found(q="415 555 0187", reveal="1")
    assert revealed["CA0002failed"]["text"] == "+14155550187"
    # Without a search nothing was "found", but each call says what its caller said first.
    response = await client.get("/api/calls", headers=auth_headers)
    calls = {c["call_id"]: c for c in (await response.json())["calls"]}
    assert "match" not in calls[REFUND] and "search_text" not in calls[REFUND]
    assert calls[REFUND]["first_words"]["text"] == "Hi, I'd like a refund for my order from last week."
    assert calls[REFUND]["intent"] == "a refund for last week's order"
    assert calls["CA012short"]["first_words"] is None  # it has no words, only how long the caller spoke


@pytest.mark.usefixtures("seeded")
async def test_list_filters_and_pagination(client: TestClient, auth_headers: dict) -> None:
    async def ids(**params: str) -> list[str]:
        response = await client.get("/api/calls", params=params, headers=auth_headers)
        assert response.status == 200, await response.text()
        return [c["call_id"] for c in (await response.json())["calls"]]

    assert await ids(number="0187") == ["CA0002failed"]
    assert await ids(end_reason="transferred") == ["CA0003transfer"]
    since, until = DAY + timedelta(hours=13), DAY + timedelta(hours=15)
    afternoon = {"since": since.isoformat(), "until": until.isoformat()}
    assert await ids(**afternoon) == ["CA0002failed", "CA0004never", "CA0003transfer"]
    assert await ids(since="2025-11-21T15:00:00Z", until="2025-11-21T16:00:00Z") == [REFUND]
    assert await ids(q="OPENING HOURS") == ["CA012short", "CA011short", "CA010short"]

    first = await (await client.get("/api/calls", params={"limit": "4"}, headers=auth_headers)).json()
    assert len(first["calls"]) == 4 and first["next_cursor"]
    params = {"limit": "4", "cursor": first["next_cursor"]}
    second = await (await client.get("/api/calls", params=params, headers=auth_headers)).json()
    assert second["next_cursor"] is None
    all_ids = [c["call_id"] for c in first["calls"] + second["calls"]]
    assert len(all_ids) == len(set(all_ids)) == 8
    assert all_ids[0] == "CA0009live"  # in progress, and the newest


async def test_the_live_board_reads_every_replicas_calls_from_the_call_log(
    store: CallStore, recorder: CallRecorder, client: TestClient, auth_headers: dict
) -> None:
    record_day_of_calls(recorder)  # its calls ended in 2025, but for CA0009live
    sibling = CallRecorder(store, owner=ReplicaIdentity("bridge-b", "http://10.0.0.8:8080"))
    await sibling.start()
    try:
        now = datetime.now(UTC)
        start(sibling, "CA-b1", now - timedelta(seconds=30), from_number="+14155550142")
        sibling.event("CA-b1", "caller_transcript", {"item_id": "u1", "text": "Where is my parcel?"}, now)
        sibling.event("CA-b1", "caller_spoke", {"item_id": "u2", "spoken_ms": 1800, "words": "failed"})
        start(sibling, "CA-b2", now - timedelta(minutes=3))
        sibling.call_ended("CA-b2", "caller_hangup", at=now - timedelta(seconds=20))
        start(sibling, "CA-b3", now - timedelta(minutes=9))
        sibling.call_ended("CA-b3", "caller_hangup", at=now - timedelta(minutes=5))  # too long ago
        await sibling.flush()
        await recorder.flush()
    finally:
        await sibling.stop()
    response = await client.get("/api/calls/live", headers=auth_headers)
    assert response.status == 200
    board = await response.json()
    calls = {call["call_id"]: call for call in board["calls"]}
    assert list(calls) == ["CA-b1", "CA0009live", "CA-b2"]  # newest first
    assert (calls["CA-b1"]["status"], calls["CA-b1"]["owner_id"]) == ("in_progress", "bridge-b")
    assert calls["CA-b1"]["from_number"] == "+*******0142"
    assert calls["CA-b1"]["last_line"]["kind"] == "caller_spoke"  # the latest thing said
    assert calls["CA0009live"]["last_line"]["data"]["text"] == "Hi, I'm calling about a delivery."
    assert calls["CA-b2"]["end_reason"] == "caller_hangup" and calls["CA-b2"]["last_line"] is None
    assert datetime.fromisoformat(board["now"]) >= now


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "many"},
        {"limit": "100000"},
        {"since": "yesterday"},
        {"end_reason": "bored"},
        {"number": "abc"},
        {"cursor": "garbage"},
    ],
)
async def test_bad_parameters_are_400_with_a_reason(
    client: TestClient, auth_headers: dict, params: dict
) -> None:
    response = await client.get("/api/calls", params=params, headers=auth_headers)
    assert response.status == 400
    assert (await response.json())["error"]


@pytest.mark.usefixtures("seeded")
async def test_call_detail_and_transcript(client: TestClient, auth_headers: dict) -> None:
    call = await (await client.get(f"/api/calls/{REFUND}", headers=auth_headers)).json()
    assert call["end_reason"] == "caller_hangup" and call["duration_s"] == 63.5
    assert call["started_at"] == "2025-11-21T15:02:10+00:00"
    assert [e["seq"] for e in call["events"]] == list(range(1, 17))
    barge = next(e for e in call["events"] if e["kind"] == "barge_in")
    assert barge["data"]["heard_ms"] == 2300 and barge["at"] == "2025-11-21T15:02:18.900000+00:00"

    response = await client.get(f"/api/calls/{REFUND}/transcript", headers=auth_headers)
    assert response.content_type == "text/plain"
    lines = (await response.text()).splitlines()
    assert lines[0] == "[00:00.7] Assistant: Hi, thanks for calling Acme support. How can I help you today?"
    assert lines[1] == "[00:04.1] Caller: Hi, I'd like a refund for my order from last week."
    assert lines[2] == (
        "[00:06.4] Assistant: I found order A-1042 for 49 dollars 90. Refunds usually take five [cut off; "
        "not heard: to seven business days, and you will get an email as soon as it has been processed.]"
    )
    assert (
        lines[3]
        == '[00:07.0] Operator alice, inject: "Premium customer since 2019: refund without questions."'
    )
    assert lines[-1] == "[00:18.0] Caller: No, that's all. Thank you!"
    assert len(lines) == 8

    assert (await client.get("/api/calls/nope", headers=auth_headers)).status == 404
    assert (await client.get("/api/calls/nope/transcript", headers=auth_headers)).status == 404


@pytest.mark.usefixtures("seeded")
async def test_jsonl_export_streams_calls_with_events(client: TestClient, auth_headers: dict) -> None:
    response = await client.get("/api/calls/export.jsonl", headers=auth_headers)
    assert response.status == 200
    assert "attachment" in response.headers["Content-Disposition"]
    calls = [json.loads(line) for line in (await response.text()).splitlines()]
    assert len(calls) == 8
    refund = next(c for c in calls if c["call_id"] == REFUND)
    assert len(refund["events"]) == 16 and refund["from_number"] == "+*******1234"

    params = {"end_reason": "upstream_failure", "reveal": "1"}
    response = await client.get("/api/calls/export.jsonl", params=params, headers=auth_headers)
    calls = [json.loads(line) for line in (await response.text()).splitlines()]
    assert [(c["call_id"], c["from_number"]) for c in calls] == [("CA0002failed", "+14155550187")]


@pytest.mark.usefixtures("seeded")
async def test_csv_export_has_a_header_and_one_row_per_call(client: TestClient, auth_headers: dict) -> None:
    response = await client.get("/api/calls/export.csv", params={"number": "1234"}, headers=auth_headers)
    assert response.status == 200 and response.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [r["call_id"] for r in rows] == [REFUND]
    assert rows[0]["from_number"] == "+*******1234"
    assert rows[0]["end_reason"] == "caller_hangup" and rows[0]["barge_in_count"] == "1"
    assert float(rows[0]["cost_usd"]) > 0

    everything = await client.get("/api/calls/export.csv", headers=auth_headers)
    assert len(list(csv.DictReader(io.StringIO(await everything.text())))) == 8


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("path", ["/api/calls", "/api/calls/export.csv", "/api/calls/export.jsonl"])
async def test_a_search_for_control_characters_is_a_clear_400(
    client: TestClient, auth_headers: dict, path: str
) -> None:
    """Issue #16: `q=%00` matched every call with a transcript (SQLite) or failed with a 500 (PostgreSQL)."""
    for q in ("\x00", "refund\x00", "\x1b[2J", "\x7f"):
        response = await client.get(path, params={"q": q}, headers=auth_headers)
        assert response.status == 400, (q, await response.text())
        assert await response.json() == {"error": "q must not contain control characters"}


@pytest.mark.usefixtures("seeded")
async def test_ids_cursors_and_times_no_call_can_have_are_answered_not_failed(
    client: TestClient, auth_headers: dict
) -> None:
    assert (await client.get("/api/calls/CA%00x", headers=auth_headers)).status == 404
    assert (await client.get("/api/calls/CA%00x/transcript", headers=auth_headers)).status == 404
    cursor = encode_cursor(DAY, "CA\x00")
    response = await client.get("/api/calls", params={"cursor": cursor}, headers=auth_headers)
    assert (response.status, await response.json()) == (400, {"error": "invalid cursor"})
    # An offset that moves a time past year 1 or 9999 in UTC.
    for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        response = await client.get("/api/calls", params={"since": since}, headers=auth_headers)
        assert response.status == 400, since
        assert "since must be an ISO 8601 time" in (await response.json())["error"]


POSTGRES_ONLY = pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@POSTGRES_ONLY
@pytest.mark.usefixtures("seeded")
async def test_while_the_database_is_down_the_api_answers_503_and_logs_one_line_per_request(
    request: pytest.FixtureRequest,
    db_url: str,
    store: CallStore,
    auth_headers: dict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #16: with PostgreSQL down, GET /api/calls answered 500 and logged ~99 lines of traceback."""
    health = CallLogHealth(store)
    app = web.Application()
    setup_calllog_routes(app, store, OperatorAuth(ADMIN_TOKEN), health=health)
    paths = [
        "/api/calls",
        f"/api/calls/{REFUND}",
        f"/api/calls/{REFUND}/transcript",
        "/api/calls/export.jsonl",
        "/api/calls/export.csv",
    ]
    caplog.set_level(logging.INFO)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        with capture_logs() as logs:
            async with database_outage(request, db_url):
                for path in paths:
                    response = await client.get(path, headers=auth_headers)
                    assert response.status == 503, path
                    assert response.headers["Retry-After"] == "5"
                    assert await response.json() == {
                        "error": "the call-log database is unavailable; try again shortly"
                    }
                report = health.report()
                assert report["status"] == "degraded"
                assert "not currently accepting connections" in report["error"]
            for path in paths:
                assert (await client.get(path, headers=auth_headers)).status == 200, path
            assert health.report() == {"status": "ok"}
    lines = [(e["event"], e["path"]) for e in logs if e["log_level"] != "debug"]
    assert lines == [("calllog.api_database_unavailable", path) for path in paths]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@POSTGRES_ONLY
async def test_an_export_cut_short_by_an_outage_ends_as_a_broken_download(
    request: pytest.FixtureRequest, db_url: str, store: CallStore, recorder: CallRecorder, auth_headers: dict
) -> None:
    for i in range(201):  # the export reads 200 calls at a time: the second read meets the outage
        record_simple_call(recorder, f"CA{i:04d}", DAY + timedelta(minutes=i))
    await recorder.flush()
    outage = contextlib.AsyncExitStack()
    reads = 0
    list_calls = store.list_calls

    async def second_read_meets_an_outage(**kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:
            await outage.enter_async_context(database_outage(request, db_url))
        return await list_calls(**kwargs)

    store.list_calls = second_read_meets_an_outage  # type: ignore[method-assign]
    app = web.Application()
    setup_calllog_routes(app, store, OperatorAuth(ADMIN_TOKEN))
    async with outage, TestClient(TestServer(app, host="127.0.0.1")) as client:
        with capture_logs() as logs:
            response = await client.get("/api/calls/export.jsonl", headers=auth_headers)
            assert response.status == 200  # the first 200 calls were on their way
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == ["calllog.api_database_unavailable"]


SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
async def test_an_agent_cancelling_a_download_is_not_an_outage(
    store: CallStore, recorder: CallRecorder, auth_headers: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The download's next write fails with a connection error, as an outage's read may: only the
    second is an outage, and neither is worth a traceback."""
    for i in range(700):  # about 9 MB of transcripts: more than the socket buffers take unread
        record_simple_call(recorder, f"CA{i:04d}", DAY + timedelta(seconds=i), said="words " * 2000)
    await recorder.flush()
    health = CallLogHealth(store)
    handled: list[web.Request] = []

    @web.middleware
    async def note_when_handled(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            handled.append(request)

    app = web.Application(middlewares=[note_when_handled])
    setup_calllog_routes(app, store, OperatorAuth(ADMIN_TOKEN), health=health)
    caplog.set_level(logging.INFO)
    with capture_logs() as logs:
        # Served as the bridge serves it (a test server would cancel the handler instead).
        async with serving(app) as base_url:
            loop = asyncio.get_running_loop()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", URL(base_url).port))
            request = "GET /api/calls/export.jsonl HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n"
            await loop.sock_sendall(sock, request.format(auth_headers["Authorization"]).encode())
            assert (await loop.sock_recv(sock, 1024)).startswith(b"HTTP/1.1 200")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, the download far from done
            await wait_until(lambda: bool(handled), what="the export handler done")
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert health.report() == {"status": "ok"}
