"""Opening a Realtime session: URL, auth headers for OpenAI or Azure, and the websocket itself."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from bridge.config import Settings
from bridge.logs import get_logger
from bridge.realtime.codec import RealtimeCodec

log = get_logger("bridge.upstream")

# The service can send large events (a whole response.done); its SDK disables the limit.
MAX_SERVER_MESSAGE = 16 * 1024 * 1024


# Retries must fit inside the time a caller will wait in silence before giving up on the line.
CONNECT_BUDGET_S = 4.0
BACKOFF_S = (0.2, 0.5, 1.0)


class UpstreamRefused(Exception):
    """The Realtime service could not be reached or refused the session. str() is safe to log."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        # A bad key or a forbidden model will not fix itself in the next second; 429 and 5xx may.
        return self.status not in (400, 401, 403, 404)


@dataclass(slots=True)
class UpstreamSession:
    socket: ClientConnection
    codec: RealtimeCodec
    configured: bool = False  # session.update already sent
    greeted: bool = False  # the greeting already requested
    connect_ms: float = 0.0


def session_url(settings: Settings, base_url: str | None = None) -> str:
    parts = urlsplit(base_url or settings.realtime_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", settings.realtime_model)
    return urlunsplit(parts._replace(query=urlencode(query)))


def session_headers(settings: Settings) -> dict[str, str]:
    headers: dict[str, str] = {}
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    if key:
        if settings.is_azure:
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
    if settings.realtime_dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    return headers


async def open_session(settings: Settings, base_url: str | None = None) -> UpstreamSession:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        socket = await websockets.connect(
            session_url(settings, base_url),
            additional_headers=session_headers(settings),
            max_size=MAX_SERVER_MESSAGE,
            compression=None,  # Compressing base64 audio costs CPU and saves little.
            open_timeout=settings.realtime_connect_timeout,
            ping_interval=20,
            ping_timeout=20,
        )
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        raise UpstreamRefused(f"Realtime service refused the session: HTTP {status}", status) from None
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        raise UpstreamRefused(f"cannot reach the Realtime service: {type(exc).__name__}: {exc}") from None
    return UpstreamSession(
        socket, RealtimeCodec(settings.realtime_dialect), connect_ms=(loop.time() - started) * 1000
    )


async def open_session_with_retry(
    settings: Settings, base_url: str | None = None, budget_s: float = CONNECT_BUDGET_S
) -> UpstreamSession:
    """`open_session`, retried with backoff while the error may pass and the budget allows."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    pauses = iter(BACKOFF_S)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await open_session(settings, base_url)
        except UpstreamRefused as exc:
            pause = next(pauses, None)
            if not exc.retryable or pause is None or loop.time() + pause >= deadline:
                raise
            log.warning("upstream connect failed, retrying", attempt=attempt, error=str(exc), in_s=pause)
            await asyncio.sleep(pause)
