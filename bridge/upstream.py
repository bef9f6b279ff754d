"""Opening the model's session: a Realtime or a Live websocket, its URL and auth headers for OpenAI or
Azure, and the codec that speaks it.

Only the socket is opened here. What goes first on it belongs to the call: a Realtime call configures
its session (`session.update`), a Live call starts one (`session.start`) and sends no audio until
`session.started` (`bridge.live.call.LiveCall`). A Live socket opened while the webhook is answered is
therefore not started until its call's stream is: Live is billed by session duration, and whether the
service counts from the connection or from `session.start` is not documented (docs/protocols.md §L9)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import WSMsgType

from bridge.call_config import UpstreamApi
from bridge.clock import now_ms
from bridge.config import Settings, is_azure_url
from bridge.live.codec import LiveCodec, LiveProtocolError
from bridge.logs import get_logger
from bridge.realtime.codec import RealtimeCodec, RealtimeProtocolError
from bridge.upstream_loss import NOT_TRIED, ConnectAttempts, ConnectReport

log = get_logger("bridge.upstream")

# The service can send large events (a whole response.done); its SDK disables the limit.
MAX_SERVER_MESSAGE = 16 * 1024 * 1024


# Close codes after which the session simply ended; anything else (or no close frame) means it was lost.
_NORMAL_CLOSE = (1000, 1001)

# What a codec raises for a server message it cannot use: logged and skipped, never the call's end.
UPSTREAM_PROTOCOL_ERRORS = (RealtimeProtocolError, LiveProtocolError)


class UpstreamClosed(Exception):
    """The session's websocket closed abnormally (not 1000/1001) while it was read."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"upstream closed (code {code}): {reason}")
        self.code = code
        self.reason = reason


class UpstreamSocket:
    """One Realtime session's websocket, on aiohttp's client rather than the `websockets` library:
    per message it costs a third of what `websockets` does (measured with bench/load.py, which
    mattered at 50 appends a second per call), the server side is aiohttp already, and one library
    means one set of timeouts, proxies (trust_env) and TLS settings. `websockets` is only a test
    dependency: an independent client the emulator's own tests speak to it with.

    Iterating yields each text message as UTF-8 bytes (the codec decodes bytes directly); it ends when
    the service closes normally and raises `UpstreamClosed` when the connection is lost."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        # One text message of UTF-8 bytes (msgspec's output is), sent without a copy and without a
        # coroutine of ours around aiohttp's: 50 a second per call. A socket that closed or is closing
        # raises ConnectionError (aiohttp refuses to write to it).
        self.send: Callable[[bytes], Awaitable[None]] = partial(ws.send_frame, opcode=WSMsgType.TEXT)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ws = self._ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                data = msg.data
                yield data if isinstance(data, bytes) else data.encode()
            elif kind is WSMsgType.BINARY:
                yield msg.data
            elif kind in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
        code = ws.close_code
        if code not in _NORMAL_CLOSE:
            reason = str(msg.extra or "") if kind is WSMsgType.CLOSE else str(ws.exception() or "")
            raise UpstreamClosed(code, reason)

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._http.close()


class UpstreamRefused(Exception):
    """The service could not be reached or refused the session. str() is safe to log.
    `connecting`: once retries gave up, what they took."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.connecting = NOT_TRIED

    @property
    def retryable(self) -> bool:
        # A bad key or a forbidden model will not fix itself in the next second; 429 and 5xx may.
        return self.status not in (400, 401, 403, 404)


@dataclass(slots=True)
class UpstreamSession:
    socket: UpstreamSocket
    codec: RealtimeCodec | LiveCodec
    api: UpstreamApi = "realtime"
    configured: bool = False  # session.update already sent
    greeted: bool = False  # the greeting already requested
    connect_ms: float = 0.0
    connecting: ConnectReport = NOT_TRIED  # what opening it took, retries included


def session_url(settings: Settings, base_url: str | None = None, api: UpstreamApi = "realtime") -> str:
    """Realtime names its model in the URL; a Live URL has no query at all (the model goes in
    `session.start`, docs/protocols.md §L1)."""
    if api == "live":
        return base_url or settings.live_url
    parts = urlsplit(base_url or settings.realtime_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", settings.realtime_model)
    return urlunsplit(parts._replace(query=urlencode(query)))


def session_headers(settings: Settings, api: UpstreamApi = "realtime") -> dict[str, str]:
    headers: dict[str, str] = {}
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    url = settings.live_url if api == "live" else settings.realtime_url
    if key:
        if is_azure_url(url):
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    if api == "realtime" and settings.realtime_dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


async def open_session(
    settings: Settings,
    base_url: str | None = None,
    api: UpstreamApi = "realtime",
    timeout_s: float | None = None,
) -> UpstreamSession:
    """One attempt to open a session's websocket on `api` at `base_url` (default: REALTIME_URL or
    LIVE_URL), for at most `timeout_s` (default: REALTIME_CONNECT_TIMEOUT)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    service = "Live" if api == "live" else "Realtime"
    # trust_env: HTTPS_PROXY/NO_PROXY are honoured, as the websockets library did by default.
    http = aiohttp.ClientSession(trust_env=True)
    try:
        async with asyncio.timeout(settings.realtime_connect_timeout if timeout_s is None else timeout_s):
            ws = await http.ws_connect(
                session_url(settings, base_url, api),
                headers=session_headers(settings, api),
                max_msg_size=MAX_SERVER_MESSAGE,
                compress=0,  # Compressing base64 audio costs CPU and saves little.
                heartbeat=20.0,  # a ping every 20 s; no pong within 10 s closes the socket
                decode_text=False,  # msgspec decodes the UTF-8 bytes itself
            )
    except aiohttp.WSServerHandshakeError as exc:
        await http.close()
        status = exc.status
        raise UpstreamRefused(f"{service} service refused the session: HTTP {status}", status) from None
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        await http.close()
        raise UpstreamRefused(f"cannot reach the {service} service: {type(exc).__name__}: {exc}") from None
    except BaseException:
        await http.close()
        raise
    socket = UpstreamSocket(http, ws)
    codec = LiveCodec() if api == "live" else RealtimeCodec(settings.realtime_dialect)
    return UpstreamSession(socket, codec, api, connect_ms=(loop.time() - started) * 1000)


async def open_session_with_retry(
    settings: Settings, base_url: str | None = None, since: float | None = None, api: UpstreamApi = "realtime"
) -> UpstreamSession:
    """`open_session`, retried on `ConnectAttempts`' schedule while the error may pass. The budget
    counts from `since` (`bridge.clock.now_ms`; default now): when the call lost its session."""
    attempts = ConnectAttempts(now_ms() if since is None else since)
    due = attempts.first(now_ms())
    while True:
        if (wait_ms := due - now_ms()) > 0:
            await asyncio.sleep(wait_ms / 1000)
        left_ms = attempts.begin(now_ms())
        timeout_s = min(settings.realtime_connect_timeout, left_ms / 1000)
        try:
            session = await open_session(settings, base_url, api, timeout_s)
        except UpstreamRefused as exc:
            now = now_ms()
            exc.connecting = attempts.report(now)
            if not exc.retryable or (later := attempts.due(now)) is None:
                raise
            due = later
            log.warning(
                "upstream connect failed, retrying",
                attempt=len(attempts.started),
                error=str(exc),
                in_s=round((due - now) / 1000, 2),
            )
        else:
            session.connecting = attempts.report(now_ms())
            return session
