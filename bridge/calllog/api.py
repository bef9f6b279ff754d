"""HTTP face of the call log: the JSON/CSV/text API under /api/calls and the web pages under /calls.

Everything but the static assets and the sign-in form needs an operator's token (bearer header,
or the cookie the login form sets; see `bridge.calllog.auth`). Phone numbers are masked to their
last 4 digits unless `?reveal=1` is asked for; every reveal is logged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any

import structlog
from aiohttp import web

from bridge.call_config import UPSTREAM_APIS
from bridge.calllog.auth import OperatorAuth
from bridge.calllog.health import CallLogHealth, describe
from bridge.calllog.present import CSV_COLUMNS, csv_row, public_call, to_json, transcript_text
from bridge.calllog.search import check_search_text
from bridge.calllog.store import END_REASONS, CallStore, database_unavailable
from bridge.recording.archive import ArchiveError, RecordingArchive, safe_name
from bridge.recording.download import recording_response
from bridge.recording.finish import FORMATS

log = structlog.get_logger(__name__)

WEB_DIR = Path(__file__).with_name("web")
MAX_LIMIT = 500

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


_NOT_SERVED = {
    None: "this call was not recorded",
    "recording": "the recording is not ready yet",
    "failed": "the recording failed (the call's recording.error says why)",
}


class _BadRequest(Exception):
    pass


def setup_calllog_routes(
    app: web.Application,
    store: CallStore,
    auth: OperatorAuth,
    recordings: RecordingArchive | None = None,
    health: CallLogHealth | None = None,
) -> None:
    """Add the call-log API and pages to `app`, for the operators `auth` knows; `recordings` serves the
    calls' recordings; `health` hears how each read went (the server's /readyz reports it)."""
    routes = _CallLogRoutes(store, auth, recordings, health or CallLogHealth(store))
    api, page = routes.api, routes.page
    router = app.router
    # The export paths before /api/calls/{call_id}, which would otherwise take them as an id.
    router.add_get("/api/calls", api(routes.list_calls))
    router.add_get("/api/calls/export.jsonl", api(routes.export_jsonl))
    router.add_get("/api/calls/export.csv", api(routes.export_csv))
    router.add_get("/api/calls/compare", api(routes.compare))
    router.add_get("/api/calls/live", api(routes.live_calls))
    router.add_get("/api/calls/{call_id}/transcript", api(routes.transcript))
    router.add_get("/api/calls/{call_id}/recording", api(routes.recording))
    router.add_get("/api/calls/{call_id}", api(routes.get_call))
    router.add_static("/calls/static/", WEB_DIR / "static")
    router.add_get("/calls/login", routes.login_page)
    router.add_post("/calls/login", routes.login)
    router.add_post("/calls/logout", routes.logout)
    router.add_get("/calls", page(routes.list_page))
    router.add_get("/calls/live", page(routes.live_page))  # before {call_id}, which would take it
    router.add_get("/calls/{call_id}", page(routes.call_page))


class _CallLogRoutes:
    def __init__(
        self, store: CallStore, auth: OperatorAuth, recordings: RecordingArchive | None, health: CallLogHealth
    ) -> None:
        self.store = store
        self.auth = auth
        self.recordings = recordings
        self.health = health
        self.list_html = _page_template("calls.html")
        self.call_html = _page_template("call.html")
        self.live_html = _page_template("live.html")
        self.topbar = _page_template("topbar.html")
        self.login_template = Template((WEB_DIR / "login.html").read_text(encoding="utf-8"))

    # ---- auth wrappers ------------------------------------------------------------------------

    def api(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.auth.authenticated(request):
                return web.json_response(
                    {"error": "unauthorized"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="calls"', **_NO_STORE},
                )
            try:
                response = await handler(request)
            except _BadRequest as exc:
                return _json({"error": str(exc)}, status=400)
            except Exception as exc:
                # A client that left mid-response is no outage, though both raise OSErrors.
                if not database_unavailable(exc) or _client_gone(request):
                    raise
                self._unavailable(request, exc)
                return web.json_response(
                    {"error": "the call-log database is unavailable; try again shortly"},
                    status=503,
                    headers={"Retry-After": "5", **_NO_STORE},
                )
            self.health.read_answered()
            return response

        return guarded

    def _unavailable(self, request: web.Request, exc: BaseException) -> None:
        # One line per request, no traceback: the outage is not a bug here, and the recorder says
        # once when it began and when it ended.
        self.health.read_failed(exc)
        log.warning("calllog.api_database_unavailable", path=request.path, error=describe(exc))

    def page(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.auth.authenticated(request):
                return self._login_form(next_path=request.path_qs, error="", status=401)
            return await handler(request)

        return guarded

    def _login_form(self, *, next_path: str, error: str, status: int) -> web.Response:
        body = self.login_template.substitute(
            next=escape(_safe_next(next_path)),
            error=f'<p class="login-error" role="alert">{escape(error)}</p>' if error else "",
        )
        return web.Response(text=body, status=status, content_type="text/html", headers=_PAGE_HEADERS)

    # ---- pages --------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        """The sign-in form on its own, returning to `?next=` (a page of ours) once signed in."""
        next_path = _safe_next(request.query.get("next", ""))
        if self.auth.authenticated(request):
            return web.Response(status=303, headers={"Location": next_path, **_NO_STORE})
        return self._login_form(next_path=next_path, error="", status=200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        next_path = _safe_next(str(form.get("next", "")))
        operator = self.auth.operator_for_token(token) if token else None
        if operator is None:
            log.warning("calllog.login_failed", remote=request.remote)
            return self._login_form(next_path=next_path, error="That token is not right.", status=401)
        log.info("calllog.signed_in", operator=operator, remote=request.remote)
        response = web.Response(status=303, headers={"Location": next_path, **_NO_STORE})
        self.auth.set_session(request, response, operator)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(status=303, headers={"Location": "/calls", **_NO_STORE})
        self.auth.clear_session(response)
        return response

    async def list_page(self, request: web.Request) -> web.StreamResponse:
        return self._page(request, self.list_html)

    async def call_page(self, request: web.Request) -> web.StreamResponse:
        return self._page(request, self.call_html)

    async def live_page(self, request: web.Request) -> web.StreamResponse:
        return self._page(request, self.live_html)

    def _page(self, request: web.Request, template: Template) -> web.Response:
        topbar = self.topbar.substitute(operator=escape(self.auth.operator(request) or ""))
        text = template.substitute(topbar=topbar)
        return web.Response(text=text, content_type="text/html", headers=_PAGE_HEADERS)

    # ---- API ----------------------------------------------------------------------------------

    async def list_calls(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        reveal = _reveal(request)
        limit = _int(query.get("limit"), default=50, low=1, high=MAX_LIMIT, name="limit")
        try:
            filters = _filters(request)
            page, next_cursor = await self.store.list_calls(
                **filters, limit=limit, cursor=query.get("cursor") or None, annotate=True
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        calls = [public_call(call, reveal=reveal, searched=filters["text"]) for call in page]
        return _json({"calls": calls, "next_cursor": next_cursor})

    async def compare(self, request: web.Request) -> web.StreamResponse:
        """The matching calls' figures per voice API (Realtime, Live), side by side."""
        try:
            apis = await self.store.compare_apis(**_filters(request))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        return _json({"apis": apis})

    async def live_calls(self, request: web.Request) -> web.StreamResponse:
        """The live board's data: calls in progress on every replica (from the shared call log, not
        this process's memory), and those that ended in the last two minutes."""
        reveal = _reveal(request)
        calls = await self.store.live_calls()
        return _json(
            {"calls": [public_call(call, reveal=reveal) for call in calls], "now": datetime.now(UTC)}
        )

    async def get_call(self, request: web.Request) -> web.StreamResponse:
        call = await self.store.get_call(request.match_info["call_id"])
        if call is None:
            return _json({"error": "no such call"}, status=404)
        return _json(public_call(call, reveal=_reveal(request)))

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        call = await self.store.get_call(request.match_info["call_id"])
        if call is None:
            return web.Response(text="no such call\n", status=404, headers=_NO_STORE)
        text = transcript_text(public_call(call, reveal=_reveal(request)))
        return web.Response(text=text, content_type="text/plain", headers=_NO_STORE)

    async def recording(self, request: web.Request) -> web.StreamResponse:
        """The call's recording, `?format=` wav or flac (default flac), with range requests; or its
        waveform, `?format=peaks` (JSON, `bridge.recording.finish.Peaks`)."""
        fmt = request.query.get("format", "flac").lower()
        if fmt not in FORMATS:
            raise _BadRequest(f"format must be one of {', '.join(FORMATS)}")
        call_id = request.match_info["call_id"]
        recording = await self.store.get_recording(call_id)
        if recording is None:
            return _json({"error": "no such call"}, status=404)
        status, location = recording["recording_status"], recording["recording_location"]
        if status != "ready" or not location or self.recordings is None:
            error = _NOT_SERVED.get(status, f"the recording is {status}")
            return _json({"error": error, "recording_status": status}, status=404)
        if fmt not in (recording["recording_formats"] or "").split(","):
            return _json({"error": f"the recording has no {fmt} copy"}, status=404)
        try:
            return await recording_response(
                request, self.recordings, location, fmt, filename=f"call-{safe_name(call_id)}"
            )
        except web.HTTPNotFound:
            log.error("calllog.recording_file_missing", call_id=call_id, location=location, format=fmt)
            return _json({"error": "the recording's file is missing"}, status=404)
        except ArchiveError as exc:
            log.error("calllog.recording_unavailable", call_id=call_id, error=str(exc))
            return _json({"error": "the recording's storage cannot be reached"}, status=503)

    async def export_jsonl(self, request: web.Request) -> web.StreamResponse:
        filters, reveal = _filters(request), _reveal(request)
        calls = self.store.export_calls(**filters, with_events=True)
        lines = ((to_json(public_call(call, reveal=reveal)) + "\n").encode() async for call in calls)
        return await self._download(request, "application/x-ndjson", "jsonl", lines)

    async def export_csv(self, request: web.Request) -> web.StreamResponse:
        filters, reveal = _filters(request), _reveal(request)
        rows = _csv(self.store.export_calls(**filters), reveal)
        return await self._download(request, "text/csv", "csv", rows)

    async def _download(
        self, request: web.Request, content_type: str, ext: str, chunks: AsyncIterator[bytes]
    ) -> web.StreamResponse:
        # The first chunk is read before anything is sent: a database that is down is a 503, not a
        # download that starts and breaks.
        first = await anext(chunks, b"")
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        response = web.StreamResponse(
            headers={**_NO_STORE, "Content-Disposition": f'attachment; filename="calls-{stamp}.{ext}"'}
        )
        response.content_type = content_type
        response.charset = "utf-8"
        chunk: bytes | None = first
        while chunk is not None:
            try:
                await response.prepare(request)  # once; then it returns at once
                await response.write(chunk)
            except ConnectionError:
                return response  # the agent cancelled the download: nothing to report
            try:
                chunk = await anext(chunks, None)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                # Too late for a 503: the download ends unfinished (no last chunk), which every
                # HTTP client reports as a broken transfer, instead of looking complete.
                self._unavailable(request, exc)
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return response
        await response.write_eof()
        return response


