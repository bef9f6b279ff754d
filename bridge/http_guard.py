"""The HTTP server's defences before any handler runs, where nobody has been authenticated yet.

* **Time to a complete request.** A connection gets HTTP_REQUEST_TIMEOUT seconds, from opening (or,
  on a kept-alive connection, from the first byte of its next request), to deliver the request line,
  the headers and the body. A silent connection is closed; one caught half-way gets 408.
* **Connections waiting for a request**, new or idle between requests, are at most
  HTTP_MAX_WAITING_CONNECTIONS: beyond that the one that has waited longest is closed, so holding
  connections open cannot lock anyone else out. Connections in a handler (a call's media stream)
  do not count: MAX_CALLS bounds those.
* **Idle keep-alive** is aiohttp's own `keepalive_timeout`, set to HTTP_KEEPALIVE_TIMEOUT.
* **Malformed HTTP** (a line or header over 8,190 bytes, not HTTP at all, a broken body) is answered
  400 by aiohttp; instead of its ERROR with a traceback per request, one warning line a minute says
  how many there were.

aiohttp has no header-read timeout of its own (and before 3.14 never closed a connection that sent
nothing), so each connection's protocol is wrapped (`_Connection`), and a middleware tells the
wrapper when a request reaches its handler and when it is done. Bodies are read before the handler
runs, within the same deadline, so a body sent a byte a minute cannot hold a handler either.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bridge.logs import get_logger
from bridge.metrics import BridgeMetrics

log = get_logger("bridge.http")

MALFORMED_LOG_INTERVAL_S = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _State(enum.Enum):
    RECEIVING = "receiving"  # a request is on its way: the deadline runs
    IDLE = "idle"  # between requests on a kept-alive connection, until its next byte
    BUSY = "busy"  # a handler has the request


class HttpLimits:
    """The limits of one server (see the module's doc), shared by its connections and its middleware."""

    def __init__(
        self,
        metrics: BridgeMetrics,
        *,
        request_timeout_s: float,
        keepalive_timeout_s: float,
        max_waiting: int,
    ) -> None:
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.max_waiting = max_waiting
        self.malformed = MalformedRequests(metrics)
        # Insertion order is waiting order: the first one has waited longest.
        self._waiting: dict[_Connection, None] = {}
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}
        metrics.http_connections_waiting.set_function(lambda: len(self._waiting))

    def runner(self, app: web.Application, **kwargs: Any) -> web.AppRunner:
        """An AppRunner for `app` with aiohttp's own knobs set to these limits."""
        return web.AppRunner(
            app, keepalive_timeout=self.keepalive_timeout_s, logger=self.malformed.server_log, **kwargs
        )

    def connection(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Connection(self, inner)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = self._by_transport.get(request.transport) if request.transport else None
        if connection is None:  # served some other way (aiohttp's test server): nothing to keep
            return await handler(request)
        connection.request_arrived()
        try:
            if request.body_exists:
                refused = await self._read_body(request, connection)
                if refused is not None:
                    return refused
            connection.handler_started()
            return await handler(request)
        finally:
            connection.request_done()

    async def _read_body(self, request: web.Request, connection: _Connection) -> web.Response | None:
        """Read the whole body within the request's deadline (handlers then read it from memory)."""
        if request.content_type == "multipart/form-data":
            # Read ahead, a multipart body could no longer be parsed; no route here takes one.
            return _closing(web.Response(status=415, text="multipart bodies are not accepted here\n"))
        try:
            async with asyncio.timeout_at(connection.deadline):
                await request.read()
        except TimeoutError:
            # Answered and closed here, as a late request head is: left to aiohttp, the connection
            # would linger up to 10 s more reading what is left of the body.
            connection.time_out()
            return web.Response(status=408)  # goes nowhere: the connection is closed
        except web.RequestPayloadError as exc:
            # Answered and closed here too: aiohttp would read the broken body again to linger, and
            # log what it raises as an unhandled exception.
            self.malformed.seen(request.remote or "", exc.__cause__ or exc)
            connection.refuse("400 Bad Request")
            return web.Response(status=400)  # goes nowhere
        except ConnectionError:
            return _closing(web.Response(status=400))  # closed meanwhile: this goes nowhere
        return None

    # -- bookkeeping, called by the connections ----------------------------------------------------

    def _opened(self, connection: _Connection, transport: asyncio.BaseTransport) -> None:
        self._by_transport[transport] = connection
        self._wait(connection)

    def _wait(self, connection: _Connection) -> None:
        self._waiting[connection] = None
        while len(self._waiting) > self.max_waiting:
            self.metrics.http_connections_closed.labels("too_many_waiting").inc()
            next(iter(self._waiting)).close()  # and it stops waiting at once

    def _stop_waiting(self, connection: _Connection) -> None:
        self._waiting.pop(connection, None)

    def _closed(self, connection: _Connection, transport: asyncio.BaseTransport | None) -> None:
        self._waiting.pop(connection, None)
        if transport is not None:
            self._by_transport.pop(transport, None)


class _Connection(asyncio.Protocol):
    """One client connection, in front of aiohttp's protocol: everything is passed through, and the
    deadline and the waiting count are kept on the way."""

    def __init__(self, limits: HttpLimits, inner: asyncio.Protocol) -> None:
        self.limits = limits
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.state = _State.RECEIVING
        self.deadline = 0.0  # loop time by which the request in progress must have arrived
        self._received = False  # any byte of the request in progress
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False  # closed, or closing: nothing more is counted or sent

    # -- asyncio.Protocol: pass everything on ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport
        self._start_deadline()
        self.limits._opened(self, transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state is _State.IDLE:  # the first byte of the next request
            self.state = _State.RECEIVING
            self._start_deadline()
        self._received = True
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the request's progress, told by the middleware --------------------------------------------

    def request_arrived(self) -> None:
        """Its head is in: the body (if any) must still come within the deadline."""
        self._cancel_timer()
        if self.state is _State.IDLE:  # pipelined behind the previous one: its time starts now
            self.deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        self.state = _State.RECEIVING

    def handler_started(self) -> None:
        self.state = _State.BUSY
        self.limits._stop_waiting(self)
        # Out of the way while the handler runs (a media stream's frames go straight to aiohttp).
        if self.transport is not None:
            self.transport.set_protocol(self.inner)

    def request_done(self) -> None:
        if self._closed:
            return
        if self.state is _State.BUSY and self.transport is not None:
            if self.transport.is_closing():  # it went while aiohttp alone was listening
                self._forget()
                return
            self.transport.set_protocol(self)
        self.state = _State.IDLE
        self._received = False
        self.limits._wait(self)

    def _forget(self) -> None:
        self._closed = True
        self._cancel_timer()
        self.limits._closed(self, self.transport)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        self.limits._stop_waiting(self)
        if self.transport is not None:
            self.transport.close()

    # -- the deadline ----------------------------------------------------------------------------

    def _start_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + self.limits.request_timeout_s
        self._cancel_timer()
        self._timer = loop.call_at(self.deadline, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.state is _State.RECEIVING:
            self.time_out()

    def time_out(self) -> None:
        """The request did not arrive in time: a client caught half-way is told why, then closed."""
        if self._closed:
            return
        self.limits.metrics.http_connections_closed.labels("request_timeout").inc()
        if self._received:
            self.refuse("408 Request Timeout")
        self.close()

    def refuse(self, status: str) -> None:
        """Answer `status` with no body and close, past aiohttp (no request of its own is answering)."""
        if self.transport is not None and not self._closed:
            head = f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            self.transport.write(head.encode())
        self.close()


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


class MalformedRequests:
    """Requests that are not HTTP we accept: counted, and told in one warning line a minute at most.

    Anyone can send them, before any authentication, so aiohttp's ERROR with a traceback for each
    would let anyone write the log. `server_log` is aiohttp's server logger with that one message
    (for these errors only) routed here; every other record passes through unchanged.
    """

    def __init__(
        self,
        metrics: BridgeMetrics,
        interval_s: float = MALFORMED_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._clock = clock
        self._logged_at: float | None = None
        self._unreported = 0
        self.server_log = _ServerLog(self)

    def seen(self, remote: str, error: BaseException) -> None:
        self.metrics.http_bad_requests.inc()
        self._unreported += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self.interval_s:
            return
        # The error's name only: its message quotes the client's bytes.
        log.warning(
            "malformed HTTP requests refused",
            count=self._unreported,
            last_error=type(error).__name__,
            last_remote=remote,
            next_report_s=self.interval_s,
        )
        self._logged_at, self._unreported = now, 0


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def __init__(self, malformed: MalformedRequests) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._malformed = malformed

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._malformed.seen(str(args[0]) if args else "", exc_info)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        # aiohttp logs a first request that is not HTTP at all at debug: it is counted all the same.
        if isinstance(error := kwargs.get("exc_info"), HttpProcessingError):
            self._malformed.seen(str(args[0]) if args else "", error)
            return
        super().debug(msg, *args, **kwargs)


class GuardedSite(web.BaseSite):
    """aiohttp's TCP site, with every connection it accepts wrapped in the limits' `_Connection`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: HttpLimits) -> None:
        super().__init__(runner)
        self._host, self._port, self._limits = host, port, limits

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        limits = self._limits
        self._server = await asyncio.get_running_loop().create_server(
            lambda: limits.connection(server()),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )


HTTP_LIMITS_KEY: web.AppKey[HttpLimits] = web.AppKey("http_limits", HttpLimits)


def guard_app(app: web.Application, limits: HttpLimits) -> None:
    """Make `app` keep `limits` when served with `start_server`."""
    app[HTTP_LIMITS_KEY] = limits
    app.middlewares.insert(0, limits.middleware)


async def start_server(app: web.Application, host: str, port: int, **runner_kwargs: Any) -> web.AppRunner:
    """Serve `app` (set up with `guard_app`) on host:port; `await runner.cleanup()` stops it."""
    limits = app[HTTP_LIMITS_KEY]
    runner = limits.runner(app, **runner_kwargs)
    await runner.setup()
    try:
        await GuardedSite(runner, host, port, limits).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
