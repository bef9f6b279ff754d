"""Opening a Realtime session: URL, auth headers for OpenAI or Azure, and the websocket itself."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection

from bridge.config import Settings
from bridge.realtime.codec import RealtimeCodec

# The service can send large events (a whole response.done); its SDK disables the limit.
MAX_SERVER_MESSAGE = 16 * 1024 * 1024


class UpstreamRefused(Exception):
    """The Realtime service could not be reached or refused the session. str() is safe to log."""


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
        raise UpstreamRefused(
            f"Realtime service refused the session: HTTP {exc.response.status_code}"
        ) from None
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        raise UpstreamRefused(f"cannot reach the Realtime service: {type(exc).__name__}: {exc}") from None
    return UpstreamSession(
        socket, RealtimeCodec(settings.realtime_dialect), connect_ms=(loop.time() - started) * 1000
    )