async def _csv(calls: AsyncIterator[dict[str, Any]], reveal: bool) -> AsyncIterator[bytes]:
    """The export as CSV text, in pieces of about 64 KiB (the first once the first calls are read)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for call in calls:
        writer.writerow(csv_row(public_call(call, reveal=reveal)))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _page_template(name: str) -> Template:
    return Template((WEB_DIR / name).read_text(encoding="utf-8"))


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=to_json, headers=_NO_STORE)


def _filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    end_reason = query.get("end_reason") or None
    if end_reason is not None and end_reason not in END_REASONS:
        raise _BadRequest(f"end_reason must be one of {', '.join(END_REASONS)}")
    number = query.get("number") or None
    if number is not None and not any(ch.isdigit() for ch in number):
        raise _BadRequest("number must contain digits (the last digits of the caller's or called number)")
    upstream_api = query.get("upstream_api") or None
    if upstream_api is not None and upstream_api not in UPSTREAM_APIS:
        raise _BadRequest(f"upstream_api must be one of {', '.join(UPSTREAM_APIS)}")
    text = query.get("q") or None
    if text is not None:
        try:
            check_search_text(text)  # here, not in the store: an export has started answering by then
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
    return {
        "since": _time(query.get("since"), "since"),
        "until": _time(query.get("until"), "until"),
        "number": number,
        "end_reason": end_reason,
        "text": text,
        "upstream_api": upstream_api,
    }


def _reveal(request: web.Request) -> bool:
    reveal = request.query.get("reveal", "").lower() in ("1", "true", "yes")
    if reveal:
        log.info("calllog.numbers_revealed", path=request.path_qs, remote=request.remote)
    return reveal


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    # An unencoded "+01:00" offset arrives as " 01:00" after query decoding.
    for candidate in (value, value.replace(" ", "+")):
        try:
            parsed = datetime.fromisoformat(candidate)
            # In UTC here: a time an offset moves past year 1 or 9999 is refused, not a failed query.
            return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            continue
    raise _BadRequest(f"{name} must be an ISO 8601 time, e.g. 2025-11-22T15:00:00Z")


def _int(value: str | None, *, default: int, low: int, high: int, name: str) -> int:
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise _BadRequest(f"{name} must be a whole number") from None
    if not low <= number <= high:
        raise _BadRequest(f"{name} must be between {low} and {high}")
    return number


def _safe_next(path: str) -> str:
    # Only back into our own pages: never an open redirect to another site.
    if path.startswith(("/calls", "/phone")) and not path.startswith("//") and "\\" not in path:
        return path
    return "/calls"
